// Issue 10 reproduction 4: twelve wrong current_password on POST /auth/password
// gave twelve 401s, never 423, and /auth/2fa/disable likewise (telling which
// factor was wrong): a stolen access token guessed the password at the full
// per-credential rate. Every such check now counts toward the lockout exactly
// like a login, and answers the same whichever factor was wrong.
import t from 'tap'
import { buildTestApp, FAST_ARGON2, FakeClock } from '../helpers/app.js'
import { bearer, login, register, STRONG_PASSWORD } from '../helpers/api.js'
import { totpAt } from '../../src/lib/totp.js'

const clock = new FakeClock()
const app = await buildTestApp(t, { env: FAST_ARGON2, clock })
const WRONG = 'not-the-password-at-all-1'
/** A 6-digit code that is none of the accepted ones (±1 step). */
async function wrongCode(secret: string) {
  const valid = await Promise.all([-30_000, 0, 30_000].map((d) => totpAt(secret, clock.now() + d)))
  for (let n = 0; ; n++) {
    const code = String(n).padStart(6, '0')
    if (!valid.includes(code)) return code
  }
}
const post = (path: string, token: string, payload: object) =>
  app.inject({ method: 'POST', url: `/api/v1${path}`, headers: bearer(token), payload })

t.test('POST /auth/password: wrong current passwords lock the account', async (t) => {
  const user = await register(app)
  const statuses: number[] = []
  for (let i = 0; i < 12; i++) {
    statuses.push((await post('/auth/password', user.access_token, { current_password: WRONG, new_password: 'a-brand-new-passphrase-9' })).statusCode)
  }
  t.same(statuses.slice(0, 4), [401, 401, 401, 401], 'four refusals')
  t.ok(statuses.slice(4).every((s) => s === 423), `then 423 (got ${statuses.join(' ')})`)
  const locked = await post('/auth/password', user.access_token, { current_password: STRONG_PASSWORD, new_password: 'a-brand-new-passphrase-9' })
  t.equal(locked.statusCode, 423, 'even the right password is refused while locked')
  t.ok(Number(locked.headers['retry-after']) > 0, 'Retry-After')
  t.equal((await login(app, user.email)).statusCode, 423, 'and so is a login: one lockout per email')
  clock.advance(31 * 60_000)
  t.equal((await login(app, user.email)).statusCode, 200, 'the lock lifts after LOCKOUT_DURATION')
})

t.test('POST /auth/2fa/disable: wrong factors lock the account, with one answer for either', async (t) => {
  const user = await register(app)
  const { secret } = (await post('/auth/2fa/setup', user.access_token, {})).json()
  t.equal((await post('/auth/2fa/enable', user.access_token, { code: await totpAt(secret, clock.now()) })).statusCode, 200)
  const answers = []
  for (let i = 0; i < 6; i++) {
    const wrongPassword = i % 2 === 0
    answers.push(await post('/auth/2fa/disable', user.access_token, {
      password: wrongPassword ? WRONG : STRONG_PASSWORD, code: wrongPassword ? await totpAt(secret, clock.now()) : await wrongCode(secret),
    }))
  }
  const first = answers.slice(0, 4).map((r) => `${r.statusCode} ${r.json().error.code} ${r.json().error.message}`)
  t.equal(new Set(first).size, 1, `one answer whichever factor was wrong (${first[0]})`)
  t.match(first[0], /^401 INVALID_CREDENTIALS/)
  t.ok(answers.slice(4).every((r) => r.statusCode === 423), 'then 423')
})
