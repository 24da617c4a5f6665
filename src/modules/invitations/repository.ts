// SQL for invitations.
import { and, desc, eq, gt, lt, lte, or, sql, type SQL } from 'drizzle-orm'
import type { Queryable } from '../../db/client.js'
import { apiKeys, invitations, memberships, users } from '../../db/schema.js'

export type InvitationRow = typeof invitations.$inferSelect
export type InvitationState = InvitationRow['state']

export const insertInvitation = (db: Queryable, row: typeof invitations.$inferInsert) => db.insert(invitations).values(row)

/** A pending invitation past its expiry: kept, and marked, so a new one can be made for the address. */
export const expireLapsed = (db: Queryable, orgId: string, email: string, now: Date) =>
  db.update(invitations).set({ state: 'expired' })
    .where(and(eq(invitations.orgId, orgId), eq(invitations.email, email), eq(invitations.state, 'pending'), lte(invitations.expiresAt, now)))

/** Whether the address has a pending invitation to the organization that has not lapsed. */
export async function hasLivePending(db: Queryable, orgId: string, email: string, now: Date): Promise<boolean> {
  const [row] = await db.select({ id: invitations.id }).from(invitations)
    .where(and(eq(invitations.orgId, orgId), eq(invitations.email, email), eq(invitations.state, 'pending'), gt(invitations.expiresAt, now))).limit(1)
  return row !== undefined
}

export async function findInvitation(db: Queryable, orgId: string, id: string): Promise<InvitationRow | undefined> {
  const [row] = await db.select().from(invitations).where(and(eq(invitations.orgId, orgId), eq(invitations.id, id))).limit(1)
  return row
}

/** Whether the address already belongs to a member of the organization. */
export async function isMemberByEmail(db: Queryable, orgId: string, email: string): Promise<boolean> {
  const [row] = await db.select({ userId: memberships.userId }).from(memberships)
    .innerJoin(users, eq(users.id, memberships.userId))
    .where(and(eq(memberships.orgId, orgId), sql`lower(${users.email}) = ${email}`)).limit(1)
  return row !== undefined
}

/** The state a reader sees: a pending invitation past its expiry is expired. */
export function stateAt(row: Pick<InvitationRow, 'state' | 'expiresAt'>, now: Date): InvitationState {
  return row.state === 'pending' && row.expiresAt <= now ? 'expired' : row.state
}

/** The rows a state filter selects, as `stateAt` sees them. */
function whereState(state: InvitationState, now: Date): SQL | undefined {
  const iso = sql`${now.toISOString()}::timestamptz`
  if (state === 'pending') return and(eq(invitations.state, 'pending'), sql`${invitations.expiresAt} > ${iso}`)
  if (state === 'expired') return or(eq(invitations.state, 'expired'), and(eq(invitations.state, 'pending'), sql`${invitations.expiresAt} <= ${iso}`))
  return eq(invitations.state, state)
}

/** Newest first; the cursor is the id of the last row shown (ids grow with time). */
export const listInvitations = (db: Queryable, orgId: string, limit: number, now: Date, state?: InvitationState, beforeId?: string) =>
  db.select().from(invitations)
    .where(and(eq(invitations.orgId, orgId), state ? whereState(state, now) : undefined, beforeId ? lt(invitations.id, beforeId) : undefined))
    .orderBy(desc(invitations.id)).limit(limit)

/** Revokes a pending invitation (expired or not); undefined when it was not pending. */
export async function revokeInvitation(db: Queryable, orgId: string, id: string, now: Date): Promise<InvitationRow | undefined> {
  const [row] = await db.update(invitations).set({ state: 'revoked', revokedAt: now })
    .where(and(eq(invitations.orgId, orgId), eq(invitations.id, id), eq(invitations.state, 'pending'))).returning()
  return row
}

/** A new token, expiry and inviter for a pending invitation (the old link dies); undefined when it was not pending. */
export async function renewInvitation(db: Queryable, orgId: string, id: string,
  fields: Pick<InvitationRow, 'tokenHash' | 'expiresAt' | 'invitedByUserId' | 'invitedByKeyId'>): Promise<InvitationRow | undefined> {
  const [row] = await db.update(invitations).set(fields)
    .where(and(eq(invitations.orgId, orgId), eq(invitations.id, id), eq(invitations.state, 'pending'))).returning()
  return row
}

/** The live invitation a token opens, unspent (to check who may take it first). */
export async function findLiveByToken(db: Queryable, tokenHash: string, now: Date): Promise<InvitationRow | undefined> {
  const [row] = await db.select().from(invitations)
    .where(and(eq(invitations.tokenHash, tokenHash), eq(invitations.state, 'pending'), gt(invitations.expiresAt, now))).limit(1)
  return row
}

/**
 * Accepts the live invitation a token opens: one statement, so of concurrent acceptances of one
 * token exactly one gets the row back.
 */
export async function acceptByToken(db: Queryable, tokenHash: string, userId: string, now: Date): Promise<InvitationRow | undefined> {
  const [row] = await db.update(invitations).set({ state: 'accepted', acceptedAt: now, acceptedByUserId: userId })
    .where(and(eq(invitations.tokenHash, tokenHash), eq(invitations.state, 'pending'), gt(invitations.expiresAt, now))).returning()
  return row
}

/**
 * Holds the inviter's row (its account, or its key) FOR SHARE until the transaction ends, so that a
 * disable, an erasure or a key revocation committing meanwhile waits, or is seen, rather than
 * outrun. False when the inviting account is gone, disabled or erased (a key's state is its holder's to judge).
 */
export async function holdInviter(db: Queryable, invitation: Pick<InvitationRow, 'invitedByUserId' | 'invitedByKeyId'>): Promise<boolean> {
  if (invitation.invitedByKeyId) {
    await db.select({ id: apiKeys.id }).from(apiKeys).where(eq(apiKeys.id, invitation.invitedByKeyId)).for('share')
    return true
  }
  if (!invitation.invitedByUserId) return false
  const [row] = await db.select({ disabledAt: users.disabledAt, erasedAt: users.erasedAt }).from(users)
    .where(eq(users.id, invitation.invitedByUserId)).for('share')
  return row !== undefined && row.disabledAt === null && row.erasedAt === null
}
