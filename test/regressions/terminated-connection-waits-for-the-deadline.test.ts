// Regression: after an administrator terminated a connection in the middle of
// a statement, the next statement on that pool slot, while the database refused
// connections (ALTER DATABASE … ALLOW_CONNECTIONS false), was answered only by
// the 5-second deadline instead of at once. postgres.js 3.4 kept the killed
// statement as the connection's current one; the refusal sent to the next
// connection attempt was taken for that statement's error, the attempt was
// retried in a loop, and the new statement waited in it (porsager/postgres#1193,
// #1223). scripts/patch-postgres.mjs clears the finished statement. Seen as a
// 5 s registration in test database-unavailable, 4 times in 15 runs.
import t from 'tap'
import postgres from 'postgres'
import { sql } from 'drizzle-orm'
import { openDatabase } from '../../src/db/client.js'
import { freshDatabaseUrl, TEST_DATABASE_URL, testConfig } from '../helpers/app.js'

const skip = TEST_DATABASE_URL ? false : 'needs PostgreSQL (TEST_DATABASE_URL, which .ci/run sets)'

t.test('a statement after a terminated one fails at once while the database refuses connections', { skip }, async (t) => {
  const url = await freshDatabaseUrl(t)
  const name = new URL(url).pathname.slice(1)
  const admin = postgres(TEST_DATABASE_URL!, { max: 1, onnotice: () => {} })
  t.teardown(async () => {
    await admin.unsafe(`alter database ${name} allow_connections true`)
    await admin.end({ timeout: 1 })
  })
  // One pool slot, so the next statement takes the slot whose statement was killed.
  const handle = await openDatabase(testConfig({ DATABASE_URL: url, DATABASE_POOL_SIZE: '1', DATABASE_QUERY_TIMEOUT: '5000' }))
  t.teardown(() => handle.close())
  const sleeping = handle.db.execute(sql`select pg_sleep(3)`).then(() => null, (err: unknown) => err)
  await new Promise((r) => setTimeout(r, 300))
  await admin.unsafe(`alter database ${name} allow_connections false`)
  await admin.unsafe(`select pg_terminate_backend(pid) from pg_stat_activity where datname = '${name}' and query like 'select pg_sleep%'`)
  t.ok(await sleeping, 'the killed statement failed')
  for (let i = 1; i <= 3; i++) {
    const started = performance.now()
    const err = await handle.db.execute(sql`select 1`).then(() => null, (e: unknown) => e as Error)
    const ms = performance.now() - started
    t.ok(err, `statement ${i} fails: ${String((err as { cause?: Error })?.cause?.message ?? err?.message)}`)
    t.ok(ms < 1500, `at once: ${Math.round(ms)} ms (the deadline is 5000 ms)`)
  }
})
