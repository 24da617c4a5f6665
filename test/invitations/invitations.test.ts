// Invitations through a real SMTP server: the invited person reads the mail
// and follows its link, as an existing (verified) account or by signing up
// with it. Nobody joins without accepting; the answer to an invite says
// nothing about whether the address has an account; an unverified account
// holding the invited address cannot take the invitation; the role is capped
// by the inviter's authority, at the invite and again at acceptance; every
// token is single-use; every step is in the organization's audit log.
import t, { type Test } from 'tap'
import { eq, sql } from 'drizzle-orm'
import type { ParsedMail } from 'mailparser'
import { users } from '../../src/db/schema.js'
import { buildTestApp, FakeClock, FAST_ARGON2 } from '../helpers/app.js'
import { bearer, login, register, STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'
import { assertError } from '../helpers/errors.js'
import { expectStatus, newPerson, newTenant, signIn, type Headers, type Role } from '../helpers/orgs.js'
import { linkIn, mailEnv, startSmtp, tokenIn } from '../helpers/smtp.js'

const smtp = await startSmtp(t)
const clock = new FakeClock()
const app = await buildTestApp(t, { clock, env: { ...FAST_ARGON2, ...mailEnv(smtp) } })
const org = await newTenant(app, 'Invitations Inc')
const owner = bearer(org.owner.token)

const inviteAs = (headers: Headers, email: string, role: Role = 'member', orgId = org.id) =>
  app.inject({ method: 'POST', url: `/api/v1/organizations/${orgId}/invitations`, headers, payload: { email, role } })
const accept = (token: string, invitation: string) =>
  app.inject({ method: 'POST', url: '/api/v1/invitations/accept', headers: bearer(token), payload: { token: invitation } })
const registerWith = (email: string, invitation: string, extra: Record<string, unknown> = {}) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { email, password: STRONG_PASSWORD, invitation_token: invitation, ...extra } })
const invitationsOf = async (query = '') =>
  expectStatus(await app.inject({ method: 'GET', url: `/api/v1/organizations/${org.id}/invitations?limit=100${query}`, headers: owner }), 200, 'list').items as { id: string; email: string; state: string }[]
const roleOf = async (userId: string) => {
  const page = expectStatus(await app.inject({ method: 'GET', url: `/api/v1/organizations/${org.id}/members?limit=100`, headers: owner }), 200, 'members')
  return (page.items as { user_id: string; role: Role }[]).find((m) => m.user_id === userId)?.role
}

/** The n-th invitation mail to `email` (counting from 1), once it has arrived. */
async function invitationMail(email: string, nth = 1): Promise<ParsedMail> {
  const all = () => smtp.to(email).filter((m) => /invited to join/.test(m.subject ?? ''))
  await smtp.waitFor(email, () => all().length >= nth)
  return all()[nth - 1]!
}

/** Follows the verification link mailed to a new account. */
async function verify(email: string) {
  const mail = await smtp.waitFor(email, (m) => /confirm your email address/.test(m.subject ?? ''))
  expectStatus(await app.inject({ method: 'POST', url: '/api/v1/auth/email/verify', payload: { token: tokenIn(mail) } }), 204, 'verify')
}

async function auditActions(t: Test) {
  await app.audit.flush()
  const page = expectStatus(await app.inject({ method: 'GET', url: `/api/v1/organizations/${org.id}/audit-events?limit=100`, headers: owner }), 200, 'audit')
  void t
  return page.items as { action: string; actor_user_id: string | null; target_id: string | null; metadata: Record<string, unknown> }[]
}

t.test('invite → mail → accept, as an existing account once its address is verified', async (t) => {
  const person = await register(app)
  const res = await inviteAs(owner, person.email.toUpperCase(), 'admin')
  t.equal(res.statusCode, 201)
  const invitation = res.json()
  t.match(invitation, { id: /^inv_/, email: person.email, role: 'admin', state: 'pending', invited_by: { user_id: org.owner.id, api_key_id: null } })
  t.equal(await roleOf(person.user.id), undefined, 'not a member until it accepts')

  const mail = await invitationMail(person.email)
  t.match(mail.subject, /invited to join an organization/)
  t.match(mail.text, /named "Invitations Inc" as an admin/)
  t.match(linkIn(mail), /^https:\/\/app\.example\.test\/accept-invitation\?token=[A-Za-z0-9_-]{43}$/)
  const token = tokenIn(mail)

  assertError(t, await accept(person.access_token, token), 403, 'FORBIDDEN', /not verified/, 'the address is not verified yet')
  await verify(person.email)
  const accepted = await accept(person.access_token, token)
  t.equal(accepted.statusCode, 200, `accepted (${accepted.body})`)
  t.match(accepted.json(), { id: org.id, name: 'Invitations Inc', role: 'admin' })
  t.equal(await roleOf(person.user.id), 'admin', 'a member, with the invited role')
  assertError(t, await accept(person.access_token, token), 400, 'INVALID_LINK', undefined, 'the link works once')
  t.same((await invitationsOf('&state=accepted')).map((i) => i.id).includes(invitation.id), true, 'listed as accepted')
  t.equal((await signIn(app, person.email, org.id)).id, person.user.id, 'signs in to the organization')

  const events = await auditActions(t)
  t.ok(events.some((e) => e.action === 'invitation.created' && e.actor_user_id === org.owner.id && e.target_id === invitation.id), 'invitation.created')
  t.ok(events.some((e) => e.action === 'invitation.accepted' && e.actor_user_id === person.user.id), 'invitation.accepted')
  t.ok(events.some((e) => e.action === 'member.added' && e.target_id === person.user.id && e.metadata.role === 'admin'), 'member.added')
})

t.test('invite → mail → sign up with the invitation: joins with the role, verified, and creates no organization', async (t) => {
  const email = uniqueEmail('newcomer')
  expectStatus(await inviteAs(owner, email, 'member'), 201, 'invite')
  const token = tokenIn(await invitationMail(email))
  const creditsBefore = expectStatus(await app.inject({ method: 'GET', url: `/api/v1/organizations/${org.id}`, headers: owner }), 200, 'org').credits

  assertError(t, await registerWith(uniqueEmail('someone-else'), token), 422, 'VALIDATION_ERROR', undefined, 'another address cannot use it')
  const res = await registerWith(email, token, { company_name: 'Ignored Corp' })
  t.equal(res.statusCode, 201, res.body)
  const body = res.json()
  t.match(body, { user: { email, email_verified: true }, organization: { id: org.id, role: 'member', credits: creditsBefore } })
  t.type(body.access_token, 'string', 'signed in at once')
  const mine = expectStatus(await app.inject({ method: 'GET', url: '/api/v1/organizations', headers: bearer(body.access_token) }), 200, 'mine')
  t.same(mine.items.map((o: { id: string }) => o.id), [org.id], 'the inviting organization only: none of its own')
  const creditsAfter = expectStatus(await app.inject({ method: 'GET', url: `/api/v1/organizations/${org.id}`, headers: owner }), 200, 'org').credits
  t.equal(creditsAfter, creditsBefore, 'no welcome credits')
  assertError(t, await registerWith(uniqueEmail('again'), token), 400, 'INVALID_LINK', undefined, 'the token is spent')
  await new Promise((r) => setTimeout(r, 300))
  t.same(smtp.to(email).filter((m) => /confirm your email/.test(m.subject ?? '')), [], 'no verification mail: the address is proven')
})

t.test('with EMAIL_VERIFICATION=required, a sign-up with an invitation is signed in at once', async (t) => {
  const strict = await buildTestApp(t, { env: { ...FAST_ARGON2, ...mailEnv(smtp), EMAIL_VERIFICATION: 'required' } })
  const boss = await register(strict) // required: no tokens, but the owner can log in once verified
  const mail = await smtp.waitFor(boss.email, (m) => /confirm your email address/.test(m.subject ?? ''))
  expectStatus(await strict.inject({ method: 'POST', url: '/api/v1/auth/email/verify', payload: { token: tokenIn(mail) } }), 204, 'verify')
  const session = expectStatus(await login(strict, boss.email), 200, 'login')
  const email = uniqueEmail('strict')
  expectStatus(await strict.inject({ method: 'POST', url: `/api/v1/organizations/${boss.organization.id}/invitations`, headers: bearer(session.access_token), payload: { email, role: 'member' } }), 201, 'invite')
  const token = tokenIn(await invitationMail(email))
  const res = await strict.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { email, password: STRONG_PASSWORD, invitation_token: token } })
  t.equal(res.statusCode, 201)
  t.type(res.json().access_token, 'string')
  t.equal((await login(strict, email)).statusCode, 200, 'and logs in later')
})

t.test('the same answer whether or not the address has an account', async (t) => {
  const known = await register(app)
  const unknown = uniqueEmail('nobody')
  const [a, b] = [await inviteAs(owner, known.email), await inviteAs(owner, unknown)]
  t.equal(a.statusCode, b.statusCode, 'same status')
  const shape = (body: Record<string, unknown>) => Object.keys(body).sort()
  t.same(shape(a.json()), shape(b.json()), 'same fields')
  t.same({ ...a.json(), id: 0, email: 0, created_at: 0, expires_at: 0 }, { ...b.json(), id: 0, email: 0, created_at: 0, expires_at: 0 }, 'same values but the address')
  const [ma, mb] = [await invitationMail(known.email), await invitationMail(unknown)]
  t.equal(ma.subject, mb.subject, 'the same mail')
})

t.test('nobody joins without accepting: there is no direct add', async (t) => {
  const person = await register(app)
  const direct = await app.inject({ method: 'POST', url: `/api/v1/organizations/${org.id}/members`, headers: owner, payload: { email: person.email, role: 'member' } })
  t.equal(direct.statusCode, 404, 'POST …/members is gone')
  t.equal(await roleOf(person.user.id), undefined)
})

t.test('an unverified account with the invited address cannot take the invitation; another verified account cannot either', async (t) => {
  // Someone registers the victim's address first (unverified: the verification mail goes to the victim).
  const victimEmail = uniqueEmail('victim')
  const squatter = await register(app, { email: victimEmail })
  expectStatus(await inviteAs(owner, victimEmail, 'admin'), 201, 'invite the victim')
  const token = tokenIn(await invitationMail(victimEmail)) // suppose the squatter got hold of it
  assertError(t, await accept(squatter.access_token, token), 403, 'FORBIDDEN', undefined, 'unverified: refused')
  const other = await register(app)
  await verify(other.email)
  assertError(t, await accept(other.access_token, token), 403, 'FORBIDDEN', undefined, 'another address: refused')
  t.equal(await roleOf(squatter.user.id), undefined, 'the squatter is no member')
  t.equal((await invitationsOf('&state=pending')).some((i) => i.email === victimEmail), true, 'the invitation is still pending for its owner')
  assertError(t, await registerWith(victimEmail, token), 409, 'EMAIL_TAKEN', undefined, 'nor can the address sign up again')
})

t.test('the role is capped by the inviter: at the invite, at a resend, and again at acceptance', async (t) => {
  const admin = bearer(org.admin.token)
  assertError(t, await inviteAs(admin, uniqueEmail(), 'owner'), 403, 'FORBIDDEN', undefined, 'an admin cannot invite an owner')
  assertError(t, await inviteAs(bearer(org.member.token), uniqueEmail(), 'member'), 403, 'FORBIDDEN', undefined, 'a member cannot invite')
  const ownerInvite = expectStatus(await inviteAs(owner, uniqueEmail('future-owner'), 'owner'), 201, 'an owner invites an owner')
  assertError(t, await app.inject({ method: 'POST', url: `/api/v1/organizations/${org.id}/invitations/${ownerInvite.id}/resend`, headers: admin }), 403, 'FORBIDDEN', undefined, 'an admin cannot resend it')
  assertError(t, await app.inject({ method: 'DELETE', url: `/api/v1/organizations/${org.id}/invitations/${ownerInvite.id}`, headers: admin }), 403, 'FORBIDDEN', undefined, 'nor revoke it')

  // An admin invites an admin, then is demoted before the invitation is taken: it no longer grants admin.
  const promoter = await register(app)
  await verify(promoter.email)
  expectStatus(await inviteAs(owner, promoter.email, 'admin'), 201, 'invite the promoter')
  expectStatus(await accept(promoter.access_token, tokenIn(await invitationMail(promoter.email))), 200, 'the promoter is an admin')
  const promoterSession = await signIn(app, promoter.email, org.id)
  const email = uniqueEmail('late')
  expectStatus(await inviteAs(bearer(promoterSession.token), email, 'admin'), 201, 'the admin invites an admin')
  expectStatus(await app.inject({ method: 'PATCH', url: `/api/v1/organizations/${org.id}/members/${promoter.user.id}`, headers: owner, payload: { role: 'member' } }), 200, 'demote the inviter')
  const late = tokenIn(await invitationMail(email))
  assertError(t, await registerWith(email, late), 403, 'FORBIDDEN', /can no longer grant/, 'the demoted inviter grants nothing')
  const [row] = await app.db.select({ n: sql<number>`count(*)::int` }).from(users).where(eq(users.email, email))
  t.equal(row!.n, 0, 'and the refused sign-up left no account')
  t.equal((await invitationsOf('&state=pending')).some((i) => i.email === email), true, 'the invitation stays pending (an owner can resend it)')
})

t.test('the re-check at acceptance also refuses a removed inviter and a revoked key', async (t) => {
  const inviter = await newPerson(app, { id: org.id, owner: org.owner, role: 'admin' })
  const byRemoved = uniqueEmail('by-removed')
  expectStatus(await inviteAs(bearer(inviter.token), byRemoved, 'member'), 201, 'the admin invites a member')
  expectStatus(await app.inject({ method: 'DELETE', url: `/api/v1/organizations/${org.id}/members/${inviter.id}`, headers: owner }), 204, 'remove the inviter')
  assertError(t, await registerWith(byRemoved, tokenIn(await invitationMail(byRemoved))), 403, 'FORBIDDEN', /can no longer grant/, 'a removed inviter admits nobody')

  const key = expectStatus(await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: owner, payload: { name: 'inviter', scopes: [...app.config.MEMBER_SCOPES, 'members:write'] } }), 201, 'a key that may invite members')
  const byKey = uniqueEmail('by-key')
  expectStatus(await inviteAs({ 'x-api-key': key.key }, byKey, 'member'), 201, 'the key invites a member')
  expectStatus(await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${key.id}`, headers: owner }), 204, 'revoke the key')
  assertError(t, await registerWith(byKey, tokenIn(await invitationMail(byKey))), 403, 'FORBIDDEN', /can no longer grant/, 'a revoked key admits nobody')
  const pending = await invitationsOf('&state=pending')
  t.ok([byRemoved, byKey].every((email) => pending.some((i) => i.email === email)), 'both invitations stay pending')
})

t.test('revoked, resent (old link dead) and expired invitations', async (t) => {
  const person = await register(app)
  await verify(person.email)
  const first = expectStatus(await inviteAs(owner, person.email), 201, 'invite')
  assertError(t, await inviteAs(owner, person.email), 409, 'CONFLICT', /pending invitation/, 'one pending invitation per address')
  const oldToken = tokenIn(await invitationMail(person.email, 1))
  const resent = expectStatus(await app.inject({ method: 'POST', url: `/api/v1/organizations/${org.id}/invitations/${first.id}/resend`, headers: owner }), 200, 'resend')
  t.equal(resent.id, first.id)
  const newToken = tokenIn(await invitationMail(person.email, 2))
  t.not(newToken, oldToken)
  assertError(t, await accept(person.access_token, oldToken), 400, 'INVALID_LINK', undefined, 'the old link is dead')

  expectStatus(await app.inject({ method: 'DELETE', url: `/api/v1/organizations/${org.id}/invitations/${first.id}`, headers: owner }), 204, 'revoke')
  assertError(t, await accept(person.access_token, newToken), 400, 'INVALID_LINK', undefined, 'a revoked invitation')
  assertError(t, await app.inject({ method: 'DELETE', url: `/api/v1/organizations/${org.id}/invitations/${first.id}`, headers: owner }), 409, 'CONFLICT', undefined, 'revoked once')
  t.equal((await invitationsOf('&state=revoked')).some((i) => i.id === first.id), true, 'listed as revoked')

  const second = expectStatus(await inviteAs(owner, person.email), 201, 'invite again')
  const token = tokenIn(await invitationMail(person.email, 3))
  clock.advance((app.config.INVITATION_TTL + 1) * 1000)
  assertError(t, await accept(person.access_token, token), 400, 'INVALID_LINK', undefined, 'an expired invitation')
  t.equal((await invitationsOf('&state=expired')).some((i) => i.id === second.id), true, 'listed as expired')
  t.equal((await invitationsOf('&state=pending')).some((i) => i.id === second.id), false, 'not as pending')
  const third = expectStatus(await inviteAs(owner, person.email), 201, 'an expired invitation does not block a new one')
  t.equal((await invitationsOf()).find((i) => i.id === second.id)?.state, 'expired')
  expectStatus(await accept(person.access_token, tokenIn(await invitationMail(person.email, 4))), 200, 'the new one works')
  t.equal((await invitationsOf()).find((i) => i.id === third.id)?.state, 'accepted')
  const actions = (await auditActions(t)).filter((e) => e.target_id === first.id).map((e) => e.action).sort()
  t.same(actions, ['invitation.created', 'invitation.resent', 'invitation.revoked'], 'each step audited')
})

t.test('one invitation, signed up with in parallel: exactly one account', async (t) => {
  const email = uniqueEmail('parallel')
  expectStatus(await inviteAs(owner, email), 201, 'invite')
  const token = tokenIn(await invitationMail(email))
  const answers = await Promise.all(Array.from({ length: 16 }, () => registerWith(email, token)))
  const statuses = answers.map((r) => r.statusCode)
  t.equal(statuses.filter((s) => s === 201).length, 1, `one 201 (${statuses.join(' ')})`)
  t.ok(statuses.every((s) => s === 201 || s === 400 || s === 409), 'the rest INVALID_LINK or EMAIL_TAKEN')
  const [row] = await app.db.select({ n: sql<number>`count(*)::int` }).from(users).where(eq(users.email, email))
  t.equal(row!.n, 1, 'one user row')
})

t.test('a member leaves; the last owner cannot', async (t) => {
  const person = await register(app)
  await verify(person.email)
  expectStatus(await inviteAs(owner, person.email), 201, 'invite')
  expectStatus(await accept(person.access_token, tokenIn(await invitationMail(person.email))), 200, 'accept')
  const session = await signIn(app, person.email, org.id)
  const leave = (token: string, orgId = org.id) => app.inject({ method: 'DELETE', url: `/api/v1/organizations/${orgId}/members/me`, headers: bearer(token) })
  t.equal((await leave(session.token)).statusCode, 204, 'leaves')
  t.equal(await roleOf(person.user.id), undefined, 'no longer a member')
  const after = await app.inject({ method: 'GET', url: `/api/v1/organizations/${org.id}`, headers: bearer(session.token) })
  t.equal(after.statusCode, 401, 'its session in the organization is revoked, as for a removed member')
  assertError(t, await leave(org.owner.token), 409, 'CONFLICT', /at least one owner/, 'the last owner stays')
  const events = await auditActions(t)
  t.ok(events.some((e) => e.action === 'member.left' && e.actor_user_id === person.user.id), 'member.left audited')
})

t.test('invitations count toward the per-address mail limit, whoever sends them', async (t) => {
  const limited = await buildTestApp(t, { env: { ...FAST_ARGON2, ...mailEnv(smtp), RATE_LIMIT_MAIL_PER_EMAIL: '2' } })
  const boss = await register(limited)
  const to = uniqueEmail('bombed')
  const inviteIn = (token: string, orgId: string) =>
    limited.inject({ method: 'POST', url: `/api/v1/organizations/${orgId}/invitations`, headers: bearer(token), payload: { email: to, role: 'member' } })
  const first = expectStatus(await inviteIn(boss.access_token, boss.organization.id), 201, 'invite')
  expectStatus(await limited.inject({ method: 'POST', url: `/api/v1/organizations/${boss.organization.id}/invitations/${first.id}/resend`, headers: bearer(boss.access_token) }), 200, 'resend')
  const other = await register(limited)
  assertError(t, await inviteIn(other.access_token, other.organization.id), 429, 'RATE_LIMITED', undefined, 'a third mail to the address, from another organization')
  assertError(t, await limited.inject({ method: 'POST', url: '/api/v1/auth/password/forgot', payload: { email: to } }), 429, 'RATE_LIMITED', undefined, 'and a reset mail')
})

t.test('an organization name cannot break out of its line in the mail', async (t) => {
  const created = expectStatus(await app.inject({ method: 'POST', url: '/api/v1/organizations', headers: owner, payload: { name: 'Evil\r\nBcc: victim@example.com\r\n\r\nBody' } }), 201, 'org')
  const to = uniqueEmail('header')
  expectStatus(await inviteAs(owner, to, 'member', created.id), 201, 'invite')
  const mail = await invitationMail(to)
  t.equal(mail.subject, 'Portcullis: you are invited to join an organization')
  t.same(mail.bcc, undefined, 'no header was injected')
  t.match(mail.text, /named "Evil Bcc: victim\[@\]example\[\.\]com Body" as a member/, 'one line in the text, defanged')
})

t.test('an organization mails at most RATE_LIMIT_INVITATIONS invitations an hour', async (t) => {
  const limited = await buildTestApp(t, { env: { ...FAST_ARGON2, ...mailEnv(smtp), RATE_LIMIT_INVITATIONS: '3' } })
  const boss = await register(limited)
  const inviteOne = () => limited.inject({ method: 'POST', url: `/api/v1/organizations/${boss.organization.id}/invitations`, headers: bearer(boss.access_token), payload: { email: uniqueEmail('many'), role: 'member' } })
  const statuses = []
  for (let i = 0; i < 5; i++) statuses.push((await inviteOne()).statusCode)
  t.same(statuses, [201, 201, 201, 429, 429], 'three, then 429')
  const other = await register(limited)
  t.equal((await limited.inject({ method: 'POST', url: `/api/v1/organizations/${other.organization.id}/invitations`, headers: bearer(other.access_token), payload: { email: uniqueEmail(), role: 'member' } })).statusCode, 201, 'another organization has its own count')
  const list = expectStatus(await limited.inject({ method: 'GET', url: `/api/v1/organizations/${boss.organization.id}/invitations`, headers: bearer(boss.access_token) }), 200, 'list')
  t.equal(list.items.length, 3, 'a refused invitation was not kept')
})
