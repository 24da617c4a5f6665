// Account lockout per normalized email, whether or not an account exists (so a
// 423 reveals nothing): LOCKOUT_MAX_ATTEMPTS failures within LOCKOUT_WINDOW lock
// the email for LOCKOUT_DURATION. Counting is one atomic statement, so parallel
// failures cannot race past the limit, and it lives in the database, so every
// instance sees it. Attempts during a lock are refused unseen and never extend it.
import { createHmac } from 'node:crypto'
import { eq, sql } from 'drizzle-orm'
import type { Config } from '../../config.js'
import type { Database } from '../../db/client.js'
import { loginFailures } from '../../db/schema.js'
import { AppError } from '../../errors.js'
import { deriveKey } from '../../lib/crypto.js'
import type { Clock } from '../../lib/clock.js'
import type { Metrics } from '../../plugins/metrics.js'

export class Lockout {
  private readonly key: Buffer

  constructor(private readonly deps: { db: Database; config: Config; clock: Clock; metrics: Metrics }) {
    this.key = deriveKey(deps.config.secretKey!, 'lockout')
  }

  /** What the counter of an address is stored under (an HMAC: the table holds no address). */
  keyOf(email: string): string {
    return createHmac('sha256', this.key).update(email).digest('base64url')
  }

  /** 423 with Retry-After while the email is locked. */
  async assertNotLocked(email: string): Promise<void> {
    const [row] = await this.deps.db.select({ lockedUntil: loginFailures.lockedUntil }).from(loginFailures)
      .where(eq(loginFailures.emailKey, this.keyOf(email))).limit(1)
    this.throwIfLocked(row?.lockedUntil ?? null)
  }

  /** Counts a failed password or 2FA code; throws 423 when the email is (now) locked. */
  async recordFailure(email: string): Promise<void> {
    const { config } = this.deps
    const now = new Date(this.deps.clock.now())
    const windowStart = new Date(now.getTime() - config.LOCKOUT_WINDOW * 1000)
    const lockUntil = new Date(now.getTime() + config.LOCKOUT_DURATION * 1000)
    const max = config.LOCKOUT_MAX_ATTEMPTS
    const f = loginFailures
    // Raw SQL takes timestamps as ISO strings (postgres.js does not serialise Date parameters there).
    const ts = (d: Date) => sql`${d.toISOString()}::timestamptz`
    // `restart`: the window has passed or an earlier lock has ended; `locked`: a lock is in force (nothing counted).
    const restart = sql`(${f.windowStartedAt} <= ${ts(windowStart)} or (${f.lockedUntil} is not null and ${f.lockedUntil} <= ${ts(now)}))`
    const locked = sql`(${f.lockedUntil} is not null and ${f.lockedUntil} > ${ts(now)})`
    const nextCount = sql`case when ${restart} then 1 else least(${f.failures} + 1, ${max}::int) end`
    const [row] = await this.deps.db.insert(loginFailures)
      .values({ emailKey: this.keyOf(email), failures: 1, windowStartedAt: now, lockedUntil: max <= 1 ? lockUntil : null })
      .onConflictDoUpdate({
        target: f.emailKey,
        set: {
          failures: sql`case when ${locked} then ${f.failures} else ${nextCount} end`,
          windowStartedAt: sql`case when ${locked} then ${f.windowStartedAt} when ${restart} then ${ts(now)} else ${f.windowStartedAt} end`,
          lockedUntil: sql`case when ${locked} then ${f.lockedUntil} when ${nextCount} >= ${max}::int then ${ts(lockUntil)} else null end`,
        },
      })
      .returning({ lockedUntil: f.lockedUntil })
    if (row?.lockedUntil?.getTime() === lockUntil.getTime()) this.deps.metrics.lockout() // this failure locked it
    this.throwIfLocked(row?.lockedUntil ?? null)
  }

  /** After a password success: clears the count, unless a lock landed meanwhile (then 423). */
  async reset(email: string): Promise<void> {
    await this.assertNotLocked(email)
    await this.clear(email)
  }

  /** Clears the count and any lock: the login has been won (a one-time code was claimed). */
  async clear(email: string): Promise<void> {
    await this.deps.db.delete(loginFailures).where(eq(loginFailures.emailKey, this.keyOf(email)))
  }

  private throwIfLocked(lockedUntil: Date | null) {
    const seconds = lockedUntil ? Math.ceil((lockedUntil.getTime() - this.deps.clock.now()) / 1000) : 0
    if (seconds > 0) {
      throw new AppError('ACCOUNT_LOCKED', 'Too many failed attempts; try again later', undefined, { 'retry-after': String(seconds) })
    }
  }
}
