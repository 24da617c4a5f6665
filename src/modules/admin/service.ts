// Platform administration, for superadmins (made only from the CLI): find and
// read accounts, disable and enable them, send a password reset, erase them
// (GDPR), and list organizations. Every action is written to the platform's own
// audit log in the transaction that does it. The caller's superadmin flag is
// read from the database on every request, never from its token.
import type { Database, Queryable } from '../../db/client.js'
import { AppError, notFound } from '../../errors.js'
import type { Clock } from '../../lib/clock.js'
import { newId } from '../../lib/ids.js'
import { keysetPage } from '../../lib/pagination.js'
import type { EventBus } from '../../plugins/events.js'
import type { SessionAuth, Tenancy } from '../../plugins/tenancy.js'
import * as userRepo from '../auth/repository.js'
import type { Lockout } from '../auth/lockout.js'
import type { MailboxService } from '../mailbox/service.js'
import * as orgRepo from '../organizations/repository.js'
import type { SessionService } from '../sessions/service.js'
import * as repo from './repository.js'

export const PLATFORM_ACTIONS = [
  'user.disabled', 'user.enabled', 'user.password_reset_sent', 'user.erased', 'account.erased',
  'superadmin.granted', 'superadmin.revoked',
] as const
export type PlatformAction = (typeof PLATFORM_ACTIONS)[number]

export interface AdminServiceDeps {
  db: Database
  clock: Clock
  sessions: SessionService
  mailbox: MailboxService
  tenancy: Tenancy
  lockout: Lockout
  events: EventBus
}

export const accountView = (u: userRepo.UserRow) => ({
  id: u.id, email: u.email, name: u.name, is_superadmin: u.isSuperadmin, mfa_enabled: u.mfaEnabled,
  email_verified: u.emailVerifiedAt !== null, disabled: u.disabledAt !== null, erased: u.erasedAt !== null,
  created_at: u.createdAt.toISOString(),
})

const eventView = (e: repo.PlatformEventRow) => ({
  id: e.id, action: e.action, actor_user_id: e.actorUserId, target_type: e.targetType, target_id: e.targetId,
  ip: e.ip, metadata: e.metadata, created_at: e.createdAt.toISOString(),
})

/** Who acted, from where: every platform event has both. */
export interface Operator { userId: string; ip?: string }

export class AdminService {
  constructor(private readonly deps: AdminServiceDeps) {}

  private now() { return new Date(this.deps.clock.now()) }

  /** The caller, if it is a superadmin now (the flag is re-read: a revoked one loses access at once). */
  async operator(auth: SessionAuth, ip?: string): Promise<Operator> {
    const user = await userRepo.findUserById(this.deps.db, auth.userId)
    if (!user?.isSuperadmin || user.disabledAt) throw new AppError('FORBIDDEN', 'Only platform administrators may do this')
    return { userId: user.id, ip }
  }

  async searchUsers(limit: number, cursor?: string, emailPrefix?: string) {
    return keysetPage(await repo.searchUsers(this.deps.db, limit + 1, emailPrefix, cursor), limit, (u) => u.id, accountView)
  }

  async getUser(id: string) {
    const user = await userRepo.findUserById(this.deps.db, id)
    if (!user) throw notFound('User')
    const [memberships, sessions] = await Promise.all([orgRepo.listMembershipsOfUser(this.deps.db, id), repo.listSessionsOf(this.deps.db, id)])
    return {
      ...accountView(user),
      memberships: memberships.map((m) => ({ id: m.orgId, name: m.name, role: m.role })),
      sessions: sessions.map((s) => ({
        id: s.id, organization_id: s.orgId, ip: s.ip, user_agent: s.userAgent, created_at: s.createdAt.toISOString(),
        last_used_at: s.lastUsedAt.toISOString(), expires_at: s.expiresAt.toISOString(), revoked_at: s.revokedAt?.toISOString() ?? null,
      })),
    }
  }

  /**
   * Every session, refresh token and access token of the account dies on every instance at once;
   * its logins answer exactly as a wrong password does. Its API keys are its organizations' and stay.
   */
  async disable(operator: Operator, id: string) {
    if (id === operator.userId) throw new AppError('CONFLICT', 'An administrator cannot disable their own account')
    const now = this.now()
    const revoked = await this.deps.db.transaction(async (tx) => {
      if (!(await repo.setDisabled(tx, id, now, now)).length) throw notFound('User')
      await this.deps.mailbox.cancelAccountLinks(tx, id)
      const ids = await this.deps.sessions.revokeWithin(tx, id, 'all')
      await this.record(tx, operator, 'user.disabled', id, { sessions_revoked: ids.length })
      return ids
    })
    await this.deps.sessions.announceRevoked(revoked)
    await this.usersChanged(id)
  }

  /** Links mailed before or while the account was disabled do not come back to life with it. */
  async enable(operator: Operator, id: string) {
    const now = this.now()
    await this.deps.db.transaction(async (tx) => {
      if (!(await repo.setDisabled(tx, id, null, now)).length) throw notFound('User')
      await this.deps.mailbox.cancelAccountLinks(tx, id)
      await this.record(tx, operator, 'user.enabled', id)
    })
    await this.usersChanged(id)
  }

  /** The address of an account (404 for none, or an erased one). */
  async addressOf(id: string): Promise<string> {
    const user = await userRepo.findUserById(this.deps.db, id)
    if (!user || user.erasedAt) throw notFound('User')
    return user.email
  }

  /** The same mail as a forgotten password (nothing for a disabled account). */
  async sendPasswordReset(operator: Operator, id: string) {
    await this.deps.mailbox.forgotPassword(await this.addressOf(id))
    await this.record(this.deps.db, operator, 'user.password_reset_sent', id)
  }

  /**
   * Erases the account's personal data (repository.eraseAccount), revoking everything it holds.
   * Refused (409, naming them) while it is the last owner of an organization that has other members.
   * `operator` is the account itself for a self-erasure (DELETE /auth/me).
   */
  async erase(operator: Operator, id: string) {
    const now = this.now()
    const self = operator.userId === id
    const { revoked, orgIds } = await this.deps.db.transaction(async (tx) => {
      const user = await userRepo.findUserById(tx, id)
      if (!user || user.erasedAt) throw notFound('User')
      const locked = await repo.lockOrganizationsOf(tx, id)
      const orphaned = await repo.orgsOrphanedBy(tx, id, locked)
      if (orphaned.length) {
        throw new AppError('CONFLICT', `The account is the last owner of ${orphaned.map((o) => `"${o.name}" (${o.id})`).join(', ')}, which has other members: make someone else an owner first`,
          orphaned.map((o) => ({ field: 'organization', message: `last owner of ${o.id}`, organization_id: o.id })))
      }
      const orgIds = (await orgRepo.listMembershipsOfUser(tx, id)).map((m) => m.orgId)
      const ids = await this.deps.sessions.revokeWithin(tx, id, 'all')
      await repo.eraseAccount(tx, user, this.deps.lockout.keyOf(user.email), now)
      // A self-erasure keeps no IP: the one the request came from is the erased person's.
      await this.record(tx, self ? { userId: id } : operator, self ? 'account.erased' : 'user.erased', id, { organizations_left: orgIds.length })
      return { revoked: ids, orgIds }
    })
    await this.deps.sessions.announceRevoked(revoked)
    await this.usersChanged(id)
    for (const orgId of orgIds) await this.deps.tenancy.publishMembershipChange(orgId, id)
  }

  /** Profiles (`/auth/me`) on every instance reload the account. */
  private async usersChanged(id: string) {
    await this.deps.events.publish({ type: 'users.changed', ids: [id] })
  }

  async listOrganizations(limit: number, cursor?: string) {
    const rows = await repo.listOrganizationsWithCounts(this.deps.db, limit + 1, cursor)
    return keysetPage(rows, limit, (o) => o.id, (o) => ({ id: o.id, name: o.name, credits: o.credits, member_count: o.members, created_at: o.createdAt.toISOString() }))
  }

  async listEvents(limit: number, cursor?: string) {
    return keysetPage(await repo.listPlatformEvents(this.deps.db, limit + 1, cursor), limit, (e) => e.id, eventView)
  }

  /** Superadmins are made only here, from the CLI (no HTTP route grants the flag). */
  async setSuperadmin(email: string, on: boolean): Promise<string> {
    return this.deps.db.transaction(async (tx) => {
      const [row] = await repo.setSuperadmin(tx, email, on)
      if (!row) throw notFound('User')
      await this.record(tx, { userId: 'cli' }, on ? 'superadmin.granted' : 'superadmin.revoked', row.id)
      return row.id
    })
  }

  private record(db: Queryable, operator: Operator, action: PlatformAction, userId: string, metadata: Record<string, unknown> = {}) {
    const now = this.deps.clock.now()
    return repo.insertPlatformEvent(db, {
      id: newId('evt', now), action, actorUserId: operator.userId === 'cli' ? null : operator.userId, targetType: 'user', targetId: userId,
      ip: operator.ip ?? null, metadata: operator.userId === 'cli' ? { ...metadata, via: 'cli' } : metadata, createdAt: new Date(now),
    })
  }
}
