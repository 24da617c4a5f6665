// SQL for platform administration: finding accounts, and erasing one.
import { and, asc, desc, eq, gt, inArray, isNull, like, lt, or, sql } from 'drizzle-orm'
import type { Queryable } from '../../db/client.js'
import {
  auditEvents, invitations, loginFailures, mailOutbox, mailTokens, memberships, mfaChallenges, organizations,
  platformAuditEvents, recoveryCodes, refreshTokens, sessions, users,
} from '../../db/schema.js'

export type PlatformEventRow = typeof platformAuditEvents.$inferSelect

export const insertPlatformEvent = (db: Queryable, row: typeof platformAuditEvents.$inferInsert) => db.insert(platformAuditEvents).values(row)

export const listPlatformEvents = (db: Queryable, limit: number, before?: string) =>
  db.select().from(platformAuditEvents).where(before ? lt(platformAuditEvents.id, before) : undefined)
    .orderBy(desc(platformAuditEvents.id)).limit(limit)

/** Accounts by address prefix (lower-cased, LIKE metacharacters taken literally), in id order after `afterId`. */
export function searchUsers(db: Queryable, limit: number, emailPrefix?: string, afterId?: string) {
  const prefix = emailPrefix?.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)
  return db.select().from(users)
    .where(and(prefix ? like(sql`lower(${users.email})`, `${prefix}%`) : undefined, afterId ? gt(users.id, afterId) : undefined))
    .orderBy(asc(users.id)).limit(limit)
}

export const setSuperadmin = (db: Queryable, email: string, on: boolean) =>
  db.update(users).set({ isSuperadmin: on }).where(eq(sql`lower(${users.email})`, email.toLowerCase())).returning({ id: users.id })

export const setDisabled = (db: Queryable, id: string, at: Date | null, now: Date) =>
  db.update(users).set({ disabledAt: at, updatedAt: now }).where(and(eq(users.id, id), isNull(users.erasedAt))).returning({ id: users.id })

/** The sessions of an account, newest first (for an operator's view: never tokens). */
export const listSessionsOf = (db: Queryable, userId: string) =>
  db.select().from(sessions).where(eq(sessions.userId, userId)).orderBy(desc(sessions.createdAt)).limit(100)

/** Organizations with their member counts, in id order after `afterId`. */
export const listOrganizationsWithCounts = (db: Queryable, limit: number, afterId?: string) =>
  db.select({
    id: organizations.id, name: organizations.name, credits: organizations.credits, createdAt: organizations.createdAt,
    members: sql<number>`(select count(*)::int from ${memberships} where ${memberships.orgId} = ${organizations.id})`,
  }).from(organizations).where(afterId ? gt(organizations.id, afterId) : undefined).orderBy(asc(organizations.id)).limit(limit)

/**
 * Locks the rows of every organization the user belongs to (and of any named after them, which the
 * erasure renames), in id order: the lock a role change, a removal, a departure (lockOwners) and an
 * acceptance (invitations.join) take on their organization, so none of them interleaves with an
 * erasure's reading of owners and members.
 */
export async function lockOrganizationsOf(db: Queryable, userId: string): Promise<string[]> {
  const rows = await db.select({ id: organizations.id }).from(organizations)
    .where(or(inArray(organizations.id, db.select({ id: memberships.orgId }).from(memberships).where(eq(memberships.userId, userId))),
      eq(organizations.namedAfterUserId, userId)))
    .orderBy(asc(organizations.id)).for('update')
  return rows.map((r) => r.id)
}

/**
 * Organizations the user is the only owner of, while others are members: erasing the user would
 * leave them without an owner. Call with the organizations locked (lockOrganizationsOf).
 */
export async function orgsOrphanedBy(db: Queryable, userId: string, ids: string[]): Promise<{ id: string; name: string }[]> {
  const owned = (await db.select({ orgId: memberships.orgId }).from(memberships)
    .where(and(eq(memberships.userId, userId), eq(memberships.role, 'owner')))).map((m) => m.orgId).filter((id) => ids.includes(id))
  if (!owned.length) return []
  const rows = await db.select({
    id: organizations.id, name: organizations.name,
    otherOwners: sql<number>`(select count(*)::int from ${memberships} m where m.org_id = ${organizations.id} and m.role = 'owner' and m.user_id <> ${userId})`,
    others: sql<number>`(select count(*)::int from ${memberships} m where m.org_id = ${organizations.id} and m.user_id <> ${userId})`,
  }).from(organizations).where(inArray(organizations.id, owned))
  return rows.filter((r) => r.otherOwners === 0 && r.others > 0).map(({ id, name }) => ({ id, name }))
}

/**
 * Removes the personal data of an account (GDPR erasure) and keeps a tombstone row, so ids
 * elsewhere (audit events, revoked sessions, keys it created) still resolve and no foreign key
 * breaks: the address becomes `erased+<id>@invalid`, the name, password and second factor go,
 * memberships go (organizations left empty go with them), sessions stay revoked but lose their IP
 * and device, and every other table loses the address and the IPs of this account.
 */
export async function eraseAccount(db: Queryable, user: { id: string; email: string; name: string | null }, lockoutKey: string, at: Date): Promise<void> {
  const email = user.email.toLowerCase()
  // Every address the account has had that the database still holds: mail and invitations to an
  // earlier address are its too.
  const earlier = await db.selectDistinct({ email: mailTokens.email }).from(mailTokens).where(eq(mailTokens.userId, user.id))
  const taken = await db.selectDistinct({ email: invitations.email }).from(invitations).where(eq(invitations.acceptedByUserId, user.id))
  const addresses = [...new Set([email, ...earlier.map((r) => r.email.toLowerCase()), ...taken.map((r) => r.email.toLowerCase())])]
  // An organization named after the account by default ("<name>'s workspace") and kept for others
  // loses the name, whatever the account's name or address has become since (found in review: a
  // workspace named after an earlier address kept its local part).
  await db.update(organizations).set({ name: 'Workspace', namedAfterUserId: null, updatedAt: at }).where(eq(organizations.namedAfterUserId, user.id))
  const solo = await db.select({ orgId: memberships.orgId }).from(memberships).where(and(eq(memberships.userId, user.id),
    sql`not exists (select 1 from ${memberships} m where m.org_id = ${memberships.orgId} and m.user_id <> ${user.id})`))
  await db.delete(memberships).where(eq(memberships.userId, user.id))
  if (solo.length) await db.delete(organizations).where(inArray(organizations.id, solo.map((s) => s.orgId)))
  const sessionIds = db.select({ id: sessions.id }).from(sessions).where(eq(sessions.userId, user.id))
  await db.delete(refreshTokens).where(inArray(refreshTokens.sessionId, sessionIds))
  await db.update(sessions).set({ ip: null, userAgent: null, revokedAt: sql`coalesce(${sessions.revokedAt}, ${at.toISOString()}::timestamptz)` })
    .where(eq(sessions.userId, user.id))
  await db.delete(recoveryCodes).where(eq(recoveryCodes.userId, user.id))
  await db.delete(mfaChallenges).where(eq(mfaChallenges.userId, user.id))
  await db.delete(mailTokens).where(eq(mailTokens.userId, user.id))
  await db.delete(mailOutbox).where(or(eq(mailOutbox.userId, user.id), inArray(sql`lower(${mailOutbox.recipient})`, addresses)))
  await db.delete(loginFailures).where(eq(loginFailures.emailKey, lockoutKey))
  await db.delete(invitations).where(or(inArray(invitations.email, addresses), eq(invitations.acceptedByUserId, user.id)))
  // Audit events keep their ids and actions; they lose this account's IPs and any address in their details.
  await db.update(auditEvents).set({ ip: null }).where(or(eq(auditEvents.actorUserId, user.id), eq(auditEvents.targetId, user.id)))
  for (const address of addresses) {
    await db.update(auditEvents).set({ metadata: sql`'{}'::jsonb` }).where(sql`${auditEvents.metadata}::text ilike ${`%${address.replace(/[\\%_]/g, (c) => `\\${c}`)}%`}`)
  }
  await db.update(platformAuditEvents).set({ ip: null }).where(or(eq(platformAuditEvents.actorUserId, user.id), eq(platformAuditEvents.targetId, user.id)))
  await db.update(users).set({
    email: `erased+${user.id}@invalid`, name: null, passwordHash: '!', isSuperadmin: false, mfaEnabled: false,
    totpSecretSealed: null, totpPendingSecretSealed: null, totpLastStep: null, emailVerifiedAt: null,
    disabledAt: at, erasedAt: at, updatedAt: at,
  }).where(eq(users.id, user.id))
}
