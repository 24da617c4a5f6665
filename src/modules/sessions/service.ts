// Session rules: a login starts a session and its refresh-token family;
// refresh rotates atomically (one statement in the plain case); reuse revokes the family; logout,
// logout-all and password changes revoke sessions on every instance.
import type { FastifyBaseLogger } from 'fastify'
import type { Config, Role } from '../../config.js'
import { scopesOfRole } from '../../lib/authority.js'
import type { Database, Queryable } from '../../db/client.js'
import { AppError, unauthorized } from '../../errors.js'
import type { Clock } from '../../lib/clock.js'
import { deriveKey } from '../../lib/crypto.js'
import { newId } from '../../lib/ids.js'
import { passwordFingerprint } from '../../lib/password-hasher.js'
import { keysetPage } from '../../lib/pagination.js'
import { childRefreshToken, hashRefreshToken, looksLikeRefreshToken, newRefreshToken } from '../../lib/refresh-token.js'
import type { Revocation } from '../../plugins/revocation.js'
import type { TokenService } from '../../plugins/tokens.js'
import type { AuditLog } from '../audit/service.js'
import type { Metrics } from '../../plugins/metrics.js'
import * as userRepo from '../auth/repository.js'
import * as orgRepo from '../organizations/repository.js'
import * as repo from './repository.js'

export interface ClientMeta { userAgent?: string; ip?: string }

export interface SessionServiceDeps {
  db: Database
  config: Config
  clock: Clock
  tokens: TokenService
  revocation: Revocation
  log: FastifyBaseLogger
  audit: AuditLog
  metrics: Metrics
}

export interface TokenPair {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  refresh_token: string
}

type RefreshOutcome =
  | { kind: 'issued'; child: string; userId: string; emailVerified: boolean; sessionId: string; authTime: Date; orgId: string; role: Role }
  | { kind: 'reused'; userId: string; sessionId: string; orgId: string }

export class SessionService {
  private readonly refreshKey: Buffer
  private readonly rotateUnusedToken: ReturnType<typeof repo.prepareUnusedTokenRotation>

  constructor(private readonly deps: SessionServiceDeps) {
    this.refreshKey = deriveKey(deps.config.secretKey!, 'refresh-tokens')
    this.rotateUnusedToken = repo.prepareUnusedTokenRotation(deps.db)
  }

  /**
   * Starts a session and its first refresh token (inside the caller's transaction when given one).
   * A login passes `passwordFingerprint`, of the password hash it checked: the session is refused
   * if the account's hash is another by now (a reset or change committed during the check).
   */
  async start(db: Queryable, user: { id: string; emailVerified: boolean; passwordFingerprint?: string }, membership: { orgId: string; role: Role }, meta: ClientMeta): Promise<TokenPair> {
    const userId = user.id
    const { config } = this.deps
    const now = this.now()
    const sessionId = newId('ses', now.getTime())
    const refreshToken = newRefreshToken()
    const expiresAt = new Date(now.getTime() + config.SESSION_MAX_AGE * 1000)
    await db.transaction(async (tx) => {
      // The account is read, and held, in the session's own transaction: a disable (or erasure)
      // committed after a login's password check either waits for this session and revokes it, or
      // is seen here and refuses it (as a wrong password would be). So is a password reset or change:
      // it locks the row FOR UPDATE (cancelAccountLinks), so it waits for this session and revokes
      // it, or has committed and its new hash is seen here.
      const current = await userRepo.lockUser(tx, userId, 'share')
      if (!current || current.disabledAt || current.erasedAt) throw new AppError('INVALID_CREDENTIALS')
      if (user.passwordFingerprint !== undefined && passwordFingerprint(current.passwordHash) !== user.passwordFingerprint) {
        throw new AppError('INVALID_CREDENTIALS')
      }
      await repo.insertSession(tx, {
        id: sessionId, userId, orgId: membership.orgId, userAgent: meta.userAgent?.slice(0, 512) ?? null,
        ip: meta.ip ?? null, createdAt: now, lastUsedAt: now, expiresAt,
      })
      await repo.insertRefreshToken(tx, {
        id: newId('rtk', now.getTime()), sessionId, parentId: null, tokenHash: hashRefreshToken(refreshToken),
        createdAt: now, expiresAt: this.tokenExpiry(now, expiresAt),
      })
    })
    return this.pair(userId, sessionId, now, membership, refreshToken, user.emailVerified)
  }

  /**
   * Rotates a refresh token; see SPEC §4 "Refresh tokens and sessions". The plain case (an unused
   * token of a live session, a member of the organization, nothing of it locked by another) is one
   * statement, one round trip; any other token goes through the transaction, which waits for its
   * locks and reads everything again under them.
   */
  async refresh(presented: string, requestedOrgId?: string): Promise<TokenPair> {
    if (!looksLikeRefreshToken(presented)) throw new AppError('REFRESH_FAILED')
    const now = this.now()
    // The child is derived from its parent, so a retry of the parent gets the same one back.
    const presentedHash = hashRefreshToken(presented)
    const child = childRefreshToken(this.refreshKey, presented)
    const childHash = hashRefreshToken(child)
    const rotated = await this.rotateUnusedToken({
      tokenHash: presentedHash, orgId: requestedOrgId ?? null, now,
      child: { id: newId('rtk', now.getTime()), tokenHash: childHash, expiresAt: new Date(now.getTime() + this.deps.config.REFRESH_TOKEN_TTL * 1000) },
    })
    const outcome: RefreshOutcome = rotated
      ? { kind: 'issued', child, ...rotated }
      : await this.deps.db.transaction((tx) => this.rotateInTransaction(tx, presentedHash, { token: child, hash: childHash }, requestedOrgId))
    if (outcome.kind === 'reused') {
      // The revocation is committed; record it (once: a transaction run again after a conflict
      // would have recorded it twice), tell every instance, then refuse.
      this.deps.audit.record({ orgId: outcome.orgId, action: 'refresh.reuse_detected', actorUserId: outcome.userId, targetType: 'session', targetId: outcome.sessionId })
      await this.deps.revocation.publishRevokedSessions([outcome.sessionId])
      this.deps.metrics.refreshReuse()
      this.deps.log.warn({ sessionId: outcome.sessionId, userId: outcome.userId }, 'refresh token reuse detected; session revoked')
      throw new AppError('REFRESH_TOKEN_REUSED')
    }
    return this.pair(outcome.userId, outcome.sessionId, outcome.authTime, outcome, outcome.child, outcome.emailVerified)
  }

  private async rotateInTransaction(tx: Queryable, presentedHash: string, child: { token: string; hash: string }, requestedOrgId?: string): Promise<RefreshOutcome> {
    const { config } = this.deps
    const now = this.now()
    const found = await repo.lockRefreshToken(tx, presentedHash)
    if (!found) throw new AppError('REFRESH_FAILED')
    const { token, session } = found
    if (session.revokedAt || session.expiresAt <= now) throw new AppError('REFRESH_FAILED')

    if (token.usedAt) {
      const existing = await repo.findChildToken(tx, token.id)
      const withinGrace = now.getTime() - token.usedAt.getTime() <= config.REFRESH_REUSE_GRACE * 1000
      // An idempotent retry: the immediate parent of the live token, soon after it was used.
      if (withinGrace && existing && !existing.usedAt && existing.tokenHash === child.hash) {
        const user = await userRepo.findUserById(tx, session.userId)
        if (!user || user.disabledAt) throw new AppError('REFRESH_FAILED')
        const membership = await this.membershipFor(tx, session.userId, requestedOrgId ?? session.orgId)
        await repo.touchSession(tx, session.id, membership.orgId, now)
        return { kind: 'issued', child: child.token, userId: session.userId, emailVerified: user.emailVerifiedAt !== null, sessionId: session.id, authTime: session.createdAt, ...membership }
      }
      await repo.revokeSessions(tx, session.userId, [session.id], now)
      return { kind: 'reused', userId: session.userId, sessionId: session.id, orgId: session.orgId }
    }
    if (token.expiresAt <= now) throw new AppError('REFRESH_FAILED')

    const user = await userRepo.findUserById(tx, session.userId)
    if (!user || user.disabledAt) throw new AppError('REFRESH_FAILED')
    const membership = await this.membershipFor(tx, session.userId, requestedOrgId ?? session.orgId, !requestedOrgId)
    await repo.markTokenUsed(tx, token.id, now)
    await repo.insertRefreshToken(tx, {
      id: newId('rtk', now.getTime()), sessionId: session.id, parentId: token.id, tokenHash: child.hash,
      createdAt: now, expiresAt: this.tokenExpiry(now, session.expiresAt),
    })
    await repo.touchSession(tx, session.id, membership.orgId, now)
    return { kind: 'issued', child: child.token, userId: session.userId, emailVerified: user.emailVerifiedAt !== null, sessionId: session.id, authTime: session.createdAt, ...membership }
  }

  /**
   * The organization of the new access token. A requested one must be a membership (403);
   * a session whose organization the user has left falls back to the first one joined.
   */
  private async membershipFor(db: Queryable, userId: string, orgId: string, fallback = false) {
    // Held to the commit: a removal committed meanwhile is waited for and seen, never a session
    // moved into an organization its user has just left.
    const found = await orgRepo.findMembership(db, orgId, userId, 'share')
    if (found) return { orgId: found.orgId, role: found.role }
    const first = fallback ? (await orgRepo.listMembershipsOfUser(db, userId))[0] : undefined
    if (first) return { orgId: first.orgId, role: first.role }
    throw new AppError('FORBIDDEN', 'Not a member of this organization')
  }

  /**
   * Revokes sessions of a user ('all', ids, or those in an organization), except one; every
   * instance is told of them, then of what earlier calls revoked of the same selection. A
   * revocation answered 503 (its UPDATE held past the deadline) may still commit later,
   * unannounced; retried, it found nothing left to revoke and announced nothing, so the token
   * lived on every instance (regression test late-revocation-never-announced). The second
   * announcement is best effort: what this call revoked is announced already. `alongside` writes
   * what must commit with the revocation, or not at all (a password change), in its transaction.
   */
  async revoke(userId: string, which: repo.SessionSelector, exceptId?: string, alongside?: (tx: Queryable) => Promise<void>): Promise<string[]> {
    const revoked = alongside
      ? await this.deps.db.transaction(async (tx) => {
        await alongside(tx)
        return this.revokeWithin(tx, userId, which, exceptId)
      })
      : await this.revokeWithin(this.deps.db, userId, which, exceptId)
    await this.announceRevoked(revoked)
    const since = new Date(this.now().getTime() - this.deps.revocation.rememberMs)
    const earlier = (await repo.listRevokedSessions(this.deps.db, userId, which, since, exceptId).catch(() => []))
      .filter((id) => !revoked.includes(id))
    if (earlier.length) await this.announceRevoked(earlier)
    return revoked
  }

  /**
   * Holds the session (FOR SHARE) in the caller's transaction, or refuses as a revoked token is
   * refused: a revocation committed since the request was authenticated counts.
   */
  async holdLive(tx: Queryable, userId: string, sessionId: string): Promise<void> {
    if (!await repo.lockLiveSession(tx, userId, sessionId, this.now())) throw unauthorized('Invalid or expired token')
  }

  /** Revokes inside the caller's transaction; once it has committed, announceRevoked(the ids returned). */
  revokeWithin(tx: Queryable, userId: string, which: repo.SessionSelector, exceptId?: string): Promise<string[]> {
    return repo.revokeSessions(tx, userId, which, this.now(), exceptId)
  }

  /** Tells every instance (and this one) that these sessions are revoked. */
  announceRevoked(ids: string[]): Promise<void> {
    return this.deps.revocation.publishRevokedSessions(ids)
  }

  /** The session a refresh token belongs to, when it is the given user's. */
  async sessionOfRefreshToken(userId: string, presented: string): Promise<string | undefined> {
    if (!looksLikeRefreshToken(presented)) return undefined
    const found = await repo.findRefreshToken(this.deps.db, hashRefreshToken(presented))
    return found?.session.userId === userId ? found.session.id : undefined
  }

  async list(userId: string, currentSessionId: string | undefined, limit: number, cursor?: string) {
    const rows = await repo.listLiveSessions(this.deps.db, userId, this.now(), limit + 1, cursor)
    return keysetPage(rows, limit, (s) => s.id, (s) => ({
      id: s.id,
      user_agent: s.userAgent,
      ip: s.ip,
      organization_id: s.orgId,
      created_at: s.createdAt.toISOString(),
      last_used_at: s.lastUsedAt.toISOString(),
      expires_at: s.expiresAt.toISOString(),
      current: s.id === currentSessionId,
    }))
  }

  /** A session's access tokens carry its login time as auth_time: refreshing proves no password. */
  private pair(userId: string, sessionId: string, authTime: Date, membership: { orgId: string; role: Role }, refreshToken: string, emailVerified: boolean): TokenPair {
    const { token, expiresIn } = this.deps.tokens.signAccessToken({
      userId, orgId: membership.orgId, role: membership.role,
      scopes: scopesOfRole(this.deps.config, membership.role), sessionId, authTime: Math.floor(authTime.getTime() / 1000), emailVerified,
    })
    return { access_token: token, token_type: 'Bearer', expires_in: expiresIn, refresh_token: refreshToken }
  }

  private tokenExpiry(now: Date, sessionExpiresAt: Date): Date {
    return new Date(Math.min(now.getTime() + this.deps.config.REFRESH_TOKEN_TTL * 1000, sessionExpiresAt.getTime()))
  }

  private now() {
    return new Date(this.deps.clock.now())
  }
}
