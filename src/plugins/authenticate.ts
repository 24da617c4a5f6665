// Decides who is calling, once, for every route that declares
// `config: { auth: { ... } }`: a session access token or an API key, then the
// organization context (tenancy plugin), then the route's roles and scopes.
import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import type { Role } from '../config.js'
import { AppError, insufficientScope, unauthorized } from '../errors.js'
import { looksLikeApiKey } from '../lib/api-key-format.js'
import { looksLikeRefreshToken } from '../lib/refresh-token.js'
import { ApiKeyVerifier } from '../modules/api-keys/verifier.js'
import { errorResponses } from '../schemas/common.js'
import { apiKeyAuth, type AuthContext, type Identity, type SessionAuth } from './tenancy.js'

export type { AuthContext, SessionAuth } from './tenancy.js'
export type AuthMethod = AuthContext['method']

export interface RouteAuthConfig {
  /** Credential kinds accepted; default: session only. */
  methods?: AuthMethod[]
  /** Session callers must hold one of these roles in the organization context. */
  roles?: Role[]
  /** Every one of these scopes is required (sessions get the scopes of their role). */
  scopes?: string[]
  /** false: the route acts on the caller, not on an organization (no membership check). */
  org?: boolean
}

declare module 'fastify' {
  interface FastifyContextConfig {
    auth?: RouteAuthConfig
  }
  interface FastifyRequest {
    auth: AuthContext | null
  }
  interface FastifyInstance {
    apiKeys: ApiKeyVerifier
    /** Identifies the caller and resolves its organization context (for routes that authenticate by hand). */
    authenticateRequest(request: FastifyRequest, config: RouteAuthConfig): Promise<AuthContext>
  }
}

/** The caller of a session-only route (`methods` left at its default): a user, never a key. */
export function sessionAuth(request: FastifyRequest): SessionAuth {
  const auth = request.auth
  if (auth?.method !== 'session') throw new Error('sessionAuth() on a route that does not require a session')
  return auth
}

const BEARER = /^Bearer[ \t]+([^\s]+)[ \t]*$/i
const INVALID_TOKEN = 'Invalid or expired token'
const INVALID_KEY = 'Invalid or missing API key'

export default fp(async (app) => {
  const { config } = app
  const apiKeys = new ApiKeyVerifier({
    db: app.db, clock: app.clock, prefix: config.API_KEY_PREFIX, maxEntries: config.API_KEY_CACHE_MAX, log: app.log, metrics: app.metrics,
  })
  app.events.subscribe((event) => {
    if (event.type === 'api_keys.changed') apiKeys.evict(event.ids)
  })
  await apiKeys.resync()
  app.events.onResync(() => apiKeys.resync())
  app.decorate('apiKeys', apiKeys)
  app.decorateRequest('auth', null)

  /** The credential of the request: X-API-Key, else the Authorization bearer (never the query string). */
  function credentialOf(request: FastifyRequest): { kind: AuthMethod; value: string } {
    const apiKeyHeader = request.headers['x-api-key']
    if (typeof apiKeyHeader === 'string') return { kind: 'api_key', value: apiKeyHeader.trim() }
    const header = request.headers.authorization
    const match = typeof header === 'string' ? BEARER.exec(header) : null
    if (!match) throw unauthorized('No bearer token')
    const value = match[1]!
    return { kind: looksLikeApiKey(config.API_KEY_PREFIX, value) ? 'api_key' : 'session', value }
  }

  function credentialKind(request: FastifyRequest): AuthMethod | 'none' {
    try { return credentialOf(request).kind } catch { return 'none' }
  }

  async function identify(request: FastifyRequest): Promise<Identity> {
    const credential = credentialOf(request)
    if (credential.kind === 'api_key') {
      const key = await apiKeys.verify(credential.value)
      if (!key) throw unauthorized(INVALID_KEY)
      return { method: 'api_key', keyId: key.id, orgId: key.orgId, scopes: key.scopes, createdByUserId: key.createdByUserId }
    }
    if (looksLikeRefreshToken(credential.value)) throw unauthorized('A refresh token is not an access token')
    const claims = await app.tokens.verifyAccessToken(request, credential.value)
    if (app.revocation.isSessionRevoked(claims.sid)) throw unauthorized(INVALID_TOKEN)
    return {
      method: 'session', userId: claims.sub, sessionId: claims.sid, orgId: claims.org_id, role: claims.org_role as Role, authTime: claims.auth_time,
    }
  }

  async function authenticateRequest(request: FastifyRequest, route: RouteAuthConfig): Promise<AuthContext> {
    const identity = await identify(request)
    if (!(route.methods ?? ['session']).includes(identity.method)) {
      throw new AppError('FORBIDDEN', identity.method === 'api_key' ? 'This operation needs a user session' : 'This operation needs an API key')
    }
    const auth: AuthContext = route.org === false
      ? identity.method === 'session'
        ? { ...identity, scopes: [] }
        : apiKeyAuth(identity)
      : await app.tenancy.resolveOrgContext(request, identity)
    if (route.roles && auth.method === 'session' && !route.roles.includes(auth.role!)) {
      throw new AppError('FORBIDDEN', `Requires the ${route.roles.join(' or ')} role`)
    }
    const missing = (route.scopes ?? []).filter((s) => !auth.scopes.includes(s))
    if (missing.length) {
      throw insufficientScope(missing)
    }
    return auth
  }
  app.decorate('authenticateRequest', authenticateRequest)

  async function authenticateOrCount(request: FastifyRequest, routeAuth: RouteAuthConfig) {
    try {
      request.auth = await authenticateRequest(request, routeAuth)
      app.metrics.authOutcome(request.auth.method, 'success')
    } catch (err) {
      app.metrics.authOutcome(credentialKind(request), 'failure')
      // A failed credential counts against its client (429 past RATE_LIMIT_AUTH_FAILURES).
      if (err instanceof AppError && err.statusCode === 401) await app.recordAuthFailure(request)
      throw err
    }
  }

  // Route-level config, not conditionals: a route opts in, and its contract
  // gains the 401/403 responses and the security requirement. The caller is
  // identified before the body is read (an unauthenticated caller learns
  // nothing from validation and costs no parsing), and again once a body has
  // arrived: a body can be held back for as long as REQUEST_TIMEOUT, and the
  // authority that acts is the one the caller holds when it acts (a session
  // revoked, a key revoked or a role lowered meanwhile counts).
  app.addHook('onRoute', (route) => {
    const routeAuth = route.config?.auth
    if (!routeAuth) return
    route.preParsing = [async (request: FastifyRequest, _reply: unknown, payload: unknown) => {
      await authenticateOrCount(request, routeAuth)
      return payload
    }, ...(route.preParsing ? [route.preParsing].flat() : [])] as typeof route.preParsing
    route.preHandler = [async (request: FastifyRequest) => {
      if (request.body !== undefined && request.body !== null) await authenticateOrCount(request, routeAuth)
    }, ...(route.preHandler ? [route.preHandler].flat() : [])] as typeof route.preHandler
    if (route.schema) {
      const methods = routeAuth.methods ?? ['session']
      // Bearer carries a session token or an API key; X-API-Key only a key.
      route.schema.security = methods.includes('api_key') ? [{ bearerAuth: [] }, { apiKeyHeader: [] }] : [{ bearerAuth: [] }]
      route.schema.response = { ...errorResponses(401, 403), ...(route.schema.response as object) }
    }
  })
}, { name: 'authenticate', dependencies: ['tokens', 'revocation', 'tenancy', 'events', 'metrics', 'rate-limit'] })
