// Found while testing the mail limits under concurrency: @fastify/rate-limit's
// in-process store answered every increment with one shared counter object, read
// after an await, so requests arriving together all saw the count the last one
// reached. A burst one over a per-IP limit was refused whole: 12 parallel
// requests against a limit of 4 got 12 429s, the first four included. Each
// request now reads the count its own increment reached (src/plugins/rate-limit-store.ts).
import t from 'tap'
import { randomInt } from 'node:crypto'
import { buildTestApp, FAST_ARGON2 } from '../helpers/app.js'
import { STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'

const LIMIT = 4
const BURST = 12
const app = await buildTestApp(t, {
  env: { ...FAST_ARGON2, TRUST_PROXY: '127.0.0.1', RATE_LIMIT_LOGIN: String(LIMIT), RATE_LIMIT_PASSWORD_RESET: String(LIMIT), RATE_LIMIT_MAIL_PER_EMAIL: String(LIMIT) },
})
const randomClientIp = () => `10.${randomInt(256)}.${randomInt(256)}.${randomInt(1, 255)}`

const bursts = {
  'a route limit (login, per IP)': () => {
    const ip = randomClientIp()
    return () => app.inject({ method: 'POST', url: '/api/v1/auth/login', headers: { 'x-forwarded-for': ip }, payload: { email: uniqueEmail(), password: STRONG_PASSWORD } })
  },
  'a limit applied in the handler (mail per address)': () => {
    const email = uniqueEmail()
    return () => app.inject({ method: 'POST', url: '/api/v1/auth/password/forgot', headers: { 'x-forwarded-for': randomClientIp() }, payload: { email } })
  },
}

for (const [what, make] of Object.entries(bursts)) {
  t.test(`${what}: ${BURST} parallel requests, exactly ${LIMIT} served`, async (t) => {
    const request = make()
    const answers = await Promise.all(Array.from({ length: BURST }, () => request()))
    const statuses = answers.map((r) => r.statusCode)
    t.equal(statuses.filter((s) => s !== 429).length, LIMIT, `exactly ${LIMIT} not limited (${statuses.join(' ')})`)
    t.equal(statuses.filter((s) => s === 429).length, BURST - LIMIT, 'the rest 429')
  })
}

t.test('each served request of a burst is told its own remaining count', async (t) => {
  const request = bursts['a route limit (login, per IP)']()
  const answers = await Promise.all(Array.from({ length: LIMIT }, () => request()))
  const remaining = answers.map((r) => Number(r.headers['ratelimit-remaining'])).sort()
  t.same(remaining, [0, 1, 2, 3], 'RateLimit-Remaining counts down across the burst')
})
