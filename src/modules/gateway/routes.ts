// What API gateways and resource servers call: forward-auth (nginx
// auth_request, Traefik ForwardAuth, Envoy ext_authz), RFC 7662 introspection,
// RFC 7009 revocation and the OpenID-style discovery document.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'
import type { FastifyReply, FastifyRequest, LogLevel } from 'fastify'
import { insufficientScope } from '../../errors.js'
import { withFormBodies } from '../../plugins/form-body.js'
import { AuthorizationServerMetadataSchema, IntrospectionSchema, SCOPE_QUERY_MAX, TokenBodySchema, VerifyQuerySchema, VerifyResponseSchema } from './schemas.js'
import type { AuthContext } from '../../plugins/authenticate.js'
import { GatewayService } from './service.js'

const TAGS = ['gateway']
const EITHER = ['session', 'api_key'] as ('session' | 'api_key')[]

const tokenBody = {
  content: {
    'application/x-www-form-urlencoded': { schema: TokenBodySchema },
    'application/json': { schema: TokenBodySchema },
  },
}

/** Accept names JSON explicitly (a bare * / * or no Accept gets the headers alone). */
const wantsJson = (request: FastifyRequest) => request.headers.accept?.includes('application/json') === true

const gatewayRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config } = app
  const service = new GatewayService({
    db: app.db, clock: app.clock, accessTokenIdentity: app.accessTokenIdentity, apiKeys: app.apiKeys,
    sessions: app.sessions, events: app.events, audit: app.audit, apiKeyPrefix: config.API_KEY_PREFIX,
  })

  // The hot path of every request behind a gateway: no database round trip for a known credential,
  // and for one verified before (the usual case: a gateway sends the same credential again and
  // again) the whole answer comes from the onRequest hook, without body, validation or handler phases.
  const hotAuth = { methods: EITHER }
  // The answer's headers, rendered once per remembered verification. Only the headers that apply:
  // an API key is its organization's identity, with no user or role.
  const rendered = new WeakMap<AuthContext, Record<string, string>>()
  const headersOf = (auth: AuthContext) => {
    let headers = rendered.get(auth)
    if (!headers) {
      headers = {
        ...(auth.method === 'session' ? { 'x-auth-user-id': auth.userId, 'x-auth-role': auth.role } : { 'x-auth-key-id': auth.keyId }),
        'x-auth-org-id': auth.orgId,
        'x-auth-scopes': auth.scopes.join(' '),
        'x-auth-method': auth.method,
        'cache-control': 'no-store',
      }
      if (Object.isFrozen(auth)) rendered.set(auth, headers)
    }
    return headers
  }
  const answer = (request: FastifyRequest, reply: FastifyReply, auth: AuthContext, scope: string | undefined) => {
    if (scope) {
      const missing = scope.split(/[\s,]+/).filter((s) => s && !auth.scopes.includes(s))
      if (missing.length) throw insufficientScope(missing)
    }
    reply.headers(headersOf(auth))
    // The headers are the answer. A body only when asked for: gateways (Caddy's forward_auth) never
    // read one, and an unread body costs them the keep-alive connection.
    if (!wantsJson(request)) return reply.send()
    return reply.send({
      user_id: auth.userId, org_id: auth.orgId, role: auth.role, scopes: auth.scopes as string[], method: auth.method, key_id: auth.keyId ?? null,
    })
  }
  const verify = (request: FastifyRequest, reply: FastifyReply): void => {
    answer(request, reply, request.auth!, (request.query as Static<typeof VerifyQuerySchema>).scope)
  }
  // A request that this hook does not answer takes the route's full path, which gives every error its answer.
  const answerRemembered = (request: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void): void => {
    const { scope } = request.query as { scope?: unknown }
    try {
      // The query string is not validated yet: anything unusual goes the full way.
      if (scope !== undefined && (typeof scope !== 'string' || scope.length > SCOPE_QUERY_MAX)) return done()
      if (app.authenticateRemembered(request, reply, hotAuth)) {
        answer(request, reply, request.auth!, scope)
        return
      }
      // A flood of made-up or revoked keys is refused here, without the rest of the lifecycle.
      if (!app.refuseAtOnce(request, reply, done)) done()
    } catch (err) {
      done(err as Error)
    }
  }
  // Browser security headers are skipped here: a gateway consumes this answer, no browser renders it.
  const hotPath = { auth: hotAuth, securityHeaders: false as const }
  // Every request behind a gateway comes here: at the default level its request lines stay out of
  // the log (errors are still logged); at debug or trace they are written like any route's.
  const logLevel = (app.log.level === 'info' ? 'warn' : app.log.level) as LogLevel
  app.get('/api/v1/auth/verify', {
    config: hotPath,
    logLevel,
    onRequest: answerRemembered,
    schema: {
      tags: TAGS, operationId: 'verify', summary: 'Forward-auth: 200 with X-Auth-* headers, 401 or 403 otherwise (also HEAD)',
      description: 'Accepts a session access token or an API key (and X-Org-ID). `?scope=a,b` demands scopes (403 INSUFFICIENT_SCOPE). '
        + 'The 200 answer is its headers, with no body unless the request sends `Accept: application/json`. '
        + 'Pass X-Auth-User-Id, X-Auth-Org-Id, X-Auth-Role, X-Auth-Scopes, X-Auth-Method and X-Auth-Key-Id on to the upstream. '
        + 'Envoy ext_authz (HTTP) sends the client\'s method and appends its path: every method and any path below this one answer the same.',
      querystring: VerifyQuerySchema,
      response: { 200: VerifyResponseSchema },
    },
  }, verify)
  // Envoy's check request copies the client's method and appends the original path to path_prefix.
  app.route({
    method: ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    url: '/api/v1/auth/verify',
    config: hotPath,
    logLevel,
    onRequest: answerRemembered,
    schema: { hide: true, querystring: VerifyQuerySchema },
    handler: verify,
  })
  app.route({
    method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    url: '/api/v1/auth/verify/*',
    config: hotPath,
    logLevel,
    onRequest: answerRemembered,
    schema: { hide: true, querystring: VerifyQuerySchema },
    handler: verify,
  })

  await withFormBodies(app, (scope) => {
    scope.post('/api/v1/auth/introspect', {
      config: { auth: { methods: ['api_key'], scopes: ['auth:introspect'], clientAuth: true } },
      schema: {
        tags: TAGS, operationId: 'introspect', summary: 'RFC 7662 token introspection (an API key with auth:introspect)',
        description: 'Access tokens, refresh tokens and API keys of the caller\'s organization. Anything else is exactly {"active": false}.',
        body: tokenBody, response: { 200: IntrospectionSchema },
      },
    }, async (request, reply) => {
      reply.header('cache-control', 'no-store')
      return service.introspect(request, request.auth!, (request.body as { token: string }).token)
    })

    scope.post('/api/v1/auth/revoke', {
      config: { auth: { methods: EITHER, org: false, clientAuth: true } },
      schema: {
        tags: TAGS, operationId: 'revokeToken', summary: 'RFC 7009 revocation: 200 even for an unknown token',
        description: 'An API key with auth:introspect revokes credentials of its organization; a session revokes its own user\'s tokens. '
          + 'Revoking a refresh or access token ends its session.',
        body: tokenBody, response: { 200: Type.Object({}, { additionalProperties: false }) },
      },
    }, async (request) => {
      await service.revoke(request, request.auth!, (request.body as { token: string }).token)
      return {}
    })
  })

  // RFC 8414 authorization server metadata: only what exists, with registered values. There is no
  // authorization endpoint (so no response types) and no ID tokens; the same document answers at the
  // OpenID discovery path for tools that look there.
  const base = (config.PUBLIC_URL || config.JWT_ISSUER).replace(/\/$/, '')
  const clientAuthMethods = ['client_secret_basic', 'client_secret_post']
  const metadata = {
    issuer: config.JWT_ISSUER,
    jwks_uri: `${base}/.well-known/jwks.json`,
    token_endpoint: `${base}/api/v1/oauth/token`,
    introspection_endpoint: `${base}/api/v1/auth/introspect`,
    revocation_endpoint: `${base}/api/v1/auth/revoke`,
    grant_types_supported: ['password', 'refresh_token', 'client_credentials'],
    response_types_supported: [] as string[],
    token_endpoint_auth_methods_supported: [...clientAuthMethods, 'none'],
    introspection_endpoint_auth_methods_supported: clientAuthMethods,
    revocation_endpoint_auth_methods_supported: clientAuthMethods,
    scopes_supported: [...config.SCOPES],
    service_documentation: `${base}/docs`,
  }
  for (const [path, operationId] of [
    ['/.well-known/oauth-authorization-server', 'getAuthorizationServerMetadata'], ['/.well-known/openid-configuration', 'getOpenIdConfiguration'],
  ] as const) {
    app.get(path, {
      schema: {
        tags: ['keys'], operationId, summary: 'RFC 8414 metadata: issuer, JWKS and endpoint URLs, grants and client authentication',
        security: [], response: { 200: AuthorizationServerMetadataSchema },
      },
    }, async (_request, reply) => {
      reply.header('cache-control', 'public, max-age=300')
      return metadata
    })
  }
}

export default gatewayRoutes
