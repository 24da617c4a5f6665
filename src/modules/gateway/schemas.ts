import { ID_PATTERN } from '../../lib/ids.js'
import { RoleSchema, ScopeSchema } from '../../schemas/common.js'
import { Type } from '@sinclair/typebox'

export const SCOPE_QUERY_MAX = 1000

export const VerifyQuerySchema = Type.Object({
  scope: Type.Optional(Type.String({ maxLength: SCOPE_QUERY_MAX, description: 'Scopes the caller must hold, comma- or space-separated' })),
}, { additionalProperties: true })

export const VerifyResponseSchema = Type.Object({
  user_id: Type.Union([Type.String(), Type.Null()], { description: 'null for an API key (an identity of its organization)' }),
  org_id: Type.String(),
  role: Type.Union([RoleSchema, Type.Null()]),
  scopes: Type.Array(ScopeSchema),
  method: Type.Union([Type.Literal('session'), Type.Literal('api_key')]),
  key_id: Type.Union([Type.String(), Type.Null()]),
}, {
  description: 'The same facts as the X-Auth-* headers (a body only with Accept: application/json)',
  // The answer a gateway reads: only the headers that apply are sent.
  headers: {
    'X-Auth-User-Id': { type: 'string', maxLength: 40, pattern: ID_PATTERN('usr'), description: 'The user (sessions only)' },
    'X-Auth-Org-Id': { type: 'string', maxLength: 40, pattern: ID_PATTERN('org'), description: 'The organization context' },
    'X-Auth-Role': { type: 'string', enum: ['owner', 'admin', 'member'], description: 'The role there (sessions only)' },
    'X-Auth-Scopes': { type: 'string', maxLength: 2000, pattern: '^[A-Za-z0-9:_. -]*$', description: 'Scopes held, space-separated' },
    'X-Auth-Method': { type: 'string', enum: ['session', 'api_key'] },
    'X-Auth-Key-Id': { type: 'string', maxLength: 40, pattern: ID_PATTERN('key'), description: 'The API key (keys and client-credentials tokens only)' },
  },
})

export const TokenBodySchema = Type.Object({
  token: Type.String({ minLength: 1, maxLength: 4096 }),
  token_type_hint: Type.Optional(Type.String({
    maxLength: 100, description: 'Advisory only (RFC 7662 §2.1): access_token, refresh_token or api_key; any other value is ignored',
  })),
  client_id: Type.Optional(Type.String({ maxLength: 200, description: 'client_secret_post: the API key id' })),
  client_secret: Type.Optional(Type.String({ maxLength: 4096, description: 'client_secret_post: the API key' })),
}, { additionalProperties: false })

/** RFC 7662 §2.2; an inactive token is exactly {"active": false}. */
export const IntrospectionSchema = Type.Object({
  active: Type.Boolean(),
  token_type: Type.Optional(Type.Union([Type.Literal('access_token'), Type.Literal('refresh_token'), Type.Literal('api_key')])),
  scope: Type.Optional(Type.String()),
  sub: Type.Optional(Type.String()),
  org_id: Type.Optional(Type.String()),
  org_role: Type.Optional(Type.String()),
  sid: Type.Optional(Type.String()),
  client_id: Type.Optional(Type.String()),
  auth_time: Type.Optional(Type.Integer()),
  email_verified: Type.Optional(Type.Boolean()),
  key_id: Type.Optional(Type.String()),
  exp: Type.Optional(Type.Integer()),
  iat: Type.Optional(Type.Integer()),
  iss: Type.Optional(Type.String()),
  aud: Type.Optional(Type.String()),
  jti: Type.Optional(Type.String()),
})

/** RFC 8414 §2. */
export const AuthorizationServerMetadataSchema = Type.Object({
  issuer: Type.String(),
  jwks_uri: Type.String(),
  token_endpoint: Type.String(),
  introspection_endpoint: Type.String(),
  revocation_endpoint: Type.String(),
  grant_types_supported: Type.Array(Type.String()),
  response_types_supported: Type.Array(Type.String(), { description: 'Empty: there is no authorization endpoint' }),
  token_endpoint_auth_methods_supported: Type.Array(Type.String()),
  introspection_endpoint_auth_methods_supported: Type.Array(Type.String()),
  revocation_endpoint_auth_methods_supported: Type.Array(Type.String()),
  scopes_supported: Type.Array(Type.String()),
  service_documentation: Type.String(),
}, { $id: 'AuthorizationServerMetadata' })
