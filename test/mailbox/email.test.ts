// Email verification and change of email through a real SMTP server.
import t from 'tap'
import { decodeJwt } from 'jose'
import { defang } from '../../src/modules/mail/templates.js'
import { buildTestApp, FAST_ARGON2 } from '../helpers/app.js'
import { bearer, login, register, STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'
import { linkIn, mailEnv, startSmtp, tokenIn, type TestSmtp } from '../helpers/smtp.js'

const smtp = await startSmtp(t)
const post = (app: Awaited<ReturnType<typeof buildTestApp>>, url: string, payload: unknown, token?: string) =>
  app.inject({ method: 'POST', url: `/api/v1${url}`, payload: payload as object, headers: token ? bearer(token) : {} })
const me = async (app: Awaited<ReturnType<typeof buildTestApp>>, token: string) =>
  (await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(token) })).json()
const mailTo = (box: TestSmtp, to: string, subject: RegExp) => box.waitFor(to, (m) => subject.test(m.subject ?? ''))

t.test('optional (default): registration mails a link; following it verifies the address', async (t) => {
  const app = await buildTestApp(t, { env: { ...FAST_ARGON2, ...mailEnv(smtp) } })
  const user = await register(app)
  t.equal(user.user.email_verified, false)
  t.equal(decodeJwt(user.access_token).email_verified, false, 'the access token says unverified')
  const mail = await mailTo(smtp, user.email, /confirm your email address/)
  t.match(linkIn(mail), /^https:\/\/app\.example\.test\/verify-email\?token=/)
  t.equal((await post(app, '/auth/email/verify', { token: tokenIn(mail) })).statusCode, 204)
  t.equal((await me(app, user.access_token)).user.email_verified, true, '/auth/me says verified')
  const fresh = (await login(app, user.email)).json()
  t.equal(decodeJwt(fresh.access_token).email_verified, true, 'a new access token carries email_verified')
  const again = await post(app, '/auth/email/verify', { token: tokenIn(mail) })
  t.equal(again.json().error.code, 'INVALID_LINK', 'the link works once')
  t.equal((await post(app, '/auth/password/reset', { token: tokenIn(mail), new_password: 'copper-lantern-harbor-92' })).json().error.code,
    'INVALID_LINK', 'a verification token cannot reset a password')
})

t.test('required: no session until verified; login says EMAIL_NOT_VERIFIED only after the password', async (t) => {
  const app = await buildTestApp(t, { env: { ...FAST_ARGON2, ...mailEnv(smtp), EMAIL_VERIFICATION: 'required' } })
  const email = uniqueEmail('required')
  const res = await post(app, '/auth/register', { email, password: STRONG_PASSWORD })
  t.equal(res.statusCode, 201)
  t.equal(res.json().email_verification_required, true)
  t.notOk(res.json().access_token, 'no tokens')
  t.equal((await login(app, email, 'not-the-password-1')).json().error.code, 'INVALID_CREDENTIALS', 'a wrong password learns nothing')
  const refused = await login(app, email)
  t.equal(refused.statusCode, 403)
  t.equal(refused.json().error.code, 'EMAIL_NOT_VERIFIED')
  const first = await mailTo(smtp, email, /confirm your email address/)
  // Re-sent: the same answer for an unknown address; the old link dies.
  const resent = await post(app, '/auth/email/verify/resend', { email })
  const unknown = await post(app, '/auth/email/verify/resend', { email: uniqueEmail('nobody') })
  t.equal(resent.statusCode, 202)
  t.equal(unknown.body, resent.body, 'the same answer whether an account has the address')
  const second = await smtp.waitFor(email, (m) => /confirm your email address/.test(m.subject ?? '') && tokenIn(m) !== tokenIn(first))
  t.equal((await post(app, '/auth/email/verify', { token: tokenIn(first) })).statusCode, 400, 'the first link is dead')
  t.equal((await post(app, '/auth/email/verify', { token: tokenIn(second) })).statusCode, 204)
  t.equal((await login(app, email)).statusCode, 200, 'verified: login works')
})

t.test('change of email: confirmed at the new address, noticed at the old, verified by the link', async (t) => {
  const app = await buildTestApp(t, { env: { ...FAST_ARGON2, ...mailEnv(smtp) } })
  const user = await register(app)
  const verifyOld = tokenIn(await mailTo(smtp, user.email, /confirm your email address/))
  const newEmail = uniqueEmail('moved')
  const requested = await post(app, '/auth/email', { new_email: newEmail, password: STRONG_PASSWORD }, user.access_token)
  t.equal(requested.statusCode, 202, 'with the password')
  const confirm = await mailTo(smtp, newEmail, /confirm your new email address/)
  t.match(linkIn(confirm), /^https:\/\/app\.example\.test\/confirm-email\?token=/)
  const notice = await mailTo(smtp, user.email, /change of email address/)
  t.match(notice.text, defang(newEmail), 'naming the new address, defanged (no mail client makes a link of it)')
  t.equal((await me(app, user.access_token)).user.email, user.email, 'nothing changes before confirmation')
  t.equal((await post(app, '/auth/email/verify', { token: tokenIn(confirm) })).statusCode, 400, 'an email-change token is not a verification token')

  t.equal((await post(app, '/auth/email/confirm', { token: tokenIn(confirm) })).statusCode, 204)
  const after = await me(app, user.access_token)
  t.equal(after.user.email, newEmail)
  t.equal(after.user.email_verified, true, 'the new address is verified by the confirmation')
  t.equal((await login(app, newEmail)).statusCode, 200)
  t.equal((await login(app, user.email)).statusCode, 401, 'the old address no longer logs in')
  t.equal((await post(app, '/auth/email/verify', { token: verifyOld })).statusCode, 400, 'a link for the old address is dead')
})

t.test('the verified flag never survives a change to an address nobody proved (CVE-2023-0105 class)', async (t) => {
  const app = await buildTestApp(t, { env: { ...FAST_ARGON2, ...mailEnv(smtp) } })
  const user = await register(app)
  await post(app, '/auth/email/verify', { token: tokenIn(await mailTo(smtp, user.email, /confirm your email address/)) })
  t.equal((await me(app, user.access_token)).user.email_verified, true)
  await post(app, '/auth/email', { new_email: uniqueEmail('unproven'), password: STRONG_PASSWORD }, user.access_token)
  const now = await me(app, user.access_token)
  t.equal(now.user.email, user.email, 'the address stays until the new one is proven')
  t.equal(now.user.email_verified, true, 'and so does the proof of the address it has')
})

t.test('confirming re-checks that the address is free', async (t) => {
  const app = await buildTestApp(t, { env: { ...FAST_ARGON2, ...mailEnv(smtp) } })
  const user = await register(app)
  const wanted = uniqueEmail('contested')
  t.equal((await post(app, '/auth/email', { new_email: wanted, password: STRONG_PASSWORD }, user.access_token)).statusCode, 202, 'no answer tells whether it is taken')
  const confirm = await mailTo(smtp, wanted, /confirm your new email address/)
  await register(app, { email: wanted })
  const res = await post(app, '/auth/email/confirm', { token: tokenIn(confirm) })
  t.equal(res.statusCode, 409)
  t.equal(res.json().error.code, 'EMAIL_TAKEN')
  t.equal((await me(app, user.access_token)).user.email, user.email, 'unchanged')
})

t.test('a change of email needs recent authentication', async (t) => {
  const app = await buildTestApp(t, { env: { ...FAST_ARGON2, ...mailEnv(smtp), REAUTH_WINDOW: '0' } })
  const user = await register(app)
  const res = await post(app, '/auth/email', { new_email: uniqueEmail('x') }, user.access_token)
  t.equal(res.statusCode, 403)
  t.equal(res.json().error.code, 'REAUTHENTICATION_REQUIRED')
  t.equal((await post(app, '/auth/email', { new_email: uniqueEmail('x'), password: STRONG_PASSWORD }, user.access_token)).statusCode, 202)
  t.equal((await post(app, '/auth/email', { new_email: 'nope' })).statusCode, 401, 'a session is needed')
})
