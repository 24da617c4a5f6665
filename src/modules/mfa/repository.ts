// SQL for two-factor state: TOTP secrets, the replay guard, recovery codes, login challenges.
import { and, eq, gt, inArray, isNull, lt, or } from 'drizzle-orm'
import { mfaChallenges, recoveryCodes, users } from '../../db/schema.js'
import type { Queryable } from '../../db/client.js'

export const setPendingSecret = (db: Queryable, userId: string, sealed: string, at: Date) =>
  db.update(users).set({ totpPendingSecretSealed: sealed, updatedAt: at }).where(eq(users.id, userId))

export const enableTotp = (db: Queryable, userId: string, sealed: string, step: number, at: Date) =>
  db.update(users).set({
    mfaEnabled: true, totpSecretSealed: sealed, totpPendingSecretSealed: null, totpLastStep: step, updatedAt: at,
  }).where(eq(users.id, userId))

export const disableTotp = (db: Queryable, userId: string, at: Date) =>
  db.update(users).set({
    mfaEnabled: false, totpSecretSealed: null, totpPendingSecretSealed: null, totpLastStep: null, updatedAt: at,
  }).where(eq(users.id, userId))

/** Accepts a time step once: true for exactly one of any number of concurrent submissions. */
export async function claimTotpStep(db: Queryable, userId: string, step: number): Promise<boolean> {
  const rows = await db.update(users).set({ totpLastStep: step })
    .where(and(eq(users.id, userId), or(isNull(users.totpLastStep), lt(users.totpLastStep, step))))
    .returning({ id: users.id })
  return rows.length === 1
}

export const replaceRecoveryCodes = async (db: Queryable, userId: string, rows: (typeof recoveryCodes.$inferInsert)[]) => {
  await db.delete(recoveryCodes).where(eq(recoveryCodes.userId, userId))
  if (rows.length) await db.insert(recoveryCodes).values(rows)
}

/**
 * Uses a recovery code once: true for exactly one of any number of concurrent submissions.
 * `codeHashes`: the ways the one code may have been stored (current and legacy).
 */
export async function useRecoveryCode(db: Queryable, userId: string, codeHashes: string[], at: Date): Promise<boolean> {
  const rows = await db.update(recoveryCodes).set({ usedAt: at })
    .where(and(eq(recoveryCodes.userId, userId), inArray(recoveryCodes.codeHash, codeHashes), isNull(recoveryCodes.usedAt)))
    .returning({ id: recoveryCodes.id })
  return rows.length === 1
}

export const insertChallenge = (db: Queryable, row: typeof mfaChallenges.$inferInsert) => db.insert(mfaChallenges).values(row)

export async function findLiveChallenge(db: Queryable, tokenHash: string, now: Date) {
  const [row] = await db.select().from(mfaChallenges)
    .where(and(eq(mfaChallenges.tokenHash, tokenHash), isNull(mfaChallenges.usedAt), gt(mfaChallenges.expiresAt, now)))
    .limit(1)
  return row
}

export async function consumeChallenge(db: Queryable, tokenHash: string, at: Date): Promise<boolean> {
  const rows = await db.update(mfaChallenges).set({ usedAt: at })
    .where(and(eq(mfaChallenges.tokenHash, tokenHash), isNull(mfaChallenges.usedAt), gt(mfaChallenges.expiresAt, at)))
    .returning({ tokenHash: mfaChallenges.tokenHash })
  return rows.length === 1
}
