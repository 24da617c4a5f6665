// Found by the second review of issue 10: adding a member (now: inviting), key creation and rotation
// checked the role resolved when the request was authenticated, then wrote. A
// demotion (or a key revocation) committed in between was outrun (shown there
// with a delayed database). The caller is now read again inside the grant's own
// transaction. Driven here at the service, with an AuthContext that is stale by
// construction: what the request saw, after the database has changed.
import t from 'tap'
import { ApiKeyService } from '../../src/modules/api-keys/service.js'
import type { ApiKeyAuth, SessionAuth } from '../../src/plugins/tenancy.js'
import { scopesOfRole } from '../../src/lib/authority.js'
import { buildTestApp } from '../helpers/app.js'
import { bearer } from '../helpers/api.js'
import { createKey, expectStatus, newPerson, newTenant, TENANCY_ENV } from '../helpers/orgs.js'

const app = await buildTestApp(t, { env: TENANCY_ENV })
const keys = new ApiKeyService({ db: app.db, config: app.config, clock: app.clock, audit: app.audit, events: app.events })

t.test('an admin demoted after authentication creates no key and adds no admin', async (t) => {
  const org = await newTenant(app, 'Stale Admin Inc')
  const stale: SessionAuth = {
    method: 'session', userId: org.admin.id, orgId: org.id, role: 'admin', scopes: scopesOfRole(app.config, 'admin'), sessionId: org.admin.sid,
    authTime: Math.floor(Date.now() / 1000),
  }
  expectStatus(await app.inject({
    method: 'PATCH', url: `/api/v1/organizations/${org.id}/members/${org.admin.id}`, headers: bearer(org.owner.token), payload: { role: 'member' },
  }), 200, 'demote')
  await t.rejects(keys.create(stale, { name: 'late', scopes: [...app.config.SCOPES] }), { code: 'INSUFFICIENT_SCOPE' }, 'key creation re-reads the role')
  const someone = await newPerson(app)
  await t.rejects(app.invitations.invite(stale, { email: someone.email, role: 'admin' }), { code: 'INSUFFICIENT_SCOPE' }, 'inviting an admin re-reads the role')
})

t.test('a key revoked after authentication rotates nothing', async (t) => {
  const org = await newTenant(app, 'Stale Key Inc')
  const leaked = await createKey(app, bearer(org.owner.token), [...app.config.SCOPES], 'leaked')
  const target = await createKey(app, bearer(org.owner.token), ['agents:read'], 'target')
  const stale: ApiKeyAuth = {
    method: 'api_key', userId: null, orgId: org.id, role: null, scopes: [...app.config.SCOPES], keyId: leaked.id, createdByUserId: org.owner.id, expiresAt: null,
  }
  expectStatus(await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${leaked.id}`, headers: bearer(org.owner.token) }), 204, 'revoke')
  await t.rejects(keys.rotate(stale, target.id, 0), { code: 'UNAUTHORIZED' })
  t.equal((await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { 'x-api-key': target.key } })).statusCode, 200, 'the target is untouched')
})
