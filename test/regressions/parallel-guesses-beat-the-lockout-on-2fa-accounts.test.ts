// Found by the second review of issue 10: on a 2FA account, a right password
// without a code skipped the lockout reset, and with it the only look at the
// lock after the (slow) argon2 check. Guesses sent in parallel all passed the
// first look; the right one, finishing after the lock had landed, changed the
// password (and /auth/2fa/recovery-codes answered 200: a password oracle). The
// lock is now read again after every successful check, and at login too.
//
// The order is made certain, not hoped for: parallel requests reach argon2 in the
// order their database reads come back, which a connection pool does not keep
// (with prepared statements on, the right guess sent 20th was once checked 4th,
// before any lock, and rightly won). So every check waits at a gate until all
// guesses, the right one last, have passed the first look at the lock; then the
// gate opens and the real hasher checks them in that order.
import t from 'tap'
import { totpAt } from '../../src/lib/totp.js'
import { buildTestApp, FakeClock, within } from '../helpers/app.js'
import { bearer, login, register, STRONG_PASSWORD } from '../helpers/api.js'

const clock = new FakeClock()
// One hash at a time, so the gate's order is the checking order.
const app = await buildTestApp(t, { env: { ARGON2_CONCURRENCY: '1', ARGON2_QUEUE_MAX: '1000' }, clock })
const WRONG = (i: number) => `wrong-guess-number-${i}-xyz`
const GUESSES = 20 // well past LOCKOUT_MAX_ATTEMPTS
const post = (path: string, token: string, payload: object) => app.inject({ method: 'POST', url: `/api/v1${path}`, headers: bearer(token), payload })

/** Holds every password check at a gate; `arrived` lists the passwords in the order they came. */
function gateTheHasher() {
  const hasher = app.passwordHasher
  const verify = hasher.verify.bind(hasher)
  const arrived: string[] = []
  let open!: () => void
  const gate = new Promise<void>((resolve) => { open = resolve })
  hasher.verify = async (hash, password) => {
    arrived.push(password)
    await gate // awaiters resume in arrival order, so the real hasher's line keeps it
    return verify(hash, password)
  }
  t.teardown(() => { hasher.verify = verify })
  return {
    arrived,
    /** Resolves once `n` checks wait at the gate (each has passed its first look at the lock). */
    async waitFor(n: number) { t.ok(await within(5_000, () => arrived.length >= n) >= 0, `${n} checks reached the hasher`) },
    open: () => { open(); hasher.verify = verify },
  }
}

/** Sends the wrong guesses, then the right one once they all wait at the gate; opens it; returns the answers. */
async function guessInOrder(send: (password: string) => Promise<{ statusCode: number }>) {
  const gate = gateTheHasher()
  const wrong = Array.from({ length: GUESSES - 1 }, (_, i) => send(WRONG(i)))
  await gate.waitFor(GUESSES - 1)
  const right = send(STRONG_PASSWORD)
  await gate.waitFor(GUESSES) // nothing has been checked yet, so the first look let the right one through too
  t.equal(gate.arrived.at(-1), STRONG_PASSWORD, 'the right password is checked last')
  gate.open()
  return { wrong: await Promise.all(wrong), right: await right }
}

async function twoFactorAccount() {
  const user = await register(app)
  const { secret } = (await post('/auth/2fa/setup', user.access_token, {})).json()
  t.equal((await post('/auth/2fa/enable', user.access_token, { code: await totpAt(secret, clock.now()) })).statusCode, 200)
  return user // its session's login is within REAUTH_WINDOW: no code needed
}

for (const [path, body] of [
  ['/auth/password', (password: string) => ({ current_password: password, new_password: 'a-brand-new-passphrase-42' })],
  ['/auth/2fa/recovery-codes', (password: string) => ({ password })],
] as const) {
  t.test(`${path}: parallel guesses, the right one checked after the lock landed: it is refused (423)`, async (t) => {
    const user = await twoFactorAccount()
    const { wrong, right } = await guessInOrder((password) => post(path, user.access_token, body(password)))
    const statuses = [...wrong, right].map((r) => r.statusCode)
    t.equal(right.statusCode, 423, `the right password, checked after the lock landed: 423 (all: ${statuses.join(' ')})`)
    t.notOk(statuses.some((s) => s >= 200 && s < 300), 'no guess succeeded')
    clock.advance(31 * 60_000)
    const after = await login(app, user.email)
    t.equal(after.statusCode, 200, 'the password is unchanged (it still logs in once the lock lifts)')
    t.ok(after.json().mfa_required)
  })
}

t.test('/auth/login of a 2FA account: a right password checked after the lock landed gets no mfa_token', async (t) => {
  const user = await twoFactorAccount()
  const { wrong, right } = await guessInOrder((password) => login(app, user.email, password))
  t.equal(right.statusCode, 423, `423 (all: ${[...wrong, right].map((r) => r.statusCode).join(' ')})`)
  t.notOk([...wrong, right].some((r) => r.statusCode === 200), 'no challenge was handed out')
})
