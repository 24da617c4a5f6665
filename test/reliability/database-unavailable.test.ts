// Issue 15, reproductions 2 and 3, on the machine's PostgreSQL: a database
// closed to connections (as blue-green migrations and maintenance do) and a
// database turned read-only (the old primary after a failover) answered 500.
// Each is answered 503 with Retry-After within 2 s, never 500; nothing is half
// written; and the service recovers within 5 s of the database coming back,
// without a restart (a read-only answer replaces the pool, so new connections
// find the writable database).
import t, { type Test } from 'tap'
import postgres from 'postgres'
import type { App } from '../../src/app.js'
import { buildTestApp, FAST_ARGON2, freshDatabaseUrl, TEST_DATABASE_URL, within } from '../helpers/app.js'
import { STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'

const ONLY_POSTGRES = { skip: TEST_DATABASE_URL ? false : 'needs PostgreSQL (TEST_DATABASE_URL, which .ci/run sets): PGlite has no connections to refuse' }
{
  const register = (app: App) => app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { email: uniqueEmail('outage'), password: STRONG_PASSWORD } })

  async function setup(t: Test) {
    const url = await freshDatabaseUrl(t)
    const name = new URL(url).pathname.slice(1)
    const admin = postgres(TEST_DATABASE_URL!, { max: 1, onnotice: () => {} })
    t.teardown(() => admin.end({ timeout: 1 }))
    const app = await buildTestApp(t, { databaseUrl: url, env: FAST_ARGON2 })
    t.equal((await register(app)).statusCode, 201, 'registers while the database is well')
    const terminate = () => admin.unsafe(`select pg_terminate_backend(pid) from pg_stat_activity where datname = '${name}' and pid <> pg_backend_pid()`)
    const halfWritten = async () => {
      const check = postgres(url, { max: 1, onnotice: () => {} })
      try {
        const [orphans] = await check`select count(*)::int as n from users u where not exists (select 1 from memberships m where m.user_id = u.id)`
        return orphans!.n as number
      } finally { await check.end({ timeout: 1 }) }
    }
    return { app, admin, name, terminate, halfWritten }
  }

  /** Ten registrations while the database is away: each 503 with Retry-After within 2 s. */
  async function duringOutage(t: Test, app: App) {
    for (let i = 0; i < 10; i++) {
      const started = performance.now()
      const res = await register(app)
      const ms = performance.now() - started
      t.equal(res.statusCode, 503, `registration ${i + 1}: 503 (got ${res.statusCode} ${res.body.slice(0, 120)})`)
      t.equal(res.json().error.code, 'SERVICE_UNAVAILABLE')
      t.ok(res.headers['retry-after'], 'with Retry-After')
      t.ok(ms < 2000, `answered in ${Math.round(ms)} ms`)
    }
  }

  t.test('a database that refuses connections: 503, not 500; recovery within 5 s', ONLY_POSTGRES, async (t) => {
    const { app, admin, name, terminate, halfWritten } = await setup(t)
    await admin.unsafe(`alter database ${name} allow_connections false`)
    await terminate()
    await duringOutage(t, app)
    await admin.unsafe(`alter database ${name} allow_connections true`)
    const ms = await within(5000, async () => (await register(app)).statusCode === 201)
    t.ok(ms >= 0, `registrations succeed again ${ms} ms after it reopens, without a restart`)
    t.equal(await halfWritten(), 0, 'no account without its organization')
  })

  t.test('a database that turns read-only: 503, not 500 (25006); the pool is replaced, and recovers within 5 s', ONLY_POSTGRES, async (t) => {
    const { app, admin, name, terminate, halfWritten } = await setup(t)
    await admin.unsafe(`alter database ${name} set default_transaction_read_only = on`)
    await terminate() // new sessions come up read-only, as on a replica
    await duringOutage(t, app)
    await admin.unsafe(`alter database ${name} reset default_transaction_read_only`)
    // The database is writable again for new sessions only: the pool's connections must be new.
    const ms = await within(5000, async () => (await register(app)).statusCode === 201)
    t.ok(ms >= 0, `registrations succeed again ${ms} ms after it is writable, without a restart`)
    t.equal(await halfWritten(), 0, 'no account without its organization')
  })
}
