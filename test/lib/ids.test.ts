import t from 'tap'
import { ID_PATTERN, newId } from '../../src/lib/ids.js'

t.test('an id is its prefix, ten characters of time and sixteen random ones, in the documented alphabet', async (t) => {
  const pattern = new RegExp(ID_PATTERN('req'))
  for (let i = 0; i < 1000; i++) t.match(newId('req'), pattern)
  t.equal(newId('usr', 0).slice(0, 14), 'usr_0000000000', 'time zero is all zeros')
  // 2^45 ms is "1" followed by nine zeros in base 32.
  t.equal(newId('org', 2 ** 45).slice(4, 14), '1000000000')
  t.equal(newId('org', 2 ** 45 - 1).slice(4, 14), 'zzzzzzzzz'.padStart(10, '0'))
})

t.test('ids sort by the millisecond they name, also when calls alternate between milliseconds', async (t) => {
  // The time part is kept for the millisecond it names: a cache that did not follow `now` would fail here.
  const times = [1_796_000_000_000, 1_796_000_000_001, 1_796_000_000_000, 1_796_000_000_031, 1_796_000_000_032, 1_796_000_001_024]
  const ids = times.map((ms) => newId('evt', ms))
  for (let i = 0; i < times.length; i++) {
    for (let j = 0; j < times.length; j++) {
      if (times[i]! < times[j]!) t.ok(ids[i]! < ids[j]!, `${ids[i]} sorts before ${ids[j]}`)
    }
  }
  t.equal(ids[0]!.slice(0, 14), ids[2]!.slice(0, 14), 'the same millisecond gives the same time part')
})

t.test('the random part differs between ids of the same millisecond, across refills of the entropy pool', async (t) => {
  const seen = new Set<string>()
  // 4096 bytes of pool give 256 ids: 2000 ids cross several refills.
  for (let i = 0; i < 2000; i++) seen.add(newId('ses', 1_796_000_000_000))
  t.equal(seen.size, 2000)
  // Every character of the alphabet appears in the random parts (a broken byte-to-character map would not).
  const chars = new Set([...seen].flatMap((id) => [...id.slice(14)]))
  t.equal(chars.size, 32)
})
