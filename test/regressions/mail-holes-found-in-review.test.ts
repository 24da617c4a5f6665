// Found by the adversarial review of the mail flows (issue 13), each reproduced
// over HTTP before the fix:
// 1. a change-of-email link outlived a password reset, a password change and a
//    logout everywhere: an attacker who knew the old password asked to move the
//    address, the owner reset the password, and the attacker's link still moved
//    the account to their address (and every later reset with it);
// 7. a reset link outlived a password change and a disable followed by an enable;
// 8. the change notice quoted the new address as typed, and an address may be
//    shaped like a link ('https://evil.example/…?token=abc@evil.example'); the
//    defanging of quoted words let through 'evil。example', fullwidth forms,
//    U+2024 and U+202E;
// 10. the per-address mail limit was keyed by the address itself, so an erased
//    user's address stayed in Redis for up to an hour;
// 5. an invitation refused by the address's limit still spent its organization's.
//
// The review of that fix found the change of address could still outrun it
// (email-change-outruns-the-reset, -password-change): the password was checked
// against the hash read at the start (recent-auth, then argon2) and the link
// issued in a transaction of its own, so a reset committing in between missed the
// new link (PostgreSQL, reset 20-35 ms ahead: 204, then the change 202, and its
// link moved the account). Every securing action now locks the account's row
// first; the change issues its link holding that row and its session (FOR SHARE),
// only if the password hash, the account and the session are as when checked.
// The window is made certain: the attacker's password check is held at a gate
// once argon2 has answered while the owner secures the account.
import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { eq } from 'drizzle-orm'
import { mailOutbox } from '../../src/db/schema.js'
import type { App } from '../../src/app.js'
import { defang, templates } from '../../src/modules/mail/templates.js'
import { buildTestApp, FAST_ARGON2, TEST_REDIS_URL, testConfig, within } from '../helpers/app.js'
import { bearer, register, STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'
import { mailedToken, mailsTo } from '../helpers/mail-tap.js'
import { expectStatus } from '../helpers/orgs.js'
import { holdNextPasswordCheck } from '../helpers/password-gate.js'

const NEW_PASSWORD = 'copper-lantern-harbor-92'
const app = await buildTestApp(t, { env: { ...FAST_ARGON2, EMAIL_VERIFICATION: 'off' } })
const operator = await register(app)
await app.admin.setSuperadmin(operator.email, true)

const post = (path: string, payload: object, token?: string) =>
  app.inject({ method: 'POST', url: `/api/v1${path}`, payload, headers: token ? bearer(token) : {} })
const login = async (email: string, password = STRONG_PASSWORD) =>
  expectStatus(await post('/auth/login', { email, password }), 200, `login ${email}`)

/** The attacker, signed in with the victim's password, asks to move the address to theirs; the link mailed there. */
async function attackerMoves(victim: { email: string }) {
  const attacker = uniqueEmail('attacker')
  const session = await login(victim.email)
  expectStatus(await post('/auth/email', { new_email: attacker, password: STRONG_PASSWORD }, session.access_token), 202, 'change requested')
  return { attacker, link: await mailedToken(app, attacker, 'email_change') }
}

async function refusedLink(t: Test, path: string, payload: object, what: string) {
  const res = await post(path, payload)
  t.equal(res.statusCode, 400, what)
  if (res.statusCode === 400) t.equal(res.json().error?.code, 'INVALID_LINK', `${what}: INVALID_LINK`)
}

const resetLink = async (email: string) => {
  const before = mailsTo(app, email, 'password_reset').length
  expectStatus(await post('/auth/password/forgot', { email }), 202, 'forgot')
  return mailedToken(app, email, 'password_reset', before)
}
const disable = async (id: string) => expectStatus(await post(`/admin/users/${id}/disable`, { password: STRONG_PASSWORD }, operator.access_token), 204, 'disable')
const enable = async (id: string) => expectStatus(await post(`/admin/users/${id}/enable`, { password: STRONG_PASSWORD }, operator.access_token), 204, 'enable')
const addressOf = async (id: string) => expectStatus(await app.inject({ method: 'GET', url: `/api/v1/admin/users/${id}`, headers: bearer(operator.access_token) }), 200, 'detail').email as string

t.test('email-change-link-survives-password-reset', async (t) => {
  const victim = await register(app)
  const { link } = await attackerMoves(victim)
  expectStatus(await post('/auth/password/reset', { token: await resetLink(victim.email), new_password: NEW_PASSWORD }), 204, 'the victim resets')
  await refusedLink(t, '/auth/email/confirm', { token: link }, 'the attacker\'s change link is dead')
  t.equal(await addressOf(victim.user.id), victim.email, 'the address did not move')
})

t.test('email-change-link-survives-password-change', async (t) => {
  const victim = await register(app)
  const { link } = await attackerMoves(victim)
  expectStatus(await post('/auth/password', { current_password: STRONG_PASSWORD, new_password: NEW_PASSWORD }, victim.access_token), 204, 'the victim changes the password')
  await refusedLink(t, '/auth/email/confirm', { token: link }, 'the change link is dead')
  t.equal(await addressOf(victim.user.id), victim.email, 'the address did not move')
  await login(victim.email, NEW_PASSWORD)
})

t.test('reset-link-survives-password-change', async (t) => {
  const user = await register(app)
  const reset = await resetLink(user.email)
  expectStatus(await post('/auth/password', { current_password: STRONG_PASSWORD, new_password: NEW_PASSWORD }, user.access_token), 204, 'the password is changed')
  await refusedLink(t, '/auth/password/reset', { token: reset, new_password: 'amber-falcon-meadow-31' }, 'the reset link mailed before is dead')
  await login(user.email, NEW_PASSWORD)
})

t.test('email-change-link-survives-logout-all', async (t) => {
  const victim = await register(app)
  const { link } = await attackerMoves(victim)
  expectStatus(await post('/auth/logout-all', {}, victim.access_token), 204, 'the victim signs out everywhere')
  await refusedLink(t, '/auth/email/confirm', { token: link }, 'the change link is dead')
  t.equal(await addressOf(victim.user.id), victim.email, 'the address did not move')
})

t.test('email-change-link-survives-disable-and-enable', async (t) => {
  const victim = await register(app)
  const { link } = await attackerMoves(victim)
  await disable(victim.user.id)
  await enable(victim.user.id)
  await refusedLink(t, '/auth/email/confirm', { token: link }, 'the change link is dead after the account is enabled again')
  t.equal(await addressOf(victim.user.id), victim.email, 'the address did not move')
})

t.test('reset-link-survives-disable-and-enable', async (t) => {
  const user = await register(app)
  const reset = await resetLink(user.email)
  await disable(user.user.id)
  await enable(user.user.id)
  await refusedLink(t, '/auth/password/reset', { token: reset, new_password: NEW_PASSWORD }, 'the reset link mailed before the disable is dead')
  const fresh = await resetLink(user.email)
  expectStatus(await post('/auth/password/reset', { token: fresh, new_password: NEW_PASSWORD }), 204, 'a link mailed after the enable works')
})

/**
 * The attacker, signed in with the victim's password, asks to move the address; while that request
 * waits between its password check and its link, the owner does `secure`. The change must be refused
 * and no link to the attacker may work.
 */
async function outrun(t: Test, secure: (victim: Awaited<ReturnType<typeof register>>) => Promise<void>) {
  const victim = await register(app)
  const attacker = uniqueEmail('attacker')
  const session = await login(victim.email)
  const gate = holdNextPasswordCheck(t, app)
  const change = post('/auth/email', { new_email: attacker, password: STRONG_PASSWORD }, session.access_token)
  await gate.checked()
  await secure(victim)
  gate.release()
  const res = await change
  t.equal(res.statusCode, 401, `the change, checked against the password before it was secured, is refused (${res.statusCode})`)
  const queued = await app.db.select({ id: mailOutbox.id }).from(mailOutbox).where(eq(mailOutbox.recipient, attacker))
  t.equal(queued.length, 0, 'no link was queued for the attacker')
  if (queued.length) {
    const link = await mailedToken(app, attacker, 'email_change')
    t.not((await post('/auth/email/confirm', { token: link })).statusCode, 204, 'the attacker\'s link does not move the account')
  }
  t.equal(await addressOf(victim.user.id), victim.email, 'the address did not move')
  t.equal(mailsTo(app, attacker, 'email_change').length, 0, 'nothing was mailed to the attacker')
}

t.test('email-change-outruns-the-reset', async (t) => {
  await outrun(t, async (victim) => {
    expectStatus(await post('/auth/password/forgot', { email: victim.email }), 202, 'forgot')
    const token = await mailedToken(app, victim.email, 'password_reset')
    expectStatus(await post('/auth/password/reset', { token, new_password: NEW_PASSWORD }), 204, 'the victim resets')
  })
})

t.test('email-change-outruns-the-password-change', async (t) => {
  await outrun(t, async (victim) => {
    expectStatus(await post('/auth/password', { current_password: STRONG_PASSWORD, new_password: NEW_PASSWORD }, victim.access_token), 204, 'the victim changes the password')
  })
})

t.test('email-change-outruns-the-logout-all', async (t) => {
  await outrun(t, async (victim) => {
    expectStatus(await post('/auth/logout-all', {}, victim.access_token), 204, 'the victim signs out everywhere')
  })
})

t.test('email-change-outruns-the-disable-and-enable', async (t) => {
  await outrun(t, async (victim) => {
    await disable(victim.user.id)
    await enable(victim.user.id)
  })
})

t.test('a change held the same way, with nothing done meanwhile, goes through', async (t) => {
  const user = await register(app)
  const to = uniqueEmail('moved')
  const gate = holdNextPasswordCheck(t, app)
  const change = post('/auth/email', { new_email: to, password: STRONG_PASSWORD }, user.access_token)
  await gate.checked()
  gate.release()
  expectStatus(await change, 202, 'change requested')
  expectStatus(await post('/auth/email/confirm', { token: await mailedToken(app, to, 'email_change') }), 204, 'confirmed')
  t.equal(await addressOf(user.user.id), to, 'moved')
})

t.test('a change is only told to the old address: the notice says how to stop it, and the confirmation is noticed too', async (t) => {
  const user = await register(app)
  const to = uniqueEmail('moved')
  expectStatus(await post('/auth/email', { new_email: to, password: STRONG_PASSWORD }, user.access_token), 202, 'change requested')
  const link = await mailedToken(app, to, 'email_change')
  t.ok(await within(5000, () => mailsTo(app, user.email, 'email_change_notice').length > 0) >= 0, 'the notice is mailed')
  const [notice] = mailsTo(app, user.email, 'email_change_notice')
  t.match(notice?.text, /reset your password now/, 'the notice says how to stop the change')
  t.match(notice?.text, /or change it: that cancels the change/)
  // The request needed the password: signing out everywhere alone would leave it known.
  t.notMatch(notice?.text, /signing out|sessions/, 'it recommends no sign-out')
  expectStatus(await post('/auth/email/confirm', { token: link }), 204, 'confirmed')
  t.ok(await within(5000, () => mailsTo(app, user.email, 'email_changed').length > 0) >= 0, 'mailed')
  const changed = mailsTo(app, user.email, 'email_changed')
  t.equal(changed.length, 1, 'the old address is told the change happened')
  t.match(changed[0]?.subject, /your email address was changed/)
  t.match(changed[0]?.text, defang(to), 'naming the new address, defanged')
  t.notOk(changed[0]?.link, 'with no link')
})

t.test('mail-quotes-a-typed-address-as-a-link: the change notice defangs the new address', async (t) => {
  const user = await register(app)
  for (const typed of [
    'https://evil.example/reset-password?token=abc@evil.example',
    'ｈｔｔｐｓ：／／evil．example/reset@evil.example',
    'x@evil\u3002example.com',
    'x@evil\u2024example.com',
    'x\u202E@evil.example',
  ]) {
    const before = mailsTo(app, user.email, 'email_change_notice').length
    expectStatus(await post('/auth/email', { new_email: typed, password: STRONG_PASSWORD }, user.access_token), 202, `change to ${typed}`)
    await mailedToken(app, typed.toLowerCase(), 'email_change')
    // The notice is a mail of its own: it may be delivered after the link.
    t.ok(await within(5000, () => mailsTo(app, user.email, 'email_change_notice').length > before) >= 0, `${typed}: the notice is mailed`)
    const notice = mailsTo(app, user.email, 'email_change_notice')[before]!
    for (const part of [notice.text, notice.html]) {
      t.notMatch(part, /https?:\/\//i, `${typed}: no scheme`)
      t.notMatch(part, /evil[.\u3002\u2024\uFF0E]example/u, `${typed}: no host a mail client would link`)
      t.notMatch(part, /\u202E/u, `${typed}: no bidi override`)
    }
  }
  const [first] = mailsTo(app, user.email, 'email_change_notice')
  t.match(first?.text, 'https[:]//evil[.]example/reset-password?token=abc[@]evil[.]example', 'quoted defanged')
})

t.test('defang-lets-through-unicode-dots-and-bidi: organization names in an invitation', async (t) => {
  const config = testConfig({})
  for (const [name, expected] of [
    ['evil。example', 'evil[.]example'],
    ['ｈｔｔｐｓ：／／evil．example', 'https[:]//evil[.]example'],
    ['evil․example', 'evil[.]example'],
    ['Acme \u202Eelpmaxe.live\u202C', 'Acme elpmaxe[.]live'],
  ] as const) {
    t.equal(defang(name), expected, JSON.stringify(name))
    const mail = templates.invitation(config, 'A'.repeat(43), name, 'member')
    t.match(mail.text, `named "${expected}"`, `${JSON.stringify(name)}: defanged in the invitation`)
    t.same(mail.text.match(/https?:\/\/\S+/g), [mail.link], 'the accept link is the only link')
  }
})

t.test('defang-strips-zwnj-and-zwj: words keep their joiners, only bidi controls go', async (t) => {
  for (const name of ['شرکت\u200Cها', 'Müller GmbH', '株式会社山田製作所', 'Dev \u{1F469}\u200D\u{1F4BB} team']) {
    t.equal(defang(name), name, `${JSON.stringify(name)} comes through unchanged`)
  }
  t.equal(defang('\u061C\u200E\u200F\u202A\u202B\u202C\u202D\u202E\u2066\u2067\u2068\u2069x'), 'x', 'every bidi control is stripped')
  t.equal(defang('Acme \u202Eelpmaxe.live\u202C'), 'Acme elpmaxe[.]live', 'the override goes, the dot is defanged')
  t.equal(defang('\u2067https\u2069://evil\u3002example/x@evil.example'), 'https[:]//evil[.]example/x[@]evil[.]example', 'isolates go before the scheme is matched')
})

/** One address's mail a hour, three invitations an organization; in Redis when there is one. */
const limited: App = await buildTestApp(t, { env: {
  ...FAST_ARGON2, EMAIL_VERIFICATION: 'off', RATE_LIMIT_MAIL_PER_EMAIL: '1', RATE_LIMIT_INVITATIONS: '3', ...(TEST_REDIS_URL ? { REDIS_URL: TEST_REDIS_URL } : {}),
} })

t.test('mail-limit-key-holds-the-address: the per-address limit is counted under an HMAC of the address', async (t) => {
  const email = uniqueEmail('erased-later')
  const keys: string[] = []
  const consume = limited.consumeKeyedLimit
  limited.consumeKeyedLimit = (request, limit) => {
    keys.push(`${limit.name}:${limit.key}`)
    return consume(request, limit)
  }
  t.teardown(() => { limited.consumeKeyedLimit = consume })
  expectStatus(await limited.inject({ method: 'POST', url: '/api/v1/auth/password/forgot', payload: { email: ` ${email.toUpperCase()}` } }), 202, 'forgot')
  t.same(keys, [`mail-to:${limited.lockout.keyOf(email)}`], 'counted under the lockout\'s HMAC of the normalised address')
  t.notOk(keys.some((k) => k.toLowerCase().includes(email)), 'never under the address')
  if (!TEST_REDIS_URL) return
  const redis = new Redis(TEST_REDIS_URL)
  t.teardown(() => redis.disconnect())
  const found = await redis.keys('portcullis-rl:*')
  t.ok(found.some((k) => k.endsWith(`mail-to:${limited.lockout.keyOf(email)}`)), 'the HMAC key is in Redis')
  t.same(found.filter((k) => k.toLowerCase().includes(email)), [], 'no Redis key holds the address')
})

t.test('invitation-refused-by-address-limit-spends-org-budget', async (t) => {
  const owner = await register(limited)
  const invite = (email: string) => limited.inject({
    method: 'POST', url: `/api/v1/organizations/${owner.organization.id}/invitations`, headers: bearer(owner.access_token), payload: { email, role: 'member' },
  })
  const x = uniqueEmail('spent')
  expectStatus(await limited.inject({ method: 'POST', url: '/api/v1/auth/password/forgot', payload: { email: x } }), 202, 'anonymous forgot spends x\'s budget')
  for (let i = 1; i <= 4; i++) {
    const res = await invite(x)
    t.equal(res.statusCode, 429, `invitation ${i} of x: 429`)
    t.equal(res.json().error?.code, 'RATE_LIMITED')
  }
  t.equal((await invite(uniqueEmail('fresh'))).statusCode, 201, 'the organization\'s budget is untouched: a fresh address is invited')
})
