// The outbox and its sender against a real SMTP server: a server that is down
// slows no request and loses no mail; retries give up after MAIL_MAX_ATTEMPTS;
// two instances never send one mail twice; a rolled-back change sends nothing;
// without SMTP_URL mail goes to the log; tokens never reach the logs.
import t, { type Test } from 'tap'
import { Writable } from 'node:stream'
import { eq, inArray } from 'drizzle-orm'
import { mailOutbox } from '../../src/db/schema.js'
import * as repo from '../../src/modules/mail/repository.js'
import { buildTestApp, FAST_ARGON2, sharedDatabase, within } from '../helpers/app.js'
import { register, STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'
import { mailEnv, startSmtp, tokenIn } from '../helpers/smtp.js'

/** A logger that keeps every line, at debug, for tests that read the logs. */
function capturedLogs() {
  const lines: string[] = []
  const stream = new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done() } })
  return { lines, logger: { level: 'debug', stream } }
}

const forgot = (app: Awaited<ReturnType<typeof buildTestApp>>, email: string) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/password/forgot', payload: { email } })

t.test('the SMTP server down: requests answer at once; the mail arrives once it is back, none twice', async (t) => {
  const smtp = await startSmtp(t)
  const app = await buildTestApp(t, { env: { ...FAST_ARGON2, ...mailEnv(smtp), EMAIL_VERIFICATION: 'off' } })
  const users = await Promise.all(Array.from({ length: 5 }, () => register(app)))
  await smtp.stop()
  for (const user of users) {
    const started = performance.now()
    const res = await forgot(app, user.email)
    t.equal(res.statusCode, 202)
    t.ok(performance.now() - started < 1000, 'answered without waiting for the mail server')
  }
  t.ok(await within(5000, async () => {
    const rows = await app.db.select({ attempts: mailOutbox.attempts }).from(mailOutbox).where(inArray(mailOutbox.recipient, users.map((u) => u.email)))
    return rows.length === 5 && rows.every((r) => r.attempts >= 1)
  }) >= 0, 'the sender tried while the server was down')
  await smtp.start()
  for (const user of users) await smtp.waitFor(user.email, undefined, 15_000)
  await new Promise((r) => setTimeout(r, 500))
  for (const user of users) t.equal(smtp.to(user.email).length, 1, `one mail to ${user.email}`)
  const rows = await app.db.select({ state: mailOutbox.state, sealed: mailOutbox.contentSealed }).from(mailOutbox).where(inArray(mailOutbox.recipient, users.map((u) => u.email)))
  t.ok(rows.every((r) => r.state === 'sent' && r.sealed === null), 'sent, and the content (with its link) erased')
})

t.test('a mail that cannot be delivered is retried, then marked failed and logged', async (t) => {
  const smtp = await startSmtp(t)
  await smtp.stop()
  const logs = capturedLogs()
  const app = await buildTestApp(t, { logger: logs.logger, env: { ...FAST_ARGON2, ...mailEnv(smtp), EMAIL_VERIFICATION: 'off', MAIL_MAX_ATTEMPTS: '3' } })
  const user = await register(app)
  await forgot(app, user.email)
  t.ok(await within(8000, async () => {
    const [row] = await app.db.select().from(mailOutbox).where(eq(mailOutbox.recipient, user.email))
    return row?.state === 'failed'
  }) >= 0, 'failed after MAIL_MAX_ATTEMPTS')
  const [row] = await app.db.select().from(mailOutbox).where(eq(mailOutbox.recipient, user.email))
  t.equal(row!.attempts, 3)
  t.match(row!.lastError, /ECONNREFUSED/)
  t.equal(row!.contentSealed, null, 'the content is erased')
  t.equal(logs.lines.filter((l) => l.includes('will retry')).length, 2, 'two retries logged')
  t.ok(logs.lines.some((l) => l.includes('"level":50') && l.includes('given up')), 'the give-up logged as an error')
})

t.test('two instances on one outbox never send a mail twice', async (t) => {
  const smtp = await startSmtp(t)
  const shared = await sharedDatabase(t)
  const env = { ...FAST_ARGON2, ...mailEnv(smtp, { MAIL_POLL_INTERVAL: '20' }), EMAIL_VERIFICATION: 'off' }
  const a = await buildTestApp(t, { ...shared, env })
  const b = await buildTestApp(t, { ...shared, env })
  const users = await Promise.all(Array.from({ length: 10 }, () => register(a)))
  await Promise.all(users.flatMap((u, i) => [forgot(i % 2 ? a : b, u.email), forgot(i % 2 ? b : a, u.email)]))
  for (const user of users) await smtp.waitFor(user.email, () => smtp.to(user.email).length >= 2, 15_000)
  await new Promise((r) => setTimeout(r, 500))
  for (const user of users) t.equal(smtp.to(user.email).length, 2, `two requests, two mails to ${user.email}`)
})

/** Mails queued straight into the outbox, each to an address of its own. */
async function queueMails(app: Awaited<ReturnType<typeof buildTestApp>>, n: number) {
  const to = Array.from({ length: n }, () => uniqueEmail('queued'))
  await app.db.transaction(async (tx) => {
    for (const address of to) await app.outbox.queue(tx, { kind: 'password_changed', to: address, content: { subject: 'hello', text: 'hello', html: '<p>hello</p>' } })
  })
  app.outbox.queued()
  return to
}

/**
 * Two instances on one outbox and an SMTP server that stalls as told: queues `mails`, waits for
 * each, then `settle` ms more (for a duplicate to show), and asserts each arrived exactly once.
 */
async function deliverOnceThroughTwoSenders(t: Test, o: { stall: (n: number) => number; sendTimeout: number; mails: number; settle: number }) {
  const smtp = await startSmtp(t, { stall: o.stall })
  const shared = await sharedDatabase(t)
  const env = { ...FAST_ARGON2, ...mailEnv(smtp, { MAIL_POLL_INTERVAL: '20', MAIL_SEND_TIMEOUT: String(o.sendTimeout) }), EMAIL_VERIFICATION: 'off' }
  const a = await buildTestApp(t, { ...shared, env })
  await buildTestApp(t, { ...shared, env })
  const to = await queueMails(a, o.mails)
  for (const address of to) await smtp.waitFor(address, undefined, 15_000)
  await new Promise((r) => setTimeout(r, o.settle))
  for (const address of to) t.equal(smtp.to(address).length, 1, `one mail to ${address}`)
  return { a, to }
}

t.test('a slow server and two instances: each mail is claimed right before its send, so none is sent twice', async (t) => {
  // Each send takes 300 ms, the claim 2 × MAIL_SEND_TIMEOUT = 2 s: a sender that claimed its
  // whole backlog (12 × 300 ms) up front would still hold mails whose claims had run out, and
  // the other instance would send them too.
  await deliverOnceThroughTwoSenders(t, { stall: () => 300, sendTimeout: 1000, mails: 12, settle: 2500 })
})

t.test('a send that stalls past MAIL_SEND_TIMEOUT is abandoned before its claim runs out: delivered once, by a retry', async (t) => {
  // The first two sessions stall 3 s at MAIL FROM, past the claim (1 s). Were the stalled sends
  // not abandoned, the other instance would take the rows and send them, and then the stalled
  // sessions would complete too.
  const { a, to } = await deliverOnceThroughTwoSenders(t, { stall: (n) => (n <= 2 ? 3000 : 0), sendTimeout: 500, mails: 2, settle: 3500 })
  const rows = await a.db.select().from(mailOutbox).where(inArray(mailOutbox.recipient, to))
  t.ok(rows.every((r) => r.state === 'sent'), 'sent')
  t.ok(rows.every((r) => r.attempts >= 2), 'each was abandoned once and delivered by a retry')
})

t.test('a sender that overran its claim cannot write over the outcome of the sender that took the mail next', async (t) => {
  const app = await buildTestApp(t, { env: { ...FAST_ARGON2 } })
  await app.mailSender.stop() // this test plays both senders
  const [address] = await queueMails(app, 1)
  const at = (ms: number) => new Date(Date.now() + 60_000 + ms) // due, whatever the clock
  const first = await repo.claimNextMail(app.db, at(0), at(1000))
  t.ok(first, 'the first sender claims it')
  t.notOk(await repo.claimNextMail(app.db, at(500), at(1500)), 'nobody else while the claim holds')
  const second = await repo.claimNextMail(app.db, at(2000), at(3000))
  t.equal(second?.id, first!.id, 'the claim ran out: another sender takes it')
  t.equal(await repo.markMailSent(app.db, { id: second!.id, lockedUntil: second!.lockedUntil! }, at(2100)), true, 'and sends it')
  const late = await repo.scheduleMailRetry(app.db, { id: first!.id, lockedUntil: first!.lockedUntil! }, at(2200), 'timed out')
  t.equal(late, false, 'the first sender\'s late failure is not written')
  const [row] = await app.db.select().from(mailOutbox).where(eq(mailOutbox.recipient, address!))
  t.equal(row!.state, 'sent', 'the mail stays sent: it is not queued for a third send')
  t.equal(row!.lastError, null)
})

t.test('a change that rolls back sends nothing', async (t) => {
  const smtp = await startSmtp(t)
  const app = await buildTestApp(t, { env: { ...FAST_ARGON2, ...mailEnv(smtp) } })
  const user = await register(app)
  await smtp.waitFor(user.email)
  // A mail queued in a transaction that then fails: neither the row nor the mail may exist.
  const doomed = uniqueEmail('doomed')
  await app.db.transaction(async (tx) => {
    await app.outbox.queue(tx, { kind: 'password_changed', to: doomed, content: { subject: 'never', text: 'never', html: '<p>never</p>' } })
    throw new Error('the change fails after queuing its mail')
  }).catch(() => {})
  app.outbox.queued()
  // A second registration with the address fails on the unique index: nothing of it is queued either.
  const again = await app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { email: user.email, password: STRONG_PASSWORD } })
  t.equal(again.statusCode, 409)
  await new Promise((r) => setTimeout(r, 500))
  t.equal(smtp.to(user.email).length, 1, 'only the first registration mailed')
  t.equal((await app.db.select().from(mailOutbox).where(eq(mailOutbox.recipient, user.email))).length, 1, 'one outbox row')
  t.same(smtp.to(doomed), [], 'a mail queued in a rolled-back transaction is never sent')
  t.equal((await app.db.select().from(mailOutbox).where(eq(mailOutbox.recipient, doomed))).length, 0, 'and has no row')
})

t.test('SMTP_URL credentials authenticate to the server', async (t) => {
  const smtp = await startSmtp(t, { user: 'mailer', pass: 's3cret pass' })
  const app = await buildTestApp(t, { env: { ...FAST_ARGON2, ...mailEnv(smtp) } })
  const user = await register(app)
  t.ok(await smtp.waitFor(user.email), 'delivered with AUTH')
})

t.test('without SMTP_URL: a start-up warning, and each mail written to the log with its link', async (t) => {
  const logs = capturedLogs()
  const app = await buildTestApp(t, { logger: logs.logger, env: { ...FAST_ARGON2, MAIL_POLL_INTERVAL: '20' } })
  t.ok(logs.lines.some((l) => l.includes('SMTP_URL is not set')), 'warned at start-up')
  const user = await register(app)
  t.ok(await within(5000, () => logs.lines.some((l) => l.includes('mail delivered to the log') && l.includes(user.email))) >= 0)
  const line = JSON.parse(logs.lines.find((l) => l.includes('mail delivered to the log') && l.includes(user.email))!)
  t.match(line.mail.link, /\/verify-email\?token=/)
  t.match(line.mail.subject, /confirm your email address/)
})

t.test('with SMTP, no mailed token ever reaches the logs', async (t) => {
  const smtp = await startSmtp(t)
  const logs = capturedLogs()
  const app = await buildTestApp(t, { logger: logs.logger, env: { ...FAST_ARGON2, ...mailEnv(smtp) } })
  const user = await register(app)
  const verification = tokenIn(await smtp.waitFor(user.email, (m) => /confirm your email/.test(m.subject ?? '')))
  await app.inject({ method: 'POST', url: '/api/v1/auth/email/verify', payload: { token: verification } })
  await app.inject({ method: 'POST', url: '/api/v1/auth/email/verify', payload: { token: verification } }) // refused: logged as a 400
  await forgot(app, user.email)
  const reset = tokenIn(await smtp.waitFor(user.email, (m) => /reset your password/.test(m.subject ?? '')))
  await app.inject({ method: 'POST', url: `/api/v1/auth/password/reset?token=${reset}`, payload: { token: reset, new_password: 'short' } })
  await app.inject({ method: 'POST', url: '/api/v1/auth/password/reset', payload: { token: reset, new_password: 'copper-lantern-harbor-92' } })
  await app.inject({ method: 'POST', url: '/api/v1/auth/password/reset', payload: { token: reset, new_password: 'copper-lantern-harbor-92' } })
  await new Promise((r) => setTimeout(r, 300))
  const all = logs.lines.join('\n')
  t.ok(logs.lines.length > 10, `${logs.lines.length} log lines read`)
  t.notOk(all.includes(verification), 'no verification token in the logs')
  t.notOk(all.includes(reset), 'no reset token in the logs')
  t.notOk(all.includes('copper-lantern-harbor-92'), 'no password either')
})
