// The argon2 wait line had no bound: a login flood queued hashes without limit.
// Now, past ARGON2_QUEUE_MAX, a login is answered 503 + Retry-After at once, in
// the public error shape, and that refusal is not a failed password (it must not
// count toward the account lockout).
import t from 'tap'
import { eq } from 'drizzle-orm'
import { loginFailures } from '../../src/db/schema.js'
import { buildTestApp } from '../helpers/app.js'
import { login, register } from '../helpers/api.js'

const WRONG = 'not-the-password-99'
const ATTEMPTS = 12

t.test('a login flood beyond ARGON2_QUEUE_MAX gets 503 with Retry-After and does not count toward the lockout', async (t) => {
  const app = await buildTestApp(t, {
    env: {
      ARGON2_CONCURRENCY: '1', ARGON2_QUEUE_MAX: '1', ARGON2_MEMORY_KIB: '32768', ARGON2_TIME_COST: '3',
      // Had the refusals been counted as wrong passwords, the account would now be locked.
      LOCKOUT_MAX_ATTEMPTS: String(ATTEMPTS),
    },
  })
  const { email, password } = await register(app)

  const responses = await Promise.all(Array.from({ length: ATTEMPTS }, () => login(app, email, WRONG)))
  const statuses = responses.map((r) => r.statusCode)
  const refused = responses.filter((r) => r.statusCode === 503)
  const failed = responses.filter((r) => r.statusCode === 401)
  t.ok(refused.length > 0, `some logins refused (${statuses.join(' ')})`)
  t.equal(refused.length + failed.length, ATTEMPTS, 'every other login is a plain 401; none 500, none 423')
  for (const res of refused) {
    t.equal(res.headers['retry-after'], '1', 'Retry-After: 1')
    t.match(res.json(), { error: { code: 'SERVICE_UNAVAILABLE', message: String, request_id: String } }, 'the public error shape')
  }

  const [row] = await app.db.select().from(loginFailures).where(eq(loginFailures.emailKey, app.lockout.keyOf(email)))
  t.equal(row?.failures, failed.length, 'only the wrong passwords that were checked are counted')
  const after = await login(app, email, password)
  t.equal(after.statusCode, 200, 'the right password still logs in')
})
