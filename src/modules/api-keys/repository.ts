// SQL for API keys. Every query on an organization's keys takes its id.
import { and, desc, eq, gt, isNull, lt, or } from 'drizzle-orm'
import { apiKeys } from '../../db/schema.js'
import type { Queryable } from '../../db/client.js'

export type ApiKeyRow = typeof apiKeys.$inferSelect

export const insertApiKey = (db: Queryable, row: typeof apiKeys.$inferInsert) => db.insert(apiKeys).values(row)

export async function findApiKeyByHash(db: Queryable, keyHash: string): Promise<ApiKeyRow | undefined> {
  const [row] = await db.select().from(apiKeys).where(eq(apiKeys.keyHash, keyHash)).limit(1)
  return row
}

export async function findApiKeyById(db: Queryable, id: string): Promise<ApiKeyRow | undefined> {
  const [row] = await db.select().from(apiKeys).where(eq(apiKeys.id, id)).limit(1)
  return row
}

export async function findApiKey(db: Queryable, orgId: string, id: string): Promise<ApiKeyRow | undefined> {
  const [row] = await db.select().from(apiKeys).where(and(eq(apiKeys.orgId, orgId), eq(apiKeys.id, id))).limit(1)
  return row
}

/** Keys of an organization that are not revoked, newest first, keyset-paginated by id. */
export const listApiKeys = (db: Queryable, orgId: string, limit: number, before?: string) =>
  db.select().from(apiKeys)
    .where(and(eq(apiKeys.orgId, orgId), isNull(apiKeys.revokedAt), before ? lt(apiKeys.id, before) : undefined))
    .orderBy(desc(apiKeys.id)).limit(limit)

export async function revokeApiKey(db: Queryable, orgId: string, id: string, at: Date): Promise<boolean> {
  const rows = await db.update(apiKeys).set({ revokedAt: at, updatedAt: at })
    .where(and(eq(apiKeys.orgId, orgId), eq(apiKeys.id, id), isNull(apiKeys.revokedAt)))
    .returning({ id: apiKeys.id })
  return rows.length > 0
}

export const setApiKeyExpiry = (db: Queryable, orgId: string, id: string, expiresAt: Date, at: Date) =>
  db.update(apiKeys).set({ expiresAt, updatedAt: at }).where(and(eq(apiKeys.orgId, orgId), eq(apiKeys.id, id)))

/** The key, row-locked for the rest of the transaction (concurrent rotations queue up). */
export async function lockApiKey(db: Queryable, orgId: string, id: string): Promise<ApiKeyRow | undefined> {
  const [row] = await db.select().from(apiKeys).where(and(eq(apiKeys.orgId, orgId), eq(apiKeys.id, id))).for('update').limit(1)
  return row
}

export async function hasSuccessor(db: Queryable, id: string): Promise<boolean> {
  const [row] = await db.select({ id: apiKeys.id }).from(apiKeys).where(eq(apiKeys.rotatedFromId, id)).limit(1)
  return row !== undefined
}

/** Keys revoked or re-dated since a moment (the cache's safety net for a missed notification). */
export const listApiKeysChangedSince = async (db: Queryable, since: Date) =>
  (await db.select({ id: apiKeys.id }).from(apiKeys).where(gt(apiKeys.updatedAt, since))).map((r) => r.id)

/** Writes last_used_at unless another instance did so in the last minute. */
export const touchApiKey = (db: Queryable, id: string, at: Date) =>
  db.update(apiKeys).set({ lastUsedAt: at })
    .where(and(eq(apiKeys.id, id), or(isNull(apiKeys.lastUsedAt), lt(apiKeys.lastUsedAt, new Date(at.getTime() - 60_000)))))

/** Live keys of an organization that a user created (what stays behind when that user leaves). */
export const listLiveKeyIdsCreatedBy = async (db: Queryable, orgId: string, userId: string) =>
  (await db.select({ id: apiKeys.id }).from(apiKeys)
    .where(and(eq(apiKeys.orgId, orgId), eq(apiKeys.createdByUserId, userId), isNull(apiKeys.revokedAt)))
    .orderBy(apiKeys.id)).map((r) => r.id)
