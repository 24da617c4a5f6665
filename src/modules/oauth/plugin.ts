// The OAuth 2.0 token endpoint (RFC 6749), wired as one module: service and
// routes (its shared schemas are registered with the contract's, in plugins/openapi). Errors here are RFC 6749 §5.2 bodies ({error, error_description}),
// not the platform's error shape, because OAuth clients parse these.
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { AppError, type ErrorCode } from '../../errors.js'
import { basicClient } from '../../lib/credentials.js'
import { withFormBodies } from '../../plugins/form-body.js'
import { LoginTokensSchema, MfaRequiredSchema } from '../auth/schemas.js'
import { clientMeta } from '../auth/routes.js'
import { ClientTokenSchema, OAuthErrorSchema, OAuthTokenPairSchema, TokenRequestSchema, type TokenRequest } from './schemas.js'
import { OAuthError, OAuthTokenService, invalidClient, type OAuthClient, type OAuthErrorCode } from './service.js'

const GRANT_ERRORS: Partial<Record<ErrorCode, OAuthErrorCode>> = {
  INVALID_CREDENTIALS: 'invalid_grant', REFRESH_FAILED: 'invalid_grant', REFRESH_TOKEN_REUSED: 'invalid_grant',
  ACCOUNT_LOCKED: 'invalid_grant', FORBIDDEN: 'invalid_grant', EMAIL_NOT_VERIFIED: 'invalid_grant', UNAUTHORIZED: 'invalid_client',
  VALIDATION_ERROR: 'invalid_request', BAD_REQUEST: 'invalid_request', UNSUPPORTED_MEDIA_TYPE: 'invalid_request',
  PAYLOAD_TOO_LARGE: 'invalid_request', RATE_LIMITED: 'temporarily_unavailable', SERVICE_UNAVAILABLE: 'temporarily_unavailable',
}

/** Any error of the token endpoint as an RFC 6749 §5.2 answer. */
function toOAuthError(error: FastifyError): OAuthError {
  if (error instanceof OAuthError) return error
  if (error.validation) return new OAuthError(400, 'invalid_request', `Invalid request: ${error.validation[0]?.message ?? 'malformed'}`)
  if (error instanceof AppError) {
    const code = GRANT_ERRORS[error.code]
    if (code === 'invalid_client') return invalidClient()
    // A grant the server refuses is 400 invalid_grant, whatever status the same refusal has elsewhere (RFC 6749 §5.2).
    if (code) return new OAuthError(code === 'invalid_grant' || code === 'invalid_request' ? 400 : error.statusCode, code, error.message, error.headers)
  }
  const status = error.statusCode ?? 500
  if (status === 413 || status === 415 || status === 400) return new OAuthError(400, 'invalid_request', 'Malformed request')
  return new OAuthError(500, 'server_error', 'Internal server error')
}

/** The client's authentication: HTTP Basic (client_secret_basic), or client_id/client_secret in the form (client_secret_post). */
function clientOf(request: FastifyRequest, body: TokenRequest): OAuthClient {
  const basic = basicClient(request.headers.authorization)
  if (basic && (body.client_id !== undefined || body.client_secret !== undefined)) {
    throw new OAuthError(400, 'invalid_request', 'Use one client authentication method, not two') // RFC 6749 §2.3
  }
  if (basic) return { clientId: basic.clientId, secret: basic.secret }
  // Any other Authorization (a Bearer token a generic client adds) authenticates no client here.
  return { clientId: body.client_id, secret: body.client_secret }
}

async function oauth(instance: FastifyInstance) {
  const app = instance.withTypeProvider<TypeBoxTypeProvider>()
  const { config } = app
  const service = new OAuthTokenService({ config, auth: app.authService, sessions: app.sessions, apiKeys: app.apiKeys, tokens: app.tokens })
  const oauthError = Type.Ref(OAuthErrorSchema)

  await withFormBodies(app, (scope) => {
    scope.post('/api/v1/oauth/token', {
      config: { oauthErrors: true },
      schema: {
        tags: ['oauth'], operationId: 'token', summary: 'OAuth 2.0 token endpoint: password, refresh_token and client_credentials grants',
        description: 'RFC 6749, form-encoded. `client_credentials`: `client_id` = an API key id, `client_secret` = the key, by HTTP Basic '
          + '(client_secret_basic) or in the form (client_secret_post); the answer is an access token for the key\'s organization and scopes '
          + '(`scope` narrows), valid CLIENT_TOKEN_TTL seconds and verifiable with the JWKS alone. `password` and `refresh_token` are the '
          + 'public client\'s (`client_id` absent or OAUTH_CLIENT_ID) and follow /auth/login and /auth/refresh, 2FA included. '
          + 'Errors are RFC 6749 §5.2 bodies.',
        security: [{}, { clientBasic: [] }],
        body: { content: { 'application/x-www-form-urlencoded': { schema: TokenRequestSchema }, 'application/json': { schema: TokenRequestSchema } } },
        response: {
          200: Type.Union([Type.Ref(ClientTokenSchema), Type.Ref(LoginTokensSchema), Type.Ref(MfaRequiredSchema), Type.Ref(OAuthTokenPairSchema)]),
          400: oauthError, 401: oauthError, 429: oauthError, 500: oauthError, 503: oauthError,
        },
      },
      errorHandler: (error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
        const oauthErr = toOAuthError(error)
        if (oauthErr.status >= 500) request.log.error({ err: error }, 'token request failed')
        return reply.code(oauthErr.status).headers({ ...oauthErr.headers, 'cache-control': 'no-store', pragma: 'no-cache' })
          .type('application/json; charset=utf-8').send({ error: oauthErr.error, error_description: oauthErr.description })
      },
    }, async (request, reply) => {
      const body = request.body as TokenRequest
      reply.headers({ 'cache-control': 'no-store', pragma: 'no-cache' })
      // The per-client limits of the operations the grants stand for.
      if (body.grant_type === 'password') await app.consumeClientLimit(request, 'oauth-password', config.RATE_LIMIT_LOGIN)
      if (body.grant_type === 'refresh_token') await app.consumeClientLimit(request, 'oauth-refresh', config.RATE_LIMIT_REFRESH)
      try {
        return await service.token(body, clientOf(request, body), clientMeta(request))
      } catch (err) {
        // A failed client authentication is a failed credential of this client, like a bad key anywhere.
        if (err instanceof OAuthError && err.error === 'invalid_client') await app.recordAuthFailure(request)
        throw err
      }
    })
  })
}

export default oauth
