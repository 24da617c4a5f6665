// Found by the adversarial review of issue 10: once authentication ran before the
// body was read, a caller could send the headers of a grant, hold the body back
// (up to REQUEST_TIMEOUT), lose its authority meanwhile (demoted, key revoked,
// every session logged out) and then send the body: the grant ran with the
// authority of the moment the headers arrived. The caller is now identified
// again once the body is in, so what acts is what it holds when it acts.
import t from 'tap'
import { connect } from 'node:net'
import { buildTestApp } from '../helpers/app.js'
import { bearer, login } from '../helpers/api.js'
import { createKey, expectStatus, newTenant, TENANCY_ENV, type Headers } from '../helpers/orgs.js'

const app = await buildTestApp(t, { env: { ...TENANCY_ENV, REQUEST_TIMEOUT: '30000' } })
await app.listen({ host: '127.0.0.1', port: 0 })
const { port } = app.server.address() as { port: number }
const ALL = [...app.config.SCOPES]

/** Sends a request's headers now and its body when `finish` is called; resolves to the status. */
function heldRequest(path: string, headers: Headers, body: object | null, method = 'POST') {
  const text = JSON.stringify(body)
  const socket = connect(port, '127.0.0.1')
  let answer = ''
  socket.on('data', (d) => { answer += d })
  const closed = new Promise<string>((resolve) => socket.on('close', () => resolve(answer)))
  socket.write([`${method} ${path} HTTP/1.1`, 'Host: portcullis', 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(text)}`,
    'Connection: close', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), '', ''].join('\r\n'))
  return {
    async finish() {
      socket.write(text)
      const raw = await closed
      return { status: Number(raw.split(' ')[1]), body: raw.slice(raw.indexOf('\r\n\r\n') + 4) }
    },
  }
}
const headersArrived = () => new Promise((r) => setTimeout(r, 200))

t.test('an admin demoted while its request is held grants nothing', async (t) => {
  const org = await newTenant(app, 'Held Demotion Inc')
  const held = heldRequest('/api/v1/api-keys', bearer(org.admin.token), { name: 'persist', scopes: ALL })
  await headersArrived()
  expectStatus(await app.inject({
    method: 'PATCH', url: `/api/v1/organizations/${org.id}/members/${org.admin.id}`, headers: bearer(org.owner.token), payload: { role: 'member' },
  }), 200, 'demote')
  const res = await held.finish()
  t.equal(res.status, 403, `403 (got ${res.status} ${res.body})`)
})

t.test('a key revoked while its request is held mints no key', async (t) => {
  const org = await newTenant(app, 'Held Revocation Inc')
  const leaked = await createKey(app, bearer(org.owner.token), ALL, 'leaked')
  const held = heldRequest('/api/v1/api-keys', { 'x-api-key': leaked.key }, { name: 'persist', scopes: ALL })
  await headersArrived()
  expectStatus(await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${leaked.id}`, headers: bearer(org.owner.token) }), 204, 'revoke')
  const res = await held.finish()
  t.equal(res.status, 401, `401 (got ${res.status} ${res.body})`)
})

t.test('a stolen token whose sessions were all logged out cannot enable 2FA with a held request', async (t) => {
  const org = await newTenant(app, 'Held Logout Inc')
  const { secret } = expectStatus(await app.inject({ method: 'POST', url: '/api/v1/auth/2fa/setup', headers: bearer(org.owner.token) }), 200, 'setup')
  const { totpAt } = await import('../../src/lib/totp.js')
  const held = heldRequest('/api/v1/auth/2fa/enable', bearer(org.owner.token), { code: await totpAt(secret, Date.now()) })
  await headersArrived()
  const fresh = expectStatus(await login(app, org.owner.email), 200, 'login').access_token as string
  expectStatus(await app.inject({ method: 'POST', url: '/api/v1/auth/logout-all', headers: bearer(fresh) }), 204, 'logout-all')
  const res = await held.finish()
  t.equal(res.status, 401, `401 (got ${res.status} ${res.body})`)
  t.notOk(expectStatus(await login(app, org.owner.email), 200, 'login').mfa_required, '2FA was not enabled')
})

// Found by the second review: a JSON body of `null` parsed to null and skipped the check.
t.test('a body of null is a body: a revoked key rotating or revoking with a held `null` is refused', async (t) => {
  const org = await newTenant(app, 'Held Null Inc')
  const leaked = await createKey(app, bearer(org.owner.token), ALL, 'leaked')
  const production = await createKey(app, bearer(org.owner.token), ['agents:read'], 'production')
  const rotate = heldRequest(`/api/v1/api-keys/${production.id}/rotate`, { 'x-api-key': leaked.key }, null)
  const revoke = heldRequest(`/api/v1/api-keys/${production.id}`, { 'x-api-key': leaked.key }, null, 'DELETE')
  await headersArrived()
  expectStatus(await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${leaked.id}`, headers: bearer(org.owner.token) }), 204, 'revoke the leaked key')
  for (const [label, held] of [['rotate', rotate], ['revoke', revoke]] as const) {
    const res = await held.finish()
    t.equal(res.status, 401, `${label}: 401 (got ${res.status} ${res.body})`)
  }
  t.equal((await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { 'x-api-key': production.key } })).statusCode, 200, 'the production key is untouched')
})
