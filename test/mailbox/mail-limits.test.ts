// The mail limits under concurrency: a burst of parallel requests gets exactly
// the allowed number through, whoever sends it. Per address
// (RATE_LIMIT_MAIL_PER_EMAIL an hour, whoever asks, shared by every flow that
// mails it), per client IP (RATE_LIMIT_PASSWORD_RESET a minute), and across
// instances on one Redis. Every refused request queued nothing; a known and an
// unknown address are limited alike (no oracle).
import t, { type Test } from 'tap'
import { randomInt } from 'node:crypto'
import { eq } from 'drizzle-orm'
import type { LightMyRequestResponse } from 'fastify'
import type { App } from '../../src/app.js'
import { mailOutbox } from '../../src/db/schema.js'
import { buildTestApp, FAST_ARGON2, sharedDatabase, TEST_REDIS_URL } from '../helpers/app.js'
import { register, uniqueEmail } from '../helpers/api.js'
import { mailEnv, startSmtp } from '../helpers/smtp.js'

const BURST = 12
const smtp = await startSmtp(t)
/** A client IP of its own, so runs sharing a Redis don't meet. */
const randomClientIp = () => `10.${randomInt(256)}.${randomInt(256)}.${randomInt(1, 255)}`

const appWith = (t: Test, env: Record<string, string>, shared = {}) => buildTestApp(t, {
  ...shared,
  env: { ...FAST_ARGON2, ...mailEnv(smtp), TRUST_PROXY: '127.0.0.1', EMAIL_VERIFICATION: 'optional', ...env },
})

const send = (app: App, path: string, email: string, ip = randomClientIp()) =>
  app.inject({ method: 'POST', url: `/api/v1${path}`, payload: { email }, headers: { 'x-forwarded-for': ip } })

const queuedFor = async (app: App, email: string) =>
  (await app.db.select({ kind: mailOutbox.kind }).from(mailOutbox).where(eq(mailOutbox.recipient, email))).map((r) => r.kind)

/** Counts 202s; asserts every other answer is a 429 in the error shape with a Retry-After within the window. */
function tally(t: Test, answers: LightMyRequestResponse[], windowSeconds: number) {
  let accepted = 0
  for (const res of answers) {
    if (res.statusCode === 202) { accepted++; continue }
    t.equal(res.statusCode, 429, 'the rest are 429')
    t.equal(res.json().error.code, 'RATE_LIMITED')
    const retry = Number(res.headers['retry-after'])
    t.ok(retry >= 1 && retry <= windowSeconds, `Retry-After within the window (${retry})`)
  }
  return accepted
}

t.test('per address: a burst from many IPs gets exactly RATE_LIMIT_MAIL_PER_EMAIL through, known or unknown', async (t) => {
  const app = await appWith(t, { RATE_LIMIT_MAIL_PER_EMAIL: '3' })
  const known = uniqueEmail('limited')
  // The account is registered with EMAIL_VERIFICATION=optional: its verification mail is queued,
  // but by registration, which the per-address limit does not count.
  await register(app, { email: known })
  const unknown = uniqueEmail('nobody')
  for (const [email, before] of [[known, 1], [unknown, 0]] as const) {
    const answers = await Promise.all(Array.from({ length: BURST }, () => send(app, '/auth/password/forgot', email)))
    t.equal(tally(t, answers, 3600), 3, `${email === known ? 'known' : 'unknown'} address: exactly 3 of ${BURST} accepted`)
    t.equal((await queuedFor(app, email)).length, before + 3, 'exactly 3 mails queued: a refused request queued nothing')
  }
  // One count per address, whichever flow mails it: the re-send of a verification is refused too.
  const resend = await send(app, '/auth/email/verify/resend', known)
  t.equal(resend.statusCode, 429, 'the verification re-send shares the address\'s count')
  t.equal((await queuedFor(app, known)).filter((k) => k === 'email_verification').length, 1, 'only the registration\'s verification mail')
  // Spelling the address differently is the same address.
  t.equal((await send(app, '/auth/password/forgot', known.toUpperCase())).statusCode, 429, 'an upper-case spelling counts as the same address')
})

t.test('per IP: a burst from one IP to many addresses gets exactly RATE_LIMIT_PASSWORD_RESET through; another IP is unaffected', async (t) => {
  const app = await appWith(t, { RATE_LIMIT_PASSWORD_RESET: '4' })
  const ip = randomClientIp()
  const emails = Array.from({ length: BURST }, () => uniqueEmail('from-one-ip'))
  const answers = await Promise.all(emails.map((email) => send(app, '/auth/password/forgot', email, ip)))
  t.equal(tally(t, answers, 60), 4, `exactly 4 of ${BURST} accepted`)
  const queued = await Promise.all(emails.map((email) => queuedFor(app, email)))
  t.equal(queued.flat().length, 4, 'exactly 4 mails queued')
  t.equal((await send(app, '/auth/password/forgot', uniqueEmail(), randomClientIp())).statusCode, 202, 'another IP is still served')
  // Each mailing route counts its own requests per IP (as login and register do); the address's count is the shared one.
  t.equal((await send(app, '/auth/email/verify/resend', uniqueEmail(), ip)).statusCode, 202, 'the re-send has its own per-IP count')
})

t.test('two instances on one Redis share the per-address count under a parallel burst', { skip: TEST_REDIS_URL ? false : 'TEST_REDIS_URL not set' }, async (t) => {
  const shared = await sharedDatabase(t)
  const env = { REDIS_URL: TEST_REDIS_URL!, RATE_LIMIT_MAIL_PER_EMAIL: '3' }
  const [a, b] = [await appWith(t, env, shared), await appWith(t, env, shared)]
  const email = uniqueEmail('two-instances')
  const answers = await Promise.all(Array.from({ length: BURST }, (_, i) => send(i % 2 ? a : b, '/auth/password/forgot', email)))
  t.equal(tally(t, answers, 3600), 3, `exactly 3 of ${BURST} accepted across both instances`)
  t.equal((await queuedFor(a, email)).length, 3, 'exactly 3 mails queued')
})
