// The janitor deletes what has expired, so tables do not grow without bound:
// sessions past their lifetime (with their refresh tokens), refresh tokens past
// theirs, used or expired 2FA challenges, stale login-failure counters,
// invitations past their expiry (whatever became of them), used or expired mail
// tokens, delivered outbox rows after MAIL_RETENTION_DAYS,
// audit events after AUDIT_RETENTION_DAYS. It runs in every instance, every
// JANITOR_INTERVAL, and in batches: each batch is its own short transaction
// that first takes a transaction-scoped advisory lock, so one instance deletes
// at a time and a large backlog never holds locks for long.
import { and, inArray, isNotNull, isNull, lt, or, sql, type SQL } from 'drizzle-orm'
import type { PgColumn, PgTable } from 'drizzle-orm/pg-core'
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../../config.js'
import type { Database } from '../../db/client.js'
import {
  auditEvents, invitations, loginFailures, mailOutbox, mailTokens, mfaChallenges, platformAuditEvents, refreshTokens, sessions,
} from '../../db/schema.js'
import type { Clock } from '../../lib/clock.js'

/** Rows deleted per statement (and per transaction). */
export const JANITOR_BATCH = 1000
/** pg_try_advisory_xact_lock key: "portcullis janitor". */
const LOCK_KEY = 0x706a_616e
const DAY = 86_400_000
/** Kept past their end for a day: a late request about them still finds why it is refused. */
const GRACE = DAY

interface Sweep { name: string; table: PgTable; key: PgColumn; expired: (now: Date) => SQL | undefined }

const before = (column: PgColumn, at: Date) => lt(column, at)

export interface JanitorRun { skipped: boolean; deleted: Record<string, number>; batches: number }

export class Janitor {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<unknown> | undefined
  private readonly sweeps: Sweep[]

  constructor(private readonly deps: { db: Database; config: Config; clock: Clock; log: FastifyBaseLogger }) {
    const { config } = deps
    this.sweeps = [
      // A revoked session stays until it would have expired: the revocation list is read from it.
      { name: 'sessions', table: sessions, key: sessions.id, expired: (now) => before(sessions.expiresAt, new Date(now.getTime() - GRACE)) },
      { name: 'refresh_tokens', table: refreshTokens, key: refreshTokens.id, expired: (now) => before(refreshTokens.expiresAt, new Date(now.getTime() - GRACE)) },
      { name: 'mfa_challenges', table: mfaChallenges, key: mfaChallenges.tokenHash, expired: (now) => or(isNotNull(mfaChallenges.usedAt), before(mfaChallenges.expiresAt, now)) },
      {
        name: 'login_failures', table: loginFailures, key: loginFailures.emailKey,
        expired: (now) => and(before(loginFailures.windowStartedAt, new Date(now.getTime() - config.LOCKOUT_WINDOW * 1000)),
          or(isNull(loginFailures.lockedUntil), before(loginFailures.lockedUntil, now))),
      },
      // Accepted, revoked or lapsed, an invitation past its expiry opens nothing and only keeps an
      // address (found in review: revoked and accepted ones were kept forever); the audit log keeps its history.
      { name: 'invitations', table: invitations, key: invitations.id, expired: (now) => before(invitations.expiresAt, new Date(now.getTime() - GRACE)) },
      { name: 'mail_tokens', table: mailTokens, key: mailTokens.id, expired: (now) => or(before(mailTokens.expiresAt, now), before(mailTokens.usedAt, new Date(now.getTime() - GRACE))) },
      {
        name: 'mail_outbox', table: mailOutbox, key: mailOutbox.id,
        expired: (now) => and(inArray(mailOutbox.state, ['sent', 'skipped', 'failed']), before(mailOutbox.createdAt, new Date(now.getTime() - config.MAIL_RETENTION_DAYS * DAY))),
      },
      { name: 'audit_events', table: auditEvents, key: auditEvents.id, expired: (now) => before(auditEvents.createdAt, new Date(now.getTime() - config.AUDIT_RETENTION_DAYS * DAY)) },
      {
        name: 'platform_audit_events', table: platformAuditEvents, key: platformAuditEvents.id,
        expired: (now) => before(platformAuditEvents.createdAt, new Date(now.getTime() - config.AUDIT_RETENTION_DAYS * DAY)),
      },
    ]
  }

  start(): void {
    const every = this.deps.config.JANITOR_INTERVAL * 1000
    if (!every) return
    const tick = () => {
      this.running = this.runOnce().catch((err: unknown) => this.deps.log.warn({ err }, 'janitor: a run failed; the next one tries again'))
        .finally(() => { this.running = undefined })
    }
    this.timer = setInterval(tick, every).unref()
  }

  async stop(): Promise<void> {
    clearInterval(this.timer)
    await this.running
  }

  /** One run over every table; `skipped` when another instance holds the lock. */
  async runOnce(): Promise<JanitorRun> {
    const run: JanitorRun = { skipped: false, deleted: {}, batches: 0 }
    const now = new Date(this.deps.clock.now())
    for (const sweep of this.sweeps) {
      run.deleted[sweep.name] = 0
      for (;;) {
        const batch = await this.deleteBatch(sweep, now)
        if (batch === null) return { ...run, skipped: true }
        run.batches++
        run.deleted[sweep.name]! += batch
        if (batch < JANITOR_BATCH) break
      }
    }
    const total = Object.values(run.deleted).reduce((a, b) => a + b, 0)
    if (total) this.deps.log.info({ deleted: run.deleted }, 'janitor: expired rows deleted')
    return run
  }

  /** Deletes one batch under the lock; null when another instance holds it. */
  private deleteBatch(sweep: Sweep, now: Date): Promise<number | null> {
    return this.deps.db.transaction(async (tx) => {
      const [lock] = rowsOf<{ locked: boolean }>(await tx.execute(sql`select pg_try_advisory_xact_lock(${LOCK_KEY}) as locked`))
      if (!lock?.locked) return null
      const doomed = tx.select({ key: sweep.key }).from(sweep.table).where(sweep.expired(now)).limit(JANITOR_BATCH)
      const deleted = await tx.delete(sweep.table).where(inArray(sweep.key, doomed)).returning({ key: sweep.key })
      return deleted.length
    })
  }
}

/** postgres.js answers an array of rows, PGlite an object with `rows`. */
function rowsOf<T>(result: unknown): T[] {
  return (Array.isArray(result) ? result : (result as { rows: T[] }).rows) as T[]
}
