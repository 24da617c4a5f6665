// The contract: @fastify/swagger builds OpenAPI 3.1 from the route schemas;
// every operation gains the error responses the platform can always return.
import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifySchema } from 'fastify'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ErrorSchema, errorResponses } from '../schemas/common.js'
import { isOptionalBody } from '../schemas/validator.js'
import { AppError } from '../errors.js'
import { PASSWORD_MAX_LENGTH } from '../lib/password-policy.js'
import { SHARED_SCHEMAS } from '../modules/auth/schemas.js'
import { SESSION_SHARED_SCHEMAS } from '../modules/sessions/schemas.js'
import { ORGANIZATION_SHARED_SCHEMAS } from '../modules/organizations/schemas.js'
import { INVITATION_SHARED_SCHEMAS } from '../modules/invitations/schemas.js'
import { ADMIN_SHARED_SCHEMAS } from '../modules/admin/schemas.js'
import { API_KEY_SHARED_SCHEMAS } from '../modules/api-keys/schemas.js'
import { AUDIT_SHARED_SCHEMAS } from '../modules/audit/routes.js'
import { OAUTH_SHARED_SCHEMAS } from '../modules/oauth/schemas.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route answers errors in its own standard's shape and declares them itself (the OAuth token endpoint). */
    oauthErrors?: boolean
  }
  interface FastifyInstance {
    /** The OpenAPI document as YAML, exactly what `npm run openapi` writes. */
    openapiYaml(): string
  }
}

interface Operation {
  operationId?: string
  requestBody?: { required?: boolean }
  responses?: Record<string, { headers?: Record<string, unknown> }>
}

const header = (name: string) => ({ $ref: `#/components/headers/${name}` })

/** Response headers, declared where they are sent (SPEC §3, RFC 6750, IETF RateLimit fields). */
const RESPONSE_HEADERS = {
  'RateLimit-Limit': { description: 'Requests allowed in the window of the limit that applies', schema: { type: 'integer', format: 'int32', minimum: 0, maximum: 100_000_000 } },
  'RateLimit-Remaining': { description: 'Requests left in the window', schema: { type: 'integer', format: 'int32', minimum: 0, maximum: 100_000_000 } },
  'RateLimit-Reset': { description: 'Seconds until the window resets', schema: { type: 'integer', format: 'int32', minimum: 0, maximum: 86_400 } },
  'Retry-After': { description: 'Seconds to wait before retrying', schema: { type: 'integer', format: 'int32', minimum: 0, maximum: 86_400 } },
  'WWW-Authenticate': {
    description: 'The Bearer challenge: bare when no credential was sent, `error="invalid_token"` when one failed (RFC 6750 §3.1); Basic at the token endpoint',
    schema: { type: 'string', maxLength: 200 },
  },
  'X-Request-Id': { description: 'The request id (echoed when the client sent a sane one)', schema: { type: 'string', maxLength: 128, pattern: '^[A-Za-z0-9._:-]{1,128}$' } },
} as const

/** Every answer carries the rate-limit fields (the per-credential limit applies everywhere) and its request id; errors say when to retry. */
function declareResponseHeaders(op: Operation) {
  for (const [status, response] of Object.entries(op.responses ?? {})) {
    const code = Number(status)
    const headers: Record<string, unknown> = { 'X-Request-Id': header('X-Request-Id') }
    if (code < 500) Object.assign(headers, { 'RateLimit-Limit': header('RateLimit-Limit'), 'RateLimit-Remaining': header('RateLimit-Remaining'), 'RateLimit-Reset': header('RateLimit-Reset') })
    if (code === 429 || code === 423 || code === 503) headers['Retry-After'] = header('Retry-After')
    if (code === 401) headers['WWW-Authenticate'] = header('WWW-Authenticate')
    response.headers = { ...headers, ...response.headers }
  }
}

/**
 * What configuration decides, filled into the document (the markers are dropped): a schema marked
 * x-scope becomes an enum of SCOPES, one marked x-new-password takes the password policy's bounds.
 */
function withConfiguredBounds(node: unknown, scopes: readonly string[], passwordMinLength: number): void {
  if (Array.isArray(node)) {
    for (const item of node) withConfiguredBounds(item, scopes, passwordMinLength)
  } else if (node && typeof node === 'object') {
    const schema = node as Record<string, unknown>
    if (schema['x-scope'] === true) {
      delete schema['x-scope']
      schema.enum = [...scopes]
    }
    if (schema['x-new-password'] === true) {
      delete schema['x-new-password']
      Object.assign(schema, { minLength: passwordMinLength, maxLength: PASSWORD_MAX_LENGTH })
    }
    for (const value of Object.values(schema)) withConfiguredBounds(value, scopes, passwordMinLength)
  }
}

const pkg = JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }

// Fastify parses a body on these whatever the route declares, so 413/415 can always happen.
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

/** Error statuses any operation can answer: malformed input, rate limit, failure, shutdown. */
function platformErrors(method: string, schema: FastifySchema): number[] {
  const statuses = [400, 429, 500, 503]
  if (schema.body || schema.querystring || schema.params) statuses.push(422)
  if (BODY_METHODS.has(method)) statuses.push(413, 415)
  return statuses
}

export default fp(async (app) => {
  const shared = [ErrorSchema, ...SHARED_SCHEMAS, ...SESSION_SHARED_SCHEMAS, ...ORGANIZATION_SHARED_SCHEMAS, ...INVITATION_SHARED_SCHEMAS, ...ADMIN_SHARED_SCHEMAS, ...API_KEY_SHARED_SCHEMAS, ...AUDIT_SHARED_SCHEMAS, ...OAUTH_SHARED_SCHEMAS]
  for (const s of shared) app.addSchema(s)

  // @fastify/swagger marks every request body required; these operations take none as well.
  const optionalBodies = new Set<string>()

  app.addHook('onRoute', (route) => {
    if (!route.schema) return
    // A body declared per content type is only validated when one arrives: require it.
    const body = route.schema.body as { content?: unknown } | undefined
    if (body?.content && !isOptionalBody(body)) {
      const existing = route.preValidation ? [route.preValidation].flat() : []
      route.preValidation = [async (request) => {
        if (request.body === undefined || request.body === null) throw new AppError('VALIDATION_ERROR', 'Invalid request body', [{ field: 'body', message: 'is required' }])
      }, ...existing]
    }
    if (route.schema.hide) return
    // Public unless an authentication plugin says otherwise (its onRoute runs after this one).
    route.schema.security ??= []
    if (route.schema.body && isOptionalBody(route.schema.body)) optionalBodies.add(String(route.schema.operationId))
    // An OAuth endpoint declares its own (RFC 6749 §5.2) errors.
    if (route.config?.oauthErrors) return
    const method = [route.method].flat()[0] ?? 'GET'
    route.schema.response = {
      ...errorResponses(...platformErrors(String(method), route.schema)),
      ...(route.schema.response as object),
    }
  })

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Portcullis',
        version: pkg.version,
        description: 'Multi-tenant authentication for B2B API platforms: accounts, sessions, organizations, API keys, two-factor, gateway verification.',
        license: { name: 'UNLICENSED', identifier: 'UNLICENSED' },
      },
      tags: [
        { name: 'auth', description: 'Accounts and login' },
        { name: 'sessions', description: 'Refresh, logout, sessions' },
        { name: 'two-factor', description: 'TOTP two-factor authentication and recovery codes' },
        { name: 'organizations', description: 'Organizations, members, invitations, audit log' },
        { name: 'admin', description: 'Platform administration, for superadmins (made from the CLI)' },
        { name: 'api-keys', description: 'Organization API keys' },
        { name: 'gateway', description: 'Forward-auth, introspection, revocation' },
        { name: 'oauth', description: 'The OAuth 2.0 token endpoint' },
        { name: 'keys', description: 'Token signing keys and discovery' },
        { name: 'operations', description: 'Health and readiness' },
      ],
      servers: [{
        url: 'https://auth.example.com',
        description: 'Production: your deployment at its PUBLIC_URL (npm start serves the same paths at http://localhost:3000)', 'x-internal': false,
      } as never],
      components: {
        headers: RESPONSE_HEADERS as never,
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', description: 'An access token from login, or (where the operation accepts keys) an API key' },
          superadminAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'An access token of a platform administrator\'s session (a JWT, verified as RFC8725 recommends: one allowed algorithm, typ at+jwt); the account\'s superadmin flag (set only from the CLI) is read on every request' },
          apiKeyHeader: { type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'An organization API key' },
          clientBasic: { type: 'http', scheme: 'basic', description: 'An API key as an OAuth client: the key id as user name, the key as password' },
        },
      },
    },
    transformObject: (documentObject) => {
      const { openapiObject } = documentObject as { openapiObject: Record<string, unknown> & { paths?: Record<string, unknown> } }
      for (const methods of Object.values(openapiObject.paths ?? {})) {
        for (const op of Object.values(methods as Record<string, Operation>)) {
          if (op.requestBody && optionalBodies.has(String(op.operationId))) op.requestBody.required = false
          declareResponseHeaders(op)
        }
      }
      withConfiguredBounds(openapiObject, app.config.SCOPES, app.config.PASSWORD_MIN_LENGTH)
      return openapiObject as never
    },
    // Components are named after their $id, not def-N.
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`) },
  })

  let yaml: string | undefined
  app.decorate('openapiYaml', () => (yaml ??= app.swagger({ yaml: true })))

  const hidden = { schema: { hide: true } }
  for (const path of ['/openapi.yaml', '/api/v1/openapi.yaml']) {
    app.get(path, hidden, async (_request, reply) =>
      reply.type('application/yaml; charset=utf-8').header('cache-control', 'public, max-age=60').send(app.openapiYaml()))
  }
  // An interactive reference rendered from the same document; its assets ship with the package (no CDN).
  // Without upgrade-insecure-requests: over plain http from any other host it made the browser fetch the
  // UI's own assets over https, and the page stayed blank.
  await app.register(swaggerUi, {
    routePrefix: '/docs', staticCSP: true, uiConfig: { deepLinking: true },
    transformStaticCSP: (header) => header.split(';').map((d) => d.trim()).filter((d) => d && d !== 'upgrade-insecure-requests').join('; '),
  })

  app.get('/openapi.json', hidden, async (_request, reply) =>
    reply.type('application/json; charset=utf-8').header('cache-control', 'public, max-age=60').send(JSON.stringify(app.swagger())))
}, { name: 'openapi' })
