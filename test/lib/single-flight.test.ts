// After a cache is emptied, the requests that miss at once share one load (the
// resync used to send every request in flight to the database at the same
// moment); a load begun before the cache changed is never joined afterwards.
import t from 'tap'
import { SingleFlight } from '../../src/lib/single-flight.js'

t.test('concurrent loads of one key share one call; a new generation starts its own', async (t) => {
  const flights = new SingleFlight<number>()
  let calls = 0
  let release!: () => void
  const gate = new Promise<void>((r) => { release = r })
  const load = async () => { calls++; await gate; return calls }
  const first = Array.from({ length: 10 }, () => flights.run('k', 1, load))
  t.equal(calls, 1, 'ten waiting requests, one load')
  const after = flights.run('k', 2, load)
  t.equal(calls, 2, 'a request after the cache changed does not join the older load')
  release()
  t.same(await Promise.all(first), Array(10).fill(2), 'they all get its answer')
  await after
  await flights.run('k', 2, load)
  t.equal(calls, 3, 'once settled, the next miss loads again')
})
