// Found by the second review of issue 10: a key that expires could create a key
// that never does (and a client-credentials token could outlive its key).
// Authority includes time: nothing a key grants outlives it.
import t from 'tap'
import { decodeJwt } from 'jose'
import { buildTestApp } from '../helpers/app.js'
import { bearer } from '../helpers/api.js'
import { assertError } from '../helpers/errors.js'
import { expectStatus, newTenant, TENANCY_ENV } from '../helpers/orgs.js'

const app = await buildTestApp(t, { env: TENANCY_ENV })
const org = await newTenant(app, 'Expiring Key Inc')
const soon = new Date(Date.now() + 120_000).toISOString()
const expiring = expectStatus(await app.inject({
  method: 'POST', url: '/api/v1/api-keys', headers: bearer(org.owner.token), payload: { name: 'expiring', scopes: [...app.config.SCOPES], expires_at: soon },
}), 201, 'create')
const asKey = { 'x-api-key': expiring.key }

t.test('a key made by an expiring key expires with it at the latest', async (t) => {
  const child = expectStatus(await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: asKey, payload: { name: 'child', scopes: ['agents:read'] } }), 201, 'child')
  t.equal(child.expires_at, expiring.expires_at, 'no expiry asked for: the caller\'s')
  const later = new Date(Date.now() + 3_600_000).toISOString()
  assertError(t, await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: asKey, payload: { name: 'x', scopes: ['agents:read'], expires_at: later } }),
    403, 'FORBIDDEN', /outlive/)
  const forever = expectStatus(await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: bearer(org.owner.token), payload: { name: 'forever', scopes: ['agents:read'] } }), 201, 'forever')
  assertError(t, await app.inject({ method: 'POST', url: `/api/v1/api-keys/${forever.id}/rotate`, headers: asKey }), 403, 'FORBIDDEN', /outlive/,
    'nor rotates a key that lives longer than it')
})

t.test('a client-credentials token never outlives its key', async (t) => {
  const res = await app.inject({
    method: 'POST', url: '/api/v1/oauth/token', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams({ grant_type: 'client_credentials', client_id: expiring.id, client_secret: expiring.key }).toString(),
  })
  const body = expectStatus(res, 200, 'token')
  t.ok(body.expires_in <= 120 && body.expires_in > 100, `expires_in capped at the key's remaining life (${body.expires_in} s)`)
  t.equal(decodeJwt(body.access_token).exp, Math.floor(Date.parse(soon) / 1000))
})
