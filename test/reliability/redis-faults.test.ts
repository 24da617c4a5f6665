// Redis goes away and comes back (SPEC §2, §6): two instances share one
// database and one Redis (rate-limit counters, revocation fan-out). Redis is
// one this test starts (redis-server on a free port), so it can be stopped;
// without redis-server, a cuttable proxy in front of TEST_REDIS_URL.
//   - with Redis: the two instances share one login limit;
//   - Redis stopped: logins still work (limits fail open: no 429, no 500,
//     quick), and a logout or key revocation on one instance still reaches the
//     other within 1 s (events go out on PostgreSQL NOTIFY as well);
//   - Redis back: the shared limit works again;
//   - Redis hung (SIGSTOP: connections open, nothing answers): the same.
import t, { type Test } from 'tap'
import { randomInt } from 'node:crypto'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import type { App } from '../../src/app.js'
import { buildTestApp, FAST_ARGON2, sharedDatabase, TEST_DATABASE_URL, TEST_REDIS_URL, within } from '../helpers/app.js'
import { bearer, register, STRONG_PASSWORD } from '../helpers/api.js'
import { after, hasRedisServer, startRedisProxy, startRedisServer, type OwnRedis } from './infra.js'

const LIMIT = 4
const LATENCY_MS = 2000
const PROPAGATION_MS = 1000
const useServer = hasRedisServer()
const skip = useServer || TEST_REDIS_URL ? false : 'neither redis-server on PATH nor TEST_REDIS_URL'

type Headers = Record<string, string>

interface Timed { res: LightMyRequestResponse; ms: number }
/** A request that had not answered after HUNG_MS: its response never arrived in time. */
const HUNG_MS = 5000
const hung = { statusCode: 0, headers: {}, json: () => ({}) } as unknown as LightMyRequestResponse

async function timedInject(app: App, opts: InjectOptions): Promise<Timed> {
  const started = performance.now()
  const res = await Promise.race([app.inject(opts), after(HUNG_MS, hung)])
  return { res, ms: performance.now() - started }
}

/** A client IP of its own (through the trusted proxy): no other test or run on this Redis shares its counter. */
const newClient = (): Headers => ({ 'x-forwarded-for': `10.${randomInt(256)}.${randomInt(256)}.${randomInt(1, 255)}` })

const login = (app: App, email: string, client: Headers) => timedInject(app, {
  method: 'POST', url: '/api/v1/auth/login', headers: client, payload: { email, password: STRONG_PASSWORD },
})

const verify = (app: App, headers: Headers) => app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers })

/** Whether an instance's rate-limit store is Redis again: a counted request shows one less remaining than the maximum. */
// Probed on the login limit (a store round trip per request); the per-credential budget is counted
// in process and only synced to Redis in batches (test/abuse/request-budget), so it always answers.
async function countsInRedis(app: App): Promise<boolean> {
  const res = await app.inject({
    method: 'POST', url: '/api/v1/auth/login', headers: newClient(), payload: { email: `probe-${randomInt(1e9)}@example.com`, password: STRONG_PASSWORD },
  })
  return Number(res.headers['ratelimit-remaining']) === Number(res.headers['ratelimit-limit']) - 1
}

t.test('Redis stops, hangs and comes back under two instances', { skip }, async (t) => {
  const redis: OwnRedis = useServer ? await startRedisServer(t) : await startRedisProxy(t, TEST_REDIS_URL!)
  const shared = await sharedDatabase(t)
  const env = { ...FAST_ARGON2, REDIS_URL: redis.url, RATE_LIMIT_LOGIN: String(LIMIT), TRUST_PROXY: '127.0.0.1' }
  const A = await buildTestApp(t, { ...shared, env })
  const B = await buildTestApp(t, { ...shared, env })
  t.comment(`Redis: ${redis.kind} at ${redis.url}; database: ${TEST_DATABASE_URL ? 'PostgreSQL (LISTEN/NOTIFY)' : 'shared PGlite (in-process NOTIFY)'}`)
  const owner = await register(A)

  /** Logins A, A, B, B from one new client count down one shared budget; the next is 429 on both. */
  async function assertSharedLimit(t: Test) {
    const client = newClient()
    for (const [i, [app, name]] of ([[A, 'A'], [A, 'A'], [B, 'B'], [B, 'B']] as [App, string][]).entries()) {
      const { res } = await login(app, owner.email, client)
      t.equal(res.statusCode, 200, `login ${i + 1} on ${name}`)
      t.equal(res.headers['ratelimit-remaining'], String(LIMIT - 1 - i), 'the count continues across instances')
    }
    for (const [app, name] of [[A, 'A'], [B, 'B']] as [App, string][]) {
      const { res } = await login(app, owner.email, client)
      t.equal(res.statusCode, 429, `login ${LIMIT + 1} on ${name}: 429`)
      t.equal(res.json().error.code, 'RATE_LIMITED')
    }
  }

  /** Logins beyond the limit from one client, alternating instances: all 200, quick, never a 500. */
  async function assertFailsOpen(t: Test) {
    const client = newClient()
    const results: Timed[] = []
    for (let i = 0; i < LIMIT * 2; i++) results.push(await login(i % 2 ? B : A, owner.email, client))
    t.same(results.map((r) => r.res.statusCode), Array(LIMIT * 2).fill(200), `${LIMIT * 2} logins (limit ${LIMIT}) from one client: all 200`)
    const slowest = Math.max(...results.map((r) => r.ms))
    t.ok(slowest < LATENCY_MS, `every login within ${LATENCY_MS} ms (slowest ${Math.round(slowest)} ms)`)
    t.comment(`login latency with Redis unavailable: ${results.map((r) => Math.round(r.ms)).join(', ')} ms`)
  }

  /** A logout and an API-key revocation on A reach B within 1 s; returns how long each request and propagation took. */
  async function assertRevocationReaches(t: Test) {
    const session = await login(A, owner.email, newClient())
    const token = bearer(session.res.json().access_token)
    t.equal((await verify(B, token)).statusCode, 200, 'B accepts the new session token')
    const logout = await timedInject(A, { method: 'POST', url: '/api/v1/auth/logout', headers: token })
    t.equal(logout.res.statusCode, 204, `logout on A: 204 in ${Math.round(logout.ms)} ms`)
    t.ok(logout.ms < LATENCY_MS, `logout answered within ${LATENCY_MS} ms`)
    const sessionMs = await within(PROPAGATION_MS, async () => (await verify(B, token)).statusCode === 401)
    t.ok(sessionMs >= 0, `B rejects the logged-out token within ${PROPAGATION_MS} ms (${sessionMs} ms)`)

    const created = await A.inject({ method: 'POST', url: '/api/v1/api-keys', headers: bearer(owner.access_token), payload: { name: 'redis-fault', scopes: ['api_keys:read'] } })
    t.equal(created.statusCode, 201, 'API key created')
    const key = { 'x-api-key': created.json().key as string }
    t.equal((await verify(B, key)).statusCode, 200, 'B accepts the key (now in its cache)')
    const revoke = await timedInject(A, { method: 'DELETE', url: `/api/v1/api-keys/${created.json().id}`, headers: bearer(owner.access_token) })
    t.equal(revoke.res.statusCode, 204, `revocation on A: 204 in ${Math.round(revoke.ms)} ms`)
    t.ok(revoke.ms < LATENCY_MS, `revocation answered within ${LATENCY_MS} ms`)
    const keyMs = await within(PROPAGATION_MS, async () => (await verify(B, key)).statusCode === 401)
    t.ok(keyMs >= 0, `B rejects the revoked key within ${PROPAGATION_MS} ms (${keyMs} ms)`)
    t.comment(`logout ${Math.round(logout.ms)} ms, reached B in ${sessionMs} ms; key revocation ${Math.round(revoke.ms)} ms, reached B in ${keyMs} ms`)
  }

  await t.test('with Redis: the instances share one limit', async (t) => {
    t.ok(await countsInRedis(A) && await countsInRedis(B), 'both instances count in Redis')
    await assertSharedLimit(t)
    await assertRevocationReaches(t)
  })

  await redis.stop()

  await t.test('Redis stopped: logins work (limits fail open), revocation still reaches the other instance', async (t) => {
    await assertFailsOpen(t)
    await assertRevocationReaches(t)
    t.notOk(await countsInRedis(A), 'A no longer counts (fails open)')
  })

  await t.test('Redis back: the shared limit works again', async (t) => {
    await redis.start()
    const reconnectMs = await within(10_000, async () => await countsInRedis(A) && await countsInRedis(B))
    t.ok(reconnectMs >= 0, `both instances count in Redis again (${reconnectMs} ms after it came back)`)
    await assertSharedLimit(t)
    await assertRevocationReaches(t)
  })

  if (!redis.freeze || !redis.thaw) {
    t.comment('a proxy cannot hang like a stopped redis-server: the hung-Redis part needs redis-server on PATH')
    return
  }
  const { freeze, thaw } = redis
  await t.test('Redis hung (SIGSTOP): logins still work and nothing waits on it for long', async (t) => {
    freeze()
    t.teardown(thaw)
    await assertFailsOpen(t)
    await t.test('logout and key revocation answer quickly and reach the other instance', (t) => assertRevocationReaches(t))
  })
  await t.test('Redis thawed: the shared limit works again', async (t) => {
    const ms = await within(10_000, async () => await countsInRedis(A) && await countsInRedis(B))
    t.ok(ms >= 0, `both instances count in Redis again (${ms} ms)`)
    await assertSharedLimit(t)
  })
})
