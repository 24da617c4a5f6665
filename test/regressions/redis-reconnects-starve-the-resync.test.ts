// Regression (found in review): with Redis unreachable, ioredis reports a
// close on every failed reconnect (every 2 s at most), and each close
// restarted the resync's timer: a REVOCATION_RESYNC_INTERVAL of 3 s never came,
// so a revocation whose notification was missed was never picked up, for as
// long as Redis stayed down. The timer now restarts only when the interval
// itself changes.
import t from 'tap'
import { eq } from 'drizzle-orm'
import { sessions } from '../../src/db/schema.js'
import { buildTestApp, FAST_ARGON2, within } from '../helpers/app.js'
import { bearer, register } from '../helpers/api.js'

t.test('Redis down: the periodic resync still runs, and picks up a revocation nobody announced', async (t) => {
  const app = await buildTestApp(t, { env: { ...FAST_ARGON2, REDIS_URL: 'redis://127.0.0.1:1', REVOCATION_RESYNC_INTERVAL: '3' } })
  const user = await register(app)
  const me = () => app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(user.access_token) })
  t.equal((await me()).statusCode, 200)
  const sessionId = (await me()).json().auth.session_id as string
  // Revoked behind the service's back: no notification, only the resync can tell.
  await app.db.update(sessions).set({ revokedAt: new Date() }).where(eq(sessions.id, sessionId))
  const ms = await within(6000, async () => (await me()).statusCode === 401)
  t.ok(ms >= 0, `refused after ${ms} ms (resync every 3 s, while Redis reconnects in vain)`)
})
