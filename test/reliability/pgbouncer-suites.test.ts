// Issue 15: the PostgreSQL suites of sessions, API keys, key rotation,
// two-instance revocation and races run again, unchanged, behind a real
// PgBouncer in transaction mode (each file in its own process, with
// TEST_PGBOUNCER_URL set: test/helpers/app.ts then sends every app's queries
// through the pooler, configured as the README's deployment section says, and
// without Redis, so notifications travel by LISTEN/NOTIFY).
// The pooler's own statistics show the traffic went through it.
import t from 'tap'
import postgres from 'postgres'
import { TEST_DATABASE_URL } from '../helpers/app.js'
import { PGBOUNCER, startPgBouncer } from '../helpers/pgbouncer.js'

const SUITES = [
  'test/sessions/logout.test.ts', // logout and revocation on every instance within a second
  'test/sessions/refresh.test.ts', // rotation, reuse detection, concurrent refresh
  'test/api-keys/api-keys.test.ts', // keys: create, scope caps, revoke on every instance
  'test/keys/rotation.test.ts', // signing-key rotation across instances
  'test/reliability/races.test.ts', // single-use steps raced in parallel
]

const skip = !TEST_DATABASE_URL ? 'needs PostgreSQL (TEST_DATABASE_URL, which .ci/run sets)' : !PGBOUNCER ? 'needs pgbouncer (.ci/run installs it)' : false

t.test('the PostgreSQL suites behind PgBouncer (transaction mode)', { skip }, async (t) => {
  const pooled = await startPgBouncer(t, TEST_DATABASE_URL!)
  const transactions = async () => {
    const console = new URL(pooled)
    console.pathname = '/pgbouncer'
    const admin = postgres(console.toString(), { max: 1, onnotice: () => {}, fetch_types: false })
    try {
      const rows = await admin`show stats`.simple()
      return rows.filter((r) => r.database !== 'pgbouncer').reduce((n, r) => n + Number(r.total_xact_count), 0)
    } finally { await admin.end({ timeout: 1 }) }
  }
  // Without Redis, so that revocations and rotations travel by LISTEN/NOTIFY (straight to the database).
  const { TEST_REDIS_URL: _redis, ...withoutRedis } = process.env
  const before = await transactions()
  for (const file of SUITES) {
    // As tap runs a file: its mocking loader first, then TypeScript.
    await t.spawn(process.execPath, ['--import', '@tapjs/mock/import', '--import', 'tsx', file],
      { env: { ...withoutRedis, TEST_PGBOUNCER_URL: pooled } }, `${file} behind PgBouncer`)
  }
  const through = (await transactions()) - before
  t.ok(through > 500, `the suites' transactions went through the pooler (${through})`)
})
