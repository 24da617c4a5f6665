// Rate limits (SPEC §6): per client IP on login, register, refresh and
// verify-2fa, plus a global per-credential limit. The client IP comes from
// X-Forwarded-For only through TRUST_PROXY; counters are shared through Redis
// when REDIS_URL is set, and a dead Redis fails open (never a 500). A limited
// request is a 429 RATE_LIMITED with Retry-After and RateLimit-* headers;
// API keys are never subject to login limits.
//
// buildTestApp relaxes every per-IP limit, so each subtest builds an app with
// the limits it examines (every inject() comes from 127.0.0.1).
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { randomInt } from 'node:crypto'
import type { LightMyRequestResponse } from 'fastify'
import type { App } from '../../src/app.js'
import { buildTestApp, FAST_ARGON2, freshDatabaseUrl, sharedDatabase, TEST_REDIS_URL } from '../helpers/app.js'
import { bearer, register, STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'

type Headers = Record<string, string>

const appWith = (t: Test, env: Record<string, string>) => buildTestApp(t, { env: { ...FAST_ARGON2, ...env } })

const loginFrom = (app: App, email: string, headers: Headers = {}) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/login', headers, payload: { email, password: STRONG_PASSWORD } })

const me = (app: App, headers: Headers) => app.inject({ method: 'GET', url: '/api/v1/auth/me', headers })

const forwardedFor = (ip: string): Headers => ({ 'x-forwarded-for': ip })

/** A client IP no other test (or earlier run sharing the Redis) uses. */
const randomClientIp = () => `10.${randomInt(256)}.${randomInt(256)}.${randomInt(1, 255)}`

const header = (res: LightMyRequestResponse, name: string) => {
  const value = res.headers[name]
  return value === undefined ? undefined : String(value)
}

/** A 429 in the public error shape, with the draft-spec RateLimit-* headers and Retry-After. */
function assertLimited(t: Test, res: LightMyRequestResponse, limit: number, what = 'limited') {
  t.equal(res.statusCode, 429, `${what}: 429`)
  if (res.statusCode !== 429) return
  const { error } = res.json()
  t.equal(error.code, 'RATE_LIMITED')
  t.type(error.message, 'string')
  t.match(error.request_id, /^req_/)
  t.equal(header(res, 'ratelimit-limit'), String(limit), 'RateLimit-Limit')
  t.equal(header(res, 'ratelimit-remaining'), '0', 'RateLimit-Remaining')
  const reset = Number(header(res, 'ratelimit-reset'))
  t.ok(reset >= 1 && reset <= 60, `RateLimit-Reset within the minute (${reset})`)
  t.equal(header(res, 'retry-after'), String(reset), 'Retry-After matches RateLimit-Reset')
  t.notOk(res.headers['x-ratelimit-limit'], 'no legacy X-RateLimit-* headers')
}

t.test('the 11th login in a minute from one IP is 429; X-Forwarded-For changes nothing without TRUST_PROXY; API keys are unaffected', async (t) => {
  const app = await appWith(t, { RATE_LIMIT_LOGIN: '10' }) // the default, restated (tests relax it)
  const owner = await register(app)
  const created = await app.inject({
    method: 'POST', url: '/api/v1/api-keys', headers: bearer(owner.access_token), payload: { name: 'ci', scopes: ['api_keys:read'] },
  })
  t.equal(created.statusCode, 201, 'an API key for later')
  const apiKey: string = created.json().key

  for (let i = 1; i <= 10; i++) {
    const res = await loginFrom(app, owner.email)
    t.equal(res.statusCode, 200, `login ${i}`)
    t.equal(header(res, 'ratelimit-limit'), '10')
    t.equal(header(res, 'ratelimit-remaining'), String(10 - i))
    t.ok(Number(header(res, 'ratelimit-reset')) > 0, 'RateLimit-Reset')
    t.notOk(res.headers['retry-after'], 'no Retry-After while allowed')
  }
  assertLimited(t, await loginFrom(app, owner.email), 10, '11th login')
  const wrong = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: owner.email, password: 'nope-nope-nope-1' } })
  assertLimited(t, wrong, 10, 'a wrong password is limited before it is checked')

  for (const ip of ['203.0.113.7', '198.51.100.1', '198.51.100.2, 203.0.113.9']) {
    assertLimited(t, await loginFrom(app, owner.email, forwardedFor(ip)), 10, `X-Forwarded-For: ${ip}`)
  }

  for (const headers of [{ 'x-api-key': apiKey }, bearer(apiKey)]) {
    const res = await me(app, headers)
    t.equal(res.statusCode, 200, `the API key still works (${Object.keys(headers)[0]})`)
    t.equal(res.json().auth.method, 'api_key')
  }
})

t.test('behind a trusted proxy the forwarded client IP is the key', async (t) => {
  const app = await appWith(t, { RATE_LIMIT_LOGIN: '2', TRUST_PROXY: '127.0.0.1' })
  const { email } = await register(app)
  const alice = forwardedFor('203.0.113.10')
  for (let i = 1; i <= 2; i++) t.equal((await loginFrom(app, email, alice)).statusCode, 200, `client A login ${i}`)
  assertLimited(t, await loginFrom(app, email, alice), 2, 'client A, 3rd login')
  // Only 127.0.0.1 is trusted: the right-most other address is the client, whatever is written before it.
  assertLimited(t, await loginFrom(app, email, forwardedFor('192.0.2.55, 203.0.113.10')), 2, 'a spoofed left-most entry')

  const bob = await loginFrom(app, email, forwardedFor('203.0.113.20'))
  t.equal(bob.statusCode, 200, 'client B has its own budget')
  t.equal(header(bob, 'ratelimit-remaining'), '1')
  t.equal((await loginFrom(app, email)).statusCode, 200, 'the proxy itself (no X-Forwarded-For) has its own budget')
})

const PER_IP_ROUTES: {
  route: string
  env: string
  allowed: number
  /** Returns a function that sends one more request to the route. */
  prepare: (app: App) => Promise<() => Promise<LightMyRequestResponse>>
}[] = [
  {
    route: 'register', env: 'RATE_LIMIT_REGISTER', allowed: 201,
    prepare: async (app) => () => app.inject({
      method: 'POST', url: '/api/v1/auth/register', payload: { email: uniqueEmail('rl'), password: STRONG_PASSWORD },
    }),
  },
  {
    route: 'refresh', env: 'RATE_LIMIT_REFRESH', allowed: 200,
    prepare: async (app) => {
      let token: string = (await register(app)).refresh_token
      return async () => {
        const res = await app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: token } })
        if (res.statusCode === 200) token = res.json().refresh_token
        return res
      }
    },
  },
  {
    route: 'verify-2fa', env: 'RATE_LIMIT_VERIFY_2FA', allowed: 401, // an unknown mfa_token: MFA_INVALID until limited
    prepare: async (app) => () => app.inject({
      method: 'POST', url: '/api/v1/auth/verify-2fa', payload: { mfa_token: 'mfa_unknown', code: '123456' },
    }),
  },
]

for (const { route, env, allowed, prepare } of PER_IP_ROUTES) {
  t.test(`${route} is limited per IP (${env})`, async (t) => {
    const app = await appWith(t, { [env]: '2' })
    const send = await prepare(app)
    for (let i = 1; i <= 2; i++) t.equal((await send()).statusCode, allowed, `${route} ${i}`)
    assertLimited(t, await send(), 2, `${route} 3rd`)
    t.equal((await loginFrom(app, uniqueEmail('nobody'))).statusCode, 401, 'login keeps its own budget')
  })
}

t.test('the global limit counts per credential: two tokens from one IP have separate budgets', async (t) => {
  const app = await appWith(t, { RATE_LIMIT_GLOBAL: '3' })
  const [a, b] = [await register(app), await register(app)]
  for (let i = 1; i <= 3; i++) t.equal((await me(app, bearer(a.access_token))).statusCode, 200, `token A request ${i}`)
  assertLimited(t, await me(app, bearer(a.access_token)), 3, 'token A, 4th request')
  const other = await me(app, bearer(b.access_token))
  t.equal(other.statusCode, 200, 'token B, same IP, is not limited')
  t.equal(header(other, 'ratelimit-remaining'), '2')
})

t.test('two instances on one Redis share one limit', { skip: TEST_REDIS_URL ? false : 'TEST_REDIS_URL not set' }, async (t) => {
  const shared = await sharedDatabase(t)
  // A client IP of its own (through a trusted proxy), so other test files and runs on this Redis don't interfere.
  const env = { ...FAST_ARGON2, REDIS_URL: TEST_REDIS_URL!, RATE_LIMIT_LOGIN: '4', TRUST_PROXY: '127.0.0.1' }
  const A = await buildTestApp(t, { ...shared, env })
  const B = await buildTestApp(t, { ...shared, env })
  const { email } = await register(A)
  const client = forwardedFor(randomClientIp())
  const sequence: [App, string][] = [[A, 'A'], [A, 'A'], [B, 'B'], [B, 'B']]
  for (const [i, [app, name]] of sequence.entries()) {
    const res = await loginFrom(app, email, client)
    t.equal(res.statusCode, 200, `login ${i + 1} on ${name}`)
    t.equal(header(res, 'ratelimit-remaining'), String(3 - i), 'the count continues across instances')
  }
  assertLimited(t, await loginFrom(A, email, client), 4, '5th login on A')
  assertLimited(t, await loginFrom(B, email, client), 4, '5th login on B')
})

// Runs in a child process: an app that cannot reach Redis must still start, log in
// and serve, and a child can be killed if it hangs instead.
const DEAD_REDIS_SCRIPT = `
  const { buildTestApp, FAST_ARGON2 } = await import(process.env.HELPERS_URL)
  const { register, login, bearer } = await import(process.env.API_URL)
  const out = {}
  try {
    const app = await buildTestApp({ teardown() {} }, {
      databaseUrl: process.env.DB_URL,
      env: { ...FAST_ARGON2, REDIS_URL: 'redis://127.0.0.1:1' },
    })
    const reg = await register(app)
    out.logins = [(await login(app, reg.email)).statusCode, (await login(app, reg.email)).statusCode]
    out.me = (await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(reg.access_token) })).statusCode
    await app.close()
  } catch (err) {
    out.error = String(err && err.message || err)
  }
  console.log('RESULT ' + JSON.stringify(out))
  process.exit(0)
`

t.test('Redis at a dead port: the limits fail open and login keeps working (no 500)', async (t) => {
  const databaseUrl = await freshDatabaseUrl(t)
  const env = {
    ...process.env, DB_URL: databaseUrl,
    HELPERS_URL: new URL('../helpers/app.ts', import.meta.url).href, API_URL: new URL('../helpers/api.ts', import.meta.url).href,
  }
  const stdout = await new Promise<string>((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', DEAD_REDIS_SCRIPT],
      { env, timeout: 60_000, killSignal: 'SIGKILL' }, (_err, out) => resolve(out))
  })
  const line = stdout.split('\n').find((l) => l.startsWith('RESULT '))
  t.ok(line, 'the child reported (it did not hang)')
  const result = line ? JSON.parse(line.slice(7)) : {}
  t.notOk(result.error, `the app starts with Redis unreachable${result.error ? ` (${result.error})` : ''}`)
  t.same(result.logins, [200, 200], 'logins succeed while the store is down')
  t.equal(result.me, 200, 'authenticated requests succeed')
})
