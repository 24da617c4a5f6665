// SQL for JWT signing keys.
import { and, eq, inArray, lt, sql } from 'drizzle-orm'
import { signingKeys } from '../../db/schema.js'
import type { Queryable } from '../../db/client.js'

export type SigningKeyRow = typeof signingKeys.$inferSelect
export type KeyState = SigningKeyRow['state']

export const PUBLISHED_STATES: KeyState[] = ['next', 'current', 'previous']

export const listPublishedKeys = (db: Queryable) =>
  db.select().from(signingKeys).where(inArray(signingKeys.state, PUBLISHED_STATES)).orderBy(signingKeys.createdAt)

export const insertKey = (db: Queryable, row: typeof signingKeys.$inferInsert) => db.insert(signingKeys).values(row)

export const setKeyState = (db: Queryable, kid: string, state: KeyState, at: Date) =>
  db.update(signingKeys).set({ state, stateChangedAt: at }).where(eq(signingKeys.kid, kid))

/** Retires previous keys whose every token has expired. */
export const retireExpiredPreviousKeys = (db: Queryable, signedBefore: Date, at: Date) =>
  db.update(signingKeys).set({ state: 'retired', stateChangedAt: at })
    .where(and(eq(signingKeys.state, 'previous'), lt(signingKeys.stateChangedAt, signedBefore)))

/** Serialises key-ring changes across instances for the rest of the transaction. */
export const lockKeyRing = (db: Queryable) => db.execute(sql`select pg_advisory_xact_lock(7301944212)`)
