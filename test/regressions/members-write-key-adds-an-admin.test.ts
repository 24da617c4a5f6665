// Issue 10 reproduction 2: a key with members:write added a member with the
// admin role (201), and that account then held every scope. A role is a grant
// like a key's scopes: it must be within what the caller holds. Members now join
// by invitation: the invitation is the grant, capped the same way.
import t from 'tap'
import { buildTestApp } from '../helpers/app.js'
import { bearer } from '../helpers/api.js'
import { assertError } from '../helpers/errors.js'
import { addMember, createKey, expectStatus, newPerson, newTenant, TENANCY_ENV } from '../helpers/orgs.js'

const app = await buildTestApp(t, { env: TENANCY_ENV })
const org = await newTenant(app, 'Member Escalation Inc')
const owner = bearer(org.owner.token)
const membersOnly = await createKey(app, owner, ['members:read', 'members:write'], 'members only')
// Everything a member holds, plus members:write: enough to add members, not admins.
const memberManager = await createKey(app, owner, [...app.config.MEMBER_SCOPES, 'members:write'], 'member manager')
const roleOf = async (userId: string) => {
  const page = expectStatus(await app.inject({ method: 'GET', url: `/api/v1/organizations/${org.id}/members?limit=100`, headers: owner }), 200, 'members')
  return (page.items as { user_id: string; role: string }[]).find((m) => m.user_id === userId)?.role
}

t.test('a members:write key cannot add an admin (or anyone whose role carries scopes it lacks)', async (t) => {
  const someone = await newPerson(app)
  const admin = await addMember(app, { 'x-api-key': membersOnly.key }, org.id, someone, 'admin')
  assertError(t, admin, 403, 'INSUFFICIENT_SCOPE')
  t.equal(await roleOf(someone.id), undefined, 'not added')
  const member = await addMember(app, { 'x-api-key': membersOnly.key }, org.id, someone, 'member')
  assertError(t, member, 403, 'INSUFFICIENT_SCOPE', undefined, 'the member role carries agents:read etc., which this key lacks')
  const owners = await addMember(app, { 'x-api-key': memberManager.key }, org.id, someone, 'owner')
  assertError(t, owners, 403, 'FORBIDDEN', undefined, 'only an owner grants owner; a key has no role')
})

t.test('a key holding the member role\'s scopes adds members, but promotes nobody', async (t) => {
  const someone = await newPerson(app)
  t.equal((await addMember(app, { 'x-api-key': memberManager.key }, org.id, someone, 'member')).statusCode, 200, 'member: invited, and accepted')
  const promote = await app.inject({
    method: 'PATCH', url: `/api/v1/organizations/${org.id}/members/${someone.id}`, headers: { 'x-api-key': memberManager.key }, payload: { role: 'admin' },
  })
  assertError(t, promote, 403, 'INSUFFICIENT_SCOPE')
  t.equal(await roleOf(someone.id), 'member', 'still a member')
  const demote = await app.inject({
    method: 'PATCH', url: `/api/v1/organizations/${org.id}/members/${org.admin.id}`, headers: { 'x-api-key': memberManager.key }, payload: { role: 'member' },
  })
  assertError(t, demote, 403, 'INSUFFICIENT_SCOPE', undefined, 'nor demotes an admin, whose authority exceeds its own')
  t.equal(await roleOf(org.admin.id), 'admin')
})

t.test('an admin session still adds admins (the rule is not a blanket refusal)', async (t) => {
  const someone = await newPerson(app)
  t.equal((await addMember(app, bearer(org.admin.token), org.id, someone, 'admin')).statusCode, 200)
  t.equal(await roleOf(someone.id), 'admin')
})
