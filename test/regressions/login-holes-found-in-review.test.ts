// Found by the adversarial review of the fix that made a change of address wait for a password
// reset or change (mail-holes-found-in-review): the login path had the same race. A login checked
// the password against the hash read at its start, then started the session (holding the account
// FOR SHARE against a disable, but never looking at the hash again), so a reset or change that
// committed during the check was outrun: 200, and a live session after the owner had secured the
// account. A stored hash made with other argon2 parameters was rehashed by an unconditional UPDATE:
// the login wrote the old password back over the reset one. A 2FA login's challenge, issued for the
// old password, still completed after the reset.
// The session now starts only if the account's hash is still the one checked (else 401, as a wrong
// password), the rehash replaces only that hash, and the mfa challenge keeps a fingerprint of it,
// checked when the second step starts the session. The window is made certain: the login's password
// check is held at a gate once argon2 has answered while the owner secures the account.
import t, { type Test } from 'tap'
import argon2 from 'argon2'
import { eq } from 'drizzle-orm'
import { users } from '../../src/db/schema.js'
import { totpAt } from '../../src/lib/totp.js'
import { buildTestApp, FAST_ARGON2 } from '../helpers/app.js'
import { bearer, register, STRONG_PASSWORD } from '../helpers/api.js'
import { mailedToken, mailsTo } from '../helpers/mail-tap.js'
import { expectStatus } from '../helpers/orgs.js'
import { holdNextPasswordCheck } from '../helpers/password-gate.js'

const NEW_PASSWORD = 'copper-lantern-harbor-92'
const app = await buildTestApp(t, { env: { ...FAST_ARGON2, EMAIL_VERIFICATION: 'off' } })

const post = (path: string, payload: object, token?: string) =>
  app.inject({ method: 'POST', url: `/api/v1${path}`, payload, headers: token ? bearer(token) : {} })
const loginWith = (email: string, password: string) => post('/auth/login', { email, password })
const storedHash = async (id: string) => (await app.db.select({ h: users.passwordHash }).from(users).where(eq(users.id, id)))[0]!.h

async function reset(email: string) {
  expectStatus(await post('/auth/password/forgot', { email }), 202, 'forgot')
  const token = await mailedToken(app, email, 'password_reset')
  expectStatus(await post('/auth/password/reset', { token, new_password: NEW_PASSWORD }), 204, 'the owner resets')
}

/** A hash of the password made with other argon2 parameters than the app's: the next login rehashes it. */
async function oldParameters(id: string) {
  const hash = await argon2.hash(STRONG_PASSWORD, { type: argon2.argon2id, memoryCost: 8192, timeCost: 1, parallelism: 1 })
  await app.db.update(users).set({ passwordHash: hash }).where(eq(users.id, id))
  t.ok(app.passwordHasher.needsRehash(hash), 'the stored hash needs a rehash')
}

/** The attacker logs in with the old password; while the login waits after its check, the owner does `secure`. */
async function outrun(t: Test, victim: Awaited<ReturnType<typeof register>>, secure: () => Promise<void>) {
  const gate = holdNextPasswordCheck(t, app)
  const attempt = loginWith(victim.email, STRONG_PASSWORD)
  await gate.checked()
  await secure()
  gate.release()
  const res = await attempt
  t.equal(res.statusCode, 401, `the login, checked against the password before it was secured, is refused (${res.statusCode})`)
  t.equal(res.json().error?.code, 'INVALID_CREDENTIALS', 'as a wrong password is')
  if (res.statusCode === 200) {
    t.equal((await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(res.json().access_token) })).statusCode, 401, 'its token does not work')
  }
  t.equal((await loginWith(victim.email, STRONG_PASSWORD)).statusCode, 401, 'the old password is refused')
  expectStatus(await loginWith(victim.email, NEW_PASSWORD), 200, 'the owner\'s new password works')
}

t.test('login-outruns-the-reset', async (t) => {
  const victim = await register(app)
  await outrun(t, victim, () => reset(victim.email))
})

t.test('login-outruns-the-password-change', async (t) => {
  const victim = await register(app)
  await outrun(t, victim, async () => {
    expectStatus(await post('/auth/password', { current_password: STRONG_PASSWORD, new_password: NEW_PASSWORD }, victim.access_token), 204, 'the owner changes the password')
  })
})

t.test('rehash-restores-the-old-password', async (t) => {
  const victim = await register(app)
  await oldParameters(victim.user.id)
  await outrun(t, victim, () => reset(victim.email))
})

t.test('second-factor-outlives-the-reset', async (t) => {
  const victim = await register(app)
  const { secret } = expectStatus(await post('/auth/2fa/setup', {}, victim.access_token), 200, 'setup')
  const { recovery_codes: codes } = expectStatus(await post('/auth/2fa/enable', { code: await totpAt(secret, Date.now()) }, victim.access_token), 200, 'enable')

  // The challenge is issued before the reset: its second step must not start a session after it.
  const before = expectStatus(await loginWith(victim.email, STRONG_PASSWORD), 200, 'the password passes')
  t.equal(before.mfa_required, true, 'a challenge')
  await reset(victim.email)
  const late = await post('/auth/verify-2fa', { mfa_token: before.mfa_token, code: codes[0] })
  t.equal(late.statusCode, 401, `the second step of a login checked before the reset is refused (${late.statusCode})`)
  t.equal(late.json().error?.code, 'MFA_INVALID', 'as a wrong code is')

  // The challenge is issued during the reset (the login held after its check).
  const gate = holdNextPasswordCheck(t, app)
  const attempt = loginWith(victim.email, NEW_PASSWORD)
  await gate.checked()
  const sent = mailsTo(app, victim.email, 'password_reset').length
  expectStatus(await post('/auth/password/forgot', { email: victim.email }), 202, 'forgot')
  const token = await mailedToken(app, victim.email, 'password_reset', sent)
  expectStatus(await post('/auth/password/reset', { token, new_password: STRONG_PASSWORD }), 204, 'the owner resets again')
  gate.release()
  const held = await attempt
  if (held.statusCode === 200 && held.json().mfa_token) {
    const res = await post('/auth/verify-2fa', { mfa_token: held.json().mfa_token, code: codes[1] })
    t.equal(res.statusCode, 401, `its second step is refused (${res.statusCode})`)
  } else {
    t.equal(held.statusCode, 401, 'or the first step is')
  }

  const now = expectStatus(await loginWith(victim.email, STRONG_PASSWORD), 200, 'a login after the reset')
  expectStatus(await post('/auth/verify-2fa', { mfa_token: now.mfa_token, code: codes[2] }), 200, 'completes')
})

/** A login held at the gate and released with nothing done meanwhile: it signs in. */
async function heldLogin(t: Test, email: string) {
  const gate = holdNextPasswordCheck(t, app)
  const attempt = loginWith(email, STRONG_PASSWORD)
  await gate.checked()
  gate.release()
  const session = expectStatus(await attempt, 200, 'login')
  expectStatus(await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(session.access_token) }), 200, '/auth/me')
}

t.test('a login held the same way, with nothing done meanwhile, goes through', async (t) => {
  await heldLogin(t, (await register(app)).email)
})

t.test('a held login that rehashes, with nothing done meanwhile, goes through and rehashes', async (t) => {
  const user = await register(app)
  await oldParameters(user.user.id)
  await heldLogin(t, user.email)
  t.notOk(app.passwordHasher.needsRehash(await storedHash(user.user.id)), 'the stored hash was rehashed')
  expectStatus(await loginWith(user.email, STRONG_PASSWORD), 200, 'the password still logs in')
})

t.test('the OAuth password grant is the same login', async (t) => {
  const victim = await register(app)
  const gate = holdNextPasswordCheck(t, app)
  const attempt = app.inject({
    method: 'POST', url: '/api/v1/oauth/token', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams({ grant_type: 'password', username: victim.email, password: STRONG_PASSWORD }).toString(),
  })
  await gate.checked()
  await reset(victim.email)
  gate.release()
  const res = await attempt
  t.equal(res.statusCode, 400, `the grant, checked before the reset, is refused (${res.statusCode} ${res.body})`)
  t.equal(res.json().error, 'invalid_grant', 'as a wrong password is')
})
