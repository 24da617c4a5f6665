// SQL for organizations and memberships. Every query on tenant data takes the organization id.
import { and, asc, eq, gt, sql } from 'drizzle-orm'
import { memberships, organizations, users } from '../../db/schema.js'
import type { Queryable } from '../../db/client.js'
import type { Role } from '../../config.js'

export type OrganizationRow = typeof organizations.$inferSelect

export const insertOrganization = (db: Queryable, row: typeof organizations.$inferInsert) =>
  db.insert(organizations).values(row)

export const insertMembership = (db: Queryable, row: typeof memberships.$inferInsert) =>
  db.insert(memberships).values(row)

/** `lock: 'share'` holds the row until the transaction ends (against lockOwners and erasure). */
export async function findOrganization(db: Queryable, orgId: string, options: { lock?: 'share' } = {}): Promise<OrganizationRow | undefined> {
  const query = db.select().from(organizations).where(eq(organizations.id, orgId)).limit(1)
  const [row] = options.lock ? await query.for(options.lock) : await query
  return row
}

/** A name someone chose: no longer the default named after an account. */
export async function renameOrganization(db: Queryable, orgId: string, name: string, at: Date) {
  const [row] = await db.update(organizations).set({ name, namedAfterUserId: null, updatedAt: at }).where(eq(organizations.id, orgId)).returning()
  return row
}

export interface MembershipView {
  orgId: string
  name: string
  role: Role
  credits: number
  orgCreatedAt: Date
  joinedAt: Date
}

const membershipColumns = {
  orgId: organizations.id,
  name: organizations.name,
  role: memberships.role,
  credits: organizations.credits,
  orgCreatedAt: organizations.createdAt,
  joinedAt: memberships.createdAt,
}

/** A user's organizations, oldest membership first (the default organization is the first joined). */
export const listMembershipsOfUser = (db: Queryable, userId: string, limit = 1000, afterOrgId?: string): Promise<MembershipView[]> =>
  db.select(membershipColumns).from(memberships)
    .innerJoin(organizations, eq(organizations.id, memberships.orgId))
    .where(and(eq(memberships.userId, userId), afterOrgId ? gt(memberships.orgId, afterOrgId) : undefined))
    .orderBy(asc(memberships.createdAt), asc(memberships.orgId))
    .limit(limit)

/**
 * A membership; `share` holds its row until the caller's transaction ends, a removal or role change
 * waiting for it. Not the organization's row: the owners' operations lock that first and the
 * membership after, and the opposite order deadlocked with them (review: 8 interleavings of 8).
 */
export async function findMembership(db: Queryable, orgId: string, userId: string, lock?: 'share'): Promise<MembershipView | undefined> {
  const query = db.select(membershipColumns).from(memberships)
    .innerJoin(organizations, eq(organizations.id, memberships.orgId))
    .where(and(eq(memberships.orgId, orgId), eq(memberships.userId, userId)))
    .limit(1)
  const [row] = lock ? await query.for(lock, { of: memberships }) : await query
  return row
}

export interface MemberView { userId: string; email: string; name: string | null; role: Role; joinedAt: Date }

/** Members of an organization, keyset-paginated by user id. */
export const listMembers = (db: Queryable, orgId: string, limit: number, afterUserId?: string): Promise<MemberView[]> =>
  db.select({ userId: users.id, email: users.email, name: users.name, role: memberships.role, joinedAt: memberships.createdAt })
    .from(memberships).innerJoin(users, eq(users.id, memberships.userId))
    .where(and(eq(memberships.orgId, orgId), afterUserId ? gt(memberships.userId, afterUserId) : undefined))
    .orderBy(asc(memberships.userId)).limit(limit)

export async function findMember(db: Queryable, orgId: string, userId: string): Promise<MemberView | undefined> {
  const [row] = await db.select({ userId: users.id, email: users.email, name: users.name, role: memberships.role, joinedAt: memberships.createdAt })
    .from(memberships).innerJoin(users, eq(users.id, memberships.userId))
    .where(and(eq(memberships.orgId, orgId), eq(memberships.userId, userId))).limit(1)
  return row
}

/**
 * Locks the organization's memberships for the rest of the transaction and returns the owners:
 * concurrent changes to one organization's owners queue up, so the last owner can't be removed twice over.
 */
export async function lockOwners(db: Queryable, orgId: string): Promise<string[]> {
  await db.execute(sql`select 1 from ${organizations} where ${organizations.id} = ${orgId} for update`)
  const rows = await db.select({ userId: memberships.userId }).from(memberships)
    .where(and(eq(memberships.orgId, orgId), eq(memberships.role, 'owner')))
  return rows.map((r) => r.userId)
}

export const updateMemberRole = (db: Queryable, orgId: string, userId: string, role: Role) =>
  db.update(memberships).set({ role }).where(and(eq(memberships.orgId, orgId), eq(memberships.userId, userId)))

export const deleteMembership = (db: Queryable, orgId: string, userId: string) =>
  db.delete(memberships).where(and(eq(memberships.orgId, orgId), eq(memberships.userId, userId)))
