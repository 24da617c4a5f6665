// Regression: a change of email needed only "recent authentication", and a
// login within REAUTH_WINDOW counted. A 15-minute access token stolen in its
// first five minutes could move the account to the thief's address, confirm it
// there, then reset the password by mail: a token became the account. Now the
// change needs the password every time, as a password change does; an API key,
// which acts for an organization and not a person, cannot ask at all.
import t from 'tap'
import { buildTestApp, FAST_ARGON2 } from '../helpers/app.js'
import { bearer, register, STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'
import { mailEnv, startSmtp } from '../helpers/smtp.js'

t.test('a fresh access token alone cannot change the account\'s email', async (t) => {
  const smtp = await startSmtp(t)
  const app = await buildTestApp(t, { env: { ...FAST_ARGON2, ...mailEnv(smtp) } })
  const victim = await register(app)
  const thief = uniqueEmail('thief')
  const change = (headers: Record<string, string>, payload: Record<string, string>) =>
    app.inject({ method: 'POST', url: '/api/v1/auth/email', headers, payload })

  const stolen = await change(bearer(victim.access_token), { new_email: thief })
  t.equal(stolen.statusCode, 403, 'the token of a login seconds ago is not enough')
  t.equal(stolen.json().error.code, 'REAUTHENTICATION_REQUIRED')
  t.equal((await change(bearer(victim.access_token), { new_email: thief, password: 'not-the-password-9' })).statusCode, 401, 'a wrong password is refused')

  const key = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: bearer(victim.access_token), payload: { name: 'k', scopes: ['members:read'] } })
  t.equal((await change({ 'x-api-key': key.json().key }, { new_email: thief, password: STRONG_PASSWORD })).statusCode, 403, 'an API key cannot move a person\'s account')

  await new Promise((r) => setTimeout(r, 300))
  t.same(smtp.to(thief), [], 'nothing was mailed to the thief')
  t.equal((await change(bearer(victim.access_token), { new_email: thief, password: STRONG_PASSWORD })).statusCode, 202, 'with the password, the owner can')
})
