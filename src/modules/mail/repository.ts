// SQL for the mail outbox and for single-use mail tokens.
import { and, desc, eq, inArray, isNull, lte, or, sql } from 'drizzle-orm'
import type { Database, Queryable } from '../../db/client.js'
import { mailOutbox, mailTokens } from '../../db/schema.js'

export type OutboxRow = typeof mailOutbox.$inferSelect
export type MailTokenRow = typeof mailTokens.$inferSelect
export type MailTokenPurpose = MailTokenRow['purpose']

export const insertMail = (db: Queryable, row: typeof mailOutbox.$inferInsert) => db.insert(mailOutbox).values(row)

/**
 * Claims up to `limit` due rows until `claimUntil`, counting the attempt now (a crash mid-send
 * is an attempt too). SKIP LOCKED: senders in other instances take other rows, never the same.
 */
export async function claimDueMail(db: Database, now: Date, claimUntil: Date, limit: number): Promise<OutboxRow[]> {
  return db.transaction(async (tx) => {
    const due = await tx.select({ id: mailOutbox.id }).from(mailOutbox)
      .where(and(
        eq(mailOutbox.state, 'pending'), lte(mailOutbox.nextAttemptAt, now),
        or(isNull(mailOutbox.lockedUntil), lte(mailOutbox.lockedUntil, now)),
      ))
      .orderBy(mailOutbox.nextAttemptAt).limit(limit)
      .for('update', { skipLocked: true })
    if (!due.length) return []
    return tx.update(mailOutbox)
      .set({ lockedUntil: claimUntil, attempts: sql`${mailOutbox.attempts} + 1` })
      .where(inArray(mailOutbox.id, due.map((d) => d.id)))
      .returning()
  })
}

/** A queued-without-content row (forgot password) once prepared: its content, and whose it is. */
export const storePreparedMail = (db: Queryable, id: string, fields: { userId: string; subject: string; contentSealed: string }) =>
  db.update(mailOutbox).set(fields).where(eq(mailOutbox.id, id))

export const markMailSent = (db: Queryable, id: string, at: Date) =>
  db.update(mailOutbox).set({ state: 'sent', sentAt: at, contentSealed: null, lockedUntil: null, lastError: null }).where(eq(mailOutbox.id, id))

/** Nothing to send (no account has the address): kept as a row, with no content. */
export const markMailSkipped = (db: Queryable, id: string) =>
  db.update(mailOutbox).set({ state: 'skipped', contentSealed: null, lockedUntil: null }).where(eq(mailOutbox.id, id))

export const scheduleMailRetry = (db: Queryable, id: string, at: Date, error: string) =>
  db.update(mailOutbox).set({ nextAttemptAt: at, lockedUntil: null, lastError: error }).where(eq(mailOutbox.id, id))

export const markMailFailed = (db: Queryable, id: string, error: string) =>
  db.update(mailOutbox).set({ state: 'failed', contentSealed: null, lockedUntil: null, lastError: error }).where(eq(mailOutbox.id, id))

export const listRecentMail = (db: Queryable, limit: number) =>
  db.select({
    id: mailOutbox.id, kind: mailOutbox.kind, recipient: mailOutbox.recipient, subject: mailOutbox.subject, state: mailOutbox.state,
    attempts: mailOutbox.attempts, lastError: mailOutbox.lastError, createdAt: mailOutbox.createdAt, sentAt: mailOutbox.sentAt,
  }).from(mailOutbox).orderBy(desc(mailOutbox.createdAt), desc(mailOutbox.id)).limit(limit)

export const insertMailToken = (db: Queryable, row: typeof mailTokens.$inferInsert) => db.insert(mailTokens).values(row)

/** A newer token of a purpose supersedes the user's older ones: they are spent without use. */
export const spendUnusedTokens = (db: Queryable, userId: string, purposes: MailTokenPurpose[], at: Date) =>
  db.update(mailTokens).set({ usedAt: at })
    .where(and(eq(mailTokens.userId, userId), inArray(mailTokens.purpose, purposes), isNull(mailTokens.usedAt)))

/** The token with this hash, if it is of the purpose, unspent and unexpired. */
const liveToken = (purpose: MailTokenPurpose, tokenHash: string, now: Date) =>
  and(eq(mailTokens.tokenHash, tokenHash), eq(mailTokens.purpose, purpose), isNull(mailTokens.usedAt), sql`${mailTokens.expiresAt} > ${now.toISOString()}::timestamptz`)

/** A live token of the purpose, without spending it (to check what it would do first). */
export async function findLiveToken(db: Queryable, purpose: MailTokenPurpose, tokenHash: string, now: Date): Promise<MailTokenRow | undefined> {
  const [row] = await db.select().from(mailTokens).where(liveToken(purpose, tokenHash, now)).limit(1)
  return row
}

/**
 * Spends a live token of the purpose: one statement, so of many concurrent
 * requests with the same token exactly one gets the row back.
 */
export async function spendToken(db: Queryable, purpose: MailTokenPurpose, tokenHash: string, now: Date): Promise<MailTokenRow | undefined> {
  const [row] = await db.update(mailTokens).set({ usedAt: now }).where(liveToken(purpose, tokenHash, now)).returning()
  return row
}
