// Found by the reviews of issue 10: a key holding only auth:introspect was
// refused DELETE /api-keys/{id} (it needs api_keys:write) but revoked any key of
// its organization through RFC 7009 /auth/revoke, unaudited. Revoking another
// key there now needs what DELETE needs (plus auth:introspect); a key may always
// revoke itself (a client its own credential); every key revocation is audited.
import t from 'tap'
import { buildTestApp } from '../helpers/app.js'
import { bearer } from '../helpers/api.js'
import { createKey, newTenant, TENANCY_ENV } from '../helpers/orgs.js'

const app = await buildTestApp(t, { env: TENANCY_ENV })
const org = await newTenant(app, 'Weak Revoker Inc')
const owner = bearer(org.owner.token)
const status = async (key: string) => (await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { 'x-api-key': key } })).statusCode
const revoke = (caller: string, token: string) => app.inject({
  method: 'POST', url: '/api/v1/auth/revoke', headers: { authorization: `Bearer ${caller}`, 'content-type': 'application/x-www-form-urlencoded' },
  payload: `token=${encodeURIComponent(token)}`,
})

t.test('an auth:introspect key cannot revoke a stronger key through /auth/revoke', async (t) => {
  const introspector = await createKey(app, owner, ['auth:introspect'], 'introspector')
  const strong = await createKey(app, owner, [...app.config.SCOPES], 'strong')
  t.equal((await revoke(introspector.key, strong.key)).statusCode, 200, 'RFC 7009: 200 all the same')
  t.equal(await status(strong.key), 200, 'the strong key still works')
  t.equal((await revoke(introspector.key, org.member.token)).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(org.member.token) })).statusCode, 401,
    "sessions of its organization it may still end (SPEC §7: a key with auth:introspect)")
})

t.test('a key with auth:introspect and api_keys:write revokes keys; any key revokes itself', async (t) => {
  const manager = await createKey(app, owner, ['auth:introspect', 'api_keys:write'], 'manager')
  const target = await createKey(app, owner, ['agents:read'], 'target')
  await revoke(manager.key, target.key)
  t.equal(await status(target.key), 401, 'revoked')
  const self = await createKey(app, owner, ['agents:read'], 'self')
  await revoke(self.key, self.key)
  t.equal(await status(self.key), 401, 'a key revokes itself without any scope')
  await app.audit.flush()
  const audit = (await app.inject({ method: 'GET', url: `/api/v1/organizations/${org.id}/audit-events?limit=100`, headers: owner })).json().items
  const revoked = audit.filter((e: { action: string }) => e.action === 'api_key.revoked').map((e: { target_id: string; actor_key_id: string }) => `${e.target_id}<-${e.actor_key_id}`)
  t.same(revoked.sort(), [`${self.id}<-${self.id}`, `${target.id}<-${manager.id}`].sort(), 'both audited, with the revoking key')
})
