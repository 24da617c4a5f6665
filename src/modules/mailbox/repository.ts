// SQL for the account changes that mailed links make.
import { and, eq, isNull } from 'drizzle-orm'
import type { Queryable } from '../../db/client.js'
import { users } from '../../db/schema.js'

/** Verifies the address only if it is still the account's: a link never verifies an address the account left. */
export async function markEmailVerified(db: Queryable, userId: string, email: string, at: Date): Promise<boolean> {
  const rows = await db.update(users).set({ emailVerifiedAt: at, updatedAt: at })
    .where(and(eq(users.id, userId), eq(users.email, email), isNull(users.disabledAt)))
    .returning({ id: users.id })
  return rows.length > 0
}

/** The new address, verified by the link that confirmed it (never a flag carried over from the old one). */
export const changeEmail = (db: Queryable, userId: string, email: string, at: Date) =>
  db.update(users).set({ email, emailVerifiedAt: at, updatedAt: at }).where(eq(users.id, userId))
