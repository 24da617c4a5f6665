// Account lockout (SPEC §6): LOCKOUT_MAX_ATTEMPTS (5) failed passwords for one
// email within 15 minutes lock it for 30 minutes: 423 ACCOUNT_LOCKED with
// Retry-After, even with the right password. Counted per normalized email
// whether or not an account exists (a 423 reveals nothing); counting is atomic;
// a success resets it; attempts during a lock don't extend it; API keys are
// never subject to it. Time is a FakeClock.
import t, { type Test } from 'tap'
import { eq } from 'drizzle-orm'
import type { LightMyRequestResponse } from 'fastify'
import { loginFailures } from '../../src/db/schema.js'
import { buildTestApp, FAST_ARGON2, FakeClock } from '../helpers/app.js'
import { bearer, login, register, uniqueEmail } from '../helpers/api.js'

const clock = new FakeClock()
// Room for every login of the 100-at-once test in the argon2 line: it is about counting, not load shedding.
const app = await buildTestApp(t, { env: { ...FAST_ARGON2, ARGON2_QUEUE_MAX: '1000' }, clock })

const LIMIT = 5
const SECOND = 1000
const MINUTE = 60 * SECOND
const LOCK_SECONDS = 30 * 60
const WRONG = 'not-the-password-99'

const failuresOf = async (email: string) =>
  (await app.db.select().from(loginFailures).where(eq(loginFailures.emailKey, app.lockout.keyOf(email))))[0]

/** `n` wrong passwords in a row, each expected to be a plain 401. */
async function failLogins(t: Test, email: string, n: number) {
  for (let i = 1; i <= n; i++) {
    const res = await login(app, email, WRONG)
    t.equal(res.statusCode, 401, `wrong password ${i}: 401`)
    t.equal(res.json().error.code, 'INVALID_CREDENTIALS')
  }
}

/** Wrong passwords up to the limit: the email is locked afterwards. */
async function lock(t: Test, email: string) {
  await failLogins(t, email, LIMIT - 1)
  const last = await login(app, email, WRONG)
  t.ok([401, 423].includes(last.statusCode), `wrong password ${LIMIT}: ${last.statusCode}`)
}

function assertLocked(t: Test, res: LightMyRequestResponse, retryAfter = LOCK_SECONDS, what = 'locked') {
  t.equal(res.statusCode, 423, `${what}: 423`)
  t.equal(res.json().error.code, 'ACCOUNT_LOCKED')
  t.match(res.json().error.request_id, /^req_/)
  t.equal(res.headers['retry-after'], String(retryAfter), `Retry-After ${retryAfter}`)
}

t.test('5 wrong passwords lock the email: 423 with Retry-After even for the right password', async (t) => {
  const { email } = await register(app)
  await lock(t, email)
  assertLocked(t, await login(app, email))
  assertLocked(t, await login(app, email.toUpperCase()), LOCK_SECONDS, 'counted per normalized email')
  clock.advance(10 * MINUTE)
  assertLocked(t, await login(app, email), LOCK_SECONDS - 10 * 60)
})

t.test('an email with no account locks the same way, with the same status, body and headers', async (t) => {
  const known = (await register(app)).email
  const unknown = uniqueEmail('ghost')
  await lock(t, known)
  await lock(t, unknown)
  const [a, b] = [await login(app, known), await login(app, unknown, 'any-password-at-all')]
  assertLocked(t, a)
  assertLocked(t, b)
  const strip = (res: LightMyRequestResponse) => ({ ...res.json().error, request_id: undefined })
  t.same(strip(b), strip(a), 'same body except request_id')
  t.same(Object.keys(b.headers).sort(), Object.keys(a.headers).sort(), 'same headers')
  t.equal(b.headers['retry-after'], a.headers['retry-after'])
})

t.test('100 concurrent wrong passwords lock after exactly the limit and record at most the limit', async (t) => {
  const { email } = await register(app)
  const results = await Promise.all(Array.from({ length: 100 }, () => login(app, email, WRONG)))
  const statuses = results.map((r) => r.statusCode)
  t.same([...new Set(statuses)].sort(), [401, 423], 'only 401 and 423')
  t.equal(statuses.filter((s) => s === 401).length, LIMIT - 1, `${LIMIT - 1} failures answered 401, the rest 423`)
  const row = await failuresOf(email)
  t.ok(row && row.failures <= LIMIT, `failures recorded: ${row?.failures}`)
  t.equal(row?.failures, LIMIT)
  t.ok(row?.lockedUntil, 'locked')
  assertLocked(t, await login(app, email))
})

t.test('attempts during a lock do not extend it', async (t) => {
  const { email } = await register(app)
  await lock(t, email)
  const before = await failuresOf(email)
  clock.advance(5 * MINUTE)
  for (const password of [WRONG, WRONG, WRONG]) assertLocked(t, await login(app, email, password), LOCK_SECONDS - 5 * 60)
  const after = await failuresOf(email)
  t.equal(after?.lockedUntil?.getTime(), before?.lockedUntil?.getTime(), 'locked_until unchanged')
  t.equal(after?.failures, before?.failures, 'nothing counted during the lock')
})

t.test('the lock lifts after 30 minutes', async (t) => {
  const { email } = await register(app)
  await lock(t, email)
  clock.advance(LOCK_SECONDS * SECOND - SECOND)
  assertLocked(t, await login(app, email), 1)
  clock.advance(2 * SECOND) // 30 min + 1 s
  await failLogins(t, email, 1) // a fresh count, not a new lock
  t.equal((await login(app, email)).statusCode, 200, 'the right password works again')
  t.notOk(await failuresOf(email), 'the counter is gone after the success')
})

t.test('a successful login resets the counter', async (t) => {
  const { email } = await register(app)
  await failLogins(t, email, LIMIT - 1)
  t.equal((await login(app, email)).statusCode, 200, 'right password')
  await failLogins(t, email, LIMIT - 1)
  t.equal((await login(app, email)).statusCode, 200, 'still not locked')
})

t.test('failures count within a 15-minute window', async (t) => {
  const { email } = await register(app)
  await failLogins(t, email, LIMIT - 1)
  clock.advance(16 * MINUTE)
  await failLogins(t, email, LIMIT - 1) // the earlier four have aged out
  t.equal((await login(app, email)).statusCode, 200, 'not locked')

  const other = (await register(app)).email
  await failLogins(t, other, LIMIT - 1)
  clock.advance(14 * MINUTE)
  assertLocked(t, await login(app, other, WRONG), LOCK_SECONDS, 'inside the window the 5th failure locks')
})

t.test('API keys are never subject to the lockout', async (t) => {
  const owner = await register(app)
  const created = await app.inject({
    method: 'POST', url: '/api/v1/api-keys', headers: bearer(owner.access_token), payload: { name: 'ci', scopes: ['api_keys:read'] },
  })
  t.equal(created.statusCode, 201)
  await lock(t, owner.email)
  assertLocked(t, await login(app, owner.email))
  const me = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { 'x-api-key': created.json().key } })
  t.equal(me.statusCode, 200, 'the API key works while its creator is locked out')
  t.equal(me.json().auth.method, 'api_key')
})
