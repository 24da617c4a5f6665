// Regression (found in review): a logout whose UPDATE waited past the deadline
// was answered 503 and announced nothing, yet committed once the lock holding
// it was released. Retried, the logout found nothing left to revoke, answered
// 204 and again announced nothing: the access token kept working on every
// instance until the next resync caught the change, or never, when the late
// commit fell before the resync's window. A revocation now announces the
// sessions it asked for that are revoked, by this call or an earlier one.
import t from 'tap'
import postgres from 'postgres'
import { buildTestApp, FAST_ARGON2, sharedDatabase, TEST_DATABASE_URL, within } from '../helpers/app.js'
import { bearer, register } from '../helpers/api.js'

const skip = TEST_DATABASE_URL ? false : 'needs PostgreSQL (TEST_DATABASE_URL, which .ci/run sets): PGlite has no second connection to hold a lock'

t.test('a logout that committed after its 503, retried: every instance refuses the token within a second', { skip }, async (t) => {
  const shared = await sharedDatabase(t)
  // The resync far away, so only the announcement can carry the revocation.
  const env = { ...FAST_ARGON2, DATABASE_SERVER_TIMEOUT: 'false', DATABASE_QUERY_TIMEOUT: '1000', REVOCATION_RESYNC_INTERVAL: '300' }
  const A = await buildTestApp(t, { ...shared, env })
  const B = await buildTestApp(t, { ...shared, env })
  const user = await register(A)
  const me = (app: typeof A) => app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(user.access_token) })
  t.equal((await me(B)).statusCode, 200, 'B accepts the token')

  const blocker = postgres(shared.databaseUrl!, { max: 1, onnotice: () => {} })
  t.teardown(() => blocker.end({ timeout: 1 }))
  const sessionId = (await me(A)).json().auth.session_id as string
  let release!: () => void
  const released = new Promise<void>((r) => { release = r })
  let locked!: () => void
  const isLocked = new Promise<void>((r) => { locked = r })
  const holding = blocker.begin(async (tx) => {
    await tx`select id from sessions where id = ${sessionId} for update`
    locked()
    await released
  })
  await isLocked
  const first = await A.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(user.access_token) })
  t.equal(first.statusCode, 503, 'the logout is answered 503: its UPDATE waits for the lock past the deadline')
  release()
  await holding // the waiting UPDATE now commits, with nobody told
  const committed = await within(2000, async () => (await blocker`select revoked_at from sessions where id = ${sessionId}`)[0]!.revoked_at !== null)
  t.ok(committed >= 0, 'the revocation committed late')

  const retried = await A.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(user.access_token) })
  t.equal(retried.statusCode, 204, 'the retried logout answers 204')
  for (const [name, app] of [['A', A], ['B', B]] as const) {
    const ms = await within(1000, async () => (await me(app)).statusCode === 401)
    t.ok(ms >= 0, `${name} refuses the token (${ms} ms)`)
  }
})

