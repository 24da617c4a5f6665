// Forward-auth answers a credential it verified before from its onRequest
// hook (the hot path), skipping the body, validation and handler phases. That
// shortcut must answer exactly as the full path does, and must stop the moment
// anything that would change the full path's answer changes.
import t, { type Test } from 'tap'
import { randomInt } from 'node:crypto'
import type { LightMyRequestResponse } from 'fastify'
import type { App } from '../../src/app.js'
import { buildTestApp } from '../helpers/app.js'
import { bearer } from '../helpers/api.js'
import { createKey, newTenant, signIn, TENANCY_ENV, type Headers } from '../helpers/orgs.js'
import { generateApiKey } from '../../src/lib/api-key-format.js'

const verify = (app: App, headers: Headers, query = '', method: 'GET' | 'HEAD' = 'GET') =>
  app.inject({ method, url: `/api/v1/auth/verify${query}`, headers })

/** The answer without what differs per request (its id, the budget left, the seconds to the window's end). */
function answerOf(res: LightMyRequestResponse) {
  const { 'x-request-id': _id, 'ratelimit-remaining': _left, 'ratelimit-reset': _reset, date: _date, ...headers } = res.headers
  return { status: res.statusCode, headers, body: res.body.replace(/"request_id":"[^"]+"/, '') }
}

/** Sends the request twice with a fresh credential: the first verifies in full, the second is answered from memory. */
async function twice(t: Test, app: App, credential: () => Promise<Headers>, send: (headers: Headers) => Promise<LightMyRequestResponse>, what: string) {
  const headers = await credential()
  const full = await send(headers)
  const remembered = await send(headers)
  t.same(answerOf(remembered), answerOf(full), `${what}: the remembered answer is the full path's`)
  return remembered
}

t.test('the remembered answer is the full answer: headers, scopes, HEAD, JSON, errors', async (t) => {
  const app = await buildTestApp(t, { env: TENANCY_ENV })
  const tenant = await newTenant(app)
  const owner = bearer(tenant.owner.token)
  // A credential never seen before for each case, so that the first answer really is the full path's.
  const fresh: [string, () => Promise<Headers>][] = [
    ['session', async () => bearer((await signIn(app, tenant.member.email, tenant.id)).token)],
    ['API key', async () => ({ 'x-api-key': (await createKey(app, owner, ['agents:read'])).key })],
    ['API key as Bearer', async () => bearer((await createKey(app, owner, ['agents:read'])).key)],
  ]
  for (const [name, credential] of fresh) {
    const ok = await twice(t, app, credential, (h) => verify(app, h), `${name}, no scope asked`)
    t.equal(ok.statusCode, 200, `${name}: 200`)
    t.equal(ok.headers['x-auth-org-id'], tenant.id, `${name}: the organization`)
    t.ok(ok.headers['ratelimit-limit'], `${name}: the remembered answer still spends the budget`)
    t.equal(ok.body, '', `${name}: headers only without Accept: application/json`)
    const json = await twice(t, app, credential, (h) => verify(app, { ...h, accept: 'application/json' }), `${name}, JSON`)
    t.equal(json.json().org_id, tenant.id, `${name}: the JSON body`)
    await twice(t, app, credential, (h) => verify(app, h, '', 'HEAD'), `${name}, HEAD`)
    await twice(t, app, credential, (h) => verify(app, h, '?scope=agents:read'), `${name}, a scope it holds`)
    const lacking = await twice(t, app, credential, (h) => verify(app, h, '?scope=members:write,api_keys:write'), `${name}, a scope it lacks`)
    t.equal(lacking.statusCode, 403, `${name}: a missing scope is 403 on the remembered path too`)
    t.equal(lacking.json().error.code, 'INSUFFICIENT_SCOPE')
    const tooLong = await twice(t, app, credential, (h) => verify(app, h, `?scope=${'a'.repeat(1001)}`), `${name}, an over-long scope query`)
    t.equal(tooLong.statusCode, 422, `${name}: the query string is still validated`)
    const otherOrg = await twice(t, app, credential, (h) => verify(app, { ...h, 'x-org-id': 'org_00000000000000000000000000' }), `${name}, another organization`)
    t.equal(otherOrg.statusCode, 403, `${name}: another organization is refused on every request`)
  }
})

t.test('a credential is remembered as the kind it was verified as: an access token in X-API-Key stays refused', async (t) => {
  const app = await buildTestApp(t, { env: TENANCY_ENV })
  const tenant = await newTenant(app)
  t.equal((await verify(app, bearer(tenant.member.token))).statusCode, 200, 'the token as Bearer')
  t.equal((await verify(app, bearer(tenant.member.token))).statusCode, 200, 'remembered')
  t.equal((await verify(app, { 'x-api-key': tenant.member.token })).statusCode, 401, 'the same token in X-API-Key is not a key')
})

t.test('a remembered credential stops at once: logout, key revocation, membership removal, role change', async (t) => {
  const app = await buildTestApp(t, { env: TENANCY_ENV })
  const tenant = await newTenant(app)

  // Logout: the session's token is refused on the very next request.
  t.equal((await verify(app, bearer(tenant.admin.token))).statusCode, 200)
  t.equal((await verify(app, bearer(tenant.admin.token))).statusCode, 200, 'remembered')
  t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(tenant.admin.token) })).statusCode, 204)
  t.equal((await verify(app, bearer(tenant.admin.token))).statusCode, 401, 'logged out: refused at once')

  // Key revocation.
  const key = await createKey(app, bearer(tenant.owner.token), ['agents:read'])
  t.equal((await verify(app, { 'x-api-key': key.key })).statusCode, 200)
  t.equal((await verify(app, { 'x-api-key': key.key })).statusCode, 200, 'remembered')
  t.equal((await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${key.id}`, headers: bearer(tenant.owner.token) })).statusCode, 204)
  t.equal((await verify(app, { 'x-api-key': key.key })).statusCode, 401, 'revoked: refused at once')

  // Role change: the next answer carries the new role, not the remembered one.
  const member = tenant.member
  t.equal((await verify(app, bearer(member.token))).headers['x-auth-role'], 'member')
  const promoted = await app.inject({
    method: 'PATCH', url: `/api/v1/organizations/${tenant.id}/members/${member.id}`, headers: bearer(tenant.owner.token), payload: { role: 'admin' },
  })
  t.equal(promoted.statusCode, 200, 'the owner makes the member an admin')
  t.equal((await verify(app, bearer(member.token))).headers['x-auth-role'], 'admin', 'the new role at once')

  // Removal from the organization.
  const removed = await app.inject({ method: 'DELETE', url: `/api/v1/organizations/${tenant.id}/members/${member.id}`, headers: bearer(tenant.owner.token) })
  t.equal(removed.statusCode, 204)
  t.not((await verify(app, bearer(member.token))).statusCode, 200, 'a removed member is refused at once')
})

t.test('keys known to be invalid are refused at once, exactly as the full path refuses them, and still counted', async (t) => {
  // A client address of its own (through a trusted proxy): failure counts in a shared Redis are per client.
  const app = await buildTestApp(t, { env: { ...TENANCY_ENV, RATE_LIMIT_AUTH_FAILURES: '6', TRUST_PROXY: '127.0.0.1' } })
  const client = { 'x-forwarded-for': `10.${randomInt(256)}.${randomInt(256)}.${randomInt(1, 255)}` }
  const tenant = await newTenant(app)
  const revoked = await createKey(app, bearer(tenant.owner.token), ['agents:read'])
  t.equal((await verify(app, { ...client, 'x-api-key': revoked.key })).statusCode, 200, 'the key works (and is remembered)')
  await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${revoked.id}`, headers: bearer(tenant.owner.token) })
  const unknown = generateApiKey('pc', 'live')
  const malformed = unknown.slice(0, -1) + (unknown.endsWith('A') ? 'B' : 'A')
  for (const [name, key] of [['revoked', revoked.key], ['unknown', unknown], ['malformed', malformed]] as const) {
    const lookups = app.apiKeys.databaseLookups
    const answer = await twice(t, app, async () => ({ ...client, 'x-api-key': key }), (h) => verify(app, h), `${name} key`)
    t.equal(answer.statusCode, 401, `${name}: 401`)
    if (name === 'unknown') t.equal(app.apiKeys.databaseLookups - lookups, 1, 'the unknown key was looked up once, then refused at once')
    if (name === 'malformed') t.equal(app.apiKeys.databaseLookups - lookups, 0, 'the malformed key never reached the database')
  }
  const limited = await verify(app, { ...client, 'x-api-key': malformed })
  t.equal(limited.statusCode, 429, 'the 7th failure from this client is 429: refusals at once count toward the failure throttle')
  t.equal(limited.json().error.code, 'RATE_LIMITED')
})
