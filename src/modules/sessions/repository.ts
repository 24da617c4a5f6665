// SQL for sessions (one per login) and their refresh-token families.
import { and, desc, eq, gt, inArray, isNull, lt, ne, sql } from 'drizzle-orm'
import { memberships, organizations, refreshTokens, sessions, users } from '../../db/schema.js'
import type { Database, Queryable } from '../../db/client.js'
import type { Role } from '../../config.js'

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

export interface UnusedTokenRotation {
  /** The token presented, by its hash. */
  tokenHash: string
  /** The organization asked for, or null for the session's own. */
  orgId: string | null
  now: Date
  child: { id: string; tokenHash: string; expiresAt: Date }
}

export interface RotatedSession { sessionId: string; userId: string; authTime: Date; emailVerified: boolean; orgId: string; role: Role }

/**
 * A refresh in one statement, when it is the plain case: the token unused and unexpired, its
 * session live, the account enabled, and a membership in the organization asked for (or the
 * session's). The token is marked used, its child inserted and the session touched together, or
 * nothing is written and no row is returned, for the transaction (SessionService.rotateInTransaction)
 * to decide: reuse, the grace retry, a fallback organization, the refusals.
 *
 * The statement never waits. Every row the answer rests on is locked, SKIP LOCKED: a row another
 * transaction holds (a second refresh of the token, a logout, a removal or disable under way) makes
 * it rotate nothing, and the transaction, which waits, decides. Waiting here would do harm twice: a
 * statement reads the snapshot taken before it waited, so it would act on a membership removed or an
 * account disabled meanwhile (regression test refresh-read-a-removed-membership); and, outside a
 * transaction, it could commit after the deadline had answered 503, so the client's retry would be
 * taken for reuse (refresh-answered-503-rotated-later). A lock taken without waiting reads the row
 * as committed, so a removal committed since the snapshot is seen too. The organization's row is
 * read, not locked: deleting it deletes the membership, which is locked, and its owners' operations
 * lock it, so locking it would send the organization's refreshes to the transaction meanwhile.
 *
 * Prepared once per database (a Drizzle prepared query runs outside a transaction only, drizzle-orm#613),
 * so no request builds its SQL.
 */
export function prepareUnusedTokenRotation(db: Database): (rotation: UnusedTokenRotation) => Promise<RotatedSession | undefined> {
  const statement = unusedTokenRotation(db).prepare('rotate_unused_refresh_token')
  return async (rotation) => {
    const [row] = await statement.execute(unusedTokenRotationParams(rotation))
    return row as RotatedSession | undefined
  }
}

/** The statement, with named placeholders (the benchmark's ceiling runs its SQL text through postgres.js alone). */
export function unusedTokenRotation(db: Database) {
  const param = (name: keyof ReturnType<typeof unusedTokenRotationParams>) => sql.placeholder(name)
  const now = sql`${param('now')}::timestamptz`
  const token = db.$with('token').as(db.select({
    // Aliased: the CTEs' columns are read by name, and both tables have an id.
    tokenId: sql<string>`${refreshTokens.id}`.as('token_id'),
    sessionId: sql<string>`${sessions.id}`.as('session_id'),
    sessionOrgId: sql<string>`${sessions.orgId}`.as('session_org_id'),
    sessionExpiresAt: sql`${sessions.expiresAt}`.as('session_expires_at'),
    userId: sessions.userId,
    authTime: sql`${sessions.createdAt}`.mapWith(sessions.createdAt).as('auth_time'),
  }).from(refreshTokens)
    .innerJoin(sessions, eq(sessions.id, refreshTokens.sessionId))
    .where(and(
      eq(refreshTokens.tokenHash, param('tokenHash')), isNull(refreshTokens.usedAt), gt(refreshTokens.expiresAt, now),
      isNull(sessions.revokedAt), gt(sessions.expiresAt, now),
    ))
    .for('update', { of: [refreshTokens, sessions], skipLocked: true }))
  const member = db.$with('member').as(db.select({
    tokenId: token.tokenId, sessionId: token.sessionId, sessionExpiresAt: token.sessionExpiresAt, userId: token.userId, authTime: token.authTime,
    emailVerified: sql<boolean>`${users.emailVerifiedAt} is not null`.as('email_verified'),
    orgId: memberships.orgId,
    role: memberships.role,
  }).from(token)
    .innerJoin(users, eq(users.id, token.userId))
    .innerJoin(memberships, and(eq(memberships.userId, token.userId), eq(memberships.orgId, sql`coalesce(${param('orgId')}, ${token.sessionOrgId})`)))
    .innerJoin(organizations, eq(organizations.id, memberships.orgId))
    .where(isNull(users.disabledAt))
    .for('share', { of: [users, memberships], skipLocked: true }))
  const used = db.$with('used').as(db.update(refreshTokens).set({ usedAt: now })
    .from(member).where(eq(refreshTokens.id, member.tokenId)))
  const child = db.$with('child').as(db.insert(refreshTokens).select((qb) => qb.select({
    id: sql`${param('childId')}`.as('id'),
    sessionId: member.sessionId,
    parentId: member.tokenId,
    tokenHash: sql`${param('childTokenHash')}`.as('token_hash'),
    createdAt: now.as('created_at'),
    expiresAt: sql`least(${param('childExpiresAt')}::timestamptz, ${member.sessionExpiresAt})`.as('expires_at'),
    usedAt: sql`null`.as('used_at'),
  }).from(member)))
  const touched = db.$with('touched').as(db.update(sessions).set({ lastUsedAt: now, orgId: sql`${member.orgId}` })
    .from(member).where(eq(sessions.id, member.sessionId)))
  return db.with(token, member, used, child, touched)
    .select({ sessionId: member.sessionId, userId: member.userId, authTime: member.authTime, emailVerified: member.emailVerified, orgId: member.orgId, role: member.role })
    .from(member)
}

/** The statement's placeholder values. Placeholders outside a column's comparison get no column encoder: times go as text. */
export function unusedTokenRotationParams({ tokenHash, orgId, now, child }: UnusedTokenRotation) {
  return { tokenHash, orgId, now: now.toISOString(), childId: child.id, childTokenHash: child.tokenHash, childExpiresAt: child.expiresAt.toISOString() }
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
