// Issue 10 reproduction 1: a key holding only api_keys:read + api_keys:write
// rotated another key that held audit:read, got 201, and the new key read the
// audit log. Creation capped scopes at the creator's; rotation did not.
import t from 'tap'
import { buildTestApp } from '../helpers/app.js'
import { bearer } from '../helpers/api.js'
import { assertError } from '../helpers/errors.js'
import { createKey, expectStatus, newTenant, TENANCY_ENV } from '../helpers/orgs.js'

const app = await buildTestApp(t, { env: TENANCY_ENV })
const org = await newTenant(app, 'Rotation Escalation Inc')
const owner = bearer(org.owner.token)
const auditor = await createKey(app, owner, ['audit:read'], 'auditor')
const keyManager = await createKey(app, owner, ['api_keys:read', 'api_keys:write'], 'key manager')
const liveKeyIds = async () => (expectStatus(await app.inject({ method: 'GET', url: '/api/v1/api-keys?limit=100', headers: owner }), 200, 'list').items as { id: string }[]).map((k) => k.id).sort()

t.test('a key cannot rotate a key whose scopes it lacks', async (t) => {
  const before = await liveKeyIds()
  const res = await app.inject({ method: 'POST', url: `/api/v1/api-keys/${auditor.id}/rotate`, headers: { 'x-api-key': keyManager.key } })
  assertError(t, res, 403, 'INSUFFICIENT_SCOPE')
  t.same(res.json().error.details.map((d: { scope: string }) => d.scope), ['audit:read'], 'names the scope the caller lacks')
  t.same(await liveKeyIds(), before, 'no key was minted')
  const audit = await app.inject({ method: 'GET', url: `/api/v1/organizations/${org.id}/audit-events`, headers: { 'x-api-key': auditor.key } })
  t.equal(audit.statusCode, 200, 'the original key is untouched (not revoked by a refused rotation)')
})

t.test('the same rotation within the caller\'s authority still works', async (t) => {
  const narrow = await createKey(app, owner, ['api_keys:read'], 'narrow')
  const res = await app.inject({ method: 'POST', url: `/api/v1/api-keys/${narrow.id}/rotate`, headers: { 'x-api-key': keyManager.key } })
  t.equal(res.statusCode, 201, `a key rotates a key within its scopes (got ${res.statusCode} ${res.body})`)
  t.same(res.json().scopes, ['api_keys:read'])
  const byOwner = await app.inject({ method: 'POST', url: `/api/v1/api-keys/${auditor.id}/rotate`, headers: owner })
  t.equal(byOwner.statusCode, 201, 'the owner, who holds audit:read, may rotate the auditor key')
})
