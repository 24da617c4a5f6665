// Found by the adversarial review of invitations (issue 14), each reproduced
// over HTTP before the fix:
// 1. refused invitations spent the victim's mail budget: a key with only
//    members:write sent 3 invites that were refused (403), and the victim's
//    password reset then answered 429 for an hour;
// 2. a demoted inviter's pending invitations still admitted people;
// 3. an expiring key invited an address as admin, which outlived the key and
//    could mint non-expiring all-scope keys;
// 4. a resend by an owner kept the demoted admin as inviter, so the resent
//    link was refused;
// 5. an organization named like a phishing mail put its link first in the mail.
// Found by the second review (issue 14):
// 6. a disabled inviter's invitations still admitted people, as owners too: a
//    compromised owner invited evil@ as owner, an operator disabled the owner,
//    and evil@ signed up with the link as an owner (disabled-inviter-still-admits);
// 7. on PostgreSQL, the inviter's role was read before the organization's lock
//    was taken: an acceptance waiting behind a demotion's lock got the role the
//    demotion had just taken away (demotion-committed-during-acceptance-outrun).
// Found by the third review:
// 8. the mail limits were spent inside the invitation's transaction, which is run
//    again after a serialization failure or deadlock: a retried invitation spent
//    them twice (invitation-retried-spends-the-limits-twice).
import t from 'tap'
import postgres from 'postgres'
import { buildTestApp, FakeClock, FAST_ARGON2, TEST_DATABASE_URL, TEST_REDIS_URL, within } from '../helpers/app.js'
import { bearer, register, STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'
import { assertError } from '../helpers/errors.js'
import { createKey, expectStatus, newPerson, newTenant } from '../helpers/orgs.js'
import { linkIn, mailEnv, startSmtp, tokenIn } from '../helpers/smtp.js'

const smtp = await startSmtp(t)
const clock = new FakeClock()
const app = await buildTestApp(t, { clock, env: { ...FAST_ARGON2, ...mailEnv(smtp), RATE_LIMIT_MAIL_PER_EMAIL: '2' } })
const org = await newTenant(app, 'Review Inc')
const owner = bearer(org.owner.token)
const invite = (headers: Record<string, string>, email: string, role = 'member', orgId = org.id) =>
  app.inject({ method: 'POST', url: `/api/v1/organizations/${orgId}/invitations`, headers, payload: { email, role } })
const signUp = (email: string, token: string) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { email, password: STRONG_PASSWORD, invitation_token: token } })
const invitationMail = async (email: string, nth = 1) => {
  const all = () => smtp.to(email).filter((m) => /invited to join/.test(m.subject ?? ''))
  await smtp.waitFor(email, () => all().length >= nth)
  return all()[nth - 1]!
}

t.test('refused invitations spend nobody\'s mail budget', async (t) => {
  const attacker = await register(app)
  const key = await createKey(app, bearer(attacker.access_token), ['members:write'], 'members:write only')
  const victim = await register(app)
  for (let i = 0; i < 3; i++) assertError(t, await invite({ 'x-api-key': key.key }, victim.email, 'member', attacker.organization.id), 403, 'INSUFFICIENT_SCOPE')
  t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/password/forgot', payload: { email: victim.email } })).statusCode, 202, 'the victim can still reset')
})

t.test('a demoted inviter\'s pending invitation admits nobody, until someone who may invite resends it', async (t) => {
  const admin = await register(app)
  expectStatus(await invite(owner, admin.email, 'admin'), 201, 'invite an admin')
  const verification = await smtp.waitFor(admin.email, (m) => /confirm your email address/.test(m.subject ?? ''))
  expectStatus(await app.inject({ method: 'POST', url: '/api/v1/auth/email/verify', payload: { token: tokenIn(verification) } }), 204, 'verify')
  expectStatus(await app.inject({ method: 'POST', url: '/api/v1/invitations/accept', headers: bearer(admin.access_token), payload: { token: tokenIn(await invitationMail(admin.email)) } }), 200, 'an admin')
  const adminSession = expectStatus(await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: admin.email, password: STRONG_PASSWORD, org_id: org.id } }), 200, 'login')
  const email = uniqueEmail('invited-by-admin')
  const invitation = expectStatus(await invite(bearer(adminSession.access_token), email, 'member'), 201, 'the admin invites a member')
  expectStatus(await app.inject({ method: 'PATCH', url: `/api/v1/organizations/${org.id}/members/${admin.user.id}`, headers: owner, payload: { role: 'member' } }), 200, 'demote the admin')
  assertError(t, await signUp(email, tokenIn(await invitationMail(email))), 403, 'FORBIDDEN', /can no longer grant/, 'a member invites nobody')
  const resent = expectStatus(await app.inject({ method: 'POST', url: `/api/v1/organizations/${org.id}/invitations/${invitation.id}/resend`, headers: owner }), 200, 'the owner resends')
  t.equal(resent.invited_by.user_id, org.owner.id, 'the owner is now the inviter')
  t.equal((await signUp(email, tokenIn(await invitationMail(email, 2)))).statusCode, 201, 'the resent link admits')
})

t.test('an expiring key grants no role (the membership would outlive it)', async (t) => {
  const res = await app.inject({
    method: 'POST', url: '/api/v1/api-keys', headers: owner,
    payload: { name: 'short-lived', scopes: [...app.config.SCOPES], expires_at: new Date(clock.now() + 120_000).toISOString() },
  })
  const key = expectStatus(res, 201, 'an expiring all-scope key')
  assertError(t, await invite({ 'x-api-key': key.key }, uniqueEmail('forever'), 'admin'), 403, 'FORBIDDEN', /expires/, 'no admin invitation')
  assertError(t, await invite({ 'x-api-key': key.key }, uniqueEmail('forever'), 'member'), 403, 'FORBIDDEN', /expires/, 'nor a member one')
  assertError(t, await app.inject({ method: 'PATCH', url: `/api/v1/organizations/${org.id}/members/${org.member.id}`, headers: { 'x-api-key': key.key }, payload: { role: 'admin' } }),
    403, 'FORBIDDEN', /expires/, 'nor a role change')
})

t.test('an organization name is never a link in its invitation', async (t) => {
  const created = expectStatus(await app.inject({ method: 'POST', url: '/api/v1/organizations', headers: owner, payload: { name: 'Security team: your password expired, renew at https://evil.example/renew' } }), 201, 'org')
  const email = uniqueEmail('phished')
  expectStatus(await invite(owner, email, 'member', created.id), 201, 'invite')
  const mail = await invitationMail(email)
  t.equal(mail.subject, 'Portcullis: you are invited to join an organization', 'the name stays out of the subject')
  t.match(mail.text, /renew at https\[:\]\/\/evil\[\.\]example\/renew/, 'defanged in the body')
  t.same(mail.text?.match(/https?:\/\/\S+/g), [linkIn(mail)], 'the accept link is the only link in the text')
  t.match(linkIn(mail), /^https:\/\/app\.example\.test\/accept-invitation\?token=/)
  t.notOk(String(mail.html).includes('evil.example'), 'nor a link in the HTML')
})

t.test('disabled-inviter-still-admits: a disabled inviter admits nobody, until enabled again', async (t) => {
  const operator = await register(app)
  await app.admin.setSuperadmin(operator.email, true)
  const adminCall = (action: 'disable' | 'enable', id: string) =>
    app.inject({ method: 'POST', url: `/api/v1/admin/users/${id}/${action}`, headers: bearer(operator.access_token), payload: { password: STRONG_PASSWORD } })
  const rogue = await register(app)
  const email = uniqueEmail('evil')
  expectStatus(await invite(bearer(rogue.access_token), email, 'owner', rogue.organization.id), 201, 'the compromised owner invites an owner')
  const token = tokenIn(await invitationMail(email))
  expectStatus(await adminCall('disable', rogue.user.id), 204, 'an operator disables the owner')
  assertError(t, await signUp(email, token), 403, 'FORBIDDEN', /can no longer grant/, 'the disabled owner\'s invitation admits nobody')
  // Decision (README): the invitation stays pending, so an enable restores what the account had sent.
  expectStatus(await adminCall('enable', rogue.user.id), 204, 'enable')
  t.equal(expectStatus(await signUp(email, token), 201, 'enabled: the link admits').organization.role, 'owner')
})

const ONLY_POSTGRES = { skip: TEST_DATABASE_URL ? false : 'needs PostgreSQL (TEST_DATABASE_URL, which .ci/run sets): PGlite has one connection, so no transaction can be held open beside a request' }

t.test('demotion-committed-during-acceptance-outrun: an acceptance waiting behind a demotion sees it', ONLY_POSTGRES, async (t) => {
  const tenant = await newTenant(app, 'Race Inc')
  const admin = await newPerson(app, { id: tenant.id, owner: tenant.owner, role: 'admin' })
  const email = uniqueEmail('raced')
  expectStatus(await invite(bearer(admin.token), email, 'admin', tenant.id), 201, 'the admin invites an admin')
  const token = tokenIn(await invitationMail(email))

  // A demotion held open, as the organizations service makes one: the organization's row locked, the role changed.
  const db = postgres(app.config.DATABASE_URL, { max: 2, onnotice: () => {} })
  t.teardown(() => db.end({ timeout: 1 }))
  let commit!: () => void
  const committing = new Promise<void>((r) => { commit = r })
  let demoted!: () => void
  const isDemoted = new Promise<void>((r) => { demoted = r })
  const demotion = db.begin(async (tx) => {
    await tx`select id from organizations where id = ${tenant.id} for update`
    await tx`update memberships set role = 'member' where org_id = ${tenant.id} and user_id = ${admin.id}`
    demoted()
    await committing
  })
  await isDemoted
  const accepting = signUp(email, token)
  const waiting = await within(3000, async () => (await db`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`)[0]!.n > 0)
  t.ok(waiting >= 0, 'the sign-up waits for the demotion\'s lock')
  commit()
  await demotion
  assertError(t, await accepting, 403, 'FORBIDDEN', /can no longer grant/, 'the demotion committed first: its invitation admits nobody')
})

t.test('invitation-retried-spends-the-limits-twice: an invitation run again after a serialization failure spends its limits once', ONLY_POSTGRES, async (t) => {
  const limited = await buildTestApp(t, { env: { ...FAST_ARGON2, RATE_LIMIT_INVITATIONS: '2', ...(TEST_REDIS_URL ? { REDIS_URL: TEST_REDIS_URL } : {}) } })
  const boss = await register(limited)
  const direct = postgres(limited.config.DATABASE_URL, { max: 1, onnotice: () => {} })
  t.teardown(() => direct.end({ timeout: 1 }))
  // A real 40001 from the server on the first invitation mail queued, after everything else the transaction did.
  // The sequence counts attempts: nextval is not rolled back with the transaction that called it.
  await direct.unsafe(`
    create sequence invitation_mail_attempts;
    create function fail_first_invitation_mail() returns trigger language plpgsql as $$
    begin
      if new.kind = 'invitation' and nextval('invitation_mail_attempts') = 1 then
        raise exception 'could not serialize access' using errcode = '40001';
      end if;
      return new;
    end $$;
    create trigger fail_first_invitation_mail before insert on mail_outbox for each row execute function fail_first_invitation_mail();`)
  const inviteOne = (email = uniqueEmail('retried')) => limited.inject({
    method: 'POST', url: `/api/v1/organizations/${boss.organization.id}/invitations`, headers: bearer(boss.access_token), payload: { email, role: 'member' },
  })
  const first = uniqueEmail('retried')
  expectStatus(await inviteOne(first), 201, 'the first invitation, after one retry')
  t.equal((await direct`select last_value::int as n from invitation_mail_attempts`)[0]!.n, 2, 'its transaction ran twice')
  assertError(t, await inviteOne(first), 409, 'CONFLICT', /pending invitation/, 'the same address again: refused before any limit is spent')
  expectStatus(await inviteOne(), 201, 'the second of RATE_LIMIT_INVITATIONS=2: the retry spent nothing')
  assertError(t, await inviteOne(), 429, 'RATE_LIMITED', undefined, 'the third is past the limit')
})
