// Forgot / reset password through a real SMTP server: the mail is read and its
// link followed, as a user would.
import t from 'tap'
import { count, eq } from 'drizzle-orm'
import { mailOutbox } from '../../src/db/schema.js'
import { buildTestApp, FakeClock, FAST_ARGON2, within } from '../helpers/app.js'
import { bearer, login, register, uniqueEmail } from '../helpers/api.js'
import { linkIn, mailEnv, startSmtp, tokenIn } from '../helpers/smtp.js'

const NEW_PASSWORD = 'copper-lantern-harbor-92'
const smtp = await startSmtp(t)
const clock = new FakeClock()
const app = await buildTestApp(t, { clock, env: { ...FAST_ARGON2, ...mailEnv(smtp), EMAIL_VERIFICATION: 'off', LOCKOUT_MAX_ATTEMPTS: '3' } })

const forgot = (email: string, headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/password/forgot', payload: { email }, headers })
const reset = (token: string, newPassword = NEW_PASSWORD) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/password/reset', payload: { token, new_password: newPassword } })
const resetMail = (email: string, nth = 0) => smtp.waitFor(email, (m) => m.subject?.includes('reset your password') ?? false)
  .then(() => smtp.to(email).filter((m) => m.subject?.includes('reset your password'))[nth]!)
const outboxRows = async () => (await app.db.select({ n: count() }).from(mailOutbox))[0]!.n

t.test('forgot → mail → reset: the new password works, the old one and every session die', async (t) => {
  const user = await register(app)
  const other = await login(app, user.email)
  t.equal((await forgot(user.email.toUpperCase())).statusCode, 202)
  const mail = await resetMail(user.email)
  t.match(mail.subject, /reset your password/)
  t.ok(mail.html, 'an HTML part too')
  t.match(linkIn(mail), /^https:\/\/app\.example\.test\/reset-password\?token=[A-Za-z0-9_-]{43}$/)

  t.equal((await reset(tokenIn(mail))).statusCode, 204)
  t.equal((await login(app, user.email)).statusCode, 401, 'the old password is refused')
  t.equal((await login(app, user.email, NEW_PASSWORD)).statusCode, 200, 'the new one works')
  for (const tokens of [user, other.json()]) {
    const me = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(tokens.access_token) })
    t.equal(me.statusCode, 401, 'an access token of an earlier session is refused at once')
    const refreshed = await app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: tokens.refresh_token } })
    t.equal(refreshed.statusCode, 401, 'its refresh token too')
  }
  const notice = await smtp.waitFor(user.email, (m) => m.subject?.includes('your password was changed') ?? false)
  t.notMatch(notice.text, /token=/, 'the notice carries no link')
  t.equal((await reset(tokenIn(mail))).json().error.code, 'INVALID_LINK', 'the link works once')

  await app.audit.flush()
  const owner = (await login(app, user.email, NEW_PASSWORD)).json()
  const events = await app.inject({ method: 'GET', url: `/api/v1/organizations/${user.organization.id}/audit-events?action=password.reset`, headers: bearer(owner.access_token) })
  t.equal(events.json().items.length, 1, 'the reset is in the audit log')
})

t.test('links are built from APP_URL, never from Host or X-Forwarded-Host', async (t) => {
  const user = await register(app)
  await forgot(user.email, { host: 'evil.example', 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'http' })
  const mail = await resetMail(user.email)
  t.notMatch(mail.text, /evil/)
  t.notMatch(mail.html, /evil/)
  t.match(linkIn(mail), /^https:\/\/app\.example\.test\//)
})

t.test('an unknown address: the same status, body and work, and no mail', async (t) => {
  const user = await register(app)
  const unknown = uniqueEmail('nobody')
  const before = await outboxRows()
  const known = await forgot(user.email)
  const afterKnown = await outboxRows()
  const missing = await forgot(unknown)
  const afterUnknown = await outboxRows()
  t.equal(known.statusCode, 202)
  t.equal(missing.statusCode, 202)
  t.equal(missing.body, known.body, 'byte-identical bodies')
  t.same(Object.keys(missing.headers).sort(), Object.keys(known.headers).sort(), 'the same headers')
  t.equal(afterKnown - before, 1, 'one outbox row for a known address')
  t.equal(afterUnknown - afterKnown, 1, 'and one for an unknown one: the request does the same work')
  await resetMail(user.email)
  t.ok(await within(5000, async () => {
    const [row] = await app.db.select({ state: mailOutbox.state }).from(mailOutbox).where(eq(mailOutbox.recipient, unknown))
    return row?.state === 'skipped'
  }) >= 0, 'the sender skips it')
  t.same(smtp.to(unknown), [], 'nothing is mailed to an address without an account')
})

t.test('16 parallel resets with one token: exactly one succeeds', async (t) => {
  const user = await register(app)
  await forgot(user.email)
  const token = tokenIn(await resetMail(user.email))
  const answers = await Promise.all(Array.from({ length: 16 }, (_, i) => reset(token, `${NEW_PASSWORD}-${i}`)))
  const statuses = answers.map((a) => a.statusCode)
  t.equal(statuses.filter((s) => s === 204).length, 1, `one 204 (${statuses.join(',')})`)
  t.ok(answers.filter((a) => a.statusCode !== 204).every((a) => a.statusCode === 400 && a.json().error.code === 'INVALID_LINK'), 'the rest INVALID_LINK')
  const winner = answers.findIndex((a) => a.statusCode === 204)
  t.equal((await login(app, user.email, `${NEW_PASSWORD}-${winner}`)).statusCode, 200, "the winner's password is the one set")
})

t.test('the password policy is checked before the token is spent', async (t) => {
  const user = await register(app)
  await forgot(user.email)
  const token = tokenIn(await resetMail(user.email))
  const weak = await reset(token, 'password')
  t.equal(weak.statusCode, 422)
  t.equal(weak.json().error.details[0].field, 'new_password')
  t.equal((await reset(token, user.email)).statusCode, 422, 'nor the email')
  t.equal((await reset(token)).statusCode, 204, 'the link still works after a refused password')
})

t.test('a newer request supersedes the older link', async (t) => {
  const user = await register(app)
  await forgot(user.email)
  const first = tokenIn(await resetMail(user.email, 0))
  await forgot(user.email)
  await smtp.waitFor(user.email, (m) => m.subject?.includes('reset your password') === true && tokenIn(m) !== first)
  const second = tokenIn(await resetMail(user.email, 1))
  t.not(first, second)
  t.equal((await reset(first)).json().error.code, 'INVALID_LINK', 'the older link is dead')
  t.equal((await reset(second)).statusCode, 204, 'the newer one works')
})

t.test(`a link expires after PASSWORD_RESET_TTL (fake clock)`, async (t) => {
  const user = await register(app)
  await forgot(user.email)
  const token = tokenIn(await resetMail(user.email))
  clock.advance(app.config.PASSWORD_RESET_TTL * 1000 + 1000)
  t.equal((await reset(token)).json().error.code, 'INVALID_LINK')
})

t.test('a reset ends the lockout of the address', async (t) => {
  const user = await register(app)
  for (let i = 0; i < 3; i++) await login(app, user.email, 'wrong-password-here')
  t.equal((await login(app, user.email)).statusCode, 423, 'locked')
  await forgot(user.email)
  t.equal((await reset(tokenIn(await resetMail(user.email)))).statusCode, 204)
  t.equal((await login(app, user.email, NEW_PASSWORD)).statusCode, 200, 'the new password logs in at once')
})

t.test('malformed, unknown and wrong-purpose tokens are one clear error', async (t) => {
  for (const token of ['x', 'A'.repeat(43), '../../etc/passwd', 'A'.repeat(200)]) {
    const res = await reset(token)
    t.equal(res.statusCode, 400, token.slice(0, 10))
    t.equal(res.json().error.code, 'INVALID_LINK')
  }
  t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/password/reset', payload: { token: 'x' } })).statusCode, 422, 'no password')
  t.equal((await forgot('not-an-email')).statusCode, 422)
})
