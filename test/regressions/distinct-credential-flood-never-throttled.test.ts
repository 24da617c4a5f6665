// Issue 10 reproduction 6: 400 random, well-formed API keys (the CRC32 checksum
// is public) from one IP gave 400 × 401, no 429 and 400 database lookups, and
// each unknown key entered the same bounded cache as real keys and could push
// them out. Failures are now limited per client (RATE_LIMIT_AUTH_FAILURES),
// valid credentials from the same address are never refused by that limit, and
// unknown keys live in their own bounded negative cache.
import t from 'tap'
import { generateApiKey } from '../../src/lib/api-key-format.js'
import { UNKNOWN_KEYS_MAX } from '../../src/modules/api-keys/verifier.js'
import { buildTestApp } from '../helpers/app.js'
import { bearer } from '../helpers/api.js'
import { createKey, newTenant, TENANCY_ENV } from '../helpers/orgs.js'

// A client address of this run only: with Redis, counters are shared by every test file and run.
const CLIENT = `198.18.${Math.floor(Math.random() * 256)}.${Math.floor(Math.random() * 256)}`
const verify = (app: Awaited<ReturnType<typeof buildTestApp>>, key: string, ip = CLIENT) =>
  app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: { 'x-api-key': key }, remoteAddress: ip })

t.test('a flood of distinct made-up keys is throttled per client; real keys keep working', async (t) => {
  const app = await buildTestApp(t, { env: { ...TENANCY_ENV, RATE_LIMIT_AUTH_FAILURES: '100' } })
  const org = await newTenant(app, 'Flood Target Inc')
  const real = await createKey(app, bearer(org.owner.token), ['agents:read'], 'real')
  const statuses = new Map<number, number>()
  for (let i = 0; i < 400; i++) {
    const res = await verify(app, generateApiKey('pc', 'live'))
    statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
    if (i === 200) t.equal((await verify(app, real.key)).statusCode, 200, 'mid-flood, a valid key from the same address: 200')
  }
  t.equal(statuses.get(401), 100, `exactly RATE_LIMIT_AUTH_FAILURES answers of 401 (${JSON.stringify([...statuses])})`)
  t.equal(statuses.get(429), 300, 'the rest 429')
  const last = await verify(app, generateApiKey('pc', 'live'))
  t.equal(last.statusCode, 429)
  t.ok(Number(last.headers['retry-after']) > 0, 'Retry-After')
  t.equal(last.json().error.code, 'RATE_LIMITED')
  t.equal((await verify(app, real.key)).statusCode, 200, 'after it, the valid key is still 200')
  const session = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(org.owner.token), remoteAddress: CLIENT })
  t.equal(session.statusCode, 200, 'and so is a valid session')
  t.equal((await verify(app, generateApiKey('pc', 'live'), CLIENT.replace(/^198\.18\./, '198.19.'))).statusCode, 401, 'another client is not affected')
  const badToken = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer('eyJhbGciOiJFUzI1NiJ9.e30.c2ln'), remoteAddress: CLIENT })
  t.equal(badToken.statusCode, 429, 'bad access tokens count against the same client too')
})

t.test('unknown keys never evict a real key from the cache, and cost one lookup each', async (t) => {
  const app = await buildTestApp(t, { env: { ...TENANCY_ENV, API_KEY_CACHE_MAX: '100' } })
  const org = await newTenant(app, 'Cache Target Inc')
  const real = await createKey(app, bearer(org.owner.token), ['agents:read'], 'real')
  t.equal((await verify(app, real.key)).statusCode, 200)
  for (let i = 0; i < 400; i++) await verify(app, generateApiKey('pc', 'live'))
  const lookups = app.apiKeys.databaseLookups
  t.equal((await verify(app, real.key)).statusCode, 200)
  t.equal(app.apiKeys.databaseLookups, lookups, 'the real key was still cached: no database lookup (400 unknown keys > API_KEY_CACHE_MAX)')
  const unknown = generateApiKey('pc', 'live')
  await verify(app, unknown)
  const afterFirst = app.apiKeys.databaseLookups
  for (let i = 0; i < 50; i++) await verify(app, unknown)
  t.equal(app.apiKeys.databaseLookups, afterFirst, 'a repeated unknown key costs one lookup, not one per request')
  t.ok(app.apiKeys.sizes.unknown <= UNKNOWN_KEYS_MAX, 'the negative cache is bounded')
})
