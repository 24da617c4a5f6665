// Regression: instances starting behind a transaction pooler waited forever for
// the migration lock. Each start took a session advisory lock (pg_advisory_lock)
// through PgBouncer in transaction mode: the lock stayed on whichever server
// connection ran it, the unlock ran on another (and unlocked nothing), and the
// next instance's start waited for a lock no one would release (found by
// test/reliability/pgbouncer-suites). Migrations now run in one transaction
// holding a transaction-scoped lock, released by its COMMIT, pooled or not.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { buildTestApp, FAST_ARGON2, freshDatabaseUrl, TEST_DATABASE_URL } from '../helpers/app.js'
import { PGBOUNCER, startPgBouncer } from '../helpers/pgbouncer.js'
import { MIGRATION_LOCK_KEY } from '../../src/db/client.js'

const skip = !TEST_DATABASE_URL ? 'needs PostgreSQL (TEST_DATABASE_URL, which .ci/run sets)' : !PGBOUNCER ? 'needs pgbouncer (.ci/run installs it)' : false
const POOLED = { ...FAST_ARGON2, DATABASE_PREPARED_STATEMENTS: 'false', DATABASE_SERVER_TIMEOUT: 'false' }

t.test('instances that start one after another and together behind PgBouncer all become ready', { skip }, async (t) => {
  const url = await freshDatabaseUrl(t)
  const pooled = await startPgBouncer(t, url)
  const secretKey = randomBytes(32).toString('base64')
  // Everything through the pooler, the migration included (no DATABASE_LISTEN_URL): as an operator who set only DATABASE_URL.
  const start = async () => {
    const started = Date.now()
    const app = await buildTestApp(t, { databaseUrl: pooled, secretKey, env: POOLED })
    t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200)
    return Date.now() - started
  }
  // Traffic through the pooler while instances start, so its server connections change hands between statements.
  const busy = await buildTestApp(t, { databaseUrl: pooled, secretKey, env: POOLED })
  let running = true
  const traffic = Array.from({ length: 8 }, async () => {
    while (running) await busy.inject({ method: 'GET', url: '/readyz' })
  })
  t.teardown(async () => { running = false; await Promise.all(traffic) })
  const oneByOne = []
  for (let i = 0; i < 4; i++) oneByOne.push(await start())
  t.ok(oneByOne.every((ms) => ms < 5000), `one after another: ready in ${oneByOne.join(', ')} ms`)
  const together = await Promise.all(Array.from({ length: 4 }, start))
  t.ok(together.every((ms) => ms < 5000), `four at once: ready in ${together.join(', ')} ms`)
})

// Found in review: the README suggests a role-level statement_timeout behind PgBouncer, which also bounded the
// migration transaction: an instance waiting for another's migrations longer than that failed to start.
t.test('an instance waiting for the migration lock longer than the role\'s statement_timeout still starts', { skip: TEST_DATABASE_URL ? false : 'needs PostgreSQL' }, async (t) => {
  const url = await freshDatabaseUrl(t)
  const name = new URL(url).pathname.slice(1)
  const { default: postgres } = await import('postgres')
  const admin = postgres(TEST_DATABASE_URL!, { max: 1, onnotice: () => {} })
  t.teardown(() => admin.end({ timeout: 1 }))
  await admin.unsafe(`alter database ${name} set statement_timeout = '300ms'`)
  const holder = postgres(url, { max: 1, onnotice: () => {} })
  t.teardown(() => holder.end({ timeout: 1 }))
  let locked!: () => void
  const isLocked = new Promise<void>((r) => { locked = r })
  const holding = holder.begin(async (tx) => {
    await tx`set local statement_timeout = 0`
    await tx`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`
    locked()
    await new Promise((r) => setTimeout(r, 1500)) // another instance migrating for 1.5 s
  })
  await isLocked
  const app = await buildTestApp(t, { databaseUrl: url, env: { ...FAST_ARGON2, DATABASE_SERVER_TIMEOUT: 'false' } })
  await holding
  t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200, 'it waited for the lock and is ready')
})
