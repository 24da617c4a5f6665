// The database goes away under load and comes back (SPEC §2, §3): Portcullis
// runs as a real process on a PostgreSQL cluster this test owns, so the test
// can stop it (pg_ctl stop -m fast) and start it again.
//   - while it is down, what needs it (register, login, readyz) is a quick
//     503 SERVICE_UNAVAILABLE with Retry-After, never a 500 and never a hang;
//     what does not (a session token whose membership is cached, a cached API
//     key) keeps answering 200; me answers from its cache or is a 503;
//   - once it is back, the same process recovers within 5 s;
//   - no registration is half-written.
// Three faults: a stop after the load has drained (no transaction in flight),
// a hang (SIGSTOP: connections stay open, nothing answers), and a stop in the
// middle of the load (registrations' transactions cut off).
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import postgres from 'postgres'
import { FAST_ARGON2 } from '../helpers/app.js'
import { STRONG_PASSWORD } from '../helpers/api.js'
import { startServer, type RunningServer } from '../helpers/server.js'
import { findPostgresBinaries, json, latency, Load, sleep, startPostgres, tally, timed, type OwnPostgres, type Sample, type Timed } from './infra.js'

const binaries = findPostgresBinaries()
const LIMIT_MS = 2000
const RECOVERY_MS = 5000
/** How long a request may take before the test calls it hung (long enough to measure how long it really hangs). */
const DEADLINE_MS = 30_000

/** The service's PostgreSQL deadline in this test (default 5000 ms): a hung database must be a 503 within LIMIT_MS. */
const QUERY_TIMEOUT_MS = 1000

type Op = 'register' | 'login' | 'me' | 'verify-key' | 'verify-session'
const NEEDS_DB: Op[] = ['register', 'login']
const CACHED: Op[] = ['verify-key', 'verify-session']
const describe = (s: Sample<Op>) => `${s.op} [${s.phase}]: ${s.status ?? s.error} ${s.code ?? ''} in ${Math.round(s.ms)} ms`

interface Fixture {
  pg: OwnPostgres
  server: RunningServer
  tag: string
  api(path: string): string
  ownerEmail: string
  session: Record<string, string>
  apiKey: Record<string, string>
  /** Every email a registration was tried for, and those answered 201. */
  attempted: string[]
  registered: Set<string>
  nextEmail(): string
  register(email?: string): Promise<Timed>
  send(op: Op): Promise<Timed>
}

async function setUp(t: Test, pg: OwnPostgres): Promise<Fixture> {
  const server = await startServer(t, {
    ...FAST_ARGON2, ARGON2_CONCURRENCY: '2', LOG_LEVEL: 'warn',
    DATABASE_URL: pg.url, SECRET_KEY: randomBytes(32).toString('base64'), DATABASE_QUERY_TIMEOUT: String(QUERY_TIMEOUT_MS),
  })
  const tag = randomBytes(4).toString('hex')
  let n = 0
  const f: Fixture = {
    pg, server, tag,
    api: (path) => `${server.base}/api/v1${path}`,
    ownerEmail: '', session: {}, apiKey: {}, attempted: [], registered: new Set(),
    nextEmail: () => `load.${tag}.${++n}@example.com`,
    async register(email = f.nextEmail()) {
      f.attempted.push(email)
      const res = await timed(f.api('/auth/register'), json({ email, password: STRONG_PASSWORD, company_name: `Load ${tag}` }), DEADLINE_MS)
      if (res.status === 201) f.registered.add(email)
      return res
    },
    send(op) {
      switch (op) {
        case 'register': return f.register()
        case 'login': return timed(f.api('/auth/login'), json({ email: f.ownerEmail, password: STRONG_PASSWORD }), DEADLINE_MS)
        case 'me': return timed(f.api('/auth/me'), { headers: f.session }, DEADLINE_MS)
        case 'verify-key': return timed(f.api('/auth/verify'), { headers: f.apiKey }, DEADLINE_MS)
        case 'verify-session': return timed(f.api('/auth/verify'), { headers: f.session }, DEADLINE_MS)
      }
    },
  }
  // An account with a session token and an API key, each used once so that the
  // membership and the key sit in the instance's caches before any fault.
  f.ownerEmail = f.nextEmail()
  const reg = await f.register(f.ownerEmail)
  if (reg.status !== 201) throw new Error(`owner registration: ${reg.status} ${JSON.stringify(reg.body)}`)
  // Accept: JSON, so that forward-auth answers with its body (the tests read `method` there).
  f.session = { authorization: `Bearer ${reg.body.access_token}`, accept: 'application/json' }
  const created = await timed(f.api('/api-keys'), json({ name: 'load', scopes: ['api_keys:read'] }, f.session))
  if (created.status !== 201) throw new Error(`API key: ${created.status} ${JSON.stringify(created.body)}`)
  f.apiKey = { 'x-api-key': created.body.key as string, accept: 'application/json' }
  for (const headers of [f.apiKey, f.session]) {
    const res = await timed(f.api('/auth/verify'), { headers })
    if (res.status !== 200) throw new Error(`verify before the fault: ${res.status} ${JSON.stringify(res.body)}`)
  }
  return f
}

/**
 * Probes every 100 ms (without waiting for a slow probe) until a registration
 * and readyz have both succeeded: the time that took, or -1. Also returns the
 * probes' results, so that hangs after the database came back show.
 */
async function waitForRecovery(f: Fixture, within: number): Promise<{ ms: number; probes: Timed[] }> {
  const started = Date.now()
  const probes: Timed[] = []
  const inFlight: Promise<unknown>[] = []
  let registered = -1
  let ready = -1
  while (Date.now() - started <= within && (registered < 0 || ready < 0) && f.server.child.exitCode === null) {
    inFlight.push(f.register().then((r) => { probes.push(r); if (r.status === 201 && registered < 0) registered = Date.now() - started }))
    inFlight.push(timed(`${f.server.base}/readyz`, {}, DEADLINE_MS).then((r) => { probes.push(r); if (r.status === 200 && ready < 0) ready = Date.now() - started }))
    await sleep(100)
  }
  await Promise.all(inFlight)
  return { ms: registered >= 0 && ready >= 0 ? Math.max(registered, ready) : -1, probes }
}

function summarize(t: Test, load: Load<Op>) {
  for (const phase of [...new Set(load.samples.map((s) => s.phase))]) {
    const part = (name: string, ops: Op[]) => `${name} ${JSON.stringify(tally(load.in(phase, ops)))} ${latency(load.in(phase, ops))}`
    t.comment(`${phase}: ${part('register+login', NEEDS_DB)}; ${part('me', ['me'])}; ${part('verify', CACHED)}`)
  }
}

t.test('PostgreSQL stops and starts under load', { skip: typeof binaries === 'string' ? binaries : false }, async (t) => {
  if (typeof binaries === 'string') return
  const pg = await startPostgres(t, binaries)
  const f = await setUp(t, pg)
  t.comment(`PostgreSQL of this test on 127.0.0.1:${pg.port}; Portcullis pid ${f.server.child.pid}`)

  // ---- outage 1: the load drains, the database stops, the load goes on against it
  await t.test('outage with no transaction in flight', async (t) => {
    const load = new Load(f.send, [{ ops: [...NEEDS_DB, 'me'], workers: 6 }, { ops: CACHED, workers: 2 }]).start()
    await sleep(1500)
    await load.stop()
    await pg.stop()
    load.phase = 'down'
    load.start()
    // Explicit probes (all at once, so that a hang costs its own time only once).
    const [register, login, me, readyz, verifyKey, verifySession, healthz] = await Promise.all([
      f.register(),
      f.send('login'), f.send('me'),
      timed(`${f.server.base}/readyz`, {}, DEADLINE_MS),
      f.send('verify-key'), f.send('verify-session'),
      timed(`${f.server.base}/healthz`),
    ])
    await sleep(3000)
    await load.stop()
    load.phase = 'recovering'
    load.start()
    const restarted = Date.now()
    await pg.start()
    const pgStartMs = Date.now() - restarted
    const recovery = await waitForRecovery(f, DEADLINE_MS)
    load.phase = 'after'
    await sleep(1500)
    await load.stop()
    t.comment(`pg_ctl start: ${pgStartMs} ms; register and readyz succeeded again ${recovery.ms} ms after the database accepted `
      + `connections; recovery probes: ${JSON.stringify(tally(recovery.probes))} ${latency(recovery.probes)}`)
    summarize(t, load)
    const probes = { register, login, me }

    t.test('while down: readyz is 503, liveness 200', async (t) => {
      t.equal(readyz.status, 503, `readyz 503 (${Math.round(readyz.ms)} ms)`)
      t.equal(readyz.code, 'SERVICE_UNAVAILABLE')
      t.ok(Number(readyz.retryAfter) > 0, `Retry-After: ${readyz.retryAfter}`)
      t.equal(healthz.status, 200, 'healthz 200: the process itself is fine')
    })

    t.test('while down: the cached API key and a session token with a cached membership verify', async (t) => {
      t.equal(verifyKey.status, 200, `cached API key: 200 (${Math.round(verifyKey.ms)} ms)`)
      t.equal(verifyKey.body?.method, 'api_key')
      t.equal(verifySession.status, 200, `session token: 200 (${Math.round(verifySession.ms)} ms)`)
      t.equal(verifySession.body?.method, 'session')
      t.same(load.in('down', CACHED).filter((s) => s.status !== 200 || s.ms >= LIMIT_MS).map(describe), [],
        `every verification under load: 200 within ${LIMIT_MS} ms`)
      t.ok(load.in('down', CACHED).length > 20, `verifications were sent while down (${load.in('down', CACHED).length})`)
    })

    t.test('while down: register and login are 503 SERVICE_UNAVAILABLE with Retry-After, never 500', async (t) => {
      const unavailable = (s: Timed) => s.status === 503 && s.code === 'SERVICE_UNAVAILABLE' && Number(s.retryAfter) > 0
      for (const [name, res] of Object.entries(probes)) {
        if (name === 'me' && res.status === 200) continue // answered from the profile cache
        t.equal(res.status, 503, `${name}: 503`)
        t.equal(res.code, 'SERVICE_UNAVAILABLE', `${name}: SERVICE_UNAVAILABLE`)
        t.ok(Number(res.retryAfter) > 0, `${name}: Retry-After (${res.retryAfter})`)
      }
      t.notMatch(JSON.stringify(probes), /ECONN|127\.0\.0\.1|select |insert /i, 'no driver detail in any body')
      t.same(load.in('down', NEEDS_DB).filter((s) => !unavailable(s)).map(describe), [],
        'the load: every register and login is a 503 with Retry-After')
      t.same(load.in('down', ['me']).filter((s) => s.status !== 200 && !unavailable(s)).map(describe), [],
        'the load: me is a 200 (from its cache) or a 503 with Retry-After')
      t.same(load.samples.filter((s) => s.status === 500).map(describe), [], 'never a 500, in any phase')
    })

    t.test(`while down: nothing hangs past ${LIMIT_MS} ms`, async (t) => {
      for (const [name, res] of Object.entries({ ...probes, readyz })) t.ok(res.ms < LIMIT_MS, `${name}: ${Math.round(res.ms)} ms`)
      t.same(load.samples.filter((s) => s.ms >= LIMIT_MS).map(describe), [], `the load: every request within ${LIMIT_MS} ms`)
      t.same(recovery.probes.filter((s) => s.ms >= LIMIT_MS).map((s) => `${s.status} in ${Math.round(s.ms)} ms`), [],
        `requests sent once the database is back: within ${LIMIT_MS} ms`)
      t.comment(`needs-db while down: ${latency(load.in('down', NEEDS_DB))}`)
    })

    t.test(`recovers within ${RECOVERY_MS} ms without a restart`, async (t) => {
      t.ok(recovery.ms >= 0 && recovery.ms <= RECOVERY_MS, `register 201 and readyz 200 again after ${recovery.ms} ms`)
      t.same(load.in('after').filter((s) => s.status !== 200 && s.status !== 201).map(describe), [], 'afterwards everything succeeds')
    })

    t.test('the process lived through it', async (t) => {
      t.equal(f.server.child.exitCode, null, 'still running')
      t.same(load.samples.filter((s) => s.status === null).map(describe), [], 'no connection error')
    })
  })

  // ---- the database hangs: open connections get no answer, new ones are accepted by the kernel and then nothing
  await t.test('the database hangs for 4 s', async (t) => {
    if (f.server.child.exitCode !== null) {
      t.comment('skipped: the process died in an earlier fault')
      return
    }
    const load = new Load(f.send, [{ ops: NEEDS_DB, workers: 4 }, { ops: CACHED, workers: 2 }]).start()
    await sleep(1000)
    await pg.freeze()
    load.phase = 'hung'
    const probes = Promise.all([f.register(), f.send('login'), timed(`${f.server.base}/readyz`, {}, DEADLINE_MS)])
    const [verifyKey, verifySession] = await Promise.all([f.send('verify-key'), f.send('verify-session')])
    await sleep(4000)
    pg.thaw()
    const thawed = Date.now()
    load.phase = 'thawed'
    const [register, login, readyz] = await probes
    const recovery = await waitForRecovery(f, DEADLINE_MS)
    await sleep(1000)
    await load.stop()
    summarize(t, load)
    t.comment(`while hung: register ${register.status} in ${Math.round(register.ms)} ms, login ${login.status} in ${Math.round(login.ms)} ms, `
      + `readyz ${readyz.status} in ${Math.round(readyz.ms)} ms; recovered ${recovery.ms} ms after the thaw`)

    t.test('while hung: cached credentials verify at once', async (t) => {
      t.equal(verifyKey.status, 200, `cached API key: 200 in ${Math.round(verifyKey.ms)} ms`)
      t.equal(verifySession.status, 200, `session token: 200 in ${Math.round(verifySession.ms)} ms`)
      t.same(load.in('hung', CACHED).filter((s) => s.status !== 200 || s.ms >= LIMIT_MS).map(describe), [],
        `every verification under load: 200 within ${LIMIT_MS} ms`)
    })
    t.test(`while hung: register, login and readyz answer 503 within ${LIMIT_MS} ms`, async (t) => {
      for (const [name, res] of Object.entries({ register, login, readyz })) {
        t.equal(res.status, 503, `${name}: 503`)
        t.ok(res.ms < LIMIT_MS, `${name}: ${Math.round(res.ms)} ms`)
      }
    })
    t.test('once it answers again, everything works (no 500, no restart)', async (t) => {
      t.ok(recovery.ms >= 0 && recovery.ms <= RECOVERY_MS, `register 201 and readyz 200 within ${RECOVERY_MS} ms of the thaw (${recovery.ms} ms)`)
      t.ok(Date.now() - thawed < DEADLINE_MS, 'the requests held up by the hang were answered')
      const unavailable = (s: Sample<Op>) => s.status === 503 && s.code === 'SERVICE_UNAVAILABLE'
      t.same(load.samples.filter((s) => s.status === null || (s.status >= 500 && !unavailable(s))).map(describe), [],
        'no 500, no connection error')
      t.same(load.samples.filter((s) => unavailable(s) && !s.phase.includes('hung')).map(describe), [],
        'the 503s (the deadline) are all requests in flight while it hung')
      // A registration's session starts in a nested transaction, which once ran without the deadline: held 4 s.
      t.same(load.samples.filter((s) => s.ms >= LIMIT_MS).map(describe), [], `the load: every request answered within ${LIMIT_MS} ms`)
      t.equal(f.server.child.exitCode, null, 'still running')
    })
  })

  // ---- outage 2: the database stops in the middle of the load (registrations cut off mid-transaction)
  await t.test('outage with transactions in flight', async (t) => {
    if (f.server.child.exitCode !== null) {
      t.comment('skipped: the process died in an earlier fault')
      return
    }
    const load = new Load(f.send, [{ ops: ['register', 'register', 'login'], workers: 10 }, { ops: CACHED, workers: 2 }]).start()
    await sleep(1500)
    load.phase = 'stopping'
    await pg.stop()
    load.phase = 'down'
    await sleep(1500)
    const alive = f.server.child.exitCode === null
    load.phase = 'recovering'
    await pg.start()
    const recoveryMs = alive ? (await waitForRecovery(f, DEADLINE_MS)).ms : -1
    await load.stop()
    summarize(t, load)
    const driverBug = /wrote to a closed connection|reading 'write'/.test(f.server.logs())
    t.comment(`recovered ${recoveryMs} ms after the database accepted connections; `
      + `postgres.js nextWrite TypeError ${driverBug ? 'happened' : 'did not happen'} in this run`)
    // More requests at once than the pool has connections, so that every pool slot is used.
    const afterwards: Timed[] = []
    for (let round = 0; alive && f.server.child.exitCode === null && round < 3; round++) {
      afterwards.push(...await Promise.all(Array.from({ length: 30 }, (_, i) => f.send(i % 3 ? 'login' : 'register'))))
    }
    t.comment(`afterwards: ${JSON.stringify(tally(afterwards))} ${latency(afterwards)}`)

    t.test('the process survives transactions cut off by the stop', async (t) => {
      t.ok(alive && f.server.child.exitCode === null, `still running (exit code ${f.server.child.exitCode})`)
      t.ok(recoveryMs >= 0, 'and it recovered')
    })

    t.test('afterwards every connection of the pool works', async (t) => {
      t.ok(afterwards.length > 0, 'requests were sent after the recovery')
      t.same(afterwards.filter((s) => (s.status !== 200 && s.status !== 201) || s.ms >= LIMIT_MS)
        .map((s) => `${s.status ?? s.error} ${s.code ?? ''} in ${Math.round(s.ms)} ms`), [], `3 × 30 requests at once: 200/201 within ${LIMIT_MS} ms`)
    })
  })

  // ---- whatever happened to the process, the data is consistent
  t.test('no registration is half-written', async (t) => {
    const sql = postgres(pg.url, { max: 1, onnotice: () => {} })
    t.teardown(() => sql.end({ timeout: 5 }))
    const users = await sql<{ email: string; owners: number; memberships: number; own_orgs: number; sessions: number }[]>`
      select u.email,
             count(m.user_id) filter (where m.role = 'owner')::int as owners,
             count(m.user_id)::int as memberships,
             count(o.id)::int as own_orgs,
             (select count(*) from sessions s where s.user_id = u.id)::int as sessions
        from users u
        left join memberships m on m.user_id = u.id
        left join organizations o on o.id = m.org_id and o.name = ${`Load ${f.tag}`}
       where u.email = any(${f.attempted})
       group by u.id, u.email`
    const byEmail = new Map(users.map((u) => [u.email, u]))
    t.same([...f.registered].filter((e) => !byEmail.has(e)), [], 'every registration answered 201 is in the database')
    t.same(users.filter((u) => u.owners !== 1 || u.memberships !== 1 || u.own_orgs !== 1).map((u) => u.email), [],
      'every user of the load has exactly one membership: owner of its own organization')
    t.same(users.filter((u) => u.sessions < 1).map((u) => u.email), [], 'every registered user has its first session')
    const [orphans] = await sql<{ n: number }[]>`
      select count(*)::int as n from organizations o where not exists (select 1 from memberships m where m.org_id = o.id)`
    t.equal(orphans!.n, 0, 'no organization without a member')
    t.comment(`${f.attempted.length} registrations attempted, ${f.registered.size} answered 201, ${users.length} users in the database`)
  })
})
