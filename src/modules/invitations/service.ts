// Invitations: nobody joins an organization without accepting. An owner or
// admin (or a key with members:write) invites an address with a role, capped by
// the inviter's own authority; the link goes by mail. The answer is the same
// whether the address has an account. The invitation is taken by a signed-in
// user whose *verified* address is the invited one (an account pre-registered
// with someone's address, unverified, must not take their invitation), or by a
// registration with the token, which proves the address by construction.
// Accepting re-checks the inviter's authority as it is then: an inviter demoted,
// removed, disabled or erased meanwhile (or a revoked key) can no longer hand out the role.
import type { Config, Role } from '../../config.js'
import type { Database, Queryable } from '../../db/client.js'
import { isUniqueViolation } from '../../db/errors.js'
import { AppError, notFound, validationError } from '../../errors.js'
import { assertWithinAuthority, type Holder } from '../../lib/authority.js'
import type { Clock } from '../../lib/clock.js'
import { newId } from '../../lib/ids.js'
import { keysetPage } from '../../lib/pagination.js'
import type { AuthContext, SessionAuth, Tenancy } from '../../plugins/tenancy.js'
import { actor, type AuditLog } from '../audit/service.js'
import { isEmailAddress, normalizeEmail } from '../auth/service.js'
import * as userRepo from '../auth/repository.js'
import { currentHolder, holderNow } from '../authority/current-holder.js'
import type { Outbox } from '../mail/outbox.js'
import { attributeMailTo } from '../mail/repository.js'
import { templates } from '../mail/templates.js'
import { hashOf, invalidLink, mintToken } from '../mail/tokens.js'
import * as orgRepo from '../organizations/repository.js'
import * as repo from './repository.js'

export interface InvitationServiceDeps {
  db: Database
  config: Config
  clock: Clock
  audit: AuditLog
  outbox: Outbox
  tenancy: Tenancy
}

export function invitationView(row: repo.InvitationRow, now: Date) {
  return {
    id: row.id, email: row.email, role: row.role, state: repo.stateAt(row, now),
    expires_at: row.expiresAt.toISOString(), created_at: row.createdAt.toISOString(),
    invited_by: { user_id: row.invitedByUserId, api_key_id: row.invitedByKeyId },
  }
}

/** Spends the mail limits of an invitation about to be mailed (429 past them). */
export type SpendMailLimit = (email: string) => Promise<void>

/** The organization a person joined by an invitation, with the role it gave (acceptance and sign-up answer it). */
export const joinedView = (invitation: repo.InvitationRow, organization: orgRepo.OrganizationRow) => ({
  id: organization.id, name: organization.name, role: invitation.role, credits: organization.credits, created_at: organization.createdAt.toISOString(),
})

const pendingExists = () => new AppError('CONFLICT', 'A pending invitation for this address exists: resend or revoke it')

const notForYou = () => new AppError('FORBIDDEN', 'This invitation is for another address, or your address is not verified yet: verify it, or sign in with the invited address')

export class InvitationService {
  constructor(private readonly deps: InvitationServiceDeps) {}

  private now() { return new Date(this.deps.clock.now()) }

  /**
   * `beforeMail` spends the mail limits once the invitation is seen to be allowed, outside the
   * transaction: a transaction run again after a conflict would spend them again (found in review).
   */
  async invite(auth: AuthContext, body: { email: string; role: Role }, beforeMail: SpendMailLimit = async () => {}) {
    const email = normalizeEmail(body.email)
    if (!isEmailAddress(email)) throw validationError('email', 'must be an email address')
    this.assertMayGrant(auth, body.role)
    const now = this.now()
    const { token, hash } = mintToken()
    const row: repo.InvitationRow = {
      id: newId('inv', now.getTime()), orgId: auth.orgId, email, role: body.role, state: 'pending', tokenHash: hash,
      invitedByUserId: auth.userId, invitedByKeyId: auth.keyId ?? null, createdAt: now,
      expiresAt: new Date(now.getTime() + this.deps.config.INVITATION_TTL * 1000),
      acceptedAt: null, acceptedByUserId: null, revokedAt: null,
    }
    // Checked before the limits are spent (a refused invitation spends none), and again in the transaction.
    await this.refuseInvitation(this.deps.db, auth, email, body.role, now)
    await beforeMail(email)
    try {
      await this.deps.db.transaction(async (tx) => {
        await this.refuseInvitation(tx, auth, email, body.role, now)
        await repo.expireLapsed(tx, auth.orgId, email, now)
        await repo.insertInvitation(tx, row)
        await this.queueMail(tx, row, token)
      })
    } catch (err) {
      if (isUniqueViolation(err)) throw pendingExists()
      throw err
    }
    this.deps.outbox.queued()
    this.record(auth, 'invitation.created', row)
    return invitationView(row, now)
  }

  async list(auth: AuthContext, limit: number, cursor?: string, state?: repo.InvitationState) {
    const now = this.now()
    const rows = await repo.listInvitations(this.deps.db, auth.orgId, limit + 1, now, state, cursor)
    return keysetPage(rows, limit, (r) => r.id, (r) => invitationView(r, now))
  }

  /** Revoking an invitation, like removing a member, needs authority over its role. */
  async revoke(auth: AuthContext, id: string) {
    const row = await this.deps.db.transaction(async (tx) => {
      const found = await repo.findInvitation(tx, auth.orgId, id)
      if (!found) throw notFound('Invitation')
      this.assertMayGrant(await currentHolder(tx, this.deps.config, auth, this.deps.clock.now()), found.role)
      const revoked = await repo.revokeInvitation(tx, auth.orgId, id, this.now())
      if (!revoked) throw new AppError('CONFLICT', `The invitation is ${found.state}, not pending`)
      return revoked
    })
    this.record(auth, 'invitation.revoked', row)
  }

  /**
   * A new link (the old one dies) and a new expiry. The one who resends becomes the inviter: the role
   * is capped by their authority now, and checked against it again at acceptance.
   */
  async resend(auth: AuthContext, id: string, beforeMail: SpendMailLimit = async () => {}) {
    const now = this.now()
    const { token, hash } = mintToken()
    // As for a new invitation: the limits are spent once, outside the transaction, by one allowed to resend.
    await beforeMail((await this.resendable(this.deps.db, auth, id, now)).email)
    const row = await this.deps.db.transaction(async (tx) => {
      const found = await this.resendable(tx, auth, id, now)
      const renewed = await repo.renewInvitation(tx, auth.orgId, id, {
        tokenHash: hash, expiresAt: new Date(now.getTime() + this.deps.config.INVITATION_TTL * 1000),
        invitedByUserId: auth.userId, invitedByKeyId: auth.keyId ?? null,
      })
      if (!renewed) throw new AppError('CONFLICT', `The invitation is ${found.state}, not pending`)
      await this.queueMail(tx, renewed, token)
      return renewed
    })
    this.deps.outbox.queued()
    this.record(auth, 'invitation.resent', row)
    return invitationView(row, now)
  }

  /** A signed-in user takes the invitation: their verified address must be the invited one. */
  async accept(auth: SessionAuth, token: string) {
    const { db } = this.deps
    const hash = hashOf(token)
    const now = this.now()
    const { invitation, organization } = await db.transaction(async (tx) => {
      const user = await userRepo.findUserById(tx, auth.userId)
      const live = await repo.findLiveByToken(tx, hash, now)
      if (!live) throw invalidLink()
      if (!user || !user.emailVerifiedAt || normalizeEmail(user.email) !== live.email) throw notForYou()
      if (await orgRepo.findMembership(tx, live.orgId, user.id)) throw new AppError('CONFLICT', 'You are already a member of this organization')
      return this.join(tx, hash, user.id, now)
    })
    await this.joined(invitation, auth.userId)
    return joinedView(invitation, organization)
  }

  /**
   * Takes the invitation for `userId` inside the caller's transaction (acceptance, or a registration
   * with the token): spends it (exactly one of concurrent takers wins), re-checks that its inviter
   * may still grant its role, and adds the membership. Call `joined` once the transaction commits.
   */
  async join(tx: Queryable, tokenHash: string, userId: string, now: Date) {
    const invitation = await repo.acceptByToken(tx, tokenHash, userId, now)
    if (!invitation) throw invalidLink()
    // The organization's row is held (as role changes, removals and erasures hold it) before the
    // inviter's role is read, so a demotion or removal committing meanwhile is seen, not outrun
    // (found in review: read first, a demotion holding the lock committed and the invitee got its old role).
    const organization = await orgRepo.findOrganization(tx, invitation.orgId, { lock: 'share' })
    if (!organization) throw invalidLink()
    try {
      // A disabled or erased account grants nothing, whatever its memberships say (found in review: a
      // compromised owner, disabled by an operator, still admitted an owner it had invited).
      if (!(await repo.holdInviter(tx, invitation))) throw new AppError('FORBIDDEN')
      const inviter = await holderNow(tx, this.deps.config, { orgId: invitation.orgId, userId: invitation.invitedByUserId, keyId: invitation.invitedByKeyId }, now.getTime())
      // Still allowed to invite at all (an owner or admin, or a key with members:write), and to grant this role.
      const mayInvite = inviter.role === null ? inviter.scopes.includes('members:write') : inviter.role !== 'member'
      if (!mayInvite) throw new AppError('FORBIDDEN')
      assertWithinAuthority(this.deps.config, inviter, { role: invitation.role })
    } catch (err) {
      // Only a refusal of the inviter is a refusal: a database failure (503) or a fault (500) is not (found in review).
      if (!(err instanceof AppError)) throw err
      // Removed, demoted, disabled, or its key revoked since: the transaction rolls back, the invitation stays pending.
      throw new AppError('FORBIDDEN', 'Whoever sent this invitation can no longer grant its role; ask for a new one')
    }
    await orgRepo.insertMembership(tx, { orgId: invitation.orgId, userId, role: invitation.role, createdAt: now })
    // The invitation mail carries no user id; once the janitor deletes the invitation, nothing else
    // would tie its address to this account for an erasure to find (found in review).
    await attributeMailTo(tx, 'invitation', invitation.email, userId)
    return { invitation, organization }
  }

  /** The live invitation a registration presents, for its address (INVALID_LINK when there is none). */
  async peek(db: Queryable, token: string): Promise<repo.InvitationRow> {
    const live = await repo.findLiveByToken(db, hashOf(token), this.now())
    if (!live) throw invalidLink()
    return live
  }

  /** After the joining transaction committed: every instance learns the membership; the organization's log says who joined. */
  async joined(invitation: repo.InvitationRow, userId: string) {
    await this.deps.tenancy.publishMembershipChange(invitation.orgId, userId)
    const event = { orgId: invitation.orgId, actorUserId: userId, targetType: 'user', targetId: userId }
    this.deps.audit.record({ ...event, action: 'invitation.accepted', metadata: { invitation_id: invitation.id, role: invitation.role } })
    this.deps.audit.record({ ...event, action: 'member.added', metadata: { role: invitation.role, invitation_id: invitation.id } })
  }

  /** Why the caller may not invite the address with the role now (thrown), if they may not. */
  private async refuseInvitation(db: Queryable, auth: AuthContext, email: string, role: Role, now: Date) {
    this.assertMayGrant(await currentHolder(db, this.deps.config, auth, now.getTime()), role)
    // Tells only what the organization's members list already shows its admins.
    if (await repo.isMemberByEmail(db, auth.orgId, email)) throw new AppError('CONFLICT', 'This address already belongs to a member')
    if (await repo.hasLivePending(db, auth.orgId, email, now)) throw pendingExists()
  }

  /** The pending invitation the caller may resend (thrown otherwise). */
  private async resendable(db: Queryable, auth: AuthContext, id: string, now: Date) {
    const found = await repo.findInvitation(db, auth.orgId, id)
    if (!found) throw notFound('Invitation')
    this.assertMayGrant(await currentHolder(db, this.deps.config, auth, now.getTime()), found.role)
    if (found.state !== 'pending') throw new AppError('CONFLICT', `The invitation is ${found.state}, not pending`)
    return found
  }

  private async queueMail(tx: Queryable, row: repo.InvitationRow, token: string) {
    const organization = await orgRepo.findOrganization(tx, row.orgId)
    if (!organization) throw notFound('Organization')
    await this.deps.outbox.queue(tx, { kind: 'invitation', to: row.email, content: templates.invitation(this.deps.config, token, organization.name, row.role) })
  }

  private record(auth: AuthContext, action: 'invitation.created' | 'invitation.revoked' | 'invitation.resent', row: repo.InvitationRow) {
    this.deps.audit.record({ orgId: row.orgId, action, ...actor(auth), targetType: 'invitation', targetId: row.id, metadata: { role: row.role } })
  }

  private assertMayGrant(caller: Holder, role: Role) {
    assertWithinAuthority(this.deps.config, caller, { role })
  }
}
