// Organization rules: create, rename, members and roles (members join by
// invitation only: src/modules/invitations). An organization
// always keeps an owner; a role is granted, changed or taken away only within
// the caller's own authority (only owners make or unmake owners; a key grants no
// role beyond its scopes); removing a member revokes that user's sessions in
// the organization on every instance.
import type { Config, Role } from '../../config.js'
import { assertWithinAuthority, type Holder } from '../../lib/authority.js'
import { currentHolder } from '../authority/current-holder.js'
import type { Database, Queryable } from '../../db/client.js'
import { AppError, notFound } from '../../errors.js'
import type { Clock } from '../../lib/clock.js'
import { newId } from '../../lib/ids.js'
import { keysetPage } from '../../lib/pagination.js'
import type { AuthContext, SessionAuth, Tenancy } from '../../plugins/tenancy.js'
import * as apiKeyRepo from '../api-keys/repository.js'
import { actor, type AuditLog } from '../audit/service.js'
import type { SessionService } from '../sessions/service.js'
import type { EventBus } from '../../plugins/events.js'
import * as repo from './repository.js'

export interface OrganizationServiceDeps {
  db: Database
  config: Config
  clock: Clock
  audit: AuditLog
  sessions: SessionService
  tenancy: Tenancy
  events: EventBus
}

const orgView = (m: repo.MembershipView) => ({
  id: m.orgId, name: m.name, role: m.role, credits: m.credits, created_at: m.orgCreatedAt.toISOString(),
})

const memberView = (m: repo.MemberView) => ({
  user_id: m.userId, email: m.email, name: m.name, role: m.role, joined_at: m.joinedAt.toISOString(),
})

export class OrganizationService {
  constructor(private readonly deps: OrganizationServiceDeps) {}

  async listMine(userId: string, limit: number, cursor?: string) {
    // Ordered by join time for the default organization; the page cursor is the org id within that order.
    const all = await repo.listMembershipsOfUser(this.deps.db, userId)
    const start = cursor ? all.findIndex((m) => m.orgId === cursor) + 1 : 0
    const page = all.slice(start, start + limit)
    return { items: page.map(orgView), next_cursor: start + limit < all.length ? page[page.length - 1]!.orgId : null }
  }

  /** New organizations start without credits: welcome credits come with a registration only. */
  async create(auth: SessionAuth, name: string) {
    const now = new Date(this.deps.clock.now())
    const id = newId('org', now.getTime())
    await this.deps.db.transaction(async (tx) => {
      await repo.insertOrganization(tx, { id, name: name.trim(), credits: 0, createdAt: now, updatedAt: now })
      await repo.insertMembership(tx, { orgId: id, userId: auth.userId, role: 'owner', createdAt: now })
    })
    await this.deps.tenancy.publishMembershipChange(id, auth.userId)
    this.deps.audit.record({ orgId: id, action: 'organization.created', ...actor(auth), targetType: 'organization', targetId: id })
    return { id, name: name.trim(), role: 'owner' as const, credits: 0, created_at: now.toISOString() }
  }

  async get(auth: AuthContext) {
    const org = await repo.findOrganization(this.deps.db, auth.orgId)
    if (!org) throw notFound('Organization')
    return { id: org.id, name: org.name, role: auth.role, credits: org.credits, created_at: org.createdAt.toISOString() }
  }

  async rename(auth: AuthContext, name: string) {
    const org = await repo.renameOrganization(this.deps.db, auth.orgId, name.trim(), new Date(this.deps.clock.now()))
    if (!org) throw notFound('Organization')
    await this.deps.events.publish({ type: 'organizations.changed', ids: [org.id] })
    this.deps.audit.record({ orgId: org.id, action: 'organization.renamed', ...actor(auth), targetType: 'organization', targetId: org.id, metadata: { name: org.name } })
    return { id: org.id, name: org.name, role: auth.role, credits: org.credits, created_at: org.createdAt.toISOString() }
  }

  async listMembers(auth: AuthContext, limit: number, cursor?: string) {
    return keysetPage(await repo.listMembers(this.deps.db, auth.orgId, limit + 1, cursor), limit, (m) => m.userId, memberView)
  }

  async changeRole(auth: AuthContext, userId: string, role: Role) {
    const member = await this.deps.db.transaction(async (tx) => {
      const owners = await repo.lockOwners(tx, auth.orgId)
      const target = await repo.findMember(tx, auth.orgId, userId)
      if (!target) throw notFound('Member')
      const caller = await this.holderNow(tx, auth)
      this.assertMayGrant(caller, role)
      this.assertMayGrant(caller, target.role)
      if (target.role === 'owner' && role !== 'owner' && owners.length === 1) {
        throw new AppError('CONFLICT', 'An organization must keep at least one owner')
      }
      await repo.updateMemberRole(tx, auth.orgId, userId, role)
      return { ...target, role, previous: target.role }
    })
    await this.deps.tenancy.publishMembershipChange(auth.orgId, userId)
    this.deps.audit.record({ orgId: auth.orgId, action: 'member.role_changed', ...actor(auth), targetType: 'user', targetId: userId, metadata: { from: member.previous, to: role } })
    return memberView(member)
  }

  /**
   * API keys the member created stay alive: a key is the organization's identity, not the
   * person's (as WorkOS and Unkey do), so an integration does not break when its author
   * leaves. The audit event lists them, for an admin to review or revoke.
   */
  async removeMember(auth: AuthContext, userId: string) {
    await this.remove(auth, userId, 'member.removed')
  }

  /** A member leaves (any role; the last owner cannot). */
  async leave(auth: SessionAuth) {
    await this.remove(auth, auth.userId, 'member.left')
  }

  private async remove(auth: AuthContext, userId: string, action: 'member.removed' | 'member.left') {
    const keptKeys = await this.deps.db.transaction(async (tx) => {
      const owners = await repo.lockOwners(tx, auth.orgId)
      const target = await repo.findMember(tx, auth.orgId, userId)
      if (!target) throw notFound('Member')
      if (userId !== auth.userId) this.assertMayGrant(await this.holderNow(tx, auth), target.role)
      if (target.role === 'owner' && owners.length === 1) {
        throw new AppError('CONFLICT', 'An organization must keep at least one owner')
      }
      await repo.deleteMembership(tx, auth.orgId, userId)
      return apiKeyRepo.listLiveKeyIdsCreatedBy(tx, auth.orgId, userId)
    })
    await this.deps.tenancy.publishMembershipChange(auth.orgId, userId)
    await this.deps.sessions.revoke(userId, { orgId: auth.orgId })
    this.deps.audit.record({
      orgId: auth.orgId, action, ...actor(auth), targetType: 'user', targetId: userId,
      metadata: { api_keys_kept: keptKeys },
    })
  }

  /** Granting a role, or changing or removing one somebody holds, needs that role's authority. */
  private assertMayGrant(caller: Holder, role: Role) {
    assertWithinAuthority(this.deps.config, caller, { role })
  }

  /** The caller's authority as the transaction sees it (after the owner rows are locked, where they are). */
  private holderNow(tx: Queryable, auth: AuthContext): Promise<Holder> {
    return currentHolder(tx, this.deps.config, auth, this.deps.clock.now())
  }
}
