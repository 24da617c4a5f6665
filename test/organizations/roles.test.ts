// Organizations, roles and tenancy (SPEC §5, §7): who may manage members and
// API keys, the owner role and the last owner, the organization context
// (X-Org-ID), memberships in /auth/me, member removal and role changes taking
// effect at once for existing tokens (on a second instance within 1 s),
// creating and renaming organizations, and the audit log of an organization.
import t, { type Test } from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import type { App } from '../../src/app.js'
import { newId } from '../../src/lib/ids.js'
import { buildTestApp, sharedDatabase, TEST_DATABASE_URL, TEST_REDIS_URL, within } from '../helpers/app.js'
import { bearer, login, register } from '../helpers/api.js'
import {
  addMember, createKey, expectStatus, newPerson, newTenant, READ_ONLY_SCOPES, signIn, TENANCY_ENV,
  type Headers, type Person, type Role,
} from '../helpers/orgs.js'

// src/modules/auth/lockout.ts recordFailure binds Date objects in raw sql`` fragments; postgres.js rejects them (500).
const CHANNEL = TEST_REDIS_URL ? 'Redis pub/sub' : TEST_DATABASE_URL ? 'PostgreSQL LISTEN/NOTIFY' : 'PGlite in-process NOTIFY'

// Two instances on one database, as behind a load balancer; most subtests use only P.
const shared = await sharedDatabase(t)
const P = await buildTestApp(t, { ...shared, env: TENANCY_ENV })
const Q = await buildTestApp(t, { ...shared, env: TENANCY_ENV })

// ---- Requests.

const membersUrl = (orgId: string, userId?: string) => `/api/v1/organizations/${orgId}/members${userId ? `/${userId}` : ''}`
const get = (app: App, url: string, headers: Headers) => app.inject({ method: 'GET', url, headers })
const me = (app: App, token: string, orgId?: string) => get(app, '/api/v1/auth/me', { ...bearer(token), ...(orgId ? { 'x-org-id': orgId } : {}) })
const patchRole = (app: App, token: string, orgId: string, userId: string, role: Role) =>
  app.inject({ method: 'PATCH', url: membersUrl(orgId, userId), headers: bearer(token), payload: { role } })
const removeMember = (app: App, token: string, orgId: string, userId: string) =>
  app.inject({ method: 'DELETE', url: membersUrl(orgId, userId), headers: bearer(token) })
const keyCall = (token: string, method: 'GET' | 'POST' | 'DELETE', path = '', payload?: object) =>
  P.inject({ method, url: `/api/v1/api-keys${path}`, headers: bearer(token), ...(payload ? { payload } : {}) })

/** user_id → role of an organization's members, as `reader` sees them. */
async function rolesIn(orgId: string, reader: Person): Promise<Record<string, Role>> {
  const page = expectStatus(await get(P, `${membersUrl(orgId)}?limit=100`, bearer(reader.token)), 200, 'list members')
  return Object.fromEntries(page.items.map((m: { user_id: string; role: Role }) => [m.user_id, m.role]))
}
const ownersIn = async (orgId: string, reader: Person) =>
  Object.entries(await rolesIn(orgId, reader)).filter(([, role]) => role === 'owner').map(([id]) => id).sort()

function assertError(t: Test, res: LightMyRequestResponse, status: number, code: string | string[], label: string) {
  t.equal(res.statusCode, status, `${label}: ${status}`, { body: res.body })
  t.ok([code].flat().includes(res.json().error?.code), `${label}: ${[code].flat().join(' or ')}`, { body: res.body })
}

/** The access token's organization is refused (a revoked session, 401, or no longer a member, 403). */
const refused = (res: LightMyRequestResponse) => res.statusCode === 401 || res.statusCode === 403

// ---- Tests.

t.test('a member cannot manage members or API keys', async (t) => {
  const T = await newTenant(P)
  const outsider = await newPerson(P)
  const key = await createKey(P, bearer(T.owner.token), ['agents:read'])
  const before = await rolesIn(T.id, T.owner)
  const token = T.member.token

  assertError(t, await addMember(P, bearer(token), T.id, outsider, 'member'), 403, 'FORBIDDEN', 'add a member')
  assertError(t, await patchRole(P, token, T.id, T.admin.id, 'member'), 403, 'FORBIDDEN', "change the admin's role")
  assertError(t, await patchRole(P, token, T.id, T.member.id, 'admin'), 403, 'FORBIDDEN', 'promote itself')
  assertError(t, await removeMember(P, token, T.id, T.admin.id), 403, 'FORBIDDEN', 'remove the admin')

  const keyCode = ['FORBIDDEN', 'INSUFFICIENT_SCOPE']
  assertError(t, await keyCall(token, 'POST', '', { name: 'x', scopes: ['agents:read'] }), 403, keyCode, 'create an API key')
  assertError(t, await keyCall(token, 'GET'), 403, keyCode, 'list API keys')
  assertError(t, await keyCall(token, 'GET', `/${key.id}`), 403, keyCode, 'read an API key')
  assertError(t, await keyCall(token, 'DELETE', `/${key.id}`), 403, keyCode, 'revoke an API key')
  assertError(t, await keyCall(token, 'POST', `/${key.id}/rotate`, {}), 403, keyCode, 'rotate an API key')

  t.same(await rolesIn(T.id, T.owner), before, 'members unchanged')
  t.equal((await me(P, key.key)).statusCode, 200, 'the key still works')
})

t.test('an admin adds, changes and removes members and manages API keys', async (t) => {
  const T = await newTenant(P)
  const outsider = await newPerson(P)
  const token = T.admin.token

  const added = await addMember(P, bearer(token), T.id, outsider, 'member')
  t.equal(added.statusCode, 200, 'invite a member, who accepts')
  t.match(added.json(), { id: T.id, role: 'member' })
  t.equal((await patchRole(P, token, T.id, outsider.id, 'admin')).statusCode, 200, 'promote to admin')
  t.equal((await rolesIn(T.id, T.owner))[outsider.id], 'admin', 'the role changed')
  t.equal((await patchRole(P, token, T.id, outsider.id, 'member')).statusCode, 200, 'demote to member')
  t.equal((await removeMember(P, token, T.id, outsider.id)).statusCode, 204, 'remove')
  t.notOk(outsider.id in await rolesIn(T.id, T.owner), 'no longer a member')

  const key = await createKey(P, bearer(token), ['agents:read', 'members:read'])
  t.match(key, { organization_id: T.id, created_by: T.admin.id }, 'create a key')
  const list = expectStatus(await keyCall(token, 'GET'), 200, 'list keys')
  t.ok(list.items.some((k: { id: string }) => k.id === key.id), 'list keys')
  t.equal((await keyCall(token, 'GET', `/${key.id}`)).statusCode, 200, 'read a key')
  const rotated = await keyCall(token, 'POST', `/${key.id}/rotate`, {})
  t.equal(rotated.statusCode, 201, 'rotate a key')
  t.equal((await keyCall(token, 'DELETE', `/${rotated.json().id}`)).statusCode, 204, 'revoke a key')
})

t.test('an admin cannot grant, change or remove the owner role', async (t) => {
  const T = await newTenant(P)
  const outsider = await newPerson(P)
  const token = T.admin.token
  assertError(t, await addMember(P, bearer(token), T.id, outsider, 'owner'), 403, 'FORBIDDEN', 'add an owner')
  assertError(t, await patchRole(P, token, T.id, T.member.id, 'owner'), 403, 'FORBIDDEN', 'promote a member to owner')
  assertError(t, await patchRole(P, token, T.id, T.admin.id, 'owner'), 403, 'FORBIDDEN', 'promote itself to owner')
  assertError(t, await patchRole(P, token, T.id, T.owner.id, 'admin'), 403, 'FORBIDDEN', "change the owner's role")
  assertError(t, await removeMember(P, token, T.id, T.owner.id), 403, 'FORBIDDEN', 'remove the owner')
  t.same(await rolesIn(T.id, T.owner), { [T.owner.id]: 'owner', [T.admin.id]: 'admin', [T.member.id]: 'member' }, 'roles unchanged')
})

t.test('an owner grants, changes and removes the owner role', async (t) => {
  const T = await newTenant(P)
  const outsider = await newPerson(P)
  const token = T.owner.token
  t.equal((await addMember(P, bearer(token), T.id, outsider, 'owner')).statusCode, 200, 'add an owner')
  t.equal((await patchRole(P, token, T.id, T.member.id, 'owner')).statusCode, 200, 'promote a member to owner')
  t.same(await ownersIn(T.id, T.owner), [T.owner.id, outsider.id, T.member.id].sort(), 'three owners')
  t.equal((await patchRole(P, token, T.id, outsider.id, 'admin')).statusCode, 200, "change another owner's role")
  t.equal((await removeMember(P, token, T.id, T.member.id)).statusCode, 204, 'remove another owner')
  t.same(await rolesIn(T.id, T.owner), { [T.owner.id]: 'owner', [T.admin.id]: 'admin', [outsider.id]: 'admin' })
})

t.test('an organization keeps at least one owner', async (t) => {
  const T = await newTenant(P)
  const token = T.owner.token
  assertError(t, await removeMember(P, token, T.id, T.owner.id), 409, 'CONFLICT', 'the last owner removes itself')
  assertError(t, await patchRole(P, token, T.id, T.owner.id, 'admin'), 409, 'CONFLICT', 'the last owner demotes itself')
  assertError(t, await patchRole(P, token, T.id, T.owner.id, 'member'), 409, 'CONFLICT', 'the last owner demotes itself to member')
  t.same(await ownersIn(T.id, T.owner), [T.owner.id], 'still the owner')

  t.equal((await patchRole(P, token, T.id, T.admin.id, 'owner')).statusCode, 200, 'a second owner')
  t.equal((await removeMember(P, token, T.id, T.admin.id)).statusCode, 204, 'with two owners, one can be removed')
  t.same(await ownersIn(T.id, T.owner), [T.owner.id], 'one owner left')
  assertError(t, await removeMember(P, token, T.id, T.owner.id), 409, 'CONFLICT', 'which is the last one again')
})

t.test('two owners removing each other at the same time leave exactly one owner', async (t) => {
  for (let round = 1; round <= 5; round++) {
    const T = await newTenant(P)
    expectStatus(await patchRole(P, T.owner.token, T.id, T.admin.id, 'owner'), 200, 'second owner')
    // One request on each instance: separate pools on PostgreSQL, truly concurrent.
    const [first, second] = await Promise.all([
      removeMember(P, T.owner.token, T.id, T.admin.id),
      removeMember(Q, T.admin.token, T.id, T.owner.id),
    ])
    const statuses = [first.statusCode, second.statusCode]
    t.equal(statuses.filter((s) => s === 204).length, 1, `round ${round}: exactly one removal succeeds (${statuses.join(', ')})`)
    t.ok(statuses.every((s) => [204, 401, 403, 409].includes(s)), `round ${round}: the other is 409 (or refused: already removed)`)
    const survivor = first.statusCode === 204 ? T.owner : T.admin
    t.same(await ownersIn(T.id, survivor), [survivor.id], `round ${round}: exactly one owner left`)
  }
})

t.test('X-Org-ID chooses the organization context among the caller\'s memberships', async (t) => {
  const T = await newTenant(P)
  const other = await newTenant(P)
  const user = T.member
  const workspace = expectStatus(await me(P, user.token), 200, 'me').memberships
    .find((m: { id: string }) => m.id !== T.id) as { id: string; name: string }

  t.match((await me(P, user.token)).json().organization, { id: T.id, role: 'member' }, 'without X-Org-ID: the token\'s organization')
  t.match((await me(P, user.token, workspace.id)).json().organization, { id: workspace.id, name: workspace.name, role: 'owner' },
    'X-Org-ID: the own workspace, as owner')
  t.match((await me(P, user.token, T.id)).json(), { organization: { id: T.id, role: 'member' }, auth: { method: 'session' } },
    'X-Org-ID: T, as member')
  assertError(t, await me(P, user.token, other.id), 403, 'FORBIDDEN', 'X-Org-ID of an organization it does not belong to')
  for (const bad of ['org_nope', newId('usr'), `${T.id.toUpperCase()}`, `${T.id}' or '1'='1`, 'x'.repeat(300)]) {
    assertError(t, await me(P, user.token, bad), 403, 'FORBIDDEN', `malformed X-Org-ID ${bad.slice(0, 40)}`)
  }
})

t.test('/auth/me lists the memberships and the current organization', async (t) => {
  const T = await newTenant(P)
  const body = expectStatus(await me(P, T.admin.token), 200, 'me')
  t.match(body.organization, { id: T.id, name: T.name, role: 'admin', credits: 5000 }, 'current organization')
  t.equal(body.memberships.length, 2, 'two memberships')
  t.match(body.memberships.find((m: { id: string }) => m.id === T.id), { name: T.name, role: 'admin' }, 'T as admin')
  t.match(body.memberships.find((m: { id: string }) => m.id !== T.id), { role: 'owner' }, 'its own workspace as owner')
})

t.test('removing a member ends its access to the organization', async (t) => {
  t.test('on the same instance, at once', async (t) => {
    const T = await newTenant(P)
    const elsewhere = await signIn(P, T.member.email) // a session in the member's own workspace
    t.equal((await me(P, elsewhere.token, T.id)).statusCode, 200, 'X-Org-ID: T works before')
    t.equal((await removeMember(P, T.owner.token, T.id, T.member.id)).statusCode, 204)
    t.ok(refused(await me(P, T.member.token)), 'the session in T is refused')
    assertError(t, await me(P, elsewhere.token, T.id), 403, 'FORBIDDEN', 'another session naming T with X-Org-ID')
    t.equal((await me(P, elsewhere.token)).statusCode, 200, 'the session in its own workspace still works')
  })

  t.test(`on another instance, within 1 s (${CHANNEL})`, async (t) => {
    const T = await newTenant(P)
    const elsewhere = await signIn(Q, T.member.email)
    // Q has seen (and cached) the membership.
    t.equal((await me(Q, T.member.token)).statusCode, 200, 'the session in T works on Q before')
    t.equal((await me(Q, elsewhere.token, T.id)).statusCode, 200, 'X-Org-ID: T works on Q before')
    t.equal((await removeMember(P, T.owner.token, T.id, T.member.id)).statusCode, 204, 'removed on P')
    const ms = await within(1000, async () => refused(await me(Q, T.member.token)) && (await me(Q, elsewhere.token, T.id)).statusCode === 403)
    t.ok(ms >= 0, `Q refuses both after ${ms} ms`)
    t.equal((await me(Q, elsewhere.token)).statusCode, 200, 'the session in its own workspace still works on Q')
  })
})

t.test('a role change applies at once to existing tokens', async (t) => {
  const T = await newTenant(P)
  const listKeys = (app: App, person: Person) => get(app, '/api/v1/api-keys', bearer(person.token))
  t.equal((await listKeys(Q, T.member)).statusCode, 403, 'Q: the member cannot list keys (and caches the role)')
  t.equal((await listKeys(Q, T.admin)).statusCode, 200, 'Q: the admin can (and caches the role)')

  t.equal((await patchRole(P, T.owner.token, T.id, T.member.id, 'admin')).statusCode, 200, 'member promoted to admin')
  const outsider = await newPerson(P)
  t.equal((await addMember(P, bearer(T.member.token), T.id, outsider, 'member')).statusCode, 200,
    'the promoted member adds a member with its existing token')

  t.equal((await patchRole(P, T.owner.token, T.id, T.admin.id, 'member')).statusCode, 200, 'admin demoted to member')
  assertError(t, await removeMember(P, T.admin.token, T.id, outsider.id), 403, 'FORBIDDEN', 'the demoted admin cannot remove a member')
  assertError(t, await listKeys(P, T.admin), 403, 'FORBIDDEN', 'nor list keys')

  const ms = await within(1000, async () =>
    (await listKeys(Q, T.member)).statusCode === 200 && (await listKeys(Q, T.admin)).statusCode === 403)
  t.ok(ms >= 0, `Q applies both changes after ${ms} ms (${CHANNEL})`)
})

t.test('creating, listing, reading and renaming organizations', async (t) => {
  const reg = await register(P)
  t.equal(reg.organization.credits, 5000, 'registration: WELCOME_CREDITS')
  const user: Person = { id: reg.user.id, email: reg.email, token: reg.access_token, sid: '' }

  const res = await P.inject({ method: 'POST', url: '/api/v1/organizations', headers: bearer(user.token), payload: { name: '  Second Org ' } })
  t.equal(res.statusCode, 201)
  const created = res.json()
  t.match(created, { id: /^org_/, name: 'Second Org', role: 'owner', credits: 0 }, 'the caller is owner; no credits')
  t.match(expectStatus(await get(P, `/api/v1/organizations/${created.id}`, bearer(user.token)), 200, 'get'),
    { id: created.id, role: 'owner', credits: 0 }, 'readable by its owner')
  t.same(await ownersIn(created.id, user), [user.id], 'the caller is its only owner')

  const T = await newTenant(P)
  expectStatus(await addMember(P, bearer(T.owner.token), T.id, user, 'member'), 200, 'join T')
  const mine = expectStatus(await get(P, '/api/v1/organizations', bearer(user.token)), 200, 'list')
  t.same(
    mine.items.map((o: { id: string; role: string; credits: number }) => [o.id, o.role, o.credits]),
    [[reg.organization.id, 'owner', 5000], [created.id, 'owner', 0], [T.id, 'member', 5000]],
    'every organization with the role, first joined first',
  )

  const rename = (person: Person, name: string) =>
    P.inject({ method: 'PATCH', url: `/api/v1/organizations/${T.id}`, headers: bearer(person.token), payload: { name } })
  t.match(expectStatus(await rename(T.admin, 'Renamed by admin'), 200, 'rename'), { id: T.id, name: 'Renamed by admin', role: 'admin' },
    'an admin renames')
  assertError(t, await rename(T.member, 'Renamed by member'), 403, 'FORBIDDEN', 'a member cannot rename')
  t.equal(expectStatus(await get(P, `/api/v1/organizations/${T.id}`, bearer(T.owner.token)), 200, 'get').name, 'Renamed by admin')

  const stranger = await newTenant(P)
  assertError(t, await get(P, `/api/v1/organizations/${stranger.id}`, bearer(user.token)), 403, 'FORBIDDEN',
    'GET of an organization the caller does not belong to')
})

t.test('the audit log of an organization', async (t) => {
  const T = await newTenant(P)
  const B = await newTenant(P)
  const X = await newPerson(P)
  const auditUrl = (orgId: string, query = '') => `/api/v1/organizations/${orgId}/audit-events${query}`
  const list = async (orgId: string, headers: Headers, query = '?limit=100') =>
    expectStatus(await get(P, auditUrl(orgId, query), headers), 200, 'audit events')

  expectStatus(await addMember(P, bearer(T.owner.token), T.id, X, 'member'), 200, 'add')
  expectStatus(await patchRole(P, T.owner.token, T.id, X.id, 'admin'), 200, 'role')
  expectStatus(await removeMember(P, T.owner.token, T.id, X.id), 204, 'remove')
  expectStatus(await login(P, T.owner.email), 200, 'login')
  const failed = await login(P, T.owner.email, 'not-the-password-at-all')
  t.test('the wrong password is refused', async (t) => {
    assertError(t, failed, 401, 'INVALID_CREDENTIALS', 'failed login')
  })

  const expected = [
    { action: 'invitation.created', actor_user_id: T.owner.id, metadata: { role: 'member' } },
    { action: 'member.added', actor_user_id: X.id, target_id: X.id, metadata: { role: 'member' } },
    { action: 'member.role_changed', actor_user_id: T.owner.id, target_id: X.id, metadata: { from: 'member', to: 'admin' } },
    { action: 'member.removed', actor_user_id: T.owner.id, target_id: X.id },
    { action: 'login.succeeded', actor_user_id: T.owner.id },
    { action: 'login.failed', actor_user_id: T.owner.id },
  ]
  type Event = { id: string; action: string; actor_user_id: string | null; target_id: string | null }
  let events: Event[] = []
  const found = (e: Record<string, unknown>) => events.find((x) => x.action === e.action && x.actor_user_id === e.actor_user_id &&
    (!('target_id' in e) || x.target_id === e.target_id))
  // Events are written in the background; a failed login is recorded after the answer.
  const ms = await within(2000, async () => {
    await P.audit.flush()
    events = (await list(T.id, bearer(T.owner.token))).items
    return expected.every(found)
  })
  t.ok(ms >= 0, `every expected event is listed (after ${ms} ms)`)
  for (const e of expected) t.match(found(e), { ...e, id: /^evt_/, created_at: String }, e.action)

  t.test('only in their own organization', async (t) => {
    const inB: Event[] = (await list(B.id, bearer(B.owner.token))).items
    t.ok(inB.length > 0, 'B has events of its own')
    const idsOfT = new Set(events.map((e) => e.id))
    t.same(inB.filter((e) => idsOfT.has(e.id)), [], "none of T's events in B's list")
    t.same(inB.filter((e) => [T.owner.id, X.id].includes(e.actor_user_id ?? '') || e.target_id === X.id), [], "none about T's people")
    const idsOfB = new Set(inB.map((e) => e.id))
    t.same(events.filter((e) => idsOfB.has(e.id)), [], "none of B's events in T's list")
  })

  t.test('cursor pagination, newest first', async (t) => {
    const first = await list(T.id, bearer(T.owner.token), '?limit=1')
    t.equal(first.items.length, 1)
    t.type(first.next_cursor, 'string', 'next_cursor')
    const second = await list(T.id, bearer(T.owner.token), `?limit=1&cursor=${encodeURIComponent(first.next_cursor)}`)
    t.equal(second.items.length, 1)
    t.not(second.items[0].id, first.items[0].id, 'the next page has another event')
    t.ok(second.items[0].id < first.items[0].id, 'an older one')
    t.same([first.items[0].id, second.items[0].id], events.slice(0, 2).map((e) => e.id), 'the first two of the full list')
  })

  t.test('who may read it', async (t) => {
    t.equal((await get(P, auditUrl(T.id), bearer(T.admin.token))).statusCode, 200, 'an admin')
    assertError(t, await get(P, auditUrl(T.id), bearer(T.member.token)), 403, 'FORBIDDEN', 'a member')
    const reader = await createKey(P, bearer(T.owner.token), READ_ONLY_SCOPES)
    t.equal((await get(P, auditUrl(T.id), { 'x-api-key': reader.key })).statusCode, 200, 'a key with audit:read')
    const agents = await createKey(P, bearer(T.owner.token), ['agents:read'])
    const res = await get(P, auditUrl(T.id), { 'x-api-key': agents.key })
    assertError(t, res, 403, 'INSUFFICIENT_SCOPE', 'a key without audit:read')
    t.match(res.json().error.details, [{ scope: 'audit:read' }], 'details name audit:read')
  })
})
