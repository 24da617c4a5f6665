// An expired access token was verified in full (two decodes and an ECDSA check,
// about 350 µs) on every request that sent it, where a valid one is answered from
// the memo of verified tokens: a client that kept sending its expired token (a
// tab left open, a misconfigured job) cost the service ten times a valid one's
// work. Worse, a token the memo had verified while it was live was checked in
// full again once it expired. An expired token never becomes valid again, so it
// is now refused from memory after its first refusal.
import t from 'tap'
import { buildTestApp, FakeClock, FAST_ARGON2 } from '../helpers/app.js'
import { register } from '../helpers/api.js'
import type { App } from '../../src/app.js'

/** Counts full verifications: each one asks the key ring for the token's key. */
function countFullChecks(app: App) {
  const ring = app.keyRing
  const publicKey = ring.publicKey.bind(ring)
  const counter = { checks: 0 }
  ring.publicKey = ((kid: unknown) => { counter.checks++; return publicKey(kid as never) }) as typeof ring.publicKey
  return counter
}

const me = (app: App, token: string) =>
  app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { authorization: `Bearer ${token}` } })

t.test('a token issued expired is checked in full once, then refused from memory', async (t) => {
  // Issued an hour ago: exp (15 min) and fast-jwt's 30 s tolerance are long past by the system clock.
  const clock = new FakeClock(Date.now() - 3_600_000)
  const app = await buildTestApp(t, { clock, env: FAST_ARGON2 })
  const { access_token: accessToken } = await register(app)
  const counter = countFullChecks(app)
  for (let i = 0; i < 5; i++) {
    const res = await me(app, accessToken)
    t.equal(res.statusCode, 401, `request ${i + 1}: 401`)
    t.equal(res.json().error.message, 'Invalid or expired token', 'the same answer as any invalid token')
  }
  t.equal(counter.checks, 1, 'one full verification for five requests')
})

t.test('a token verified while live is refused once it expires, without a full check', async (t) => {
  const app = await buildTestApp(t, { env: FAST_ARGON2 })
  const { access_token: accessToken } = await register(app)
  t.equal((await me(app, accessToken)).statusCode, 200, 'live: 200 (and remembered)')
  const counter = countFullChecks(app)
  const realNow = Date.now
  // fast-jwt and the memo both read the system clock: move it past exp + tolerance.
  Date.now = () => realNow() + 3_600_000
  t.teardown(() => { Date.now = realNow })
  for (let i = 0; i < 3; i++) t.equal((await me(app, accessToken)).statusCode, 401, `expired, request ${i + 1}: 401`)
  Date.now = realNow
  t.equal(counter.checks, 0, 'no full verification of a token already known')
})

t.test('a token refused for another reason is not remembered as expired', async (t) => {
  const app = await buildTestApp(t, { env: FAST_ARGON2 })
  const { access_token: accessToken } = await register(app)
  const [header, payload] = accessToken.split('.')
  const forged = `${header}.${payload}.${'A'.repeat(86)}`
  const counter = countFullChecks(app)
  for (let i = 0; i < 2; i++) t.equal((await me(app, forged)).statusCode, 401, 'a bad signature: 401')
  t.equal(counter.checks, 2, 'each is checked in full (only expiry is remembered)')
  t.equal((await me(app, accessToken)).statusCode, 200, 'the genuine token still works')
})
