// Issue 15, reproductions 2 and 3, on the machine's PostgreSQL: a database
// closed to connections (as blue-green migrations and maintenance do) and a
// database turned read-only (the old primary after a failover) answered 500.
// Each is answered 503 with Retry-After within 2 s, never 500; nothing is half
// written; and the service recovers within 5 s of the database coming back,
// without a restart (a read-only answer replaces the pool, so new connections
// find the writable database). The same holds when an administrator
// terminates the service's sessions again and again under load, and when
// every registration keeps losing a serialization conflict (40001), which is
// retried and then answered 503.
import t, { type Test } from 'tap'
import postgres from 'postgres'
import type { App } from '../../src/app.js'
import { buildTestApp, FAST_ARGON2, freshDatabaseUrl, TEST_DATABASE_URL, within } from '../helpers/app.js'
import { register as registered, STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'

const ONLY_POSTGRES = { skip: TEST_DATABASE_URL ? false : 'needs PostgreSQL (TEST_DATABASE_URL, which .ci/run sets): PGlite has no connections to refuse' }
{
  const register = (app: App) => app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { email: uniqueEmail('outage'), password: STRONG_PASSWORD } })

  async function setup(t: Test) {
    const url = await freshDatabaseUrl(t)
    const name = new URL(url).pathname.slice(1)
    const admin = postgres(TEST_DATABASE_URL!, { max: 1, onnotice: () => {} })
    t.teardown(() => admin.end({ timeout: 1 }))
    // The deadline under 2 s, as an operator promising "503 within 2 s" sets it: a connection attempt to a
    // database that refuses connections failed at once in 30 local runs, but in one CI run one attempt was
    // answered only by the (default, 5 s) deadline, a path not found yet (named in the README).
    const app = await buildTestApp(t, { databaseUrl: url, env: { ...FAST_ARGON2, DATABASE_QUERY_TIMEOUT: '1500' } })
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

  const unavailable = (res: { statusCode: number; headers: Record<string, unknown>; body: string }) =>
    res.statusCode === 503 && res.body.includes('"SERVICE_UNAVAILABLE"') && Boolean(res.headers['retry-after'])

  t.test('sessions terminated under load: every answer a success or a 503 within 2 s, every 201 kept, recovery within 5 s', ONLY_POSTGRES, async (t) => {
    const { app, terminate, halfWritten } = await setup(t)
    const known = await registered(app)
    const answers: { op: string; status: number; ms: number; ok: boolean; email?: string }[] = []
    let running = true
    const workers = Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; running; i++) {
        const email = uniqueEmail('terminated')
        const started = performance.now()
        const res = (w + i) % 2
          ? await app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { email, password: STRONG_PASSWORD } })
          : await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: known.email, password: STRONG_PASSWORD } })
        answers.push({
          op: (w + i) % 2 ? 'register' : 'login', status: res.statusCode, ms: performance.now() - started,
          ok: res.statusCode === 200 || res.statusCode === 201 || unavailable(res), ...((w + i) % 2 && res.statusCode === 201 ? { email } : {}),
        })
      }
    })
    await new Promise((r) => setTimeout(r, 500))
    let terminated = 0
    for (const until = Date.now() + 2000; Date.now() < until;) {
      terminated += (await terminate()).filter((row) => row.pg_terminate_backend).length
      await new Promise((r) => setTimeout(r, 100))
    }
    const stoppedAt = performance.now()
    const ms = await within(5000, async () => (await register(app)).statusCode === 201)
    running = false
    await Promise.all(workers)
    const tally: Record<number, number> = {}
    for (const a of answers) tally[a.status] = (tally[a.status] ?? 0) + 1
    t.comment(`${answers.length} requests, ${JSON.stringify(tally)}; ${terminated} sessions terminated`)
    t.ok(terminated > 0, `the service's sessions were terminated (${terminated})`)
    t.same(answers.filter((a) => !a.ok).map((a) => `${a.op} ${a.status}`), [], 'every answer: 200, 201, or 503 SERVICE_UNAVAILABLE with Retry-After (never 500)')
    t.same(answers.filter((a) => a.ms >= 2000).map((a) => `${a.op} ${a.status} in ${Math.round(a.ms)} ms`), [], 'every answer within 2 s')
    t.ok(ms >= 0, `registrations succeed ${ms} ms after the terminations stop (${Math.round(performance.now() - stoppedAt)} ms), without a restart`)
    const emails = answers.flatMap((a) => a.email ? [a.email] : [])
    const check = postgres(app.config.DATABASE_URL, { max: 1, onnotice: () => {} })
    t.teardown(() => check.end({ timeout: 1 }))
    const [kept] = await check`select count(*)::int as n from users where email = any(${emails})`
    t.equal(kept!.n, emails.length, `every registration answered 201 is there (${emails.length})`)
    t.equal(await halfWritten(), 0, 'no account without its organization')
  })

  t.test('a serialization failure that persists: retried, then 503 within 2 s, nothing half-written; recovery once it stops', ONLY_POSTGRES, async (t) => {
    const { app, halfWritten } = await setup(t)
    const direct = postgres(app.config.DATABASE_URL, { max: 1, onnotice: () => {} })
    t.teardown(() => direct.end({ timeout: 1 }))
    // A real 40001 from the server, on the last write of a registration (its session), while switched on.
    // The sequence counts attempts: nextval is not rolled back with the transaction that called it.
    await direct.unsafe(`
      create table fault_switch (on_ boolean not null);
      create sequence fault_attempts;
      create function fault_serialization() returns trigger language plpgsql as $$
      begin
        if exists (select 1 from fault_switch where on_) then
          perform nextval('fault_attempts');
          raise exception 'could not serialize access' using errcode = '40001';
        end if;
        return new;
      end $$;
      create trigger fault_serialization before insert on sessions for each row execute function fault_serialization();
      insert into fault_switch values (true);`)
    const [before] = await direct`select count(*)::int as n from users`
    for (let i = 0; i < 5; i++) {
      const started = performance.now()
      const res = await register(app)
      const ms = performance.now() - started
      t.ok(unavailable(res), `registration ${i + 1}: 503 SERVICE_UNAVAILABLE with Retry-After (got ${res.statusCode})`)
      t.ok(ms < 2000, `answered in ${Math.round(ms)} ms`)
    }
    const [attempts] = await direct`select last_value::int as n from fault_attempts`
    t.equal(attempts!.n, 15, 'each registration was tried 3 times before the 503')
    const [after] = await direct`select count(*)::int as n from users`
    t.equal(after!.n, before!.n, 'no account of the failed registrations exists')
    t.equal(await halfWritten(), 0, 'no account without its organization')
    await direct`update fault_switch set on_ = false`
    const ms = await within(5000, async () => (await register(app)).statusCode === 201)
    t.ok(ms >= 0, `registrations succeed again ${ms} ms after the conflicts stop`)
  })
}
