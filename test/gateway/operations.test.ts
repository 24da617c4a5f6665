// What operators and gateways see (SPEC §7): forward-auth (GET/HEAD
// /auth/verify), the discovery document, the interactive reference at /docs,
// Prometheus metrics (optionally behind METRICS_TOKEN), security headers, CORS
// for the configured origins only, and the create-user CLI command.
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import type { LightMyRequestResponse as InjectResponse } from 'fastify'
import type { App } from '../../src/app.js'
import { generateApiKey } from '../../src/lib/api-key-format.js'
import { buildTestApp, FakeClock, FAST_ARGON2 } from '../helpers/app.js'
import { bearer, login, register, STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'
import { createKey, expectStatus, TENANCY_ENV, type Headers } from '../helpers/orgs.js'

const ROOT = join(import.meta.dirname, '..', '..')
const ISSUER = 'https://issuer.example.com'

// The main instance runs on a fake clock (refresh reuse needs 11 s to pass); subtests
// that need other settings (PUBLIC_URL, METRICS_TOKEN, CORS_ORIGINS) build their own.
const clock = new FakeClock()
const app = await buildTestApp(t, { clock, env: { ...TENANCY_ENV, JWT_ISSUER: ISSUER } })
const owner = await register(app, { company_name: 'Ops Test' })
const orgId: string = owner.organization.id

const appWith = (t: Test, env: Record<string, string>) => buildTestApp(t, { env: { ...TENANCY_ENV, ...env } })
const get = (url: string, headers: Headers = {}, target: App = app) => target.inject({ method: 'GET', url, headers })
const verify = (headers: Headers, query = '', method: 'GET' | 'HEAD' = 'GET') =>
  app.inject({ method, url: `/api/v1/auth/verify${query}`, headers: { accept: 'application/json', ...headers } })

function assertError(t: Test, res: InjectResponse, status: number, code: string) {
  t.equal(res.statusCode, status, `${status} ${code} (got ${res.statusCode} ${res.body})`)
  if (res.body) t.equal(res.json().error?.code, code)
}

t.test('GET/HEAD /auth/verify: forward-auth headers for sessions and API keys', async (t) => {
  const key = await createKey(app, bearer(owner.access_token), ['agents:read', 'costs:read'], 'gateway')

  for (const method of ['GET', 'HEAD'] as const) {
    t.test(`${method} with a session access token`, async (t) => {
      const res = await verify(bearer(owner.access_token), '', method)
      t.equal(res.statusCode, 200, `200 (got ${res.statusCode} ${res.body})`)
      t.match(res.headers, {
        'x-auth-user-id': owner.user.id, 'x-auth-org-id': orgId, 'x-auth-role': 'owner',
        'x-auth-scopes': app.config.SCOPES.join(' '), 'x-auth-method': 'session', 'cache-control': 'no-store',
      })
      t.notOk('x-auth-key-id' in res.headers, 'no X-Auth-Key-Id for a session (only the headers that apply)')
      if (method === 'HEAD') return t.equal(res.body, '', 'HEAD: no body')
      t.same(res.json(), {
        user_id: owner.user.id, org_id: orgId, role: 'owner', scopes: [...app.config.SCOPES], method: 'session', key_id: null,
      })
    })

    t.test(`${method} with an API key`, async (t) => {
      const res = await verify({ 'x-api-key': key.key }, '', method)
      t.equal(res.statusCode, 200, `200 (got ${res.statusCode} ${res.body})`)
      t.match(res.headers, {
        'x-auth-org-id': orgId, 'x-auth-scopes': 'agents:read costs:read', 'x-auth-method': 'api_key', 'x-auth-key-id': key.id,
      })
      t.notOk('x-auth-user-id' in res.headers, 'no X-Auth-User-Id: a key is its organization\'s identity, not its creator\'s')
      t.notOk('x-auth-role' in res.headers, 'no X-Auth-Role: a key has no role')
      if (method === 'HEAD') return
      t.same(res.json(), {
        user_id: null, org_id: orgId, role: null, scopes: ['agents:read', 'costs:read'], method: 'api_key', key_id: key.id,
      })
    })
  }

  t.test('without Accept: application/json the 200 is its headers alone (gateways keep their connection)', async (t) => {
    for (const accept of [undefined, '*/*', 'text/plain']) {
      const res = await app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: { 'x-api-key': key.key, ...(accept ? { accept } : {}) } })
      t.equal(res.statusCode, 200)
      t.equal(res.body, '', `Accept ${accept ?? '(none)'}: no body`)
      t.equal(res.headers['x-auth-key-id'], key.id, 'the headers are the answer')
    }
  })

  t.test('a credential sent in both headers authenticates (as generated clients send it)', async (t) => {
    const session = await app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: { ...bearer(owner.access_token), 'x-api-key': owner.access_token } })
    t.equal(session.statusCode, 200, 'a session token in Authorization and X-API-Key')
    t.equal(session.headers['x-auth-method'], 'session')
    const sameKey = await app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: { ...bearer(key.key), 'x-api-key': key.key } })
    t.equal(sameKey.statusCode, 200, 'the same key in both')
    const junkKeyHeader = await app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: { ...bearer(owner.access_token), 'x-api-key': 'undefined' } })
    t.equal(junkKeyHeader.statusCode, 200, 'X-API-Key holding no API key, Authorization a valid token: the token')
  })

  t.test('the key as a bearer token works the same', async (t) => {
    const res = await verify(bearer(key.key))
    t.equal(res.headers['x-auth-method'], 'api_key')
    t.equal(res.headers['x-auth-key-id'], key.id)
  })

  t.test('?scope= demands scopes, comma- or space-separated', async (t) => {
    const missing = await verify({ 'x-api-key': key.key }, '?scope=agents:read,api_keys:write')
    assertError(t, missing, 403, 'INSUFFICIENT_SCOPE')
    t.same(missing.json().error.details.map((d: { scope: string }) => d.scope), ['api_keys:write'], 'names only the missing scope')
    t.match(missing.json().error.message, /api_keys:write/)
    t.equal((await verify({ 'x-api-key': key.key }, '?scope=agents:read,costs:read')).statusCode, 200, 'comma-separated, all held: 200')
    t.equal((await verify({ 'x-api-key': key.key }, '?scope=agents:read%20costs:read')).statusCode, 200, 'space-separated, all held: 200')
    t.equal((await verify({ 'x-api-key': key.key }, '?scope=agents:read+costs:read')).statusCode, 200, '+ for a space: 200')
    const spaced = await verify({ 'x-api-key': key.key }, '?scope=costs:read%20audit:read')
    assertError(t, spaced, 403, 'INSUFFICIENT_SCOPE')
    t.match(spaced.json().error.details, [{ scope: 'audit:read' }])
    t.equal((await verify(bearer(owner.access_token), '?scope=api_keys:write,auth:introspect')).statusCode, 200, 'an owner session holds every scope')
    t.equal((await verify({ 'x-api-key': key.key }, '?scope=')).statusCode, 200, 'empty scope demands nothing')
  })

  t.test('no or bad credential → 401 with WWW-Authenticate', async (t) => {
    for (const [label, headers] of [
      ['none', {}], ['garbage bearer', bearer('garbage')], ['unknown key', { 'x-api-key': generateApiKey('pc', 'live') }],
    ] as const) {
      for (const method of ['GET', 'HEAD'] as const) {
        const res = await verify(headers, '', method)
        t.equal(res.statusCode, 401, `${label} (${method}): 401`)
        t.match(res.headers['www-authenticate'], /^Bearer/, `${label} (${method}): WWW-Authenticate`)
        t.notOk(res.headers['x-auth-user-id'], `${label} (${method}): no X-Auth-User-Id`)
      }
    }
  })

  t.test('X-Org-ID of another organization → 403, for a session and for a key', async (t) => {
    const other = await register(app)
    const otherOrg: string = other.organization.id
    assertError(t, await verify({ ...bearer(owner.access_token), 'x-org-id': otherOrg }), 403, 'FORBIDDEN')
    assertError(t, await verify({ 'x-api-key': key.key, 'x-org-id': otherOrg }), 403, 'FORBIDDEN')
    const own = await verify({ ...bearer(owner.access_token), 'x-org-id': orgId })
    t.equal(own.statusCode, 200, 'its own organization in X-Org-ID: 200')
  })

  t.test('a cached API key costs no database lookup', async (t) => {
    const fresh = await createKey(app, bearer(owner.access_token), ['agents:read'], 'hot path')
    t.equal((await verify({ 'x-api-key': fresh.key })).statusCode, 200, 'first verification')
    const before = app.apiKeys.databaseLookups
    for (let i = 0; i < 50; i++) {
      const res = await verify({ 'x-api-key': fresh.key })
      if (res.statusCode !== 200) t.fail(`call ${i}: ${res.statusCode} ${res.body}`)
    }
    t.equal(app.apiKeys.databaseLookups, before, '50 verifications, no database lookup')
  })
})

t.test('GET /.well-known/openid-configuration', async (t) => {
  async function discovery(target: App) {
    const res = await get('/.well-known/openid-configuration', {}, target)
    return expectStatus(res, 200, 'discovery')
  }
  const endpoints = (base: string) => ({
    jwks_uri: `${base}/.well-known/jwks.json`,
    token_endpoint: `${base}/api/v1/oauth/token`,
    introspection_endpoint: `${base}/api/v1/auth/introspect`,
    revocation_endpoint: `${base}/api/v1/auth/revoke`,
  })

  t.test('without PUBLIC_URL the endpoints are under JWT_ISSUER', async (t) => {
    const doc = await discovery(app)
    t.match(doc, { issuer: ISSUER, ...endpoints(ISSUER) })
    t.notOk('id_token_signing_alg_values_supported' in doc, 'no ID tokens are claimed')
    t.notOk('refresh_endpoint' in doc, 'no unregistered metadata')
    t.same(doc.scopes_supported, [...app.config.SCOPES], 'scopes_supported: SCOPES')
    t.same(doc.grant_types_supported, ['password', 'refresh_token', 'client_credentials'])
    t.same(doc.response_types_supported, [], 'no authorization endpoint, no response types')
    t.same((await get('/.well-known/oauth-authorization-server')).json(), doc, 'RFC 8414 path: the same document')

    const jwks = await get(new URL(doc.jwks_uri).pathname)
    t.equal(jwks.statusCode, 200, 'the jwks_uri path is served')
    t.ok(jwks.json().keys.some((k: { kid: string }) => k.kid === app.keyRing.current.kid), 'and publishes the current signing key')
  })

  t.test('with PUBLIC_URL the endpoints are under it; the issuer stays JWT_ISSUER', async (t) => {
    const publicApp = await appWith(t, { PUBLIC_URL: 'https://auth.example.com', JWT_ISSUER: ISSUER })
    const doc = await discovery(publicApp)
    t.match(doc, { issuer: ISSUER, ...endpoints('https://auth.example.com') })
    t.equal((await get(new URL(doc.jwks_uri).pathname, {}, publicApp)).statusCode, 200, 'the jwks_uri path is served')
  })
})

t.test('GET /docs: the interactive reference, rendered from the committed contract', async (t) => {
  const html = await get('/docs')
  t.equal(html.statusCode, 200)
  t.match(html.headers['content-type'], /^text\/html/)
  t.match(html.body, /<html/i)
  // Found by issue 11: upgrade-insecure-requests left the page blank over plain http from any other host.
  for (const path of ['/docs', '/docs/static/index.html', '/docs/static/swagger-ui.css']) {
    const csp = String((await get(path)).headers['content-security-policy'] ?? '')
    t.ok(csp.length > 0, `${path}: a CSP`)
    t.notMatch(csp, /upgrade-insecure-requests/, `${path}: no upgrade-insecure-requests`)
  }

  const served = await get('/docs/json')
  t.equal(served.statusCode, 200)
  const committed = parse(readFileSync(join(ROOT, 'openapi', 'openapi.yaml'), 'utf8'))
  const operations = (paths: Record<string, object>) =>
    Object.fromEntries(Object.entries(paths).map(([path, item]) => [path, Object.keys(item).sort()]))
  t.same(Object.keys(served.json().paths).sort(), Object.keys(committed.paths).sort(), 'the same paths as openapi/openapi.yaml')
  t.same(operations(served.json().paths), operations(committed.paths), 'with the same methods')
})

t.test('GET /metrics: Prometheus text', async (t) => {
  const scrape = async () => {
    const res = await get('/metrics')
    if (res.statusCode !== 200) throw new Error(`scrape: ${res.statusCode} ${res.body}`)
    return res.body
  }
  /** Sum of the samples of `name` whose labels include `labels`; 0 when there is none. */
  function sample(text: string, name: string, labels: Record<string, string> = {}): number {
    let total = 0
    for (const line of text.split('\n')) {
      const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
      if (!m || m[1] !== name) continue
      const got = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]))
      if (Object.entries(labels).every(([k, v]) => got[k] === v)) total += Number(m[3])
    }
    return total
  }
  /** How much `name{labels}` grows while `action` runs. */
  async function growth(name: string, labels: Record<string, string>, action: () => Promise<unknown>) {
    const before = sample(await scrape(), name, labels)
    await action()
    return sample(await scrape(), name, labels) - before
  }

  t.test('content type and latency histogram labelled by route', async (t) => {
    expectStatus(await get('/api/v1/auth/me', bearer(owner.access_token)), 200, 'me')
    const res = await get('/metrics')
    t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/)
    t.match(res.body, /# TYPE portcullis_http_request_duration_seconds histogram/)
    const route = { method: 'GET', route: '/api/v1/auth/me', status_code: '200' }
    t.ok(sample(res.body, 'portcullis_http_request_duration_seconds_count', route) >= 1, '_count for GET /api/v1/auth/me 200')
    t.ok(sample(res.body, 'portcullis_http_request_duration_seconds_bucket', { ...route, le: '+Inf' }) >= 1, 'a +Inf bucket')
  })

  t.test('unmatched paths do not become route labels', async (t) => {
    const path = `/no-such-path-${Date.now()}`
    t.equal((await get(path)).statusCode, 404)
    t.notMatch(await scrape(), path, 'the raw path is not a label value')
  })

  t.test('authentication outcomes', async (t) => {
    const success = { method: 'session', result: 'success' }
    const failure = { method: 'session', result: 'failure' }
    t.ok(await growth('portcullis_auth_outcomes_total', success, () => get('/api/v1/auth/me', bearer(owner.access_token))) >= 1,
      'a session success is counted')
    t.equal(await growth('portcullis_auth_outcomes_total', failure, () => get('/api/v1/auth/me', bearer('not.a.token'))), 1,
      'a bad token is one session failure')
  })

  t.test('a lockout after LOCKOUT_MAX_ATTEMPTS (5) wrong passwords for one email', async (t) => {
    const email = uniqueEmail('locked')
    await register(app, { email })
    const wrong = () => login(app, email, 'wrong-password-entirely')
    const name = 'portcullis_lockouts_total'
    t.equal(await growth(name, {}, async () => { for (let i = 0; i < 4; i++) await wrong() }), 0, '4 failures: no lockout')
    let fifth: InjectResponse | undefined
    t.equal(await growth(name, {}, async () => { fifth = await wrong() }), 1, 'the 5th failure locks: +1')
    t.equal(fifth?.statusCode, 423, 'the 5th failure answers 423')
    t.equal(await growth(name, {}, () => login(app, email, STRONG_PASSWORD)), 0, 'an attempt while locked is no new lockout')
  })

  t.test('a refresh-token replay outside the grace window', async (t) => {
    const session = await register(app)
    const refresh = () => app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: session.refresh_token } })
    expectStatus(await refresh(), 200, 'first refresh')
    clock.advance(11_000)
    let replay: InjectResponse | undefined
    t.equal(await growth('portcullis_refresh_reuse_detected_total', {}, async () => { replay = await refresh() }), 1, '+1')
    assertError(t, replay!, 401, 'REFRESH_TOKEN_REUSED')
  })

  t.test('API-key cache lookups: a miss, then hits', async (t) => {
    const key = await createKey(app, bearer(owner.access_token), ['agents:read'], 'cache')
    const name = 'portcullis_api_key_cache_lookups_total'
    const use = () => get('/api/v1/auth/me', { 'x-api-key': key.key })
    t.equal(await growth(name, { result: 'miss' }, use), 1, 'first use: a miss')
    t.equal(await growth(name, { result: 'hit' }, use), 1, 'second use: a hit')
    const text = await scrape()
    t.ok(sample(text, name, { result: 'hit' }) > 0 && sample(text, name, { result: 'miss' }) > 0, 'both series exported')
  })

  t.test('with METRICS_TOKEN: only `Authorization: Bearer <token>` scrapes', async (t) => {
    const guarded = await appWith(t, { METRICS_TOKEN: 's3cret' })
    for (const [label, headers] of [
      ['no header', {}], ['wrong token', bearer('s3cre7')], ['longer token', bearer('s3cret-and-more')], ['token without Bearer', { authorization: 's3cret' }],
    ] as const) {
      const res = await get('/metrics', headers, guarded)
      assertError(t, res, 401, 'UNAUTHORIZED')
      t.notMatch(res.body, /portcullis_/, `${label}: no metrics`)
    }
    const ok = await get('/metrics', bearer('s3cret'), guarded)
    t.equal(ok.statusCode, 200, 'the right token: 200')
    t.match(ok.body, /portcullis_http_request_duration_seconds/)
  })
})

t.test('security headers (helmet defaults) on API responses, errors included', async (t) => {
  for (const [label, headers] of [['200', bearer(owner.access_token)], ['401', {}]] as const) {
    const res = await get('/api/v1/auth/me', headers)
    t.equal(String(res.statusCode), label)
    t.equal(res.headers['x-content-type-options'], 'nosniff', `${label}: X-Content-Type-Options`)
    t.ok(res.headers['x-frame-options'], `${label}: X-Frame-Options`)
    t.match(res.headers['strict-transport-security'], /max-age=\d+/, `${label}: Strict-Transport-Security`)
  }
  const missing = await get('/api/v1/no-such-route', {})
  t.equal(missing.statusCode, 404)
  t.equal(missing.headers['x-content-type-options'], 'nosniff', '404: X-Content-Type-Options')
  t.equal(missing.headers['referrer-policy'], 'no-referrer', '404: Referrer-Policy')
  t.equal(missing.headers['cross-origin-resource-policy'], 'same-site', '404: Cross-Origin-Resource-Policy')
})

t.test('forward-auth answers carry no browser security headers (a gateway consumes them)', async (t) => {
  for (const [label, headers] of [['200', bearer(owner.access_token)], ['401', {}]] as const) {
    const res = await get('/api/v1/auth/verify', headers)
    t.equal(String(res.statusCode), label)
    for (const name of ['x-content-type-options', 'x-frame-options', 'strict-transport-security', 'referrer-policy']) {
      t.notOk(res.headers[name], `${label}: no ${name}`)
    }
    t.ok(res.headers['x-request-id'], `${label}: X-Request-Id still set`)
  }
})

t.test('CORS: only for the origins in CORS_ORIGINS', async (t) => {
  const preflight = (target: App, origin: string) => target.inject({
    method: 'OPTIONS', url: '/api/v1/auth/me',
    headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
  })

  t.test('CORS_ORIGINS=https://app.example.com', async (t) => {
    const corsApp = await appWith(t, { CORS_ORIGINS: 'https://app.example.com' })
    const allowed = await preflight(corsApp, 'https://app.example.com')
    t.equal(allowed.statusCode, 204, 'preflight: 204')
    t.equal(allowed.headers['access-control-allow-origin'], 'https://app.example.com')
    t.match(allowed.headers['access-control-allow-methods'], /\bGET\b/)
    t.match(String(allowed.headers['access-control-allow-headers']).toLowerCase(), /\bauthorization\b/)
    t.notOk(allowed.headers['access-control-allow-credentials'], 'no credentials (bearer tokens, no cookies)')

    const actual = await get('/api/v1/auth/me', { origin: 'https://app.example.com' }, corsApp)
    t.equal(actual.headers['access-control-allow-origin'], 'https://app.example.com', 'actual request: allowed origin echoed')

    const evil = await preflight(corsApp, 'https://evil.example')
    t.notOk(evil.headers['access-control-allow-origin'], 'another origin: no Access-Control-Allow-Origin')
    t.notOk((await get('/api/v1/auth/me', { origin: 'https://evil.example' }, corsApp)).headers['access-control-allow-origin'])
  })

  t.test('without CORS_ORIGINS: no CORS headers', async (t) => {
    const res = await preflight(app, 'https://app.example.com')
    t.notOk(res.headers['access-control-allow-origin'], 'preflight: no Access-Control-Allow-Origin')
    t.notOk(res.headers['access-control-allow-methods'], 'preflight: no Access-Control-Allow-Methods')
    const actual = await get('/api/v1/auth/me', { ...bearer(owner.access_token), origin: 'https://app.example.com' })
    t.equal(actual.statusCode, 200)
    t.notOk(actual.headers['access-control-allow-origin'], 'actual request: no Access-Control-Allow-Origin')
  })
})

t.test('CLI create-user', async (t) => {
  function cli(password: string) {
    const env = { ...process.env, ...FAST_ARGON2, DATABASE_URL: 'memory://', LOG_LEVEL: 'silent', PORTCULLIS_PASSWORD: password }
    return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile('npx', ['tsx', 'src/cli.ts', 'create-user', '--email', 'ops@example.com', '--name', 'Ops', '--company', 'OpsCo'],
        { cwd: ROOT, env, timeout: 60_000 }, (err, stdout, stderr) => {
          resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
        })
    })
  }

  t.test('creates the account and prints its ids', async (t) => {
    const res = await cli(STRONG_PASSWORD)
    t.equal(res.code, 0, `exit 0 (stderr: ${res.stderr})`)
    t.match(res.stdout, /usr_[0-9a-hjkmnp-tv-z]{26}/, 'prints the user id')
    t.match(res.stdout, /org_[0-9a-hjkmnp-tv-z]{26}/, 'prints the organization id')
    t.match(res.stdout, /ops@example\.com/)
    t.match(res.stdout, /OpsCo/)
  })

  t.test('a too-short password: non-zero exit naming the password', async (t) => {
    const res = await cli('short')
    t.not(res.code, 0, `non-zero exit (${res.code})`)
    t.match(res.stderr, /password/i, 'the message names the password')
    t.notMatch(res.stdout, /usr_/, 'nothing created')
  })
})
