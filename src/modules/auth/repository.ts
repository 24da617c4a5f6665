// SQL for user accounts.
import { and, eq, sql } from 'drizzle-orm'
import { users } from '../../db/schema.js'
import type { Queryable } from '../../db/client.js'

export type UserRow = typeof users.$inferSelect

export const insertUser = (db: Queryable, row: typeof users.$inferInsert) => db.insert(users).values(row)

export async function findUserByEmail(db: Queryable, email: string): Promise<UserRow | undefined> {
  const [row] = await db.select().from(users).where(eq(sql`lower(${users.email})`, email.toLowerCase())).limit(1)
  return row
}

export async function findUserById(db: Queryable, id: string): Promise<UserRow | undefined> {
  const [row] = await db.select().from(users).where(eq(users.id, id)).limit(1)
  return row
}

/**
 * The account's row, held until the transaction ends: FOR UPDATE by whatever secures the account
 * (a password reset or change, logout everywhere, a disable or enable), FOR SHARE by a change of
 * address while it issues its link and by a session as it starts, so that one sees the other's work.
 */
export async function lockUser(db: Queryable, id: string, strength: 'update' | 'share'): Promise<UserRow | undefined> {
  const [row] = await db.select().from(users).where(eq(users.id, id)).for(strength)
  return row
}

export const updatePasswordHash = (db: Queryable, id: string, passwordHash: string, at: Date) =>
  db.update(users).set({ passwordHash, updatedAt: at }).where(eq(users.id, id))

/** A login's rehash: only over the hash it checked (false when a reset or change replaced it meanwhile). */
export async function rehashPassword(db: Queryable, id: string, checked: string, passwordHash: string, at: Date): Promise<boolean> {
  const rows = await db.update(users).set({ passwordHash, updatedAt: at })
    .where(and(eq(users.id, id), eq(users.passwordHash, checked))).returning({ id: users.id })
  return rows.length === 1
}
