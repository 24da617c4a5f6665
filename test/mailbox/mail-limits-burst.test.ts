// Thirty requests at once against the mail limits, counted down to the mail
// that reaches the SMTP server. With TEST_REDIS_URL the burst is split over two
// instances sharing one database and one Redis, and every limit must hold
// across them; without it, one instance counts in process (more than one
// instance needs Redis: README, Running modes). The answers are the ones the
// README documents: 202 (201 for an invitation) up to the limit, then
// 429 RATE_LIMITED with Retry-After and RateLimit-*, for a known and an unknown
// address alike; a refused request queues nothing and mails nothing.
import t, { type Test } from 'tap'
import { randomInt } from 'node:crypto'
import { and, eq, inArray, ne } from 'drizzle-orm'
import type { LightMyRequestResponse } from 'fastify'
import type { App } from '../../src/app.js'
import { mailOutbox } from '../../src/db/schema.js'
import { buildTestApp, FAST_ARGON2, sharedDatabase, TEST_REDIS_URL, within } from '../helpers/app.js'
import { bearer, register, STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'
import { mailEnv, startSmtp } from '../helpers/smtp.js'

// Run alone (node --import tsx …), tap's default 30 s per file is less than this one needs on a
// busy machine; the runner's own limit (package.json, tap.timeout) is 120 s.
t.setTimeout(120_000)

const BURST = 30
const PER_ADDRESS = 3
const PER_IP = 5
const HOUR_S = 3600
const MINUTE_S = 60
const smtp = await startSmtp(t)

/** Clients of their own, so that runs sharing a Redis never meet. */
const randomIpv4 = () => `10.${randomInt(256)}.${randomInt(256)}.${randomInt(1, 255)}`
const randomIpv6Prefix = () => `2001:db8:${randomInt(0x10000).toString(16)}:${randomInt(0x10000).toString(16)}`

/** Two instances on one database and one Redis, or one instance when there is no Redis. */
async function instances(t: Test, env: Record<string, string>): Promise<App[]> {
  const base = { ...FAST_ARGON2, ...mailEnv(smtp), TRUST_PROXY: '127.0.0.1', EMAIL_VERIFICATION: 'optional', ...env }
  if (!TEST_REDIS_URL) return [await buildTestApp(t, { env: base })]
  const shared = await sharedDatabase(t)
  const redisEnv = { ...base, REDIS_URL: TEST_REDIS_URL }
  return [await buildTestApp(t, { ...shared, env: redisEnv }), await buildTestApp(t, { ...shared, env: redisEnv })]
}
const where = TEST_REDIS_URL ? 'across two instances on one Redis' : 'on one instance'

const post = (app: App, path: string, payload: object, ip: string, token?: string) => app.inject({
  method: 'POST', url: `/api/v1${path}`, payload, headers: { 'x-forwarded-for': ip, ...(token ? bearer(token) : {}) },
})

/**
 * Sorts a burst's answers: accepted (2xx), refused by the per-address limit (an hour's window) or
 * by the per-IP one (a minute's). Every refusal must be the documented 429: the error shape,
 * Retry-After within its window, and RateLimit-Limit naming the limit that refused it.
 */
function tally(t: Test, answers: LightMyRequestResponse[]) {
  const counts = { accepted: 0, byAddress: 0, byIp: 0, other: [] as string[] }
  for (const res of answers) {
    if (res.statusCode === 202 || res.statusCode === 201) { counts.accepted++; continue }
    if (res.statusCode !== 429) { counts.other.push(`${res.statusCode} ${res.body}`); continue }
    const body = res.json()
    const retryAfter = Number(res.headers['retry-after'])
    const shapeOk = body.error?.code === 'RATE_LIMITED' && typeof body.error.request_id === 'string' && res.headers['ratelimit-remaining'] === '0'
    if (!shapeOk) counts.other.push(`429 without the documented shape: ${res.body} ${JSON.stringify(res.headers)}`)
    else if (retryAfter > MINUTE_S && retryAfter <= HOUR_S && res.headers['ratelimit-limit'] === String(PER_ADDRESS)) counts.byAddress++
    else if (retryAfter >= 1 && retryAfter <= MINUTE_S && res.headers['ratelimit-limit'] === String(PER_IP)) counts.byIp++
    else counts.other.push(`429 with Retry-After ${res.headers['retry-after']} and RateLimit-Limit ${res.headers['ratelimit-limit']}`)
  }
  t.same(counts.other, [], 'every answer is a 2xx or the documented 429')
  return counts
}

/** Outbox rows to `to` (all of them, or of one kind), read on any instance: they share the database. */
const rowsTo = (app: App, to: string[]) =>
  app.db.select({ recipient: mailOutbox.recipient, kind: mailOutbox.kind, state: mailOutbox.state }).from(mailOutbox).where(inArray(mailOutbox.recipient, to))

/** Waits until the senders have settled every row to these addresses (none pending). */
async function drained(t: Test, app: App, to: string[]) {
  const ms = await within(15_000, async () =>
    (await app.db.select({ id: mailOutbox.id }).from(mailOutbox).where(and(inArray(mailOutbox.recipient, to), eq(mailOutbox.state, 'pending')))).length === 0)
  t.ok(ms >= 0, 'the senders settled every queued mail')
  await new Promise((r) => setTimeout(r, 300)) // a duplicate, were there one, would arrive now
}

t.test(`per address, ${where}: ${BURST} parallel requests from ${BURST} IPs get exactly ${PER_ADDRESS} mails queued and sent, known or unknown address`, async (t) => {
  const apps = await instances(t, { RATE_LIMIT_MAIL_PER_EMAIL: String(PER_ADDRESS), RATE_LIMIT_PASSWORD_RESET: String(PER_IP) })
  const known = (await register(apps[0]!, { email: uniqueEmail('burst-known') })).email
  await smtp.waitFor(known) // the registration's verification mail (registration is not counted per address)
  const unknown = uniqueEmail('burst-nobody')
  for (const [label, email, path] of [
    ['known address, forgot', known, '/auth/password/forgot'],
    ['unknown address, forgot', unknown, '/auth/password/forgot'],
  ] as const) {
    const answers = await Promise.all(Array.from({ length: BURST }, (_, i) => post(apps[i % apps.length]!, path, { email }, randomIpv4())))
    const counts = tally(t, answers)
    t.equal(counts.accepted, PER_ADDRESS, `${label}: exactly ${PER_ADDRESS} of ${BURST} accepted (202)`)
    t.equal(counts.byAddress, BURST - PER_ADDRESS, `${label}: the other ${BURST - PER_ADDRESS} are 429 with the address's Retry-After`)
  }
  await drained(t, apps[0]!, [known, unknown])
  const resets = (await rowsTo(apps[0]!, [known])).filter((r) => r.kind === 'password_reset')
  t.equal(resets.length, PER_ADDRESS, `${PER_ADDRESS} reset mails queued for the known address`)
  t.ok(resets.every((r) => r.state === 'sent'), 'and sent')
  t.equal(smtp.to(known).length, 1 + PER_ADDRESS, `the mail server got the registration's mail and ${PER_ADDRESS} resets, no more`)
  const nobody = await rowsTo(apps[0]!, [unknown])
  t.equal(nobody.length, PER_ADDRESS, `${PER_ADDRESS} rows for the unknown address too (the same work either way)`)
  t.ok(nobody.every((r) => r.state === 'skipped'), 'each skipped by the sender')
  t.same(smtp.to(unknown), [], 'nothing mailed to an address without an account')
  // The limit is per address, not per spelling.
  t.equal((await post(apps.at(-1)!, '/auth/password/forgot', { email: `  ${known.toUpperCase()} ` }, randomIpv4())).statusCode, 429, 'another spelling of the address is refused too')
})

t.test(`per address, whichever flow, ${where}: ${BURST} parallel forgot, re-send, change-of-email and invitation requests share one count`, async (t) => {
  const apps = await instances(t, { RATE_LIMIT_MAIL_PER_EMAIL: String(PER_ADDRESS), RATE_LIMIT_PASSWORD_RESET: String(PER_IP) })
  const target = (await register(apps[0]!, { email: uniqueEmail('burst-target') })).email // unverified: a re-send mails it
  await smtp.waitFor(target)
  // Seven other accounts: each asks to move its own address to the target's and, as the owner of
  // its organization, invites the target. Requests that mail the target, in one burst:
  const others = await Promise.all(Array.from({ length: 7 }, (_, i) => register(apps[i % apps.length]!)))
  const requests: Array<(app: App) => Promise<LightMyRequestResponse>> = [
    ...Array.from({ length: 8 }, () => (app: App) => post(app, '/auth/password/forgot', { email: target }, randomIpv4())),
    ...Array.from({ length: 8 }, () => (app: App) => post(app, '/auth/email/verify/resend', { email: target }, randomIpv4())),
    ...others.map((o) => (app: App) => post(app, '/auth/email', { new_email: target, password: STRONG_PASSWORD }, randomIpv4(), o.access_token)),
    ...others.map((o) => (app: App) => post(app, `/organizations/${o.organization.id}/invitations`, { email: target, role: 'member' }, randomIpv4(), o.access_token)),
  ]
  t.equal(requests.length, BURST)
  const answers = await Promise.all(requests.map((send, i) => send(apps[i % apps.length]!)))
  const counts = tally(t, answers)
  t.equal(counts.accepted, PER_ADDRESS, `exactly ${PER_ADDRESS} of ${BURST} accepted, whatever their flow`)
  t.equal(counts.byAddress, BURST - PER_ADDRESS, 'the rest refused by the address\'s limit')
  await drained(t, apps[0]!, [target, ...others.map((o) => o.email)])
  const toTarget = await rowsTo(apps[0]!, [target])
  t.equal(toTarget.length, 1 + PER_ADDRESS, `rows to the address: the registration's and ${PER_ADDRESS} more`)
  t.ok(toTarget.every((r) => r.state === 'sent'), 'all sent (the account is unverified, so a re-send mails too)')
  t.equal(smtp.to(target).length, 1 + PER_ADDRESS, `the mail server got exactly ${1 + PER_ADDRESS} mails for the address`)
  // An accepted change of email also notifies the old address; a refused one notifies nobody.
  const changesAccepted = answers.slice(16, 23).filter((r) => r.statusCode === 202).length
  const notices = await apps[0]!.db.select({ id: mailOutbox.id }).from(mailOutbox)
    .where(and(inArray(mailOutbox.recipient, others.map((o) => o.email)), ne(mailOutbox.kind, 'email_verification')))
  t.equal(notices.length, changesAccepted, 'one notice to an old address per accepted change of email, none for a refused one')

  // Invitations count too when they come first (in the burst above they are the slowest, and
  // could meet a count the others had already spent): seven organizations invite another address at once.
  const invited = uniqueEmail('burst-invited')
  const invitations = await Promise.all(others.map((o, i) =>
    post(apps[i % apps.length]!, `/organizations/${o.organization.id}/invitations`, { email: invited, role: 'member' }, randomIpv4(), o.access_token)))
  const invitedCounts = tally(t, invitations)
  t.equal(invitedCounts.accepted, PER_ADDRESS, `exactly ${PER_ADDRESS} of ${others.length} parallel invitations accepted (201)`)
  t.equal(invitedCounts.byAddress, others.length - PER_ADDRESS, 'the rest refused by the address\'s limit')
  t.equal((await post(apps.at(-1)!, '/auth/password/forgot', { email: invited }, randomIpv4())).statusCode, 429, 'and they spent the count a reset would use')
  await drained(t, apps[0]!, [invited])
  t.equal(smtp.to(invited).length, PER_ADDRESS, `${PER_ADDRESS} invitations mailed`)
})

t.test(`per IP, ${where}: ${BURST} parallel requests from one client to ${BURST} addresses get exactly ${PER_IP} through`, async (t) => {
  const apps = await instances(t, { RATE_LIMIT_MAIL_PER_EMAIL: String(PER_ADDRESS), RATE_LIMIT_PASSWORD_RESET: String(PER_IP) })
  const cases = [
    { label: 'forgot, one IPv4 address', path: '/auth/password/forgot', ip: (() => { const ip = randomIpv4(); return () => ip })() },
    // One host holds a whole IPv6 /64 (README, Abuse protection): rotating through it is one client.
    { label: 're-send, 30 addresses of one IPv6 /64', path: '/auth/email/verify/resend', ip: (() => { const p = randomIpv6Prefix(); let n = 0; return () => `${p}::${(++n).toString(16)}` })() },
  ]
  // Thirty accounts, unverified, so that a reset and a re-send both mail them; each address gets at
  // most one of each, below its own limit.
  const users = await Promise.all(Array.from({ length: BURST }, (_, i) => register(apps[i % apps.length]!)))
  const emails = users.map((u) => u.email)
  await drained(t, apps[0]!, emails) // their registrations' verification mails
  const mailsAtServer = () => emails.reduce((n, e) => n + smtp.to(e).length, 0)
  for (const c of cases) {
    const kind = c.path === '/auth/password/forgot' ? 'password_reset' : 'email_verification'
    const [rowsBefore, mailsBefore] = [(await rowsTo(apps[0]!, emails)).filter((r) => r.kind === kind).length, mailsAtServer()]
    const answers = await Promise.all(emails.map((email, i) => post(apps[i % apps.length]!, c.path, { email }, c.ip())))
    const counts = tally(t, answers)
    t.equal(counts.accepted, PER_IP, `${c.label}: exactly ${PER_IP} of ${BURST} accepted`)
    t.equal(counts.byIp, BURST - PER_IP, `${c.label}: the rest are 429 with the client's Retry-After (a minute)`)
    await drained(t, apps[0]!, emails)
    const rowsAfter = (await rowsTo(apps[0]!, emails)).filter((r) => r.kind === kind).length
    t.equal(rowsAfter - rowsBefore, PER_IP, `${c.label}: exactly ${PER_IP} mails queued by the burst`)
    t.equal(mailsAtServer() - mailsBefore, PER_IP, `${c.label}: exactly ${PER_IP} mails reached the server`)
  }
  t.equal((await post(apps.at(-1)!, '/auth/password/forgot', { email: uniqueEmail() }, randomIpv4())).statusCode, 202, 'another client is still served')
})

t.test(`both limits in one burst, ${where}: ${BURST} requests from one client for one address`, async (t) => {
  const apps = await instances(t, { RATE_LIMIT_MAIL_PER_EMAIL: String(PER_ADDRESS), RATE_LIMIT_PASSWORD_RESET: String(PER_IP) })
  const email = (await register(apps[0]!)).email
  await smtp.waitFor(email)
  const ip = randomIpv4()
  const answers = await Promise.all(Array.from({ length: BURST }, (_, i) => post(apps[i % apps.length]!, '/auth/password/forgot', { email }, ip)))
  const counts = tally(t, answers)
  // The client's limit is checked first (before the handler): PER_IP requests reach the address's
  // limit, which lets PER_ADDRESS of them through.
  t.equal(counts.accepted, PER_ADDRESS, `exactly ${PER_ADDRESS} accepted`)
  t.equal(counts.byAddress, PER_IP - PER_ADDRESS, `${PER_IP - PER_ADDRESS} refused by the address's limit`)
  t.equal(counts.byIp, BURST - PER_IP, `${BURST - PER_IP} refused by the client's limit`)
  await drained(t, apps[0]!, [email])
  t.equal((await rowsTo(apps[0]!, [email])).filter((r) => r.kind === 'password_reset').length, PER_ADDRESS, `exactly ${PER_ADDRESS} resets queued`)
  t.equal(smtp.to(email).length, 1 + PER_ADDRESS, 'and mailed')
})
