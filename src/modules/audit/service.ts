// The audit log never blocks or fails the request it describes: events are
// queued and written in the background in small batches; a failed write is
// logged, not thrown.
import type { FastifyBaseLogger } from 'fastify'
import type { Database } from '../../db/client.js'
import type { auditEvents } from '../../db/schema.js'
import type { Clock } from '../../lib/clock.js'
import type { AuthContext } from '../../plugins/tenancy.js'
import { newId } from '../../lib/ids.js'
import * as orgRepo from '../organizations/repository.js'
import * as repo from './repository.js'

export const AUDIT_ACTIONS = [
  'login.succeeded', 'login.failed', 'reauth.failed', 'account.locked', 'refresh.reuse_detected',
  'api_key.created', 'api_key.revoked', 'api_key.rotated',
  'member.added', 'member.removed', 'member.role_changed', 'member.left',
  'invitation.created', 'invitation.revoked', 'invitation.resent', 'invitation.accepted',
  'organization.created', 'organization.renamed',
  'password.reset', 'email.verified', 'email.change_requested', 'email.changed',
] as const
export type AuditAction = (typeof AUDIT_ACTIONS)[number]

export interface AuditEntry {
  orgId: string
  action: AuditAction
  actorUserId?: string | null
  actorKeyId?: string | null
  targetType?: string
  targetId?: string
  ip?: string
  metadata?: Record<string, unknown>
}

const MAX_QUEUE = 10_000

/** Who did it: a user through a session, or an API key (which acts as nobody). */
export const actor = (auth: AuthContext) => ({ actorUserId: auth.userId, actorKeyId: auth.keyId ?? null })

export class AuditLog {
  private queue: (typeof auditEvents.$inferInsert)[] = []
  private writing: Promise<void> | undefined
  /** Membership look-ups of recordForAccount still under way. */
  private readonly pending = new Set<Promise<void>>()

  constructor(private readonly deps: { db: Database; clock: Clock; log: FastifyBaseLogger }) {}

  /** Queues an event; returns at once. */
  record(entry: AuditEntry): void {
    if (this.queue.length >= MAX_QUEUE) {
      this.deps.log.error({ action: entry.action }, 'audit queue full; event dropped')
      return
    }
    const now = this.deps.clock.now()
    this.queue.push({
      id: newId('evt', now), orgId: entry.orgId, action: entry.action,
      actorUserId: entry.actorUserId ?? null, actorKeyId: entry.actorKeyId ?? null,
      targetType: entry.targetType ?? null, targetId: entry.targetId ?? null, ip: entry.ip ?? null,
      metadata: entry.metadata ?? {}, createdAt: new Date(now),
    })
    this.writing ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.drain())
  }

  /** An event about an account, in every organization it belongs to; looked up off the request path. */
  recordForAccount(userId: string, entry: Omit<AuditEntry, 'orgId'>): void {
    const lookup = orgRepo.listMembershipsOfUser(this.deps.db, userId).then((memberships) => {
      for (const m of memberships) this.record({ ...entry, orgId: m.orgId })
    }, (err: unknown) => this.deps.log.warn({ err }, 'could not look up the organizations of an audit event'))
    this.pending.add(lookup)
    void lookup.finally(() => this.pending.delete(lookup))
  }

  /** Resolves when everything queued so far is written (shutdown, tests). */
  async flush(): Promise<void> {
    while (this.pending.size || this.writing) {
      await Promise.all(this.pending)
      if (this.writing) await this.writing
    }
  }

  list(orgId: string, limit: number, before?: string, action?: string) {
    return repo.listAuditEvents(this.deps.db, orgId, limit, before, action)
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length) {
        const batch = this.queue.splice(0, 100)
        try {
          await repo.insertAuditEvents(this.deps.db, batch)
        } catch (err) {
          this.deps.log.error({ err, count: batch.length }, 'could not write audit events')
        }
      }
    } finally {
      this.writing = undefined
    }
  }
}
