// The outbox against a hostile mail server, with two instances on one outbox.
// What must hold (README, Mail): no mail is lost; a mail is never in two
// deliveries at once (a send is abandoned, its connection closed, at
// MAIL_SEND_TIMEOUT, and its claim lasts twice that); retries follow the
// documented backoff and stop at exactly MAIL_MAX_ATTEMPTS, counted across
// instances. The one documented duplicate: a server that took the mail but
// whose answer did not come in time gets it again, with the same Message-ID.
//
// A slow server here is the real SMTP server (test/helpers/smtp) behind a TCP
// proxy that trickles its replies one byte at a time: no idle timeout ever
// fires, so only the bound on the whole delivery can end such a send.
import t, { type Test } from 'tap'
import net from 'node:net'
import { eq, inArray } from 'drizzle-orm'
import type { App } from '../../src/app.js'
import { mailOutbox } from '../../src/db/schema.js'
import { buildTestApp, FAST_ARGON2, sharedDatabase, within } from '../helpers/app.js'
import { uniqueEmail } from '../helpers/api.js'
import { mailEnv, startSmtp, type TestSmtp } from '../helpers/smtp.js'

// Run alone (node --import tsx …), tap's default 30 s per file is less than this one needs on a
// busy machine; the runner's own limit (package.json, tap.timeout) is 120 s.
t.setTimeout(120_000)

/** What the proxy saw of one client connection (times from Date.now()). */
interface Session { n: number; openedAt: number; closedAt?: number; mailFromAt: number[]; rcpts: string[]; dataDoneAt: number[] }
type Trickle = 'after-greeting' | 'after-data' | undefined

/**
 * A TCP proxy in front of `smtp`. For the connections `trickle(n)` names (n from 1), the server's
 * replies are passed on one byte every `byteMs`: after its greeting (every later reply is slow),
 * or only once the client has sent a whole message (the server has taken the mail; its answer is slow).
 */
async function slowProxy(t: Test, smtp: TestSmtp, trickle: (n: number) => Trickle, byteMs: number) {
  const sessions: Session[] = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const s: Session = { n: sessions.length + 1, openedAt: Date.now(), mailFromAt: [], rcpts: [], dataDoneAt: [] }
    sessions.push(s)
    const mode = trickle(s.n)
    const upstream = net.connect(smtp.port, '127.0.0.1')
    sockets.add(client).add(upstream)
    let slow = false
    let greeted = false
    const pending: number[] = []
    let timer: NodeJS.Timeout | undefined
    const drip = () => {
      const byte = pending.shift()
      if (byte === undefined) { timer = undefined; return }
      if (!client.destroyed) client.write(Buffer.from([byte]))
      timer = setTimeout(drip, byteMs)
    }
    upstream.on('data', (chunk: Buffer) => {
      if (!slow) {
        client.write(chunk)
        if (!greeted) { greeted = true; if (mode === 'after-greeting') slow = true }
        return
      }
      pending.push(...chunk)
      if (!timer) timer = setTimeout(drip, byteMs)
    })
    // Commands, read as they pass: MAIL FROM and RCPT TO, and the end of each message's data.
    let line = ''
    let inData = false
    let tail = ''
    client.on('data', (chunk: Buffer) => {
      upstream.write(chunk)
      const text = chunk.toString('latin1')
      if (inData) {
        const seen = tail + text
        if (seen.includes('\r\n.\r\n')) {
          inData = false
          s.dataDoneAt.push(Date.now())
          if (mode === 'after-data') slow = true
        }
        tail = seen.slice(-4)
        return
      }
      line += text
      let end: number
      while ((end = line.indexOf('\r\n')) >= 0) {
        const command = line.slice(0, end)
        line = line.slice(end + 2)
        if (/^MAIL FROM:/i.test(command)) s.mailFromAt.push(Date.now())
        const rcpt = /^RCPT TO:<([^>]*)>/i.exec(command)
        if (rcpt) s.rcpts.push(rcpt[1]!.toLowerCase())
        if (/^DATA$/i.test(command)) { inData = true; tail = '\r\n'; line = ''; break }
      }
    })
    const closed = () => {
      s.closedAt ??= Date.now()
      clearTimeout(timer)
      client.destroy()
      upstream.destroy()
    }
    client.on('close', closed).on('error', closed)
    upstream.on('close', () => client.end()).on('error', closed)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    for (const socket of sockets) socket.destroy()
    server.close(() => resolve())
  }))
  return { url: `smtp://127.0.0.1:${(server.address() as net.AddressInfo).port}`, sessions }
}

/** Two instances on one outbox, mailing through `smtpUrl`. */
async function twoInstances(t: Test, smtp: TestSmtp, env: Record<string, string>): Promise<[App, App]> {
  const shared = await sharedDatabase(t)
  const all = { ...FAST_ARGON2, ...mailEnv(smtp, { MAIL_POLL_INTERVAL: '20' }), EMAIL_VERIFICATION: 'off', ...env }
  return [await buildTestApp(t, { ...shared, env: all }), await buildTestApp(t, { ...shared, env: all })]
}

/** Mails queued straight into the outbox, each to an address of its own. */
async function queueMails(app: App, n: number) {
  const to = Array.from({ length: n }, () => uniqueEmail('hostile').toLowerCase())
  await app.db.transaction(async (tx) => {
    for (const address of to) await app.outbox.queue(tx, { kind: 'password_changed', to: address, content: { subject: 'hello', text: 'hello', html: '<p>hello</p>' } })
  })
  app.outbox.queued()
  return to
}

const rowsTo = (app: App, to: string[]) => app.db.select().from(mailOutbox).where(inArray(mailOutbox.recipient, to))
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

t.test('a server that refuses (451) twice, then accepts: each mail delivered once, on its third attempt, after the documented backoff', async (t) => {
  const base = 100
  const smtp = await startSmtp(t, { refuse: (_to, n) => (n <= 2 ? 451 : undefined) })
  const [a] = await twoInstances(t, smtp, { MAIL_RETRY_BASE: String(base), MAIL_MAX_ATTEMPTS: '5' })
  const to = await queueMails(a, 8)
  for (const address of to) await smtp.waitFor(address, undefined, 15_000)
  await sleep(500)
  for (const address of to) {
    t.equal(smtp.to(address).length, 1, `one mail to ${address}`)
    const tries = smtp.rcpts.filter((r) => r.to === address)
    t.same(tries.map((r) => r.code), [451, 451, 250], 'the server saw exactly three attempts: two refused, one taken')
    // A retry waits MAIL_RETRY_BASE, doubling: the next attempt is due that long after the failure,
    // which the server answered after recording it.
    t.ok(tries[1]!.at - tries[0]!.at >= base, `second attempt ${tries[1]!.at - tries[0]!.at} ms after the first (>= ${base})`)
    t.ok(tries[2]!.at - tries[1]!.at >= 2 * base, `third attempt ${tries[2]!.at - tries[1]!.at} ms after the second (>= ${2 * base})`)
  }
  const rows = await rowsTo(a, to)
  t.ok(rows.every((r) => r.state === 'sent' && r.attempts === 3 && r.lastError === null && r.contentSealed === null), 'each row sent on attempt 3, its content erased')
})

t.test('a server that refuses every delivery (550): each mail is tried exactly MAIL_MAX_ATTEMPTS times across both instances, then failed', async (t) => {
  const smtp = await startSmtp(t, { refuse: () => 550 })
  const [a] = await twoInstances(t, smtp, { MAIL_RETRY_BASE: '30', MAIL_MAX_ATTEMPTS: '3' })
  const to = await queueMails(a, 6)
  t.ok(await within(15_000, async () => (await rowsTo(a, to)).every((r) => r.state === 'failed')) >= 0, 'every row failed')
  await sleep(500) // a fourth attempt, were there one, would come now
  const rows = await rowsTo(a, to)
  for (const row of rows) {
    t.equal(row.attempts, 3, 'three attempts counted')
    t.equal(smtp.rcpts.filter((r) => r.to === row.recipient).length, 3, `the server saw exactly three attempts for ${row.recipient}, not one more`)
    t.match(row.lastError, /550/, 'the last refusal recorded')
    t.equal(row.contentSealed, null, 'the content is erased')
  }
  t.equal(smtp.messages.length, 0, 'nothing delivered')
})

t.test('a server that trickles its replies past the claim: the send is abandoned at MAIL_SEND_TIMEOUT and its connection closed before the claim runs out; delivered once, by a retry', async (t) => {
  const sendTimeout = 600 // the claim lasts 1200 ms
  const smtp = await startSmtp(t)
  // The first two connections (one per mail's first attempt) get every reply after the greeting at
  // a byte per 100 ms: EHLO's answer alone would take seconds, and no socket timeout notices.
  const proxy = await slowProxy(t, smtp, (n) => (n <= 2 ? 'after-greeting' : undefined), 100)
  const [a] = await twoInstances(t, smtp, { SMTP_URL: proxy.url, MAIL_SEND_TIMEOUT: String(sendTimeout) })
  const to = await queueMails(a, 2)
  for (const address of to) await smtp.waitFor(address, undefined, 15_000)
  await sleep(2 * sendTimeout + 500) // a stalled send completing late would deliver again by now
  const [first, second] = proxy.sessions
  t.ok(first?.closedAt && second?.closedAt, 'both slow connections were closed by the sender')
  for (const slow of [first!, second!]) {
    t.ok(slow.closedAt! - slow.openedAt < 2 * sendTimeout, `a slow connection closed ${slow.closedAt! - slow.openedAt} ms after it opened: within the claim (${2 * sendTimeout} ms)`)
  }
  const delivered = proxy.sessions.flatMap((s) => s.dataDoneAt)
  t.equal(delivered.length, 2, 'two mails, two deliveries')
  t.ok(Math.min(...delivered) > Math.max(first!.closedAt!, second!.closedAt!), 'no mail was delivered while an abandoned send was still open')
  for (const address of to) t.equal(smtp.to(address).length, 1, `one mail to ${address}`)
  const rows = await rowsTo(a, to)
  t.ok(rows.every((r) => r.state === 'sent' && r.attempts === 2), 'each sent by its second attempt')
})

t.test('the documented duplicate: a server that took the mail but answers past MAIL_SEND_TIMEOUT gets it again, by the retry, with the same Message-ID, never while the first send is open', async (t) => {
  const sendTimeout = 1000 // the claim lasts 2000 ms
  const smtp = await startSmtp(t)
  // The first connection's answer to the message ("250 OK: message queued", ~25 bytes) at a byte per
  // 150 ms: the server has the mail; the sender hears back ~4 s later, long past its claim.
  const proxy = await slowProxy(t, smtp, (n) => (n === 1 ? 'after-data' : undefined), 150)
  const [a] = await twoInstances(t, smtp, { SMTP_URL: proxy.url, MAIL_SEND_TIMEOUT: String(sendTimeout) })
  const [address] = await queueMails(a, 1)
  t.ok(await within(10_000, () => smtp.to(address!).length >= 2) >= 0, 'the mail arrived twice')
  await sleep(2 * sendTimeout + 500)
  const copies = smtp.to(address!)
  t.equal(copies.length, 2, 'exactly twice: the abandoned send the server had taken, and its retry')
  const [row] = await rowsTo(a, [address!])
  t.same(copies.map((m) => m.messageId), [`<${row!.id}@portcullis>`, `<${row!.id}@portcullis>`], 'both with the row\'s Message-ID, so a receiver can tell')
  t.equal(row!.state, 'sent')
  t.equal(row!.attempts, 2, 'two attempts: the abandoned one and the retry')
  const [first, ...later] = proxy.sessions.filter((s) => s.rcpts.includes(address!))
  t.ok(first!.closedAt, 'the first connection was closed by the sender')
  t.ok(first!.closedAt! - first!.openedAt < 2 * sendTimeout, `closed ${first!.closedAt! - first!.openedAt} ms after it opened: within the claim`)
  t.equal(later.length, 1, 'one more session carried it')
  t.ok(later[0]!.mailFromAt[0]! > first!.closedAt!, 'the retry began only after the first send was abandoned')
  // Sent again by its retry (MAIL_RETRY_BASE later), not only once the claim lapsed.
  const retriedAfter = later[0]!.mailFromAt[0]! - first!.openedAt
  t.ok(retriedAfter < 2 * sendTimeout, `by the retry, ${retriedAfter} ms after the first send began: before the abandoned claim would have lapsed`)
})

t.test('a sender that dies holding a claim: nobody sends the mail until the claim lapses, then one instance sends it once', async (t) => {
  const smtp = await startSmtp(t)
  const [a] = await twoInstances(t, smtp, {})
  const address = uniqueEmail('orphan').toLowerCase()
  const lapse = Date.now() + 1500
  // Queued and claimed in one transaction, as by a sender that then died mid-send: no sender can see it unclaimed.
  await a.db.transaction(async (tx) => {
    await a.outbox.queue(tx, { kind: 'password_changed', to: address, content: { subject: 'hello', text: 'hello', html: '<p>hello</p>' } })
    await tx.update(mailOutbox).set({ lockedUntil: new Date(lapse), attempts: 1 }).where(eq(mailOutbox.recipient, address))
  })
  a.outbox.queued()
  await smtp.waitFor(address, undefined, 10_000)
  const taken = smtp.rcpts.find((r) => r.to === address)!.at
  t.ok(taken >= lapse, `sent ${taken - lapse} ms after the claim lapsed, not before`)
  await sleep(500)
  t.equal(smtp.to(address).length, 1, 'once')
  const [row] = await rowsTo(a, [address])
  t.equal(row!.state, 'sent')
  t.equal(row!.attempts, 2)
})
