// SQL for the mail outbox and for single-use mail tokens.
import { and, desc, eq, inArray, isNull, lte, or, sql } from 'drizzle-orm'
import type { Database, Queryable } from '../../db/client.js'
import { mailOutbox, mailTokens } from '../../db/schema.js'

export type OutboxRow = typeof mailOutbox.$inferSelect
export type MailTokenRow = typeof mailTokens.$inferSelect
export type MailTokenPurpose = MailTokenRow['purpose']

export const insertMail = (db: Queryable, row: typeof mailOutbox.$inferInsert) => db.insert(mailOutbox).values(row)

/**
 * Mail of `kind` queued for nobody in particular (an invitation) to an address an account has just
 * proved its own: from now on the account's, so its erasure finds it by user id after the address
 * moved and whatever else tied the address to the account (the invitation) is gone.
 */
export const attributeMailTo = (db: Queryable, kind: string, email: string, userId: string) =>
  db.update(mailOutbox).set({ userId })
    .where(and(eq(mailOutbox.kind, kind), isNull(mailOutbox.userId), sql`lower(${mailOutbox.recipient}) = ${email.toLowerCase()}`))

/**
 * Claims the next due row until `claimUntil`, counting the attempt now (a crash mid-send is an
 * attempt too). SKIP LOCKED: senders in other instances take other rows, never the same. One row
 * at a time, right before its send: a claim's time is then all its own send's.
 */
export async function claimNextMail(db: Database, now: Date, claimUntil: Date): Promise<OutboxRow | undefined> {
  return db.transaction(async (tx) => {
    const [due] = await tx.select({ id: mailOutbox.id }).from(mailOutbox)
      .where(and(
        eq(mailOutbox.state, 'pending'), lte(mailOutbox.nextAttemptAt, now),
        or(isNull(mailOutbox.lockedUntil), lte(mailOutbox.lockedUntil, now)),
      ))
      .orderBy(mailOutbox.nextAttemptAt).limit(1)
      .for('update', { skipLocked: true })
    if (!due) return undefined
    const [row] = await tx.update(mailOutbox)
      .set({ lockedUntil: claimUntil, attempts: sql`${mailOutbox.attempts} + 1` })
      .where(eq(mailOutbox.id, due.id))
      .returning()
    return row
  })
}

/**
 * A claimed row, while the claim is still the one taken (its `locked_until` unchanged): a sender
 * that overran its claim must not write over the outcome of the sender that took the row next.
 */
export interface Claim { id: string; lockedUntil: Date }
const held = (claim: Claim) => and(eq(mailOutbox.id, claim.id), eq(mailOutbox.lockedUntil, claim.lockedUntil))

/** A queued-without-content row (forgot password) once prepared: its content, and whose it is. */
export const storePreparedMail = (db: Queryable, id: string, fields: { userId: string; subject: string; contentSealed: string }) =>
  db.update(mailOutbox).set(fields).where(eq(mailOutbox.id, id))

/** Each outcome is written only under the claim it was reached with; false when the claim was lost. */
async function settle(db: Queryable, claim: Claim, fields: Partial<typeof mailOutbox.$inferInsert>): Promise<boolean> {
  const rows = await db.update(mailOutbox).set({ ...fields, lockedUntil: null }).where(held(claim)).returning({ id: mailOutbox.id })
  return rows.length === 1
}

export const markMailSent = (db: Queryable, claim: Claim, at: Date) =>
  settle(db, claim, { state: 'sent', sentAt: at, contentSealed: null, lastError: null })

/** Nothing to send (no account has the address): kept as a row, with no content. */
export const markMailSkipped = (db: Queryable, claim: Claim) => settle(db, claim, { state: 'skipped', contentSealed: null })

export const scheduleMailRetry = (db: Queryable, claim: Claim, at: Date, error: string) =>
  settle(db, claim, { nextAttemptAt: at, lastError: error })

export const markMailFailed = (db: Queryable, claim: Claim, error: string) =>
  settle(db, claim, { state: 'failed', contentSealed: null, lastError: error })

export const listRecentMail = (db: Queryable, limit: number) =>
  db.select({
    id: mailOutbox.id, kind: mailOutbox.kind, recipient: mailOutbox.recipient, subject: mailOutbox.subject, state: mailOutbox.state,
    attempts: mailOutbox.attempts, lastError: mailOutbox.lastError, createdAt: mailOutbox.createdAt, sentAt: mailOutbox.sentAt,
  }).from(mailOutbox).orderBy(desc(mailOutbox.createdAt), desc(mailOutbox.id)).limit(limit)

export const insertMailToken = (db: Queryable, row: typeof mailTokens.$inferInsert) => db.insert(mailTokens).values(row)

/** A newer token of a purpose supersedes the user's older ones: they are spent without use. */
export const spendUnusedTokens = (db: Queryable, userId: string, purposes: readonly MailTokenPurpose[], at: Date) =>
  db.update(mailTokens).set({ usedAt: at })
    .where(and(eq(mailTokens.userId, userId), inArray(mailTokens.purpose, [...purposes]), isNull(mailTokens.usedAt)))

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
