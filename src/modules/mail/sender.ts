// Delivers the outbox: every instance runs one sender, which claims due rows
// (SKIP LOCKED, so two senders never take the same row), sends them and
// retries failures with exponential backoff up to MAIL_MAX_ATTEMPTS. It runs
// beside the requests, never inside them: a mail server that is down delays
// mail, never a request.
//
// No mail in two deliveries at once: a row is claimed right before its send,
// for twice MAIL_SEND_TIMEOUT, and the send is abandoned (its connection closed)
// at MAIL_SEND_TIMEOUT, so a claim outlasts its send. A mail can still arrive
// twice (at least once, never at most once; the Message-ID stays the same, so a
// receiving system can tell): when the server took it but answered after
// MAIL_SEND_TIMEOUT, its retry sends it again; when a sender stalls past its
// claim, or dies after the server took the mail but before the row says so, the
// next sender does (test/mail/outbox-adversarial).
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../../config.js'
import type { Database } from '../../db/client.js'
import type { Clock } from '../../lib/clock.js'
import type { Outbox } from './outbox.js'
import * as repo from './repository.js'
import type { MailTransport } from './transport.js'

const MAX_BACKOFF_MS = 3_600_000

export interface MailSenderDeps {
  db: Database
  config: Config
  clock: Clock
  outbox: Outbox
  transport: MailTransport
  log: FastifyBaseLogger
}

export class MailSender {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  private again = false
  private stopped = true

  constructor(private readonly deps: MailSenderDeps) {}

  /** Where this sender's mail goes (SMTP, or the log). */
  get transport(): MailTransport {
    return this.deps.transport
  }

  start(): void {
    this.stopped = false
    this.schedule(0)
  }

  /** Look now (mail was just queued here), or right after the round in progress. */
  wake(): void {
    if (this.stopped) return
    if (this.running) this.again = true
    else this.schedule(0)
  }

  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    await this.running
  }

  /**
   * One round: MAIL_CONCURRENCY workers each claim and deliver due mail, one row at a time, until
   * none is left. Returns how many rows were taken.
   */
  async deliverDue(): Promise<number> {
    const counts = await Promise.all(Array.from({ length: this.deps.config.MAIL_CONCURRENCY }, () => this.work()))
    return counts.reduce((a, b) => a + b, 0)
  }

  private async work(): Promise<number> {
    const claimMs = 2 * this.deps.config.MAIL_SEND_TIMEOUT
    let taken = 0
    do { // a stop ends the round after the mail in hand
      const now = this.deps.clock.now()
      const row = await repo.claimNextMail(this.deps.db, new Date(now), new Date(now + claimMs))
      if (!row) break
      await this.deliver(row)
      taken++
    } while (!this.stopped)
    return taken
  }

  private schedule(ms: number) {
    clearTimeout(this.timer)
    this.timer = setTimeout(() => this.round(), ms).unref()
  }

  private round() {
    this.again = false
    this.running = this.deliverDue()
      .then(() => {}, (err: unknown) => { this.deps.log.warn({ err }, 'mail sender: could not read the outbox; trying again') })
      .finally(() => {
        this.running = undefined
        if (!this.stopped) this.schedule(this.again ? 0 : this.deps.config.MAIL_POLL_INTERVAL)
      })
  }

  private async deliver(row: repo.OutboxRow) {
    const { db, outbox, transport, log } = this.deps
    try {
      const content = row.contentSealed ? outbox.open(row.id, row.contentSealed) : await this.prepare(row)
      if (!content) {
        this.settled(row, await repo.markMailSkipped(db, claimOf(row)), 'skipped')
        return
      }
      await transport.send({ ...content, id: row.id, kind: row.kind, to: row.recipient })
      this.settled(row, await repo.markMailSent(db, claimOf(row), new Date(this.deps.clock.now())), 'sent')
    } catch (err) {
      await this.failed(row, err).catch((e: unknown) => log.warn({ err: e, mailId: row.id }, 'mail sender: could not record a failed delivery'))
    }
  }

  /** A row queued without content: its kind's preparer makes it (or finds nothing to send). */
  private async prepare(row: repo.OutboxRow) {
    const preparer = this.deps.outbox.preparerOf(row.kind)
    if (!preparer) throw new Error(`no preparer for mail of kind ${row.kind}`)
    return this.deps.db.transaction((tx) => preparer(tx, row))
  }

  private async failed(row: repo.OutboxRow, err: unknown) {
    const { config, db, log, clock } = this.deps
    const reason = describe(err)
    if (row.attempts >= config.MAIL_MAX_ATTEMPTS) {
      this.settled(row, await repo.markMailFailed(db, claimOf(row), reason), 'failed')
      log.error({ mailId: row.id, kind: row.kind, attempts: row.attempts, reason }, 'mail could not be delivered; given up')
      return
    }
    const delay = Math.min(config.MAIL_RETRY_BASE * 2 ** (row.attempts - 1), MAX_BACKOFF_MS)
    this.settled(row, await repo.scheduleMailRetry(db, claimOf(row), new Date(clock.now() + delay), reason), 'retry')
    log.warn({ mailId: row.id, kind: row.kind, attempts: row.attempts, retryInMs: delay, reason }, 'mail delivery failed; will retry')
  }

  /** An outcome reached after the claim ran out is not written: the sender that took the row next owns it. */
  private settled(row: repo.OutboxRow, written: boolean, outcome: string) {
    if (!written) this.deps.log.warn({ mailId: row.id, kind: row.kind, outcome }, 'mail sender: the claim on this mail ran out before its outcome was written; another sender owns it')
  }
}

const claimOf = (row: repo.OutboxRow): repo.Claim => ({ id: row.id, lockedUntil: row.lockedUntil! })

/** A short reason for the row and the log: the error's code and message, never the mail. */
function describe(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown }
  return `${e.code ? `${String(e.code)}: ` : ''}${String(e.message ?? err)}`.slice(0, 500)
}
