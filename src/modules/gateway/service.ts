// What gateways and resource servers ask: RFC 7662 introspection and RFC 7009
// revocation for the three credential kinds. Another organization's token is
// simply inactive (and left alone): nothing crosses tenants.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { isDatabaseUnavailable, pgErrorOf } from '../../db/errors.js'
import type { Database } from '../../db/client.js'
import { looksLikeApiKey } from '../../lib/api-key-format.js'
import type { Clock } from '../../lib/clock.js'
import { hashRefreshToken, looksLikeRefreshToken } from '../../lib/refresh-token.js'
import type { AuthContext } from '../../plugins/tenancy.js'
import type { EventBus } from '../../plugins/events.js'
import { actor, type AuditLog } from '../audit/service.js'
import type { ApiKeyVerifier } from '../api-keys/verifier.js'
import * as apiKeyRepo from '../api-keys/repository.js'
import type { SessionService } from '../sessions/service.js'
import * as sessionRepo from '../sessions/repository.js'

export interface GatewayServiceDeps {
  db: Database
  clock: Clock
  accessTokenIdentity: FastifyInstance['accessTokenIdentity']
  apiKeys: ApiKeyVerifier
  sessions: SessionService
  events: EventBus
  audit: AuditLog
  apiKeyPrefix: string
}

type Introspection = { active: false } | ({ active: true } & Record<string, string | number | boolean>)
const INACTIVE = { active: false } as const

/** A credential's owner, as far as revocation is concerned. */
type Found =
  | { kind: 'access_token'; userId: string; orgId: string; sessionId: string }
  | { kind: 'refresh_token'; userId: string; orgId: string; sessionId: string }
  | { kind: 'api_key'; orgId: string; keyId: string }

export class GatewayService {
  constructor(private readonly deps: GatewayServiceDeps) {}

  /** RFC 7662 for a caller (an API key with auth:introspect) of one organization. */
  async introspect(request: FastifyRequest, caller: AuthContext, token: string): Promise<Introspection> {
    const { deps } = this
    if (looksLikeApiKey(deps.apiKeyPrefix, token)) {
      const key = await deps.apiKeys.verify(token)
      if (!key || key.orgId !== caller.orgId) return INACTIVE
      return {
        // The key is the subject (and the OAuth client): it acts as its organization, not as its creator.
        active: true, token_type: 'api_key', key_id: key.id, org_id: key.orgId, scope: key.scopes.join(' '),
        sub: key.id, ...(key.expiresAt ? { exp: Math.floor(key.expiresAt / 1000) } : {}),
      }
    }
    if (looksLikeRefreshToken(token)) {
      const found = await sessionRepo.findRefreshToken(deps.db, hashRefreshToken(token))
      const now = deps.clock.now()
      if (!found || found.token.usedAt || found.token.expiresAt.getTime() <= now || found.session.revokedAt
        || found.session.expiresAt.getTime() <= now || found.session.orgId !== caller.orgId) return INACTIVE
      return {
        active: true, token_type: 'refresh_token', sub: found.session.userId, org_id: found.session.orgId,
        sid: found.session.id, exp: Math.floor(found.token.expiresAt.getTime() / 1000),
        iat: Math.floor(found.token.createdAt.getTime() / 1000),
      }
    }
    const claims = await this.verifiedAccessToken(request, token)
    if (!claims || claims.org_id !== caller.orgId) return INACTIVE
    return { active: true, token_type: 'access_token', ...claims }
  }

  /**
   * RFC 7009. A key may revoke itself (a client its own credential); a key with auth:introspect may
   * revoke sessions (refresh and access tokens) of its organization, and another API key only if
   * it also holds api_keys:write, as DELETE /api-keys/{id} requires; a session may revoke its own
   * user's tokens. Anything else is ignored (still 200).
   */
  async revoke(request: FastifyRequest, caller: AuthContext, token: string): Promise<void> {
    const found = await this.find(request, token)
    if (!found) return
    const mayRevoke = caller.method === 'api_key'
      ? found.orgId === caller.orgId && (found.kind === 'api_key'
        ? found.keyId === caller.keyId || (caller.scopes.includes('auth:introspect') && caller.scopes.includes('api_keys:write'))
        : caller.scopes.includes('auth:introspect'))
      : found.kind !== 'api_key' && found.userId === caller.userId
    if (!mayRevoke) return
    if (found.kind === 'api_key') {
      if (await apiKeyRepo.revokeApiKey(this.deps.db, found.orgId, found.keyId, new Date(this.deps.clock.now()))) {
        await this.deps.events.publish({ type: 'api_keys.changed', ids: [found.keyId] })
        this.deps.audit.record({ orgId: found.orgId, action: 'api_key.revoked', ...actor(caller), targetType: 'api_key', targetId: found.keyId, metadata: { via: 'rfc7009' } })
      }
      return
    }
    // Revoking a refresh or access token ends its session (RFC 7009 §2.1: the whole grant).
    await this.deps.sessions.revoke(found.userId, [found.sessionId])
  }

  private async find(request: FastifyRequest, token: string): Promise<Found | undefined> {
    if (looksLikeApiKey(this.deps.apiKeyPrefix, token)) {
      const key = await this.deps.apiKeys.verify(token)
      return key ? { kind: 'api_key', orgId: key.orgId, keyId: key.id } : undefined
    }
    if (looksLikeRefreshToken(token)) {
      const found = await sessionRepo.findRefreshToken(this.deps.db, hashRefreshToken(token))
      return found ? { kind: 'refresh_token', userId: found.session.userId, orgId: found.session.orgId, sessionId: found.session.id } : undefined
    }
    const claims = await this.verifiedAccessToken(request, token)
    // A client-credentials token has no session to end (revoke its key for that); it is left to expire.
    return claims?.sid ? { kind: 'access_token', userId: claims.sub, orgId: claims.org_id, sessionId: claims.sid } : undefined
  }

  /** The claims of a live access token (a session's, not revoked; or a client's, its key live), else undefined. */
  private async verifiedAccessToken(request: FastifyRequest, token: string) {
    try {
      return (await this.deps.accessTokenIdentity(request, token)).claims
    } catch (err) {
      // A database failure is a 503 (or a 500), not "inactive" (found in review).
      if (isDatabaseUnavailable(err) || pgErrorOf(err)) throw err
      return undefined
    }
  }
}
