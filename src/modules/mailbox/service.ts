// Flows that rest on proving control of a mailbox: forgot / reset password,
// email verification and change of email. Each mailed token has one purpose;
// every mail leaves through the outbox, in the transaction of the change
// that causes it.
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../../config.js'
import type { Database, Queryable } from '../../db/client.js'
import { isUniqueViolation } from '../../db/errors.js'
import { AppError, unauthorized, validationError } from '../../errors.js'
import type { Clock } from '../../lib/clock.js'
import type { PasswordHasher } from '../../lib/password-hasher.js'
import { checkPasswordPolicy } from '../../lib/password-policy.js'
import type { EventBus } from '../../plugins/events.js'
import type { AuditLog } from '../audit/service.js'
import type { Lockout } from '../auth/lockout.js'
import * as userRepo from '../auth/repository.js'
import { isEmailAddress, normalizeEmail } from '../auth/service.js'
import type { Outbox } from '../mail/outbox.js'
import { storePreparedMail } from '../mail/repository.js'
import { templates, type MailContent } from '../mail/templates.js'
import { ACCOUNT_TAKING_PURPOSES, invalidLink, type MailTokens } from '../mail/tokens.js'
import type { ClientMeta, SessionService } from '../sessions/service.js'
import * as repo from './repository.js'

export interface MailboxServiceDeps {
  db: Database
  config: Config
  clock: Clock
  hasher: PasswordHasher
  outbox: Outbox
  tokens: MailTokens
  sessions: SessionService
  lockout: Lockout
  audit: AuditLog
  events: EventBus
  log: FastifyBaseLogger
}

export class MailboxService {
  constructor(private readonly deps: MailboxServiceDeps) {
    // Forgot-password and re-sent verification mails are queued without content; the sender makes them here.
    const { config } = deps
    deps.outbox.prepareWith('password_reset', (tx, row) => this.prepareTokenMail(tx, row, {
      purpose: 'password_reset', ttlSeconds: config.PASSWORD_RESET_TTL, template: templates.passwordReset, wanted: () => true,
    }))
    deps.outbox.prepareWith('email_verification', (tx, row) => this.prepareTokenMail(tx, row, {
      purpose: 'email_verification', ttlSeconds: config.EMAIL_VERIFICATION_TTL, template: templates.emailVerification,
      wanted: (user) => !user.emailVerifiedAt,
    }))
  }

  /**
   * Queues a reset for the address, whether or not an account has it: the request does the
   * same work either way (one row), and the sender decides, off the request path, whether
   * there is anyone to mail. No status, body or timing tells the two apart.
   */
  async forgotPassword(rawEmail: string): Promise<void> {
    const email = normalizeEmail(rawEmail)
    if (!isEmailAddress(email)) throw validationError('email', 'must be an email address')
    await this.deps.outbox.queue(this.deps.db, { kind: 'password_reset', to: email })
    this.deps.outbox.queued()
  }

  /**
   * Sets a new password with a reset token. The policy is checked before the token is spent
   * (a rejected password leaves the link usable); then, in one transaction, the token is spent
   * (exactly one of concurrent resets wins), the password set, every session revoked and the
   * notice queued.
   */
  async resetPassword(token: string, newPassword: string, meta: ClientMeta): Promise<void> {
    const { db, config, hasher, tokens, sessions, outbox } = this.deps
    const live = await tokens.peek(db, 'password_reset', token)
    const user = await userRepo.findUserById(db, live.userId)
    // The link was mailed to the address the account had then; a changed address makes it stale.
    if (!user || user.disabledAt || user.email !== live.email) throw invalidLink()
    const problem = checkPasswordPolicy(newPassword, config.PASSWORD_MIN_LENGTH, { email: user.email, name: user.name })
    if (problem) throw validationError('new_password', problem)
    const passwordHash = await hasher.hash(newPassword)
    const now = new Date(this.deps.clock.now())
    const revoked = await db.transaction(async (tx) => {
      await tokens.spend(tx, 'password_reset', token)
      await userRepo.updatePasswordHash(tx, user.id, passwordHash, now)
      await this.cancelAccountLinks(tx, user.id)
      const ids = await sessions.revokeWithin(tx, user.id, 'all')
      await outbox.queue(tx, { kind: 'password_changed', to: user.email, userId: user.id, content: templates.passwordChanged(config) })
      return ids
    })
    outbox.queued()
    await sessions.announceRevoked(revoked)
    // The mailbox proved who this is: the failure count (and any lock) on the address ends.
    await this.deps.lockout.clear(user.email)
    this.deps.audit.recordForAccount(user.id, { action: 'password.reset', actorUserId: user.id, targetType: 'user', targetId: user.id, ip: meta.ip })
  }

  /**
   * Spends the account's pending reset and change-of-address links (in the caller's transaction):
   * a password reset or change, a logout everywhere, a disable and an enable. An attacker who knew
   * the old password and asked to move the address must not be able to finish after the owner
   * secured the account (the change notice tells the owner to do just that). The account's row is
   * locked first (FOR UPDATE, before any session is revoked) and held to the commit: a change of
   * address that checked the old password either issued its link before (spent here) or waits and
   * sees the new password, the disable or the revoked session (requestEmailChange).
   */
  async cancelAccountLinks(db: Queryable, userId: string): Promise<void> {
    await userRepo.lockUser(db, userId, 'update')
    await this.deps.tokens.spendAll(db, userId, ACCOUNT_TAKING_PURPOSES)
  }

  /** Queues a verification mail for the user's current address (in the caller's transaction). */
  async queueVerification(db: Queryable, user: { id: string; email: string }): Promise<void> {
    const token = await this.deps.tokens.issue(db, 'email_verification', user, this.deps.config.EMAIL_VERIFICATION_TTL)
    await this.deps.outbox.queue(db, { kind: 'email_verification', to: user.email, userId: user.id, content: templates.emailVerification(this.deps.config, token) })
  }

  /** A caller's transaction that queued mail has committed. */
  mailQueued(): void {
    this.deps.outbox.queued()
  }

  /**
   * Re-sends a verification link (the old one dies) to an address, if an unverified account
   * has it. Public, since with EMAIL_VERIFICATION=required the user has no session: like a
   * forgot-password request, it queues one row whatever the address, and the sender decides.
   */
  /** Also with EMAIL_VERIFICATION=off (no mail at registration): accepting an invitation needs a verified address. */
  async resendVerification(rawEmail: string): Promise<void> {
    const email = normalizeEmail(rawEmail)
    if (!isEmailAddress(email)) throw validationError('email', 'must be an email address')
    await this.deps.outbox.queue(this.deps.db, { kind: 'email_verification', to: email })
    this.deps.outbox.queued()
  }

  /**
   * The content of a row queued without it: a new token of `purpose` (older ones are spent)
   * for the account with the row's address, or nothing when no account there should get one.
   */
  private async prepareTokenMail(tx: Queryable, row: { id: string; recipient: string }, mail: {
    purpose: 'password_reset' | 'email_verification'
    ttlSeconds: number
    template: (config: Config, token: string) => MailContent
    wanted: (user: userRepo.UserRow) => boolean
  }) {
    const user = await userRepo.findUserByEmail(tx, row.recipient)
    if (!user || user.disabledAt || !mail.wanted(user)) return null
    const token = await this.deps.tokens.issue(tx, mail.purpose, user, mail.ttlSeconds)
    const content = mail.template(this.deps.config, token)
    await storePreparedMail(tx, row.id, { userId: user.id, subject: content.subject, contentSealed: this.deps.outbox.seal(row.id, content) })
    return content
  }

  /** Marks the address the token was mailed to as verified, if it is still the account's address. */
  async verifyEmail(token: string, meta: ClientMeta): Promise<void> {
    const { db, tokens } = this.deps
    const now = new Date(this.deps.clock.now())
    const userId = await db.transaction(async (tx) => {
      const spent = await tokens.spend(tx, 'email_verification', token)
      const verified = await repo.markEmailVerified(tx, spent.userId, spent.email, now)
      if (!verified) throw invalidLink()
      return spent.userId
    })
    await this.changed(userId)
    this.deps.audit.recordForAccount(userId, { action: 'email.verified', actorUserId: userId, targetType: 'user', targetId: userId, ip: meta.ip })
  }

  /**
   * Starts a change of address (the caller has re-authenticated): a link to the new address,
   * a notice to the old one. Nothing changes until the link is followed. Whether the new
   * address is taken is not told here (that would tell a signed-in user who else has an
   * account); confirming re-checks it.
   *
   * `verified` is the account as read when its password was checked. The link is issued holding the
   * account's row and the session (FOR SHARE), and only if neither changed meanwhile: a password
   * reset or change, logout everywhere or disable that committed during the (slow) check spent the
   * links before this one existed (regression test email-change-outruns-the-reset).
   */
  async requestEmailChange(verified: userRepo.UserRow, sessionId: string, rawEmail: string, meta: ClientMeta): Promise<void> {
    const { db, config, tokens, outbox, sessions } = this.deps
    const newEmail = normalizeEmail(rawEmail)
    if (!isEmailAddress(newEmail)) throw validationError('new_email', 'must be an email address')
    const user = await db.transaction(async (tx) => {
      const user = await userRepo.lockUser(tx, verified.id, 'share')
      if (!user || user.disabledAt || user.erasedAt) throw unauthorized('Invalid or expired token')
      // The password proven is no longer the account's: answered as a wrong one would be.
      if (user.passwordHash !== verified.passwordHash) throw new AppError('INVALID_CREDENTIALS', 'Password or two-factor code is incorrect')
      await sessions.holdLive(tx, user.id, sessionId)
      if (newEmail === user.email) throw validationError('new_email', 'is already the address of this account')
      const token = await tokens.issue(tx, 'email_change', { id: user.id, email: newEmail }, config.EMAIL_VERIFICATION_TTL)
      await outbox.queue(tx, { kind: 'email_change', to: newEmail, userId: user.id, content: templates.emailChange(config, token) })
      await outbox.queue(tx, { kind: 'email_change_notice', to: user.email, userId: user.id, content: templates.emailChangeNotice(config, newEmail) })
      return user
    })
    outbox.queued()
    this.deps.audit.recordForAccount(user.id, { action: 'email.change_requested', actorUserId: user.id, targetType: 'user', targetId: user.id, ip: meta.ip })
  }

  /**
   * Moves the account to the address the token was mailed to, verified by the same act; the
   * old address's pending links die with it (a reset mailed there must not outlive the change).
   */
  async confirmEmailChange(token: string, meta: ClientMeta): Promise<void> {
    const { db, config, tokens, outbox } = this.deps
    const now = new Date(this.deps.clock.now())
    let userId: string
    try {
      userId = await db.transaction(async (tx) => {
        const spent = await tokens.spend(tx, 'email_change', token)
        // A disabled (or erased) account's address does not move: whoever holds it could aim a later reset at themselves.
        const owner = await userRepo.findUserById(tx, spent.userId)
        if (!owner || owner.disabledAt || owner.erasedAt) throw invalidLink()
        if (await userRepo.findUserByEmail(tx, spent.email)) throw new AppError('EMAIL_TAKEN')
        await repo.changeEmail(tx, spent.userId, spent.email, now)
        await tokens.spendAll(tx, spent.userId, ['password_reset', 'email_verification', 'email_change'])
        // The old address hears of it: if it was not its owner, this is the last mail that reaches them.
        await outbox.queue(tx, { kind: 'email_changed', to: owner.email, userId: owner.id, content: templates.emailChanged(config, spent.email) })
        return spent.userId
      })
    } catch (err) {
      // Two accounts confirming the same address at once: the unique index decides.
      if (isUniqueViolation(err)) throw new AppError('EMAIL_TAKEN')
      throw err
    }
    outbox.queued()
    await this.changed(userId)
    this.deps.audit.recordForAccount(userId, { action: 'email.changed', actorUserId: userId, targetType: 'user', targetId: userId, ip: meta.ip })
  }

  /** Profiles (`/auth/me`) on every instance reload the user. */
  private async changed(userId: string) {
    await this.deps.events.publish({ type: 'users.changed', ids: [userId] }).catch((err: unknown) => {
      this.deps.log.warn({ err }, 'could not announce a user change; other instances see it at the next resync')
    })
  }
}
