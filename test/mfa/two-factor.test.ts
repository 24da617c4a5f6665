// TOTP two-factor (SPEC §7 2FA rows, §6 lockout): setup → enable with a code
// (10 single-use recovery codes) → login answers {mfa_required, mfa_token,
// expires_in} → verify-2fa with a TOTP or recovery code gives the tokens. A
// code is accepted once (also under concurrency), ±1 time step of drift, the
// mfa_token is single-use, short-lived and no access token; wrong codes count
// toward the lockout; the secret is sealed at rest; enabling and disabling
// revoke the other sessions. Time is a FakeClock; codes are computed here.
import t, { type Test } from 'tap'
import { eq } from 'drizzle-orm'
import type { LightMyRequestResponse } from 'fastify'
import { recoveryCodes, users } from '../../src/db/schema.js'
import { totpAt } from '../../src/lib/totp.js'
import { buildTestApp, FAST_ARGON2, FakeClock, TEST_DATABASE_URL } from '../helpers/app.js'
import { bearer, login, register, STRONG_PASSWORD } from '../helpers/api.js'

const clock = new FakeClock()
const app = await buildTestApp(t, { env: FAST_ARGON2, clock })

const STEP = 30_000
const LOCK_SECONDS = 1800
const WRONG_PASSWORD = 'not-the-password-99'

interface Enrolled {
  email: string
  userId: string
  /** The session that enabled 2FA (it survives the enabling). */
  access: string
  refresh: string
  secret: string
  recoveryCodes: string[]
}

const post = (path: string, payload?: object, headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: `/api/v1${path}`, headers, ...(payload ? { payload } : {}) })
const me = (token: string) => app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(token) })
const verify = (mfaToken: string, code: string) => post('/auth/verify-2fa', { mfa_token: mfaToken, code })
const userRow = async (id: string) => (await app.db.select().from(users).where(eq(users.id, id)))[0]!

/** The code of the time step `offsetMs` from now. */
const codeAt = (secret: string, offsetMs = 0) => totpAt(secret, clock.now() + offsetMs)

/** The code of the next time step: each step is accepted once, so every use moves the clock on. */
async function freshCode(secret: string) {
  clock.advance(STEP)
  return codeAt(secret)
}

/** A six-digit code that matches none of the steps accepted now. */
async function wrongCode(secret: string) {
  const valid = await Promise.all([-STEP, 0, STEP].map((offset) => codeAt(secret, offset)))
  for (let n = 0; ; n++) {
    const code = String(n).padStart(6, '0')
    if (!valid.includes(code)) return code
  }
}

function assertError(t: Test, res: LightMyRequestResponse, status: number, code: string, what = code) {
  t.equal(res.statusCode, status, `${what}: ${status}`)
  t.equal(res.json().error?.code, code, what)
}

/** A new account with 2FA on: setup, then enable with the current code. */
async function enroll(): Promise<Enrolled> {
  const reg = await register(app)
  const setup = await post('/auth/2fa/setup', undefined, bearer(reg.access_token))
  if (setup.statusCode !== 200) throw new Error(`setup: ${setup.statusCode} ${setup.body}`)
  const { secret } = setup.json()
  const enabled = await post('/auth/2fa/enable', { code: await codeAt(secret) }, bearer(reg.access_token))
  if (enabled.statusCode !== 200) throw new Error(`enable: ${enabled.statusCode} ${enabled.body}`)
  return {
    email: reg.email, userId: reg.user.id, access: reg.access_token, refresh: reg.refresh_token,
    secret, recoveryCodes: enabled.json().recovery_codes,
  }
}

/** The first step of a 2FA login: the password gives an mfa_token. */
async function startLogin(email: string): Promise<string> {
  const res = await login(app, email)
  const body = res.json()
  if (res.statusCode !== 200 || body.mfa_required !== true) throw new Error(`login: ${res.statusCode} ${res.body}`)
  return body.mfa_token
}

/** A full 2FA login with a fresh code; returns the token pair. */
async function signIn(user: Enrolled): Promise<{ access_token: string; refresh_token: string }> {
  const res = await verify(await startLogin(user.email), await freshCode(user.secret))
  if (res.statusCode !== 200) throw new Error(`verify-2fa: ${res.statusCode} ${res.body}`)
  return res.json()
}

t.test('setup, enable, then login needs the second factor; the secret is sealed at rest', async (t) => {
  const reg = await register(app)
  const setup = await post('/auth/2fa/setup', undefined, bearer(reg.access_token))
  t.equal(setup.statusCode, 200)
  const { secret, otpauth_url: uri } = setup.json()
  t.match(secret, /^[A-Z2-7]{16,}=*$/, 'a base32 secret')
  t.match(uri, /^otpauth:\/\/totp\//)
  t.equal(new URL(uri).searchParams.get('secret'), secret, 'the URI carries the secret')
  t.ok(new URL(uri).searchParams.get('issuer'), 'and an issuer')

  const pending = await userRow(reg.user.id)
  t.match(pending.totpPendingSecretSealed, /^v1\./, 'pending secret sealed')
  t.notOk(pending.mfaEnabled, 'not enabled before a code confirms it')
  t.ok((await login(app, reg.email)).json().access_token, 'login still gives tokens directly while pending')

  assertError(t, await post('/auth/2fa/enable', { code: await wrongCode(secret) }, bearer(reg.access_token)), 401, 'MFA_INVALID', 'enable with a wrong code')
  const enabled = await post('/auth/2fa/enable', { code: await codeAt(secret) }, bearer(reg.access_token))
  t.equal(enabled.statusCode, 200, 'enable with the current code')
  const codes: string[] = enabled.json().recovery_codes
  t.equal(codes.length, 10, '10 recovery codes')
  t.equal(new Set(codes).size, 10, 'all different')
  for (const code of codes) t.match(code, /^[a-z2-7]{5}-[a-z2-7]{5}$/)

  const row = await userRow(reg.user.id)
  t.ok(row.mfaEnabled)
  t.match(row.totpSecretSealed, /^v1\./, 'users.totp_secret_sealed starts with v1.')
  for (const form of [secret, secret.toLowerCase(), secret.replace(/=+$/, '')]) {
    t.notOk(row.totpSecretSealed!.includes(form), 'the sealed value does not contain the base32 secret')
  }
  t.equal(row.totpPendingSecretSealed, null, 'the pending secret is cleared')
  const stored = await app.db.select().from(recoveryCodes).where(eq(recoveryCodes.userId, reg.user.id))
  t.equal(stored.length, 10)
  for (const r of stored) t.notOk(codes.some((c) => r.codeHash.includes(c.replace('-', ''))), 'recovery codes stored hashed')

  const first = await login(app, reg.email)
  t.equal(first.statusCode, 200)
  const challenge = first.json()
  t.same(Object.keys(challenge).sort(), ['expires_in', 'mfa_required', 'mfa_token'], 'no tokens before the second factor')
  t.equal(challenge.mfa_required, true)
  t.equal(challenge.expires_in, 300)
  t.match(challenge.mfa_token, /^mfa_/)

  const done = await verify(challenge.mfa_token, await freshCode(secret))
  t.equal(done.statusCode, 200, 'verify-2fa with a current code')
  const tokens = done.json()
  t.equal(tokens.token_type, 'Bearer')
  t.ok(tokens.refresh_token)
  t.equal(tokens.user.mfa_enabled, true)
  const view = await me(tokens.access_token)
  t.equal(view.statusCode, 200, 'the access token works')
  t.equal(view.json().user.mfa_enabled, true, '/auth/me shows mfa_enabled')
})

t.test('a code is accepted once: a replay is MFA_INVALID', async (t) => {
  const user = await enroll()
  const code = await freshCode(user.secret)
  t.equal((await verify(await startLogin(user.email), code)).statusCode, 200, 'first use')
  assertError(t, await verify(await startLogin(user.email), code), 401, 'MFA_INVALID', 'the same code again')
})

// Regression (PostgreSQL only): the 15 replays used to count as failures and lock the email
// before the winner finished, so nobody got in although the code was spent.
t.test('16 concurrent submissions of one valid code: exactly one succeeds', async (t) => {
  for (const mode of ['16 mfa_tokens', 'one mfa_token']) {
    const user = await enroll()
    const tokens = mode === 'one mfa_token'
      ? Array(16).fill(await startLogin(user.email))
      : await Promise.all(Array.from({ length: 16 }, () => startLogin(user.email)))
    const code = await freshCode(user.secret)
    const results = await Promise.all(tokens.map((token) => verify(token, code)))
    const statuses = results.map((r) => r.statusCode)
    t.equal(statuses.filter((s) => s === 200).length, 1, `${mode}: exactly one success (${statuses.join(' ')})`)
    // A replay of a valid code is refused but is no guess: it does not count toward the lockout.
    t.ok(statuses.every((s) => [200, 401].includes(s)), `${mode}: the others are refused with 401, none locked`)
    const again = await verify(await startLogin(user.email), await codeAt(user.secret, STEP))
    t.equal(again.statusCode, 200, `${mode}: the user who won is not locked out afterwards`)
  }
})

t.test('clock drift: the previous step is accepted, two steps back or ahead is not', async (t) => {
  const user = await enroll()
  clock.advance(5 * 60_000)
  const [twoBack, twoAhead, previous, next] = await Promise.all(
    [-2 * STEP, 2 * STEP, -STEP, STEP].map((offset) => codeAt(user.secret, offset)))
  assertError(t, await verify(await startLogin(user.email), twoBack!), 401, 'MFA_INVALID', 'two steps back')
  assertError(t, await verify(await startLogin(user.email), twoAhead!), 401, 'MFA_INVALID', 'two steps ahead')
  t.equal((await verify(await startLogin(user.email), previous!)).statusCode, 200, 'the previous step')
  t.equal((await verify(await startLogin(user.email), next!)).statusCode, 200, 'the next step')
})

t.test('a recovery code works once, in any case and with spaces', async (t) => {
  const user = await enroll()
  const [first, second, third] = user.recoveryCodes as [string, string, string]
  t.equal((await verify(await startLogin(user.email), first.toUpperCase())).statusCode, 200, 'upper case')
  assertError(t, await verify(await startLogin(user.email), first), 401, 'MFA_INVALID', 'the same recovery code again')
  t.equal((await verify(await startLogin(user.email), ` ${second.replace('-', ' ')} `)).statusCode, 200, 'spaces instead of the hyphen')
  t.equal((await verify(await startLogin(user.email), third.replace('-', '').toUpperCase())).statusCode, 200, 'no hyphen')
  const rows = await app.db.select().from(recoveryCodes).where(eq(recoveryCodes.userId, user.userId))
  t.equal(rows.filter((r) => r.usedAt).length, 3, 'three used, the rest untouched')
})

t.test('the mfa_token is not an access token, is single-use and expires', async (t) => {
  const user = await enroll()
  const mfaToken = await startLogin(user.email)
  assertError(t, await me(mfaToken), 401, 'UNAUTHORIZED', 'mfa_token as a bearer on /auth/me')
  assertError(t, await post('/auth/refresh', { refresh_token: mfaToken }), 401, 'REFRESH_FAILED', 'mfa_token as a refresh token')
  assertError(t, await verify('mfa_unknown', await codeAt(user.secret, STEP)), 401, 'MFA_INVALID', 'an unknown mfa_token')

  assertError(t, await verify(mfaToken, await wrongCode(user.secret)), 401, 'MFA_INVALID', 'a wrong code')
  t.equal((await verify(mfaToken, await freshCode(user.secret))).statusCode, 200, 'a wrong code did not use the token up')
  assertError(t, await verify(mfaToken, await freshCode(user.secret)), 401, 'MFA_INVALID', 'reused after a success, with a fresh code')

  const [early, late] = [await startLogin(user.email), await startLogin(user.email)]
  clock.advance(299_000)
  t.equal((await verify(early, await codeAt(user.secret))).statusCode, 200, 'valid at 299 s')
  clock.advance(2000)
  const recovery = user.recoveryCodes[0]!
  assertError(t, await verify(late, recovery), 401, 'MFA_INVALID', 'expired at 301 s')
  t.equal((await verify(await startLogin(user.email), recovery)).statusCode, 200, 'the recovery code was not spent on the expired token')
})

t.test('wrong codes count toward the lockout: 5 lock the account, even for the right code', async (t) => {
  const user = await enroll()
  const mfaToken = await startLogin(user.email)
  const right = await freshCode(user.secret)
  const wrong = await wrongCode(user.secret)
  for (let i = 1; i <= 4; i++) assertError(t, await verify(mfaToken, wrong), 401, 'MFA_INVALID', `wrong code ${i}`)
  t.ok([401, 423].includes((await verify(mfaToken, wrong)).statusCode), 'wrong code 5')
  const locked = await verify(mfaToken, right)
  assertError(t, locked, 423, 'ACCOUNT_LOCKED', 'the right code')
  t.equal(locked.headers['retry-after'], String(LOCK_SECONDS))
  assertError(t, await login(app, user.email), 423, 'ACCOUNT_LOCKED', 'the right password')
})

t.test('for a 2FA account the right password alone does not reset the counter', async (t) => {
  const user = await enroll()
  for (let i = 1; i <= 3; i++) assertError(t, await login(app, user.email, WRONG_PASSWORD), 401, 'INVALID_CREDENTIALS', `wrong password ${i}`)
  const mfaToken = await startLogin(user.email) // the right password: 200 mfa_required
  const wrong = await wrongCode(user.secret)
  assertError(t, await verify(mfaToken, wrong), 401, 'MFA_INVALID', 'wrong code (4th failure)')
  t.ok([401, 423].includes((await verify(mfaToken, wrong)).statusCode), 'wrong code (5th failure)')
  assertError(t, await verify(mfaToken, await freshCode(user.secret)), 423, 'ACCOUNT_LOCKED', 'locked')
})

t.test('disable needs the password and a code; then login gives tokens directly', async (t) => {
  const user = await enroll()
  const { access_token: access } = await signIn(user)
  const disable = (password: string, code: string) => post('/auth/2fa/disable', { password, code }, bearer(access))
  const wrongPassword = await disable(WRONG_PASSWORD, await freshCode(user.secret))
  const wrongCodeAnswer = await disable(STRONG_PASSWORD, await wrongCode(user.secret))
  assertError(t, wrongPassword, 401, 'INVALID_CREDENTIALS', 'wrong password')
  assertError(t, wrongCodeAnswer, 401, 'INVALID_CREDENTIALS', 'wrong code')
  t.equal(wrongPassword.json().error.message, wrongCodeAnswer.json().error.message, 'the same answer whichever factor was wrong')
  t.equal((await me(access)).json().user.mfa_enabled, true, 'still on')

  const off = await disable(STRONG_PASSWORD, await freshCode(user.secret))
  t.equal(off.statusCode, 204, 'both right')
  t.equal(off.body, '')
  t.equal((await me(access)).json().user.mfa_enabled, false, 'off')
  assertError(t, await me(user.access), 401, 'UNAUTHORIZED', 'another session of the user is revoked')
  const row = await userRow(user.userId)
  t.equal(row.totpSecretSealed, null, 'the secret is gone')
  t.equal((await app.db.select().from(recoveryCodes).where(eq(recoveryCodes.userId, user.userId))).length, 0, 'recovery codes gone')

  const direct = await login(app, user.email)
  t.equal(direct.statusCode, 200)
  t.ok(direct.json().access_token, 'login returns tokens directly')
  t.notOk(direct.json().mfa_required)
  assertError(t, await disable(STRONG_PASSWORD, await freshCode(user.secret)), 409, 'CONFLICT', 'disable when off')
})

t.test('enabling 2FA revokes the other sessions and keeps the enabling one', async (t) => {
  const reg = await register(app)
  const current = (await login(app, reg.email)).json()
  const headers = bearer(current.access_token)
  const { secret } = (await post('/auth/2fa/setup', undefined, headers)).json()
  t.equal((await post('/auth/2fa/enable', { code: await codeAt(secret) }, headers)).statusCode, 200)
  assertError(t, await me(reg.access_token), 401, 'UNAUTHORIZED', "the older session's access token")
  assertError(t, await post('/auth/refresh', { refresh_token: reg.refresh_token }), 401, 'REFRESH_FAILED', "the older session's refresh token")
  t.equal((await me(current.access_token)).statusCode, 200, 'the enabling session goes on')
})

t.test('setup or enable when 2FA is on is 409; enable before setup is 409', async (t) => {
  const user = await enroll()
  assertError(t, await post('/auth/2fa/setup', undefined, bearer(user.access)), 409, 'CONFLICT', 'setup when enabled')
  assertError(t, await post('/auth/2fa/enable', { code: await freshCode(user.secret) }, bearer(user.access)), 409, 'CONFLICT', 'enable when enabled')
  const fresh = await register(app)
  assertError(t, await post('/auth/2fa/enable', { code: '123456' }, bearer(fresh.access_token)), 409, 'CONFLICT', 'enable before setup')
})
