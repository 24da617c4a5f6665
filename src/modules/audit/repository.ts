// SQL for the audit log. Reads always take the organization id.
import { and, desc, eq, lt } from 'drizzle-orm'
import { auditEvents } from '../../db/schema.js'
import type { Queryable } from '../../db/client.js'

export type AuditEventRow = typeof auditEvents.$inferSelect

export const insertAuditEvents = (db: Queryable, rows: (typeof auditEvents.$inferInsert)[]) =>
  db.insert(auditEvents).values(rows)

export const listAuditEvents = (db: Queryable, orgId: string, limit: number, before?: string, action?: string) =>
  db.select().from(auditEvents)
    .where(and(eq(auditEvents.orgId, orgId), before ? lt(auditEvents.id, before) : undefined,
      action ? eq(auditEvents.action, action) : undefined))
    .orderBy(desc(auditEvents.id)).limit(limit)
