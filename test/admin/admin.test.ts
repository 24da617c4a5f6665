// Platform administration, on two instances sharing one database: only a
// superadmin (made from the CLI's service) reaches /admin; disabling and
// erasing kill the account's tokens on both instances within a second;
// disabled logins answer exactly like a wrong password; erasure leaves no
// address or IP of the account in any table (scanned), and is refused while the
// account is the last owner of an organization with other members. Every
// action is in the platform audit log.
import t, { type Test } from 'tap'
import { sql, type SQL } from 'drizzle-orm'
import type { App } from '../../src/app.js'
import { buildTestApp, FAST_ARGON2, sharedDatabase, within } from '../helpers/app.js'
import { bearer, STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'
import { assertError } from '../helpers/errors.js'
import { addMember, expectStatus } from '../helpers/orgs.js'
import { tracesOf } from '../helpers/scan.js'
import { mailEnv, startSmtp } from '../helpers/smtp.js'

const smtp = await startSmtp(t)
const shared = await sharedDatabase(t)
const env = { ...FAST_ARGON2, ...mailEnv(smtp) }
const A = await buildTestApp(t, { ...shared, env })
const B = await buildTestApp(t, { ...shared, env })

async function rows<T>(query: SQL): Promise<T[]> {
  const result = await A.db.execute(query)
  return (Array.isArray(result) ? result : (result as unknown as { rows: T[] }).rows) as T[]
}

/** An account registered (and used) from its own client address, so its IP can be looked for later. */
async function account(ip: string, extra: Record<string, unknown> = {}) {
  const email = uniqueEmail('acct')
  const res = await A.inject({ method: 'POST', url: '/api/v1/auth/register', remoteAddress: ip, payload: { email, password: STRONG_PASSWORD, ...extra } })
  const body = expectStatus(res, 201, 'register')
  return { email, id: body.user.id as string, orgId: body.organization.id as string, token: body.access_token as string, refresh: body.refresh_token as string, ip }
}

const operatorAccount = await account('198.51.100.1')
await A.admin.setSuperadmin(operatorAccount.email, true) // what `npm run cli -- users grant-superadmin` does
const op = bearer(operatorAccount.token)
const adminCall = (method: 'GET' | 'POST', url: string, payload?: object, headers = op) =>
  A.inject({ method, url: `/api/v1/admin${url}`, headers, remoteAddress: '198.51.100.1', ...(payload ? { payload } : {}) })
const proof = { password: STRONG_PASSWORD }
const me = (app: App, token: string) => app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(token) })

/** Both instances refuse the token within a second; returns how long it took. */
async function deadOnBoth(t: Test, token: string) {
  const ms = await within(1000, async () => (await me(A, token)).statusCode === 401 && (await me(B, token)).statusCode === 401)
  t.ok(ms >= 0, `the access token is refused on both instances within 1 s (${ms} ms)`)
}

t.test('only a superadmin reaches /admin; the flag is read on every request', async (t) => {
  const plain = await account('198.51.100.2')
  for (const [method, url] of [['GET', '/users'], ['GET', `/users/${plain.id}`], ['POST', `/users/${plain.id}/enable`], ['POST', `/users/${plain.id}/password-reset`], ['GET', '/organizations'], ['GET', '/audit-events']] as const) {
    assertError(t, await adminCall(method, url, undefined, bearer(plain.token)), 403, 'FORBIDDEN', undefined, `${method} ${url} as a plain account`)
  }
  t.equal((await me(A, operatorAccount.token)).json().user.is_superadmin, true, '/auth/me shows the flag')
  const second = await account('198.51.100.3')
  await A.admin.setSuperadmin(second.email, true)
  t.equal((await adminCall('GET', '/users', undefined, bearer(second.token))).statusCode, 200, 'granted: in')
  await A.admin.setSuperadmin(second.email, false)
  assertError(t, await adminCall('GET', '/users', undefined, bearer(second.token)), 403, 'FORBIDDEN', undefined, 'revoked: out at once, with the same token')
})

t.test('search by address prefix, page by cursor, read one with memberships and sessions', async (t) => {
  const tag = `find${Date.now()}`
  const found = await Promise.all([1, 2, 3].map(() => A.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { email: `${tag}.${uniqueEmail()}`, password: STRONG_PASSWORD } })))
  const first = expectStatus(await adminCall('GET', `/users?email_prefix=${tag.toUpperCase()}&limit=2`), 200, 'page 1')
  t.equal(first.items.length, 2)
  const second = expectStatus(await adminCall('GET', `/users?email_prefix=${tag}&limit=2&cursor=${first.next_cursor}`), 200, 'page 2')
  t.same([...first.items, ...second.items].map((u: { id: string }) => u.id).sort(), found.map((r) => r.json().user.id).sort(), 'exactly the three')
  t.equal(second.next_cursor, null)
  t.same(expectStatus(await adminCall('GET', '/users?email_prefix=%25'), 200, 'literal %').items, [], 'LIKE metacharacters are taken literally')
  const detail = expectStatus(await adminCall('GET', `/users/${operatorAccount.id}`), 200, 'detail')
  t.match(detail, { id: operatorAccount.id, email: operatorAccount.email, is_superadmin: true, memberships: [{ id: operatorAccount.orgId, role: 'owner' }] })
  t.ok(detail.sessions.some((s: { ip: string }) => s.ip === '198.51.100.1'), 'sessions with their IP')
  assertError(t, await adminCall('GET', '/users/usr_01aaaaaaaaaaaaaaaaaaaaaaaa'), 404, 'NOT_FOUND')
  const orgs = expectStatus(await adminCall('GET', '/organizations?limit=100'), 200, 'orgs')
  t.match(orgs.items.find((o: { id: string }) => o.id === operatorAccount.orgId), { member_count: 1 })
})

t.test('disable: every token dies on both instances; logins answer exactly like a wrong password; enable restores', async (t) => {
  const user = await account('198.51.100.4')
  t.equal((await me(B, user.token)).statusCode, 200, 'works on B before')
  const key = expectStatus(await A.inject({ method: 'POST', url: '/api/v1/api-keys', headers: bearer(user.token), payload: { name: 'the organization\'s', scopes: ['agents:read'] } }), 201, 'a key the account creates')
  assertError(t, await adminCall('POST', `/users/${user.id}/disable`, {}), 403, 'REAUTHENTICATION_REQUIRED', undefined, 'the operator\'s password is needed')
  assertError(t, await adminCall('POST', `/users/${operatorAccount.id}/disable`, proof), 409, 'CONFLICT', undefined, 'not one\'s own account')
  t.equal((await adminCall('POST', `/users/${user.id}/disable`, proof)).statusCode, 204)
  await deadOnBoth(t, user.token)
  t.equal((await B.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: user.refresh } })).statusCode, 401, 'refresh refused')
  for (const app of [A, B]) t.equal((await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { 'x-api-key': key.key } })).statusCode, 200, 'its organization\'s API key stays alive')
  const disabled = await A.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: user.email, password: STRONG_PASSWORD } })
  const wrong = await A.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: operatorAccount.email, password: 'not-the-password-at-all' } })
  t.equal(disabled.statusCode, wrong.statusCode, 'same status as a wrong password')
  t.same({ ...disabled.json().error, request_id: 0 }, { ...wrong.json().error, request_id: 0 }, 'same body')
  assertError(t, await adminCall('POST', `/users/${user.id}/enable`), 403, 'REAUTHENTICATION_REQUIRED', undefined, 'enabling needs the password too')
  t.equal((await adminCall('POST', `/users/${user.id}/enable`, proof)).statusCode, 204)
  t.equal((await A.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: user.email, password: STRONG_PASSWORD } })).statusCode, 200, 'enabled: logs in')
})

t.test('send a password reset: the link is mailed; the platform log has every action', async (t) => {
  const user = await account('198.51.100.5')
  t.equal((await adminCall('POST', `/users/${user.id}/password-reset`)).statusCode, 202)
  await smtp.waitFor(user.email, (m) => /reset your password/.test(m.subject ?? ''))
  const events = expectStatus(await adminCall('GET', '/audit-events?limit=100'), 200, 'events').items as { action: string; actor_user_id: string | null; target_id: string; ip: string | null }[]
  t.ok(events.some((e) => e.action === 'user.password_reset_sent' && e.actor_user_id === operatorAccount.id && e.target_id === user.id && e.ip === '198.51.100.1'), 'reset, with actor and IP')
  t.ok(events.some((e) => e.action === 'user.disabled') && events.some((e) => e.action === 'user.enabled'), 'disable and enable')
  t.ok(events.some((e) => e.action === 'superadmin.granted' && e.actor_user_id === null), 'grants made from the CLI')
  const orgLog = expectStatus(await A.inject({ method: 'GET', url: `/api/v1/organizations/${user.orgId}/audit-events?limit=100`, headers: bearer(user.token) }), 200, 'org log').items as { action: string }[]
  t.notOk(orgLog.some((e) => e.action.startsWith('user.')), 'none of it in the organization\'s own log')
})

t.test('erase: refused while last owner of an organization with others; then no trace of the address or IP anywhere', async (t) => {
  const victimIp = '203.0.113.77'
  const victim = await account(victimIp, { name: 'Vera Victim', company_name: 'Vera Co' })
  const colleague = await account('198.51.100.6')
  expectStatus(await addMember(A, bearer(victim.token), victim.orgId, { email: colleague.email, token: colleague.token }, 'member'), 200, 'a colleague joins Vera Co')
  // The victim also joins another organization, and fails a login (its address in the lockout table).
  expectStatus(await addMember(A, bearer(colleague.token), colleague.orgId, { email: victim.email, token: victim.token }, 'admin'), 200, 'the victim joins the colleague\'s organization')
  await A.inject({ method: 'POST', url: '/api/v1/auth/login', remoteAddress: victimIp, payload: { email: victim.email, password: 'wrong-password-for-sure' } })
  await A.inject({ method: 'POST', url: '/api/v1/auth/password/forgot', remoteAddress: victimIp, payload: { email: victim.email } })
  await smtp.waitFor(victim.email, (m) => /reset your password/.test(m.subject ?? ''))

  const refused = await adminCall('POST', `/users/${victim.id}/erase`, proof)
  assertError(t, refused, 409, 'CONFLICT', /Vera Co/, 'names the organization it would leave without an owner')
  t.equal(refused.json().error.details[0].organization_id, victim.orgId)
  expectStatus(await A.inject({ method: 'PATCH', url: `/api/v1/organizations/${victim.orgId}/members/${colleague.id}`, headers: bearer(victim.token), payload: { role: 'owner' } }), 200, 'make the colleague an owner')

  t.equal((await adminCall('POST', `/users/${victim.id}/erase`, proof)).statusCode, 204, 'erased')
  await deadOnBoth(t, victim.token)
  t.equal((await A.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: victim.email, password: STRONG_PASSWORD } })).statusCode, 401, 'no login')
  const members = expectStatus(await A.inject({ method: 'GET', url: `/api/v1/organizations/${colleague.orgId}/members?limit=100`, headers: bearer(colleague.token) }), 200, 'members')
  t.notOk(members.items.some((m: { user_id: string }) => m.user_id === victim.id), 'its memberships are gone')

  t.same(await tracesOf(A, [victim.email, victimIp, 'Vera Victim']), [], 'no table holds the address, the IP or the name')
  const [events] = await rows<{ n: number }>(sql`select count(*)::int as n from audit_events where actor_user_id = ${victim.id} or target_id = ${victim.id}`)
  t.ok(events!.n > 0, `its audit events keep their ids (${events!.n})`)
  const detail = expectStatus(await adminCall('GET', `/users/${victim.id}`), 200, 'tombstone')
  t.match(detail, { erased: true, disabled: true, email: `erased+${victim.id}@invalid`, name: null, memberships: [] })
  const platformLog = expectStatus(await adminCall('GET', '/audit-events?limit=100'), 200, 'platform log').items as { action: string; actor_user_id: string; target_id: string; ip: string }[]
  t.ok(platformLog.some((e) => e.action === 'user.erased' && e.target_id === victim.id && e.actor_user_id === operatorAccount.id && e.ip === '198.51.100.1'),
    'user.erased in the platform log, with the administrator and their IP')
})

t.test('a user erases their own account with the password', async (t) => {
  const user = await account('198.51.100.8')
  const orgsNamed = async (id: string) => (await rows<{ name: string }>(sql`select name from organizations where id = ${id}`)).map((o) => o.name)
  // A workspace named after the account, but renamed by its members since, keeps the name they chose.
  const renamedBy = await account('198.51.100.9')
  expectStatus(await addMember(A, bearer(user.token), user.orgId, { email: renamedBy.email, token: renamedBy.token }, 'owner'), 200, 'a co-owner')
  expectStatus(await A.inject({ method: 'PATCH', url: `/api/v1/organizations/${user.orgId}`, headers: bearer(user.token), payload: { name: 'Chosen Name' } }), 200, 'rename')
  const solo = expectStatus(await A.inject({ method: 'POST', url: '/api/v1/organizations', headers: bearer(user.token), payload: { name: 'Only Me' } }), 201, 'an organization of its own')
  const erase = (payload?: object) => B.inject({ method: 'DELETE', url: '/api/v1/auth/me', headers: bearer(user.token), ...(payload ? { payload } : {}) })
  assertError(t, await erase(), 403, 'REAUTHENTICATION_REQUIRED', undefined, 'the token alone is not enough')
  assertError(t, await erase({ password: 'not-my-password-at-all' }), 401, 'INVALID_CREDENTIALS')
  t.equal((await erase(proof)).statusCode, 204)
  await deadOnBoth(t, user.token)
  t.same(await orgsNamed(solo.id), [], 'the organization it alone belonged to is deleted')
  t.same(await orgsNamed(user.orgId), ['Chosen Name'], 'the renamed workspace keeps its name')
  t.equal((await A.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: user.email, password: STRONG_PASSWORD } })).statusCode, 401)
  const again = await A.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { email: user.email, password: STRONG_PASSWORD } })
  t.equal(again.statusCode, 201, 'the address is free again')
  const events = expectStatus(await adminCall('GET', '/audit-events?limit=100'), 200, 'events').items as { action: string; target_id: string }[]
  t.ok(events.some((e) => e.action === 'account.erased' && e.target_id === user.id), 'in the platform log')
})
