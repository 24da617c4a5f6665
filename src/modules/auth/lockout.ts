// Account lockout per normalized email, whether or not an account exists (so a
// 423 reveals nothing): LOCKOUT_MAX_ATTEMPTS failures within LOCKOUT_WINDOW lock
// the email for LOCKOUT_DURATION. Counting is one atomic statement, so parallel
// failures cannot race past the limit, and it lives in the database, so every
// instance sees it. Attempts during a lock are refused unseen and never extend it.
import { eq, sql } from 'drizzle-orm'
import type { Config } from '../../config.js'
import type { Database } from '../../db/client.js'
import { loginFailures } from '../../db/schema.js'
import { AppError } from '../../errors.js'
import type { Clock } from '../../lib/clock.js'
import type { Metrics } from '../../plugins/metrics.js'

export class Lockout {
  constructor(private readonly deps: { db: Database; config: Config; clock: Clock; metrics: Metrics }) {}

  /** 423 with Retry-After while the email is locked. */
  async assertNotLocked(email: string): Promise<void> {
    const [row] = await this.deps.db.select({ lockedUntil: loginFailures.lockedUntil }).from(loginFailures)
      .where(eq(loginFailures.email, email)).limit(1)
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
      .values({ email, failures: 1, windowStartedAt: now, lockedUntil: max <= 1 ? lockUntil : null })
      .onConflictDoUpdate({
        target: f.email,
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

  /**
   * Counts a password check before it runs, so that guesses sent in parallel cannot outrun the lock:
   * once LOCKOUT_MAX_ATTEMPTS checks are counted in the window, the next is refused without being
   * run (423 when locked; 429 with Retry-After: 1 while the last ones are still being checked).
   * Returns the attempt's number; settle it with attemptFailed or attemptSucceeded.
   */
  async reserveAttempt(email: string): Promise<number> {
    const { config } = this.deps
    const now = new Date(this.deps.clock.now())
    const windowStart = new Date(now.getTime() - config.LOCKOUT_WINDOW * 1000)
    const f = loginFailures
    return this.deps.db.transaction(async (tx) => {
      await tx.insert(f).values({ email, failures: 0, windowStartedAt: now, lockedUntil: null }).onConflictDoNothing()
      const [row] = await tx.select().from(f).where(eq(f.email, email)).for('update')
      this.throwIfLocked(row!.lockedUntil)
      const restart = row!.windowStartedAt <= windowStart || (row!.lockedUntil !== null && row!.lockedUntil <= now)
      const counted = restart ? 0 : row!.failures
      // The last attempts are still being checked: the lock they may cause is not written yet. Bounding
      // the guesses means refusing more checks at once than the limit allows; a second later, retry.
      if (counted >= config.LOCKOUT_MAX_ATTEMPTS) {
        throw new AppError('RATE_LIMITED', 'Too many password checks for this account at once; retry shortly', undefined, { 'retry-after': '1' })
      }
      await tx.update(f).set({
        failures: counted + 1, windowStartedAt: restart ? now : row!.windowStartedAt, lockedUntil: restart ? null : row!.lockedUntil,
      }).where(eq(f.email, email))
      return counted + 1
    })
  }

  /** The reserved check failed (it stays counted); the one that reaches the limit locks the email (423). */
  async attemptFailed(email: string, attempt: number): Promise<void> {
    if (attempt < this.deps.config.LOCKOUT_MAX_ATTEMPTS) return
    const lockedUntil = new Date(this.deps.clock.now() + this.deps.config.LOCKOUT_DURATION * 1000)
    await this.deps.db.update(loginFailures).set({ lockedUntil }).where(eq(loginFailures.email, email))
    this.deps.metrics.lockout()
    this.throwIfLocked(lockedUntil)
  }

  /**
   * The reserved check succeeded: 'reset' wins the count back (a login won); 'release' only takes
   * this attempt back (a 2FA account's password alone, or a check that could not run).
   */
  async attemptSucceeded(email: string, outcome: 'reset' | 'release'): Promise<void> {
    if (outcome === 'reset') return this.clear(email)
    await this.deps.db.update(loginFailures).set({ failures: sql`greatest(${loginFailures.failures} - 1, 0)` })
      .where(eq(loginFailures.email, email))
  }

  /** After a password success: clears the count, unless a lock landed meanwhile (then 423). */
  async reset(email: string): Promise<void> {
    await this.assertNotLocked(email)
    await this.clear(email)
  }

  /** Clears the count and any lock: the login has been won (a one-time code was claimed). */
  async clear(email: string): Promise<void> {
    await this.deps.db.delete(loginFailures).where(eq(loginFailures.email, email))
  }

  private throwIfLocked(lockedUntil: Date | null) {
    const seconds = lockedUntil ? Math.ceil((lockedUntil.getTime() - this.deps.clock.now()) / 1000) : 0
    if (seconds > 0) {
      throw new AppError('ACCOUNT_LOCKED', 'Too many failed attempts; try again later', undefined, { 'retry-after': String(seconds) })
    }
  }
}
