// The per-credential budget (RATE_LIMIT_GLOBAL) is counted in process and
// shared through Redis in batches, so no request waits for Redis. These tests
// hold it to its rules: whole-minute windows on the service clock, the exact
// limit under concurrency, a count that continues across instances once a
// batch is sent, and counts kept (never lost) while Redis is away.
import t from 'tap'
import { Redis } from 'ioredis'
import { randomBytes, randomInt } from 'node:crypto'
import { RequestBudget, SYNC_INTERVAL_MS } from '../../src/lib/request-budget.js'
import { buildTestApp, FakeClock, sharedDatabase, TEST_REDIS_URL, within } from '../helpers/app.js'
import { createKey, newTenant, TENANCY_ENV } from '../helpers/orgs.js'
import { generateApiKey } from '../../src/lib/api-key-format.js'
import { hasRedisServer, startRedisServer } from '../reliability/infra.js'
import { bearer, register } from '../helpers/api.js'

const MINUTE = 60_000
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

t.test('windows are whole minutes of the clock: the count, the remaining and the reset follow it', async (t) => {
  const clock = new FakeClock(Math.floor(Date.now() / MINUTE) * MINUTE) // a whole minute
  const budget = new RequestBudget({ max: 3, windowMs: MINUTE, clock })
  clock.advance(15_000)
  t.same(budget.spend('a'), { allowed: true, limit: 3, remaining: 2, resetSeconds: 45 })
  t.same(budget.spend('a'), { allowed: true, limit: 3, remaining: 1, resetSeconds: 45 })
  t.same(budget.spend('b'), { allowed: true, limit: 3, remaining: 2, resetSeconds: 45 }, 'another caller has its own count')
  t.same(budget.spend('a'), { allowed: true, limit: 3, remaining: 0, resetSeconds: 45 })
  clock.advance(44_500)
  t.same(budget.spend('a'), { allowed: false, limit: 3, remaining: 0, resetSeconds: 1 }, 'the 4th in the window is refused')
  clock.advance(500)
  t.same(budget.spend('a'), { allowed: true, limit: 3, remaining: 2, resetSeconds: 60 }, 'a new minute, a new count')
})

t.test('under concurrency exactly RATE_LIMIT_GLOBAL requests of one session pass', async (t) => {
  const app = await buildTestApp(t, { env: { RATE_LIMIT_GLOBAL: '25' } })
  const { access_token: token } = await register(app)
  const answers = await Promise.all(Array.from({ length: 60 }, () =>
    app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: bearer(token) })))
  const statuses = answers.map((r) => r.statusCode)
  // The register call itself spent nothing: it is a public route with its own per-IP limit.
  t.equal(statuses.filter((s) => s === 200).length, 25, 'exactly 25 answered')
  t.equal(statuses.filter((s) => s === 429).length, 35, 'the rest are 429')
  const refused = answers.find((r) => r.statusCode === 429)!
  t.equal(refused.json().error.code, 'RATE_LIMITED')
  t.ok(Number(refused.headers['retry-after']) >= 1, 'Retry-After')
  t.equal(refused.headers['ratelimit-remaining'], '0')
})

t.test('two instances on one Redis share one budget, a batch at a time', { skip: TEST_REDIS_URL ? false : 'TEST_REDIS_URL not set' }, async (t) => {
  const prefix = `test-budget-${randomBytes(4).toString('hex')}:`
  const clock = { now: () => Date.now() }
  const [ra, rb] = [new Redis(TEST_REDIS_URL!), new Redis(TEST_REDIS_URL!)]
  t.teardown(() => { ra.disconnect(); rb.disconnect() })
  const a = new RequestBudget({ max: 10, windowMs: MINUTE, clock, redis: ra, keyPrefix: prefix })
  const b = new RequestBudget({ max: 10, windowMs: MINUTE, clock, redis: rb, keyPrefix: prefix })
  // Not at the edge of a minute, where the window would turn between the two instances' counts.
  if (Date.now() % MINUTE > MINUTE - 5000) await sleep(MINUTE - (Date.now() % MINUTE) + 100)
  for (let i = 0; i < 6; i++) a.spend('ses:x')
  await sleep(SYNC_INTERVAL_MS * 3)
  t.equal(b.spend('ses:x').remaining, 9, 'before B has heard from Redis, its first request counts alone')
  await sleep(SYNC_INTERVAL_MS * 3)
  t.equal(b.spend('ses:x').remaining, 2, 'once its batch went out it learns the cluster total: 6 + 2 spent')
  await sleep(SYNC_INTERVAL_MS * 3)
  // An instance learns the cluster's total with the answer to its own next batch.
  t.equal(a.spend('ses:x').remaining, 3, 'A\'s next request counts on what A knew (6 + 1)')
  await sleep(SYNC_INTERVAL_MS * 3)
  t.equal(a.spend('ses:x').remaining, 0, 'then A knows B\'s requests too: 10 spent in all')
  t.notOk(a.spend('ses:x').allowed, 'the 11th, across both instances, is refused')
  t.ok(b.spend('ses:x').allowed, 'B still counts on its last answer (8 + 1): the overshoot is bounded by one interval\'s requests')
  await sleep(SYNC_INTERVAL_MS * 3)
  t.notOk(b.spend('ses:x').allowed, 'and once its batch has gone out, B refuses too')
  a.close()
  b.close()
})

t.test('Redis away: counts stay local (the limit still holds) and are all sent once it is back, none twice', { skip: hasRedisServer() ? false : 'redis-server not on PATH' }, async (t) => {
  const own = await startRedisServer(t) // a Redis of this test's own, so it can be stopped
  const prefix = `test-budget-${randomBytes(4).toString('hex')}:`
  // As the rate-limit plugin connects: fail fast while Redis is away.
  const redis = new Redis(own.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, connectTimeout: 1000, commandTimeout: 500, retryStrategy: () => 100 })
  redis.on('error', () => {})
  t.teardown(() => redis.disconnect())
  const errors: Error[] = []
  const budget = new RequestBudget({ max: 3, windowMs: MINUTE, clock: { now: () => Date.now() }, redis, keyPrefix: prefix, onStoreError: (err) => errors.push(err) })
  t.teardown(() => budget.close())
  if (Date.now() % MINUTE > MINUTE - 15_000) await sleep(MINUTE - (Date.now() % MINUTE) + 100)
  const window = Math.floor(Date.now() / MINUTE)

  await own.stop()
  for (let i = 0; i < 3; i++) t.ok(budget.spend('k').allowed, `request ${i + 1} allowed while Redis is down`)
  t.notOk(budget.spend('k').allowed, 'the 4th is refused locally: the limit holds without Redis')
  await budget.flush()
  t.ok(errors.length >= 1, 'the store error is reported')

  await own.start()
  await within(5000, async () => redis.status === 'ready')
  await budget.flush()
  const reader = new Redis(own.url)
  t.teardown(() => reader.disconnect())
  t.equal(await reader.get(`${prefix}${window}:k`), '4', 'every count of the outage reached Redis once it was back')
  await budget.flush()
  t.equal(await reader.get(`${prefix}${window}:k`), '4', 'and none twice')
})

t.test('refusals spend a budget too: the caller\'s for a 403, the client\'s without a credential', async (t) => {
  const app = await buildTestApp(t, { env: { ...TENANCY_ENV, RATE_LIMIT_GLOBAL: '5' } })
  const tenant = await newTenant(app)
  const other = await newTenant(app, 'Other')
  const key = await createKey(app, bearer(tenant.owner.token), ['agents:read'])
  const cases: [string, () => Promise<{ statusCode: number }>][] = [
    ['another organization in X-Org-ID', () => app.inject({ method: 'GET', url: '/api/v1/api-keys', headers: { ...bearer(tenant.admin.token), 'x-org-id': other.id } })],
    ['another organization in the path', () => app.inject({ method: 'GET', url: `/api/v1/organizations/${other.id}/members`, headers: bearer(tenant.member.token) })],
    ['a key on a session-only route', () => app.inject({ method: 'POST', url: '/api/v1/auth/logout-all', headers: { 'x-api-key': key.key } })],
    ['no credential at all', () => app.inject({ method: 'GET', url: '/api/v1/auth/me' })],
  ]
  for (const [what, send] of cases) {
    const statuses: number[] = []
    for (let i = 0; i < 8; i++) statuses.push((await send()).statusCode)
    t.same(statuses.slice(5), [429, 429, 429], `${what}: refused requests are limited once the budget is spent (${statuses.join(',')})`)
  }
})

t.test('failed credentials are counted exactly across instances (Redis, one round trip per failure)', { skip: TEST_REDIS_URL ? false : 'TEST_REDIS_URL not set' }, async (t) => {
  const shared = await sharedDatabase(t)
  const env = { ...TENANCY_ENV, REDIS_URL: TEST_REDIS_URL!, RATE_LIMIT_AUTH_FAILURES: '10', TRUST_PROXY: '127.0.0.1' }
  const [A, B] = [await buildTestApp(t, { ...shared, env }), await buildTestApp(t, { ...shared, env })]
  const client = { 'x-forwarded-for': `10.${randomInt(256)}.${randomInt(256)}.${randomInt(1, 255)}` }
  const guess = (app: typeof A) => app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: { ...client, 'x-api-key': generateApiKey('pc', 'live') } })
  const answers = await Promise.all([...Array.from({ length: 20 }, () => guess(A)), ...Array.from({ length: 20 }, () => guess(B))])
  const statuses = answers.map((r) => r.statusCode)
  t.equal(statuses.filter((s) => s === 401).length, 10, 'exactly RATE_LIMIT_AUTH_FAILURES guesses answered 401 across both instances')
  t.equal(statuses.filter((s) => s === 429).length, 30, 'the rest 429')
})
