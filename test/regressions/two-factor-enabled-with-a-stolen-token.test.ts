// Issue 10 reproduction 5: 2FA setup + enable needed no password, and enabling
// revoked every other session: a stolen 15-minute token locked the owner out
// behind the attacker's authenticator. Enabling (and regenerating recovery
// codes) now needs the password, or a login within REAUTH_WINDOW (auth_time).
import t from 'tap'
import { decodeJwt } from 'jose'
import { buildTestApp, FAST_ARGON2, FakeClock } from '../helpers/app.js'
import { bearer, register, STRONG_PASSWORD } from '../helpers/api.js'
import { assertError } from '../helpers/errors.js'
import { totpAt } from '../../src/lib/totp.js'

const clock = new FakeClock()
const app = await buildTestApp(t, { env: { ...FAST_ARGON2, REAUTH_WINDOW: '300' }, clock })
const post = (path: string, token: string, payload?: object) =>
  app.inject({ method: 'POST', url: `/api/v1${path}`, headers: bearer(token), ...(payload ? { payload } : {}) })
const me = (token: string) => app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(token) })

t.test('a token whose login is older than REAUTH_WINDOW cannot enable 2FA without the password', async (t) => {
  const owner = await register(app) // the owner's session
  const bystander = await register(app)
  const victim = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: owner.email, password: STRONG_PASSWORD } })
  const token = victim.json().access_token as string // what the attacker holds
  t.type(decodeJwt(token).auth_time, 'number', 'access tokens carry auth_time')
  clock.advance(6 * 60_000) // past the 5-minute window; the token itself lives 15 minutes

  const { secret } = (await post('/auth/2fa/setup', token)).json()
  const refused = await post('/auth/2fa/enable', token, { code: await totpAt(secret, clock.now()) })
  assertError(t, refused, 403, 'REAUTHENTICATION_REQUIRED')
  t.same(refused.json().error.details.map((d: { field: string }) => d.field), ['password'], 'names what is missing')
  t.equal((await me(owner.access_token)).statusCode, 200, "the owner's other session was not revoked")
  t.equal((await me(token)).json().user.mfa_enabled, false, '2FA is still off')

  const wrong = await post('/auth/2fa/enable', token, { code: await totpAt(secret, clock.now()), password: 'a-wrong-guess-of-it-1' })
  assertError(t, wrong, 401, 'INVALID_CREDENTIALS', undefined, 'a wrong password is refused (and counted)')

  const proven = await post('/auth/2fa/enable', token, { code: await totpAt(secret, clock.now() + 30_000), password: STRONG_PASSWORD })
  t.equal(proven.statusCode, 200, `with the password: enabled (got ${proven.statusCode} ${proven.body})`)
  t.equal(proven.json().recovery_codes.length, 10)
  t.equal((await me(bystander.access_token)).statusCode, 200, 'an unrelated account is untouched')
})

t.test('within REAUTH_WINDOW of a login, the token alone enables 2FA (as right after signing in)', async (t) => {
  const user = await register(app)
  const { secret } = (await post('/auth/2fa/setup', user.access_token)).json()
  clock.advance(60_000)
  const res = await post('/auth/2fa/enable', user.access_token, { code: await totpAt(secret, clock.now()) })
  t.equal(res.statusCode, 200, `200 (got ${res.statusCode} ${res.body})`)
})

t.test('a refreshed token keeps the login\'s auth_time: refreshing proves nothing', async (t) => {
  const user = await register(app)
  const loginTime = decodeJwt(user.access_token).auth_time
  clock.advance(6 * 60_000)
  const refreshed = await app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: user.refresh_token } })
  const token = refreshed.json().access_token as string
  t.equal(decodeJwt(token).auth_time, loginTime, 'same auth_time')
  t.ok((decodeJwt(token).iat as number) > (loginTime as number), 'a newer iat')
  const { secret } = (await post('/auth/2fa/setup', token)).json()
  assertError(t, await post('/auth/2fa/enable', token, { code: await totpAt(secret, clock.now()) }), 403, 'REAUTHENTICATION_REQUIRED')
})

t.test('regenerating recovery codes needs password and code once the window has passed', async (t) => {
  const user = await register(app)
  const { secret } = (await post('/auth/2fa/setup', user.access_token)).json()
  const { recovery_codes: original } = (await post('/auth/2fa/enable', user.access_token, { code: await totpAt(secret, clock.now()) })).json()
  const fresh = (await post('/auth/2fa/recovery-codes', user.access_token, {})).json()
  t.equal(fresh.recovery_codes.length, 10, 'within the window: new codes')
  t.notSame(fresh.recovery_codes, original)
  clock.advance(6 * 60_000)
  const refused = await post('/auth/2fa/recovery-codes', user.access_token, {})
  assertError(t, refused, 403, 'REAUTHENTICATION_REQUIRED')
  t.same(refused.json().error.details.map((d: { field: string }) => d.field), ['password', 'code'])
  const proven = await post('/auth/2fa/recovery-codes', user.access_token, { password: STRONG_PASSWORD, code: await totpAt(secret, clock.now()) })
  t.equal(proven.statusCode, 200, `password + code: 200 (got ${proven.body})`)
  const login = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: user.email, password: STRONG_PASSWORD } })
  const oldCode = await app.inject({ method: 'POST', url: '/api/v1/auth/verify-2fa', payload: { mfa_token: login.json().mfa_token, code: original[0] } })
  assertError(t, oldCode, 401, 'MFA_INVALID', undefined, 'an old recovery code no longer works')
  const newCode = await app.inject({ method: 'POST', url: '/api/v1/auth/verify-2fa', payload: { mfa_token: login.json().mfa_token, code: proven.json().recovery_codes[0] } })
  t.equal(newCode.statusCode, 200, 'a new one does')
})
