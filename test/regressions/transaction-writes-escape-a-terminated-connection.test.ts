// Regression: a registration committed its account without its organization
// membership (CI, test database-unavailable "sessions terminated under load",
// once: "no account without its organization"). postgres.js 3.4 reserves one
// connection for a transaction; when the server ends that connection while the
// transaction's body is between statements, the transaction is rejected, but
// the body goes on, and the pool may already have opened the same connection
// slot again for a waiting statement. The body's next statements then ran on
// the new server session, outside any transaction: each committed on its own
// (porsager/postgres#1216, PR #1215). scripts/patch-postgres.mjs makes a
// transaction whose connection closed refuse every later statement.
import t from 'tap'
import postgres from 'postgres'
import { sql } from 'drizzle-orm'
import { openDatabase } from '../../src/db/client.js'
import { freshDatabaseUrl, TEST_DATABASE_URL, testConfig } from '../helpers/app.js'

const skip = TEST_DATABASE_URL ? false : 'needs PostgreSQL (TEST_DATABASE_URL, which .ci/run sets)'

t.test('statements of a transaction whose connection was terminated never run outside it', { skip }, async (t) => {
  const url = await freshDatabaseUrl(t)
  const name = new URL(url).pathname.slice(1)
  const admin = postgres(TEST_DATABASE_URL!, { max: 1, onnotice: () => {} })
  t.teardown(() => admin.end({ timeout: 1 }))
  // One pool slot: the statement waiting for it gets the very connection object the transaction holds.
  const handle = await openDatabase(testConfig({ DATABASE_URL: url, DATABASE_POOL_SIZE: '1', DATABASE_QUERY_TIMEOUT: '5000' }))
  t.teardown(() => handle.close())
  await handle.db.execute(sql`create table written (step text not null)`)

  let release!: () => void
  const gate = new Promise<void>((r) => { release = r })
  let reached!: () => void
  const between = new Promise<void>((r) => { reached = r })
  let bodyDone!: (outcome: unknown) => void
  const laterStatement = new Promise<unknown>((r) => { bodyDone = r })
  const transaction = handle.db.transaction(async (tx) => {
    await tx.execute(sql`insert into written values ('first, inside the transaction')`)
    reached()
    await gate // the body waits on something else (argon2, a lock, the network)
    await tx.execute(sql`insert into written values ('second, after the connection died')`)
      .then(() => bodyDone(null), (err: unknown) => { bodyDone(err); throw err })
  }).then(() => null, (err: unknown) => err)

  await between
  // A statement queued behind the transaction, so the pool reopens the slot once it closes.
  const waiting = handle.db.execute(sql`select 1 as one`).then(() => 'answered', () => 'failed')
  await admin.unsafe(`select pg_terminate_backend(pid) from pg_stat_activity where datname = '${name}' and state like 'idle in transaction%'`)
  t.equal(await waiting, 'answered', 'the waiting statement ran on the reopened slot')
  release()

  t.ok(await transaction, 'the transaction failed')
  t.match(String(((await laterStatement) as { cause?: Error })?.cause?.message), /CONNECTION_CLOSED/, 'the statement after the connection died was refused')
  const direct = postgres(url, { max: 1, onnotice: () => {} })
  t.teardown(() => direct.end({ timeout: 1 }))
  const rows = await direct`select step from written`
  t.same(rows.map((r) => r.step), [], 'nothing of the transaction was written')
})
