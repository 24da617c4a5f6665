// Decides who is calling, once, for every route that declares
// `config: { auth: { ... } }`: a session access token or an API key, then the
// organization context (tenancy plugin), then the route's roles and scopes.
import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Role } from '../config.js'
import { AppError, INVALID_TOKEN_CHALLENGE, insufficientScope, missingCredential, unauthorized } from '../errors.js'
import { sendRefusal } from './errors.js'
import { credentialOf, type Credential } from '../lib/credentials.js'
import { VerifiedCredentials, type CredentialKey } from '../lib/verified-credentials.js'
import { byIp } from './rate-limit.js'
import { looksLikeRefreshToken } from '../lib/refresh-token.js'
import { ApiKeyVerifier, type VerifiedApiKey } from '../modules/api-keys/verifier.js'
import type { AccessTokenClaims } from './tokens.js'
import { resyncLookBackMs } from './events.js'
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
  /** An OAuth client endpoint: client_id + client_secret may come in the form body (client_secret_post). */
  clientAuth?: boolean
  /** Platform administration: the contract names its own scheme (the flag itself is checked by the admin service). */
  superadmin?: boolean
}

declare module 'fastify' {
  interface FastifyContextConfig {
    auth?: RouteAuthConfig
  }
  interface FastifyRequest {
    auth: AuthContext | null
    /** Whose RATE_LIMIT_GLOBAL budget the request spends, once its caller is identified. */
    budgetKey: string | null
  }
  interface FastifyInstance {
    apiKeys: ApiKeyVerifier
    /** Identifies the caller and resolves its organization context (for routes that authenticate by hand). */
    authenticateRequest(request: FastifyRequest, config: RouteAuthConfig): Promise<AuthContext>
    /** Authenticates from a remembered verification, synchronously, or returns false (see the plugin). */
    authenticateRemembered(request: FastifyRequest, reply: FastifyReply, route: RouteAuthConfig, budgeted?: boolean): boolean
    /** Refuses an API key known to be invalid without a lookup (counted as a failure); false when it cannot tell. */
    refuseAtOnce(request: FastifyRequest, reply: FastifyReply, done: (err: Error) => void): boolean
    /** A verified, live access token and who it speaks for (401 otherwise). */
    accessTokenIdentity(request: FastifyRequest, token: string): Promise<{ claims: AccessTokenClaims; identity: Identity }>
  }
}

/** Whether a body followed the headers (however it parsed: `null` and `{}` are bodies too). */
function hadBody(request: FastifyRequest): boolean {
  const length = request.headers['content-length']
  return request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

/** The caller of a session-only route (`methods` left at its default): a user, never a key. */
export function sessionAuth(request: FastifyRequest): SessionAuth {
  const auth = request.auth
  if (auth?.method !== 'session') throw new Error('sessionAuth() on a route that does not require a session')
  return auth
}

const INVALID_TOKEN = 'Invalid or expired token'
const INVALID_KEY = 'Invalid or missing API key'

export default fp(async (app) => {
  const { config } = app
  const apiKeys = new ApiKeyVerifier({
    db: app.db, clock: app.clock, prefix: config.API_KEY_PREFIX, maxEntries: config.API_KEY_CACHE_MAX, log: app.log, metrics: app.metrics,
    lookBackMs: resyncLookBackMs(config),
  })
  const verifiedCredentials = new VerifiedCredentials(config.API_KEY_CACHE_MAX)
  app.events.subscribe((event) => {
    if (event.type === 'api_keys.changed') apiKeys.evict(event.ids)
    if (event.type === 'api_keys.changed' || event.type === 'memberships.changed' || event.type === 'keys.rotated') verifiedCredentials.clear()
  })
  await apiKeys.resync()
  app.events.onResync(() => apiKeys.resync())
  // Whatever a missed notification would have changed, once the caches it is built from are fresh.
  app.events.onResynced(() => verifiedCredentials.clear())
  app.decorate('apiKeys', apiKeys)
  app.decorateRequest('auth', null)
  app.decorateRequest('budgetKey', null)

  /** The request's credential (never from the query string; from the body only where the route allows client_secret_post). */
  const credentialOfRequest = (request: FastifyRequest, fromBody = false) => credentialOf(config.API_KEY_PREFIX, {
    authorization: request.headers.authorization, apiKeyHeader: request.headers['x-api-key'], body: fromBody ? request.body : undefined,
  })

  function credentialKind(request: FastifyRequest): AuthMethod | 'none' {
    return credentialOfRequest(request, true)?.kind ?? 'none'
  }

  const keyIdentity = (key: VerifiedApiKey): Identity =>
    ({ method: 'api_key', keyId: key.id, orgId: key.orgId, scopes: key.scopes, createdByUserId: key.createdByUserId, expiresAt: key.expiresAt })

  // A client-credentials token's scopes, split once per verified token (its claims object is memoised).
  const tokenScopes = new WeakMap<AccessTokenClaims, readonly string[]>()
  const scopesOf = (claims: AccessTokenClaims) => {
    let scopes = tokenScopes.get(claims)
    if (!scopes) tokenScopes.set(claims, scopes = Object.freeze(claims.scope ? claims.scope.split(' ') : []))
    return scopes
  }

  /**
   * A verified access token that is still live, and who it speaks for: a session's user (the
   * session not revoked), or, for a client-credentials token, the API key it was issued to (the
   * key still live: revoking the key ends its tokens on every instance within a second).
   */
  async function accessTokenIdentity(request: FastifyRequest, token: string): Promise<{ claims: AccessTokenClaims; identity: Identity }> {
    const claims = await app.tokens.verifyAccessToken(request, token)
    if (claims.sid === undefined) {
      const key = await apiKeys.verifyById(claims.client_id)
      if (!key || key.orgId !== claims.org_id || claims.sub !== key.id) throw unauthorized(INVALID_TOKEN)
      return { claims, identity: { ...keyIdentity(key), scopes: scopesOf(claims) } as Identity }
    }
    if (claims.auth_time === undefined || app.revocation.isSessionRevoked(claims.sid)) throw unauthorized(INVALID_TOKEN)
    const identity: Identity = {
      method: 'session', userId: claims.sub, sessionId: claims.sid, orgId: claims.org_id, role: claims.org_role as Role, authTime: claims.auth_time,
    }
    return { claims, identity }
  }
  app.decorate('accessTokenIdentity', accessTokenIdentity)

  /** Who the credential is, and until when (system clock, ms) it is valid on its own: an access token's expiry. */
  async function identify(request: FastifyRequest, credential: Credential): Promise<{ identity: Identity; tokenExpiresAt: number }> {
    const found = await identifyCredential(request, credential)
    checkClient(credential, found.identity.method === 'api_key' ? found.identity.keyId : undefined)
    // Known now: whatever the route decides next (403 included), the request spends this caller's budget.
    request.budgetKey = budgetKey(found.identity)
    return found
  }

  async function identifyCredential(request: FastifyRequest, credential: Credential): Promise<{ identity: Identity; tokenExpiresAt: number }> {
    if (credential.kind === 'api_key') {
      const key = await apiKeys.verify(credential.value)
      if (!key) throw unauthorized(INVALID_KEY)
      return { identity: keyIdentity(key), tokenExpiresAt: Infinity }
    }
    if (looksLikeRefreshToken(credential.value)) throw unauthorized('A refresh token is not an access token')
    const { claims, identity } = await accessTokenIdentity(request, credential.value)
    return { identity, tokenExpiresAt: app.tokens.usableUntil(claims) }
  }

  /** As an OAuth client (Basic or form), the client_id must be the key's own id: checked before anything else. */
  function checkClient(credential: Credential, keyId: string | undefined) {
    if (credential.kind === 'api_key' && credential.clientId !== undefined && credential.clientId !== keyId) throw unauthorized(INVALID_KEY)
  }

  /** A remembered verification of this credential in this organization that still holds, or undefined. */
  function stillVerified(cacheKey: CredentialKey, kind: Credential['kind']): AuthContext | undefined {
    const hit = verifiedCredentials.get(cacheKey)
    // Remembered as the kind it was verified as: an access token in X-API-Key is not a key.
    if (!hit || hit.kind !== kind) return undefined
    const { auth } = hit
    if (hit.ring !== app.keyRing.generation || hit.tokenExpiresAt <= Date.now()
      || (hit.keyExpiresAt !== null && hit.keyExpiresAt <= app.clock.now())
      || (auth.method === 'session' && app.revocation.isSessionRevoked(auth.sessionId))) {
      verifiedCredentials.forget(cacheKey)
      return undefined
    }
    if (auth.method === 'api_key') {
      apiKeys.noteUse(auth.keyId)
      app.metrics.apiKeyCache('hit')
    }
    return auth
  }

  /** The caller in the organization it asks for: remembered, or verified now (and then remembered). */
  async function resolveCaller(request: FastifyRequest, credential: Credential, route: RouteAuthConfig): Promise<AuthContext> {
    const cacheKey = VerifiedCredentials.keyOf(credential.value, app.tenancy.requestedOrg(request))
    const remembered = stillVerified(cacheKey, credential.kind)
    if (remembered) {
      checkClient(credential, remembered.keyId)
      request.budgetKey = budgetKey(remembered)
      checkMethod(route, remembered.method)
      return remembered
    }
    const version = verifiedCredentials.version
    const ring = app.keyRing.generation
    const { identity, tokenExpiresAt } = await identify(request, credential)
    checkMethod(route, identity.method)
    const auth = await app.tenancy.resolveOrgContext(request, identity)
    verifiedCredentials.remember(cacheKey, {
      kind: credential.kind, auth: Object.freeze(auth), ring, tokenExpiresAt, keyExpiresAt: identity.method === 'api_key' ? identity.expiresAt : null,
    }, version)
    return auth
  }

  function checkMethod(route: RouteAuthConfig, method: AuthMethod) {
    if (!(route.methods ?? ['session']).includes(method)) {
      throw new AppError('FORBIDDEN', method === 'api_key' ? 'This operation needs a user session' : 'This operation needs an API key')
    }
  }

  async function authenticateRequest(request: FastifyRequest, route: RouteAuthConfig): Promise<AuthContext> {
    const credential = credentialOfRequest(request, route.clientAuth === true)
    if (!credential) throw missingCredential()
    let auth: AuthContext
    if (route.org === false) {
      // Acting on the caller itself: no organization, so no membership is required.
      const { identity } = await identify(request, credential)
      checkMethod(route, identity.method)
      auth = identity.method === 'session' ? { ...identity, scopes: [] } : apiKeyAuth(identity)
    } else {
      auth = await resolveCaller(request, credential, route)
    }
    if (route.roles && auth.method === 'session' && !route.roles.includes(auth.role)) {
      throw new AppError('FORBIDDEN', `Requires the ${route.roles.join(' or ')} role`)
    }
    if (route.scopes) {
      const missing = route.scopes.filter((s) => !auth.scopes.includes(s))
      if (missing.length) throw insufficientScope(missing)
    }
    return auth
  }
  app.decorate('authenticateRequest', authenticateRequest)

  /** Whose budget a request spends: its session's or its API key's (a client-credentials token's is its key's). */
  const budgetKey = (caller: AuthContext | Identity) => caller.method === 'session' ? `ses:${caller.sessionId}` : `key:${caller.keyId}`

  async function authenticateOrCount(request: FastifyRequest, reply: FastifyReply, routeAuth: RouteAuthConfig, budgeted: boolean) {
    const first = request.auth === null
    try {
      request.auth = await authenticateRequest(request, routeAuth)
      app.metrics.authOutcome(request.auth.method, 'success')
    } catch (err) {
      const kind = credentialKind(request) // parsed once: this is the path a flood of bad credentials takes
      app.metrics.authOutcome(kind, 'failure')
      // A presented credential that failed counts against its client (429 past RATE_LIMIT_AUTH_FAILURES).
      // Any other refusal spends a budget like an answer does: the caller's once it is known (a 403
      // for another organization, a role or scope it lacks), else the client's (no credential at all).
      if (err instanceof AppError && err.statusCode === 401 && kind !== 'none') await app.recordAuthFailure(request)
      else if (first && budgeted) app.spendBudget(reply, request.budgetKey ?? byIp(request))
      throw err
    }
    if (first && budgeted) app.spendBudget(reply, budgetKey(request.auth))
  }

  /**
   * The synchronous path: when the request's credential was verified before and still holds,
   * and the route's checks pass, authenticates it (request.auth, the outcome metric, the budget
   * once per request) and returns true. Anything else returns false, for the full path to decide
   * (and to give every refusal its answer).
   */
  function authenticateRemembered(request: FastifyRequest, reply: FastifyReply, route: RouteAuthConfig, budgeted = true): boolean {
    if (route.clientAuth || route.org === false) return false
    const credential = credentialOfRequest(request)
    if (!credential || (credential.kind === 'api_key' && credential.clientId !== undefined)) return false
    const auth = stillVerified(VerifiedCredentials.keyOf(credential.value, app.tenancy.requestedOrg(request)), credential.kind)
    if (!auth || !(route.methods ?? ['session']).includes(auth.method)) return false
    if (route.roles && (auth.method !== 'session' || !route.roles.includes(auth.role))) return false
    if (route.scopes && !route.scopes.every((s) => auth.scopes.includes(s))) return false
    const first = request.auth === null
    request.auth = auth
    app.metrics.authOutcome(auth.method, 'success')
    if (first && budgeted) app.spendBudget(reply, budgetKey(auth))
    return true
  }
  app.decorate('authenticateRemembered', authenticateRemembered)

  /**
   * The refusal without a lookup: an API key this instance already knows to be invalid (malformed,
   * unknown, revoked or expired) is counted as a failure like any other and refused at once: the
   * 401 is answered here (`sendRefusal`, the error handler's answer without raising an error), or
   * `done` gets the 429 past RATE_LIMIT_AUTH_FAILURES. False when the full path must decide.
   */
  function refuseAtOnce(request: FastifyRequest, reply: FastifyReply, done: (err: Error) => void): boolean {
    const credential = credentialOfRequest(request)
    if (credential?.kind !== 'api_key' || !apiKeys.knownInvalid(credential.value)) return false
    app.metrics.authOutcome('api_key', 'failure')
    const refuse = () => { sendRefusal(request, reply, 'UNAUTHORIZED', INVALID_KEY, INVALID_TOKEN_CHALLENGE) }
    let counted: void | Promise<void>
    try {
      counted = app.recordAuthFailure(request)
    } catch (err) {
      done(err as Error)
      return true
    }
    if (counted) counted.then(refuse, done)
    else refuse()
    return true
  }
  app.decorate('refuseAtOnce', refuseAtOnce)

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
    // A route with a rate limit of its own does not also spend from the caller's budget.
    const budgeted = !route.config?.rateLimit
    // Callback-style: a remembered credential is answered synchronously, with no promise.
    const authenticate = (request: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => {
      try {
        if (authenticateRemembered(request, reply, routeAuth, budgeted)) return done()
      } catch (err) {
        return done(err as Error)
      }
      authenticateOrCount(request, reply, routeAuth, budgeted).then(() => done(), done)
    }
    route.preParsing = [(request: FastifyRequest, reply: FastifyReply, payload: unknown, done: (err: Error | null, payload?: unknown) => void) => {
      // An OAuth client may authenticate in the body (client_secret_post): then only once it is read.
      if (routeAuth.clientAuth && !credentialOfRequest(request)) return done(null, payload)
      authenticate(request, reply, (err) => done(err ?? null, payload))
    }, ...(route.preParsing ? [route.preParsing].flat() : [])] as typeof route.preParsing
    route.preHandler = [(request: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => {
      if (request.auth !== null && !hadBody(request)) return done()
      authenticate(request, reply, done)
    }, ...(route.preHandler ? [route.preHandler].flat() : [])] as typeof route.preHandler
    if (route.schema) {
      const methods = routeAuth.methods ?? ['session']
      // Bearer carries a session token or an API key; X-API-Key only a key.
      route.schema.security = routeAuth.superadmin ? [{ superadminAuth: [] }]
        : methods.includes('api_key') ? [{ bearerAuth: [] }, { apiKeyHeader: [] }] : [{ bearerAuth: [] }]
      route.schema.response = { ...errorResponses(401, 403), ...(route.schema.response as object) }
    }
  })
}, { name: 'authenticate', dependencies: ['tokens', 'revocation', 'tenancy', 'events', 'metrics', 'rate-limit'] })
