// SQL for sessions (one per login) and their refresh-token families.
import { and, desc, eq, gt, inArray, isNull, lt, ne } from 'drizzle-orm'
import { refreshTokens, sessions } from '../../db/schema.js'
import type { Queryable } from '../../db/client.js'

export type RefreshTokenRow = typeof refreshTokens.$inferSelect

export const insertSession = (db: Queryable, row: typeof sessions.$inferInsert) => db.insert(sessions).values(row)

export const insertRefreshToken = (db: Queryable, row: typeof refreshTokens.$inferInsert) =>
  db.insert(refreshTokens).values(row)

/** The token and its session, row-locked so concurrent refreshes of one token queue up. */
export async function lockRefreshToken(db: Queryable, tokenHash: string) {
  const [row] = await db.select({ token: refreshTokens, session: sessions }).from(refreshTokens)
    .innerJoin(sessions, eq(sessions.id, refreshTokens.sessionId))
    .where(eq(refreshTokens.tokenHash, tokenHash))
    .for('update', { of: refreshTokens })
    .limit(1)
  return row
}

export async function findRefreshToken(db: Queryable, tokenHash: string) {
  const [row] = await db.select({ token: refreshTokens, session: sessions }).from(refreshTokens)
    .innerJoin(sessions, eq(sessions.id, refreshTokens.sessionId))
    .where(eq(refreshTokens.tokenHash, tokenHash)).limit(1)
  return row
}

export async function findChildToken(db: Queryable, parentId: string): Promise<RefreshTokenRow | undefined> {
  const [row] = await db.select().from(refreshTokens).where(eq(refreshTokens.parentId, parentId)).limit(1)
  return row
}

export const markTokenUsed = (db: Queryable, id: string, at: Date) =>
  db.update(refreshTokens).set({ usedAt: at }).where(eq(refreshTokens.id, id))

export const touchSession = (db: Queryable, id: string, orgId: string, at: Date) =>
  db.update(sessions).set({ lastUsedAt: at, orgId }).where(eq(sessions.id, id))

export type SessionSelector = string[] | 'all' | { orgId: string }

/** Revokes live sessions of a user (by id, all, or those in an organization); returns the ids revoked. */
export async function revokeSessions(db: Queryable, userId: string, which: SessionSelector, at: Date, exceptId?: string) {
  const rows = await db.update(sessions).set({ revokedAt: at })
    .where(and(
      eq(sessions.userId, userId),
      isNull(sessions.revokedAt),
      Array.isArray(which) ? inArray(sessions.id, which) : which === 'all' ? undefined : eq(sessions.orgId, which.orgId),
      exceptId ? ne(sessions.id, exceptId) : undefined,
    ))
    .returning({ id: sessions.id })
  return rows.map((r) => r.id)
}

/** Sessions of a user (by id, all, or those in an organization) revoked since a moment, whenever that was. */
export async function listRevokedSessions(db: Queryable, userId: string, which: SessionSelector, since: Date, exceptId?: string) {
  const rows = await db.select({ id: sessions.id }).from(sessions)
    .where(and(
      eq(sessions.userId, userId),
      gt(sessions.revokedAt, since),
      Array.isArray(which) ? inArray(sessions.id, which) : which === 'all' ? undefined : eq(sessions.orgId, which.orgId),
      exceptId ? ne(sessions.id, exceptId) : undefined,
    ))
  return rows.map((r) => r.id)
}

/** Live sessions of a user, newest first, keyset-paginated by id. */
export const listLiveSessions = (db: Queryable, userId: string, now: Date, limit: number, before?: string) =>
  db.select().from(sessions)
    .where(and(
      eq(sessions.userId, userId), isNull(sessions.revokedAt), gt(sessions.expiresAt, now),
      before ? lt(sessions.id, before) : undefined,
    ))
    .orderBy(desc(sessions.id))
    .limit(limit)

export async function listSessionsRevokedSince(db: Queryable, since: Date): Promise<{ id: string; revokedAt: Date }[]> {
  const rows = await db.select({ id: sessions.id, revokedAt: sessions.revokedAt }).from(sessions)
    .where(gt(sessions.revokedAt, since))
  return rows as { id: string; revokedAt: Date }[]
}

/** Holds a session's row (FOR SHARE) while something is done in its name; false when it is revoked, expired or gone. */
export async function lockLiveSession(db: Queryable, userId: string, sessionId: string, now: Date): Promise<boolean> {
  const rows = await db.select({ id: sessions.id }).from(sessions)
    .where(and(eq(sessions.id, sessionId), eq(sessions.userId, userId), isNull(sessions.revokedAt), gt(sessions.expiresAt, now))).for('share')
  return rows.length === 1
}
