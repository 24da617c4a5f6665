// Recent authentication ("sudo mode", OWASP ASVS 6.4/7.5) for sensitive changes:
// the password (and a TOTP or recovery code where 2FA is on) proven in the same
// request, or a login within REAUTH_WINDOW (the access token's auth_time). A
// stolen 15-minute token alone can then change nothing that locks the owner out.
// Every check counts toward the lockout exactly like a login, and a wrong
// password or a wrong code get the same answer.
import type { Config } from '../../config.js'
import type { Database } from '../../db/client.js'
import { AppError, unauthorized } from '../../errors.js'
import type { Clock } from '../../lib/clock.js'
import type { PasswordHasher } from '../../lib/password-hasher.js'
import type { SessionAuth } from '../../plugins/tenancy.js'
import type { AuditLog } from '../audit/service.js'
import type { Lockout } from './lockout.js'
import * as repo from './repository.js'

export interface Proof {
  password?: string
  /** TOTP or recovery code; looked at only when the account has 2FA. */
  code?: string
}

export interface ProofRules {
  /** The password is needed even within the window (a password change proves the old one). */
  password?: 'always'
  /** The second factor is needed even within the window (turning 2FA off). */
  code?: 'always'
}

/** The part of two-factor this check needs: claim a code once, as a login would. */
export interface SecondFactor {
  acceptCode(user: repo.UserRow, code: string): Promise<'accepted' | 'replayed' | 'wrong'>
}

const failed = () => new AppError('INVALID_CREDENTIALS', 'Password or two-factor code is incorrect')

export class RecentAuthentication {
  constructor(private readonly deps: {
    db: Database; config: Config; clock: Clock; hasher: PasswordHasher; lockout: Lockout; secondFactor: SecondFactor; audit: AuditLog
  }) {}

  /** Whether the session's login is within REAUTH_WINDOW. */
  isRecent(auth: SessionAuth): boolean {
    return this.deps.clock.now() / 1000 - auth.authTime <= this.deps.config.REAUTH_WINDOW
  }

  /** Returns the caller's account once it is proven; throws 403, 401 or 423 otherwise. */
  async assert(auth: SessionAuth, proof: Proof, rules: ProofRules = {}, ip?: string): Promise<repo.UserRow> {
    const { db, hasher, lockout } = this.deps
    const user = await repo.findUserById(db, auth.userId)
    if (!user || user.disabledAt) throw unauthorized('Invalid or expired token')
    const recent = this.isRecent(auth)
    const needPassword = rules.password === 'always' || !recent
    const needCode = user.mfaEnabled && (rules.code === 'always' || !recent)
    const missing = [
      ...(needPassword && proof.password === undefined ? ['password'] : []),
      ...(needCode && proof.code === undefined ? ['code'] : []),
    ]
    if (missing.length) {
      throw new AppError('REAUTHENTICATION_REQUIRED', `This change needs ${missing.join(' and ')}, or a login within the last ${Math.round(this.deps.config.REAUTH_WINDOW / 60)} minutes`,
        missing.map((field) => ({ field, message: 'required for this change' })))
    }
    const checkPassword = proof.password !== undefined
    const checkCode = user.mfaEnabled && proof.code !== undefined
    if (!checkPassword && !checkCode) return user

    await lockout.assertNotLocked(user.email)
    const passwordOk = !checkPassword || await hasher.verify(user.passwordHash, proof.password!)
    // A code is claimed only behind a right password: a wrong password must not burn it.
    const verdict = passwordOk && checkCode ? await this.deps.secondFactor.acceptCode(user, proof.code!) : 'accepted'
    if (!passwordOk || verdict !== 'accepted') {
      // As at login: a replayed code is refused but is no guess. Failures and the lock they cause are audited.
      if (verdict !== 'replayed') {
        const event = { actorUserId: user.id, ip, metadata: { session_id: auth.sessionId } }
        this.deps.audit.recordForAccount(user.id, { action: 'reauth.failed', ...event })
        await lockout.recordFailure(user.email).catch((err: unknown) => {
          if (err instanceof AppError && err.code === 'ACCOUNT_LOCKED') this.deps.audit.recordForAccount(user.id, { action: 'account.locked', ...event })
          throw err
        })
      }
      throw failed()
    }
    // As at login: for a 2FA account only a claimed code wins the count back, never the password alone.
    // Either way the lock is read again after the (slow) check: guesses sent in parallel with the
    // right one must not get it through once a lock has landed.
    if (!user.mfaEnabled || checkCode) await lockout.reset(user.email)
    else await lockout.assertNotLocked(user.email)
    return user
  }
}
