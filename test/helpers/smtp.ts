// A real SMTP server for the mail tests: the smtp-server package on a free
// loopback port, every message parsed with mailparser. Tests read the mail a
// user would get and follow its link.
import type { Test } from 'tap'
import { SMTPServer } from 'smtp-server'
import { simpleParser, type ParsedMail } from 'mailparser'
import { freePort } from './server.js'

export interface TestSmtp {
  url: string
  port: number
  /** Every message received, in order. */
  messages: ParsedMail[]
  /** Resolves with the first message to `to` (after `skip` earlier ones) matching `match`; rejects after `ms`. */
  waitFor(to: string, match?: (mail: ParsedMail) => boolean, ms?: number): Promise<ParsedMail>
  /** Messages to an address so far. */
  to(address: string): ParsedMail[]
  /** Every RCPT TO the server answered, in order: when, and with which code (250 accepted). */
  rcpts: Array<{ to: string; at: number; code: number }>
  stop(): Promise<void>
  /** Listens again on the same port. */
  start(): Promise<void>
}

const recipients = (mail: ParsedMail) => [mail.to].flat().flatMap((a) => a?.value ?? []).map((v) => v.address?.toLowerCase())

/** The `token` of the first link in a mail (plain-text part). */
export function tokenIn(mail: ParsedMail): string {
  const link = linkIn(mail)
  const token = new URL(link).searchParams.get('token')
  if (!token) throw new Error(`no token in ${link}`)
  return token
}

export function linkIn(mail: ParsedMail): string {
  const match = /https?:\/\/\S+/.exec(mail.text ?? '')
  if (!match) throw new Error(`no link in mail "${mail.subject}"`)
  return match[0]
}

export interface SmtpOptions {
  user?: string
  pass?: string
  /** Milliseconds to hold the answer to the `n`th MAIL FROM (from 1): a slow or stalling server. */
  stall?: (n: number) => number
  /** An SMTP code (451, 550…) to refuse the `n`th RCPT TO of `to` (from 1) with: a failing server. Undefined accepts it. */
  refuse?: (to: string, n: number) => number | undefined
}

export async function startSmtp(t: Test, options: SmtpOptions = {}): Promise<TestSmtp> {
  const port = await freePort()
  const messages: ParsedMail[] = []
  const waiters = new Set<() => void>()
  let server: SMTPServer | undefined
  let mailFroms = 0
  const rcpts: TestSmtp['rcpts'] = []
  const rcptsTo = new Map<string, number>()

  const listen = () => new Promise<void>((resolve, reject) => {
    server = new SMTPServer({
      logger: false,
      disabledCommands: ['STARTTLS'],
      authOptional: !options.user,
      allowInsecureAuth: true,
      onAuth(auth, _session, callback) {
        if (auth.username === options.user && auth.password === options.pass) return callback(null, { user: auth.username })
        return callback(new Error('Invalid username or password'))
      },
      onMailFrom(_address, _session, callback) {
        const ms = options.stall?.(++mailFroms) ?? 0
        if (ms > 0) setTimeout(() => callback(), ms)
        else callback()
      },
      onRcptTo(address, _session, callback) {
        const to = address.address.toLowerCase()
        const n = (rcptsTo.get(to) ?? 0) + 1
        rcptsTo.set(to, n)
        const code = options.refuse?.(to, n)
        rcpts.push({ to, at: Date.now(), code: code ?? 250 })
        if (!code) return callback()
        callback(Object.assign(new Error(code >= 500 ? 'Mailbox unavailable' : 'Try again later'), { responseCode: code }))
      },
      onData(stream, _session, callback) {
        simpleParser(stream).then((mail) => {
          messages.push(mail)
          for (const wake of waiters) wake()
          callback()
        }, callback)
      },
    })
    server.once('error', reject)
    // Senders keep pooled connections open: one dropped when its process ends is no test failure.
    server.on('error', (err: NodeJS.ErrnoException) => { if (err.code !== 'ECONNRESET' && err.code !== 'EPIPE') throw err })
    server.listen(port, '127.0.0.1', () => resolve())
  })
  const close = () => new Promise<void>((resolve) => { if (server) server.close(() => resolve()); else resolve() })
  await listen()
  t.teardown(close)

  const credentials = options.user ? `${encodeURIComponent(options.user)}:${encodeURIComponent(options.pass ?? '')}@` : ''
  const smtp: TestSmtp = {
    url: `smtp://${credentials}127.0.0.1:${port}`,
    port,
    messages,
    rcpts,
    to: (address) => messages.filter((m) => recipients(m).includes(address.toLowerCase())),
    waitFor(to, match = () => true, ms = 10_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = smtp.to(to).find(match)
          if (!found) return false
          waiters.delete(check)
          clearTimeout(timer)
          resolve(found)
          return true
        }
        const timer = setTimeout(() => { waiters.delete(check); reject(new Error(`no mail to ${to} within ${ms} ms (${messages.length} received)`)) }, ms)
        waiters.add(check)
        check()
      })
    },
    stop: close,
    start: listen,
  }
  return smtp
}

/** Config for an app that mails through `smtp`, polling and retrying quickly. */
export const mailEnv = (smtp: TestSmtp, extra: Record<string, string> = {}) => ({
  SMTP_URL: smtp.url, MAIL_POLL_INTERVAL: '50', MAIL_RETRY_BASE: '50', APP_URL: 'https://app.example.test', ...extra,
})
