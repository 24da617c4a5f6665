// The verified-credential cache was emptied at the start of a resync, while
// the key and membership caches it is built from were still being re-read: a
// request in between was verified again from the stale caches and remembered,
// so a missed notification could last two resync intervals instead of one.
// It is now emptied once every resync handler of the round has finished.
import t from 'tap'
import { buildTestApp } from '../helpers/app.js'

t.test('what is derived from the caches is dropped after every resync handler has finished', async (t) => {
  const order: string[] = []
  let rounds = 0
  await buildTestApp(t, {
    env: { REVOCATION_RESYNC_INTERVAL: '1' },
    beforeReady: (app) => {
      // A slow cache refresh (a slow database), and a record of when the round is declared done.
      app.events.onResync(async () => {
        order.push('slow resync started')
        await new Promise((r) => setTimeout(r, 300))
        order.push('slow resync finished')
      })
      app.events.onResynced(() => { order.push('resynced'); rounds++ })
    },
  })
  while (rounds < 1) await new Promise((r) => setTimeout(r, 50))
  t.same(order.slice(0, 3), ['slow resync started', 'slow resync finished', 'resynced'], 'the round ends after its slowest handler')
})
