// Account rules: registration, password login, the caller's profile.
import type { Config } from '../../config.js'
import type { Database } from '../../db/client.js'
import { isUniqueViolation } from '../../db/errors.js'
import { AppError, unauthorized, validationError } from '../../errors.js'
import type { Clock } from '../../lib/clock.js'
import { newId } from '../../lib/ids.js'
import { passwordFingerprint, type PasswordHasher } from '../../lib/password-hasher.js'
import { checkPasswordPolicy } from '../../lib/password-policy.js'
import type { AuthContext, SessionAuth } from '../../plugins/authenticate.js'
import * as orgRepo from '../organizations/repository.js'
import type { ClientMeta, SessionService, TokenPair } from '../sessions/service.js'
import type { AuditLog } from '../audit/service.js'
import type { Lockout } from './lockout.js'
import type { ProfileCache } from './profile-cache.js'
import type { ApiKeyVerifier } from '../api-keys/verifier.js'
import type { MfaService } from '../mfa/service.js'
import type { MailboxService } from '../mailbox/service.js'
import { joinedView, type InvitationService } from '../invitations/service.js'
import { hashOf } from '../mail/tokens.js'
import * as repo from './repository.js'
import type { LoginInput, RegisterBody } from './schemas.js'

export interface AuthServiceDeps {
  db: Database
  config: Config
  clock: Clock
  hasher: PasswordHasher
  sessions: SessionService
  audit: AuditLog
  lockout: Lockout
  mfa: MfaService
  profiles: ProfileCache
  apiKeys: ApiKeyVerifier
  mailbox: MailboxService
  invitations: InvitationService
}

const EMAIL_SHAPE = /^[^\s@]+@[^\s@]+\.[^\s@]+$/

export const normalizeEmail = (email: string) => email.trim().toLowerCase()

/** A normalized address of a plausible shape (the mailbox proves the rest). */
export const isEmailAddress = (email: string) => EMAIL_SHAPE.test(email) && email.length <= 254

export function userView(user: repo.UserRow) {
  return {
    id: user.id,
    email: user.email,
    name: user.name,
    is_superadmin: user.isSuperadmin,
    mfa_enabled: user.mfaEnabled,
    email_verified: user.emailVerifiedAt !== null,
    created_at: user.createdAt.toISOString(),
  }
}

export class AuthService {
  constructor(private readonly deps: AuthServiceDeps) {}

  async register(body: RegisterBody, meta: ClientMeta) {
    const { db, config, clock, hasher } = this.deps
    const email = normalizeEmail(body.email)
    if (!isEmailAddress(email)) throw validationError('email', 'must be an email address')
    const problem = checkPasswordPolicy(body.password, config.PASSWORD_MIN_LENGTH, {
      email, name: body.name, companyName: body.company_name,
    })
    if (problem) throw validationError('password', problem)

    // A sign-up with an invitation: the token is checked before any hashing, and the address must be the invited one.
    const invited = body.invitation_token === undefined ? undefined : await this.deps.invitations.peek(db, body.invitation_token)
    if (invited && invited.email !== email) throw validationError('email', 'must be the address the invitation was sent to')

    const passwordHash = await hasher.hash(body.password)
    const now = new Date(clock.now())
    const user: repo.UserRow = {
      id: newId('usr', now.getTime()), email, name: body.name?.trim() || null, passwordHash,
      isSuperadmin: false, mfaEnabled: false, totpSecretSealed: null, totpPendingSecretSealed: null, totpLastStep: null,
      // Following the mailed invitation proves the address, as a verification link would.
      disabledAt: null, emailVerifiedAt: invited ? now : null, erasedAt: null, createdAt: now, updatedAt: now,
    }
    if (invited) return this.registerInvited(user, hashOf(body.invitation_token!), meta)

    const org = {
      id: newId('org', now.getTime()),
      name: body.company_name?.trim() || `${user.name ?? email.split('@')[0]}'s workspace`,
      // Named after the account by default: its erasure renames it (admin repository, eraseAccount).
      namedAfterUserId: body.company_name?.trim() ? null : user.id,
      credits: config.WELCOME_CREDITS, createdAt: now, updatedAt: now,
    }
    const verification = config.EMAIL_VERIFICATION
    let tokens: TokenPair | undefined
    try {
      // All or nothing: a user never exists without its organization, owner membership, session
      // (unless verification is required first) and verification mail.
      tokens = await db.transaction(async (tx) => {
        await repo.insertUser(tx, user)
        await orgRepo.insertOrganization(tx, org)
        await orgRepo.insertMembership(tx, { orgId: org.id, userId: user.id, role: 'owner', createdAt: now })
        if (verification !== 'off') await this.deps.mailbox.queueVerification(tx, user)
        if (verification === 'required') return undefined
        return this.deps.sessions.start(tx, { id: user.id, emailVerified: false }, { orgId: org.id, role: 'owner' }, meta)
      })
    } catch (err) {
      if (isUniqueViolation(err)) throw new AppError('EMAIL_TAKEN')
      throw err
    }
    if (verification !== 'off') this.deps.mailbox.mailQueued()
    const organization = { id: org.id, name: org.name, role: 'owner' as const, credits: org.credits, created_at: now.toISOString() }
    // With verification required, no session until the address is proven (login answers EMAIL_NOT_VERIFIED until then).
    if (!tokens) return { user: userView(user), organization, email_verification_required: true as const }
    return { user: userView(user), organization, ...tokens }
  }

  /**
   * Registration with an invitation: the account joins the inviting organization with the invited
   * role and creates none of its own (so no welcome credits); its address is verified. All in one
   * transaction, which the invitation's single use decides: of concurrent sign-ups with one token,
   * one account exists afterwards.
   */
  private async registerInvited(user: repo.UserRow, tokenHash: string, meta: ClientMeta) {
    const now = user.createdAt
    let joined
    try {
      joined = await this.deps.db.transaction(async (tx) => {
        await repo.insertUser(tx, user)
        const { invitation, organization } = await this.deps.invitations.join(tx, tokenHash, user.id, now)
        const tokens = await this.deps.sessions.start(tx, { id: user.id, emailVerified: true }, { orgId: organization.id, role: invitation.role }, meta)
        return { invitation, organization, tokens }
      })
    } catch (err) {
      if (isUniqueViolation(err)) throw new AppError('EMAIL_TAKEN')
      throw err
    }
    const { invitation, organization, tokens } = joined
    await this.deps.invitations.joined(invitation, user.id)
    return {
      user: userView(user),
      organization: joinedView(invitation, organization),
      ...tokens,
    }
  }

  async login(input: LoginInput, meta: ClientMeta) {
    const { db, clock, hasher, lockout } = this.deps
    const email = normalizeEmail(input.email)
    // Locked or not, known or not: the same checks and the same argon2 work, so nothing leaks.
    await lockout.assertNotLocked(email)
    const user = await repo.findUserByEmail(db, email)
    const ok = user ? await hasher.verify(user.passwordHash, input.password) : await hasher.verifyAgainstNothing(input.password)
    if (!user || !ok || user.disabledAt) {
      if (user) this.recordInOrganizations(user.id, 'login.failed', meta)
      await lockout.recordFailure(email).catch((err: unknown) => {
        if (user && err instanceof AppError && err.code === 'ACCOUNT_LOCKED') this.recordInOrganizations(user.id, 'account.locked', meta)
        throw err
      })
      throw new AppError('INVALID_CREDENTIALS')
    }
    // After the password check, so it tells nothing to someone without the password.
    if (this.deps.config.EMAIL_VERIFICATION === 'required' && !user.emailVerifiedAt) throw new AppError('EMAIL_NOT_VERIFIED')
    // The password was checked against the hash read at the start; a reset or change may have
    // committed since. The rehash replaces only that hash, and the session (or the mfa challenge's
    // completion) starts only while the account still has the hash checked: else 401 as a wrong
    // password (regression tests login-outruns-the-reset, rehash-restores-the-old-password).
    let checked = user.passwordHash
    if (hasher.needsRehash(checked)) {
      const rehashed = await hasher.hash(input.password)
      if (!await repo.rehashPassword(db, user.id, checked, rehashed, new Date(clock.now()))) throw new AppError('INVALID_CREDENTIALS')
      checked = rehashed
    }
    const fingerprint = passwordFingerprint(checked)
    // With 2FA the password alone resets nothing: the lockout keeps counting wrong codes. The lock is
    // read again after the (slow) password check, so a guess racing a lock gets no challenge.
    if (user.mfaEnabled) {
      await lockout.assertNotLocked(email)
      return this.deps.mfa.startChallenge(user.id, fingerprint, input.orgId, meta)
    }
    await lockout.reset(email)
    return this.completeLogin(user, fingerprint, input.orgId, meta)
  }

  /** verify-2fa: a TOTP or recovery code turns an mfa_token into tokens. */
  async verifySecondFactor(mfaToken: string, code: string) {
    const { user, passwordFingerprint, orgId, meta } = await this.deps.mfa.verifyLogin(mfaToken, code)
    try {
      return await this.completeLogin(user, passwordFingerprint, orgId, meta)
    } catch (err) {
      // The password checked at the first step is no longer the account's: refused as a wrong code.
      if (err instanceof AppError && err.code === 'INVALID_CREDENTIALS') throw new AppError('MFA_INVALID')
      throw err
    }
  }

  /** `passwordFingerprint`: of the hash the password was checked against (SessionService.start). */
  private async completeLogin(user: repo.UserRow, passwordFingerprint: string, orgId: string | undefined, meta: ClientMeta) {
    const membership = await this.chooseMembership(user.id, orgId)
    const tokens = await this.deps.sessions.start(this.deps.db, { id: user.id, emailVerified: user.emailVerifiedAt !== null, passwordFingerprint }, membership, meta)
    this.deps.audit.record({ orgId: membership.orgId, action: 'login.succeeded', actorUserId: user.id, ip: meta.ip })
    return { ...tokens, user: userView(user) }
  }

  /** An event about an account, in every organization it belongs to; off the request path. */
  private recordInOrganizations(userId: string, action: 'login.failed' | 'account.locked', meta: ClientMeta) {
    this.deps.audit.recordForAccount(userId, { action, actorUserId: userId, ip: meta.ip })
  }

  /**
   * Sets a new password, and in the same transaction spends the account's pending reset and
   * change-of-address links and revokes every other session. The caller has proven the current
   * password (recent-auth).
   */
  async changePassword(auth: SessionAuth, newPassword: string) {
    const { db, clock, hasher, config, mailbox } = this.deps
    const user = await repo.findUserById(db, auth.userId)
    if (!user) throw unauthorized('Invalid or expired token')
    const problem = checkPasswordPolicy(newPassword, config.PASSWORD_MIN_LENGTH, { email: user.email, name: user.name })
    if (problem) throw validationError('new_password', problem)
    const passwordHash = await hasher.hash(newPassword)
    await this.deps.sessions.revoke(user.id, 'all', auth.sessionId, async (tx) => {
      await repo.updatePasswordHash(tx, user.id, passwordHash, new Date(clock.now()))
      await mailbox.cancelAccountLinks(tx, user.id)
    })
  }

  /**
   * Logout everywhere: every session, and the pending reset and change-of-address links with them
   * (README, Mail). It is what someone does who fears another has the account, as a change notice
   * tells them to; a change of address that other asked for must not survive it.
   */
  async logoutEverywhere(userId: string) {
    await this.deps.sessions.revoke(userId, 'all', undefined, (tx) => this.deps.mailbox.cancelAccountLinks(tx, userId))
  }

  /**
   * From the profile cache: no database round trip once a user has been seen. An API key
   * is the organization's identity: it is described, never its creator's profile.
   */
  async me(auth: AuthContext) {
    const { profiles } = this.deps
    const org = await profiles.organization(auth.orgId)
    if (!org) throw new AppError('FORBIDDEN', 'Not a member of this organization')
    const organization = { id: org.id, name: org.name, role: auth.role, credits: org.credits }
    if (auth.method === 'api_key') {
      const key = this.deps.apiKeys.cached(auth.keyId)
      return {
        api_key: {
          id: auth.keyId, name: key?.name ?? null, organization_id: auth.orgId, scopes: [...auth.scopes], created_by: auth.createdByUserId,
          expires_at: key?.expiresAt ? new Date(key.expiresAt).toISOString() : null,
        },
        organization,
        memberships: [],
        auth: { method: auth.method, scopes: [...auth.scopes], key_id: auth.keyId },
      }
    }
    const profile = await profiles.profile(auth.userId)
    if (!profile || profile.user.disabledAt) throw unauthorized('Invalid or expired token')
    return {
      user: userView(profile.user),
      organization,
      memberships: profile.memberships.map((m) => ({ id: m.orgId, name: m.name, role: m.role })),
      auth: { method: auth.method, scopes: [...auth.scopes], session_id: auth.sessionId },
    }
  }

  private async chooseMembership(userId: string, orgId?: string) {
    const memberships = await orgRepo.listMembershipsOfUser(this.deps.db, userId)
    const chosen = orgId ? memberships.find((m) => m.orgId === orgId) : memberships[0]
    if (!chosen) {
      throw new AppError('FORBIDDEN', orgId ? 'Not a member of this organization' : 'Not a member of any organization')
    }
    return chosen
  }
}
