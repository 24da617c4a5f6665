// Issue 10 reproduction 8: /auth/me with an API key showed its creator's email,
// name and is_superadmin, and forward-auth passed the creator's id on as the
// caller; removing the creator changed nothing about keys that acted as them.
// A key is an identity of its organization (SPEC §4 "Authority"): it is
// described as itself, and a departed creator's keys stay alive (as WorkOS and
// Unkey keep org-owned keys), listed in the removal's audit event.
import t from 'tap'
import { buildTestApp } from '../helpers/app.js'
import { bearer } from '../helpers/api.js'
import { createKey, expectStatus, newTenant, TENANCY_ENV } from '../helpers/orgs.js'

const app = await buildTestApp(t, { env: TENANCY_ENV })
const org = await newTenant(app, 'Key Identity Inc')
// The admin creates the key, then leaves.
const key = await createKey(app, bearer(org.admin.token), ['agents:read', 'members:read'], 'ci pipeline')
const asKey = { 'x-api-key': key.key }

t.test('/auth/me with a key describes the key, never its creator', async (t) => {
  const res = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: asKey })
  const body = expectStatus(res, 200, 'me')
  t.notOk('user' in body, 'no user object')
  t.notOk(res.body.includes(org.admin.email), "the creator's email appears nowhere")
  t.notOk(res.body.includes('is_superadmin'), 'nor is_superadmin')
  t.same(body.api_key, {
    id: key.id, name: 'ci pipeline', organization_id: org.id, scopes: ['agents:read', 'members:read'], created_by: org.admin.id, expires_at: null,
  })
  t.same(body.memberships, [], "the creator's memberships are not the key's")
  t.equal(body.organization.role, null, 'a key has no role')
})

t.test('forward-auth names the key, not a user', async (t) => {
  const res = await app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: { ...asKey, accept: 'application/json' } })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['x-auth-key-id'], key.id)
  t.notOk('x-auth-user-id' in res.headers, 'no X-Auth-User-Id')
  t.equal(res.json().user_id, null)
})

t.test("removing the creator leaves the organization's key working, and the audit log says so", async (t) => {
  const removed = await app.inject({ method: 'DELETE', url: `/api/v1/organizations/${org.id}/members/${org.admin.id}`, headers: bearer(org.owner.token) })
  t.equal(removed.statusCode, 204)
  const me = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: asKey })
  t.equal(me.statusCode, 200, 'the key still authenticates')
  t.equal((await app.inject({ method: 'GET', url: `/api/v1/organizations/${org.id}/members`, headers: asKey })).statusCode, 200,
    'and still acts within its scopes')
  await app.audit.flush()
  const events = expectStatus(await app.inject({ method: 'GET', url: `/api/v1/organizations/${org.id}/audit-events?limit=100`, headers: bearer(org.owner.token) }), 200, 'audit')
  const removal = events.items.find((e: { action: string; target_id: string }) => e.action === 'member.removed' && e.target_id === org.admin.id)
  t.same(removal?.metadata, { api_keys_kept: [key.id] }, "the removal lists the departed member's keys that stay")
})
