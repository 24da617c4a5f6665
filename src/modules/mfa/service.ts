// Two-factor rules (TOTP, RFC 6238): setup → enable with a code (10 recovery
// codes returned once) → login answers { mfa_required, mfa_token } → verify-2fa
// with a TOTP or recovery code finishes it. A code is accepted once (also under
// concurrency), wrong codes count toward the lockout, secrets are sealed at rest.
import { createHmac, randomBytes } from 'node:crypto'
import type { Config } from '../../config.js'
import type { Database, Queryable } from '../../db/client.js'
import { AppError } from '../../errors.js'
import type { Clock } from '../../lib/clock.js'
import { decrypt, deriveKey, encrypt, sha256 } from '../../lib/crypto.js'
import { newId } from '../../lib/ids.js'
import { matchTotp, newTotpSecret, totpUri } from '../../lib/totp.js'
import type { SessionAuth } from '../../plugins/tenancy.js'
import type { AuditLog } from '../audit/service.js'
import type { EventBus } from '../../plugins/events.js'
import type { Lockout } from '../auth/lockout.js'
import * as userRepo from '../auth/repository.js'
import type { ClientMeta, SessionService } from '../sessions/service.js'
import * as repo from './repository.js'

export interface MfaServiceDeps {
  db: Database
  config: Config
  clock: Clock
  sessions: SessionService
  lockout: Lockout
  audit: AuditLog
  events: EventBus
}

const RECOVERY_CODE_COUNT = 10
const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567'

function newRecoveryCode(): string {
  const bytes = randomBytes(10)
  const chars = [...bytes].map((b) => BASE32[b & 31]).join('')
  return `${chars.slice(0, 5)}-${chars.slice(5)}`
}

const normalizeRecoveryCode = (code: string) => code.toLowerCase().replace(/[\s-]/g, '')

const invalid = () => new AppError('MFA_INVALID')

export class MfaService {
  private readonly sealKey: Buffer
  private readonly recoveryKey: Buffer

  constructor(private readonly deps: MfaServiceDeps) {
    this.sealKey = deriveKey(deps.config.secretKey!, 'totp')
    this.recoveryKey = deriveKey(deps.config.secretKey!, 'recovery-codes')
  }

  async setup(auth: SessionAuth) {
    const user = await this.user(auth.userId)
    if (user.mfaEnabled) throw new AppError('CONFLICT', 'Two-factor authentication is already enabled')
    const secret = newTotpSecret()
    await repo.setPendingSecret(this.deps.db, user.id, encrypt(this.sealKey, secret, `${user.id}:pending`), this.now())
    return { secret, otpauth_url: totpUri(this.deps.config.TOTP_ISSUER, user.email, secret) }
  }

  /** The caller has proven recent authentication (the route checks it first). */
  async enable(auth: SessionAuth, code: string) {
    const user = await this.user(auth.userId)
    if (user.mfaEnabled) throw new AppError('CONFLICT', 'Two-factor authentication is already enabled')
    if (!user.totpPendingSecretSealed) throw new AppError('CONFLICT', 'Call POST /auth/2fa/setup first')
    const secret = decrypt(this.sealKey, user.totpPendingSecretSealed, `${user.id}:pending`)
    const step = await matchTotp(secret, code.trim(), this.deps.clock.now())
    if (step === null) throw invalid()
    const codes = Array.from({ length: RECOVERY_CODE_COUNT }, newRecoveryCode)
    const now = this.now()
    await this.deps.db.transaction(async (tx) => {
      await repo.enableTotp(tx, user.id, encrypt(this.sealKey, secret, user.id), step, now)
      await this.replaceRecoveryCodes(tx, user.id, codes, now)
    })
    await this.deps.events.publish({ type: 'users.changed', ids: [user.id] })
    await this.deps.sessions.revoke(user.id, 'all', auth.sessionId)
    return { recovery_codes: codes }
  }

  /** Ten new recovery codes; the old ones stop working. The caller has proven recent authentication. */
  async regenerateRecoveryCodes(auth: SessionAuth) {
    const user = await this.user(auth.userId)
    if (!user.mfaEnabled) throw new AppError('CONFLICT', 'Two-factor authentication is not enabled')
    const codes = Array.from({ length: RECOVERY_CODE_COUNT }, newRecoveryCode)
    await this.deps.db.transaction((tx) => this.replaceRecoveryCodes(tx, user.id, codes, this.now()))
    return { recovery_codes: codes }
  }

  private replaceRecoveryCodes(db: Queryable, userId: string, codes: string[], now: Date) {
    return repo.replaceRecoveryCodes(db, userId, codes.map((c) => ({
      id: newId('rcv', now.getTime()), userId, codeHash: this.recoveryCodeHash(c), createdAt: now,
    })))
  }

  /** Keyed with a secret: a leaked table of 50-bit codes cannot be brute-forced offline. */
  private recoveryCodeHash(code: string) {
    return createHmac('sha256', this.recoveryKey).update(normalizeRecoveryCode(code)).digest('hex')
  }

  /** The caller has proven its password and a code (the route checks both first). */
  async disable(auth: SessionAuth) {
    const user = await this.user(auth.userId)
    if (!user.mfaEnabled) throw new AppError('CONFLICT', 'Two-factor authentication is not enabled')
    await this.deps.db.transaction(async (tx) => {
      await repo.disableTotp(tx, user.id, this.now())
      await repo.replaceRecoveryCodes(tx, user.id, [])
    })
    await this.deps.events.publish({ type: 'users.changed', ids: [user.id] })
    await this.deps.sessions.revoke(user.id, 'all', auth.sessionId)
  }

  /** The first step of a 2FA login: a short-lived, single-use token for verify-2fa. */
  async startChallenge(userId: string, passwordFingerprint: string, orgId: string | undefined, meta: ClientMeta) {
    const token = `mfa_${randomBytes(32).toString('base64url')}`
    const now = this.now()
    await repo.insertChallenge(this.deps.db, {
      tokenHash: sha256(token), userId, passwordFingerprint, orgId: orgId ?? null, userAgent: meta.userAgent?.slice(0, 512) ?? null,
      ip: meta.ip ?? null, createdAt: now, expiresAt: new Date(now.getTime() + this.deps.config.MFA_TOKEN_TTL * 1000),
    })
    return { mfa_required: true as const, mfa_token: token, expires_in: this.deps.config.MFA_TOKEN_TTL }
  }

  /** The second step: a TOTP or recovery code turns the mfa_token into a session. */
  async verifyLogin(mfaToken: string, code: string) {
    const { db, lockout } = this.deps
    const tokenHash = sha256(mfaToken)
    const challenge = await repo.findLiveChallenge(db, tokenHash, this.now())
    if (!challenge) throw invalid()
    const user = await userRepo.findUserById(db, challenge.userId)
    if (!user || user.disabledAt || !user.mfaEnabled) throw invalid()
    await lockout.assertNotLocked(user.email)
    const verdict = await this.acceptCode(user, code)
    if (verdict !== 'accepted') {
      if (verdict === 'wrong') await lockout.recordFailure(user.email)
      throw invalid()
    }
    if (!(await repo.consumeChallenge(db, tokenHash, this.now()))) throw invalid()
    await lockout.clear(user.email)
    return { user, passwordFingerprint: challenge.passwordFingerprint, orgId: challenge.orgId ?? undefined, meta: { userAgent: challenge.userAgent ?? undefined, ip: challenge.ip ?? undefined } }
  }

  /**
   * A current TOTP code (each time step once) or an unused recovery code. A replay of a
   * valid code is refused but is no guess, so only 'wrong' counts toward the lockout:
   * a double-submitted form must not lock out the user who just logged in.
   */
  async acceptCode(user: userRepo.UserRow, code: string): Promise<'accepted' | 'replayed' | 'wrong'> {
    const trimmed = code.trim()
    if (/^\d{6}$/.test(trimmed)) {
      if (!user.totpSecretSealed) return 'wrong'
      const step = await matchTotp(decrypt(this.sealKey, user.totpSecretSealed, user.id), trimmed, this.deps.clock.now())
      if (step === null) return 'wrong'
      return (await repo.claimTotpStep(this.deps.db, user.id, step)) ? 'accepted' : 'replayed'
    }
    const normalized = normalizeRecoveryCode(trimmed)
    if (normalized.length !== 10) return 'wrong'
    // Codes issued before they were keyed are stored as plain SHA-256: still accepted, once.
    const hashes = [this.recoveryCodeHash(trimmed), sha256(normalized)]
    return (await repo.useRecoveryCode(this.deps.db, user.id, hashes, this.now())) ? 'accepted' : 'wrong'
  }

  private async user(id: string) {
    const user = await userRepo.findUserById(this.deps.db, id)
    if (!user) throw new AppError('UNAUTHORIZED', 'Invalid or expired token')
    return user
  }

  private now() {
    return new Date(this.deps.clock.now())
  }
}
