// The PostgreSQL deadline (src/db/deadline.ts) against a real server: a
// statement, a transaction's statement and a transaction that cannot even
// begin are given up after the deadline with an error the service answers
// with 503, nothing of a given-up transaction is committed, and the pool keeps
// working afterwards. A slow statement (pg_sleep) stands in for a hung server;
// the frozen-server case runs in test/reliability/database-faults.test.ts.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import postgres from 'postgres'
import { drizzle } from 'drizzle-orm/postgres-js'
import { sql } from 'drizzle-orm'
import { QueryTimeoutError, serverDeadline, withDeadline } from '../../src/db/deadline.js'
import { openDatabase } from '../../src/db/client.js'
import { loadConfig } from '../../src/config.js'
import { isDatabaseUnavailable } from '../../src/plugins/errors.js'
import { freshDatabaseUrl, TEST_DATABASE_URL } from '../helpers/app.js'

const DEADLINE_MS = 300
/** A bound on "promptly" that leaves room for a loaded CI machine but is far below the 1.5 s sleep. */
const PROMPT_MS = 1200

t.test('the PostgreSQL deadline', { skip: TEST_DATABASE_URL ? false : 'TEST_DATABASE_URL not set (CI sets it)' }, async (t) => {
  const url = await freshDatabaseUrl(t)
  // As the service's pool: the server ends its own statements past the deadline.
  const client = postgres(url, { max: 2, onnotice: () => {}, connection: serverDeadline(DEADLINE_MS) })
  t.teardown(() => client.end({ timeout: 5 }))
  const db = drizzle(withDeadline(client, DEADLINE_MS, true))
  const table = `deadline_${randomBytes(4).toString('hex')}`
  await client.unsafe(`create table ${table} (id text primary key)`)
  const rows = async () => (await client.unsafe(`select id from ${table} order by id`)).map((r) => r.id as string)

  const timed = async (work: () => Promise<unknown>) => {
    const started = performance.now()
    const outcome = await work().then(() => null, (err: unknown) => err)
    return { err: outcome, ms: performance.now() - started }
  }

  t.test('statements within the deadline run as usual, inside and outside transactions', async (t) => {
    const result = await db.execute(sql`select 41 + 1 as n`)
    t.equal(Number((result as unknown as { n: number }[])[0]!.n), 42)
    await db.transaction(async (tx) => {
      await tx.execute(sql.raw(`insert into ${table} (id) values ('kept')`))
    })
    t.same(await rows(), ['kept'], 'the transaction committed')
  })

  t.test('a statement past the deadline is given up with a 503-class error, and the server ends it', async (t) => {
    const { err, ms } = await timed(() => db.execute(sql`select pg_sleep(1.5)`))
    t.ok(err instanceof Error, 'it fails')
    t.ok(isDatabaseUnavailable(err), `the error handler answers it with 503 (${(err as Error).message})`)
    t.ok(ms < PROMPT_MS, `after ${Math.round(ms)} ms (deadline ${DEADLINE_MS} ms)`)
    // The server's statement_timeout ends it (no cancel request: see the regression test); allow it a moment.
    let sleeping = -1
    for (const until = performance.now() + 800; sleeping !== 0 && performance.now() < until;) {
      sleeping = (await client.unsafe(`select count(*)::int as n from pg_stat_activity where query like 'select pg_sleep%' and state = 'active' and pid <> pg_backend_pid()`))[0]!.n
    }
    t.equal(sleeping, 0, 'the server is no longer running it (statement_timeout)')
    t.equal(Number(((await db.execute(sql`select 1 as n`)) as unknown as { n: number }[])[0]!.n), 1, 'the next statement runs')
  })

  t.test('a transaction whose statement passes the deadline is given up and commits nothing', async (t) => {
    const { err, ms } = await timed(() => db.transaction(async (tx) => {
      await tx.execute(sql.raw(`insert into ${table} (id) values ('half')`))
      await tx.execute(sql`select pg_sleep(1.5)`)
      await tx.execute(sql.raw(`insert into ${table} (id) values ('after')`))
    }))
    t.ok(isDatabaseUnavailable(err), '503-class error')
    t.ok(ms < PROMPT_MS, `given up after ${Math.round(ms)} ms`)
    await new Promise((r) => setTimeout(r, 1600))
    t.same(await rows(), ['kept'], 'neither insert is there, now or once the sleep would have ended')
  })

  // Regression (the hung-database fault test: a registration held 4 s by a frozen server): a session
  // starts in a nested transaction (a savepoint), whose statements ran on postgres.js's own client
  // without the deadline. The server's timeout is off here, as it is while the server is frozen.
  t.test('a statement inside a nested transaction (savepoint) is given up at the deadline too', async (t) => {
    const { err, ms } = await timed(() => db.transaction(async (tx) => {
      await tx.execute(sql`set local statement_timeout = 0`)
      await tx.execute(sql.raw(`insert into ${table} (id) values ('outer')`))
      await tx.transaction(async (nested) => {
        await nested.execute(sql.raw(`insert into ${table} (id) values ('nested')`))
        await nested.execute(sql`select pg_sleep(3)`)
      })
    }))
    t.ok(isDatabaseUnavailable(err), `503-class error: ${(err as Error)?.message}`)
    t.ok(ms < PROMPT_MS, `given up after ${Math.round(ms)} ms (deadline ${DEADLINE_MS} ms)`)
    await new Promise((r) => setTimeout(r, 3200))
    t.same(await rows(), ['kept'], 'neither the outer nor the nested insert is committed, even once the sleep ended')
  })

  t.test('a transaction that cannot begin in time never runs its body', async (t) => {
    // Both connections busy for 1.5 s: BEGIN cannot get one before the deadline.
    const sleepPastTheDeadline = () => client.begin(async (s) => { await s`set local statement_timeout = 0`; await s`select pg_sleep(1.5)` })
    const busy = [sleepPastTheDeadline(), sleepPastTheDeadline()].map((q) => q.then(() => {}))
    await new Promise((r) => setTimeout(r, 100))
    let bodyRan = false
    const { err, ms } = await timed(() => db.transaction(async (tx) => {
      bodyRan = true
      await tx.execute(sql.raw(`insert into ${table} (id) values ('late')`))
    }))
    t.ok(err instanceof QueryTimeoutError, `given up: ${(err as Error).message}`)
    t.ok(ms < PROMPT_MS, `after ${Math.round(ms)} ms`)
    await Promise.all(busy)
    await new Promise((r) => setTimeout(r, 200))
    t.equal(bodyRan, false, 'its body never ran, even once a connection was free')
    t.same(await rows(), ['kept'], 'nothing was written')
  })

  t.test('the server ending a statement (57014) is a 503, like the client deadline', async (t) => {
    const serverOnly = postgres(url, { max: 1, onnotice: () => {}, connection: serverDeadline(100) })
    t.teardown(() => serverOnly.end({ timeout: 5 }))
    const err = await drizzle(serverOnly).execute(sql`select pg_sleep(1)`).then(() => null, (e: unknown) => e)
    t.equal(((err as Error).cause as { code?: string })?.code, '57014', 'statement_timeout ended it')
    t.ok(isDatabaseUnavailable(err), 'answered 503')
  })

  t.test('a transaction whose body carries on after its deadline rolls back, never commits', async (t) => {
    const err = await db.transaction(async (tx) => {
      await tx.execute(sql.raw(`insert into ${table} (id) values ('swallowed')`))
      await tx.execute(sql`select pg_sleep(0.5)`).catch(() => {}) // a body that swallows the timeout
      await new Promise((r) => setTimeout(r, 300))
    }).then(() => null, (e: unknown) => e)
    t.ok(isDatabaseUnavailable(err), '503-class error')
    await new Promise((r) => setTimeout(r, 300))
    t.notOk((await rows()).includes('swallowed'), 'nothing of it is committed')
  })

  t.test("the service's pool carries the deadline as statement_timeout", async (t) => {
    const config = loadConfig({ DATABASE_URL: url, DATABASE_QUERY_TIMEOUT: '1234', SECRET_KEY: 'x'.repeat(44) })
    const handle = await openDatabase(config)
    t.teardown(() => handle.close())
    const [row] = await handle.db.execute(sql`show statement_timeout`) as unknown as { statement_timeout: string }[]
    t.equal(row!.statement_timeout, '1234ms')
  })
})
