import { Type, type Static } from '@sinclair/typebox'
import { TokenFields } from '../auth/schemas.js'

/**
 * RFC 6749 §4.3, §6 and §4.4 in one form. Unknown parameters are ignored (§3.2),
 * so the schema names only what a grant reads.
 */
export const TokenRequestSchema = Type.Object({
  grant_type: Type.String({ maxLength: 100, description: '`password`, `refresh_token` or `client_credentials`' }),
  username: Type.Optional(Type.String({ maxLength: 320, description: 'password grant: the email' })),
  password: Type.Optional(Type.String({ maxLength: 512, description: 'password grant' })),
  refresh_token: Type.Optional(Type.String({ maxLength: 200, description: 'refresh_token grant' })),
  scope: Type.Optional(Type.String({ maxLength: 2000, description: 'client_credentials: space-separated scopes to narrow the token to (never widen)' })),
  org_id: Type.Optional(Type.String({ maxLength: 100, description: 'password and refresh_token grants: the organization of the access token' })),
  client_id: Type.Optional(Type.String({ maxLength: 200, description: 'client_secret_post (an API key id), or the public client id' })),
  client_secret: Type.Optional(Type.String({ maxLength: 4096, description: 'client_secret_post: the API key' })),
}, { additionalProperties: true })
export type TokenRequest = Static<typeof TokenRequestSchema>

export const ClientTokenSchema = Type.Object({
  access_token: Type.String({ description: 'RFC 9068 JWT; verify it with the JWKS' }),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer({ description: 'Seconds (CLIENT_TOKEN_TTL)' }),
  scope: Type.String({ description: 'The scopes granted, space-separated' }),
}, { $id: 'ClientToken' })

export const OAuthTokenPairSchema = Type.Object({ ...TokenFields }, { $id: 'OAuthTokenPair' })

/** RFC 6749 §5.2. */
export const OAuthErrorSchema = Type.Object({
  error: Type.Union(['invalid_request', 'invalid_client', 'invalid_grant', 'unauthorized_client', 'unsupported_grant_type', 'invalid_scope',
    'temporarily_unavailable', 'server_error'].map((c) => Type.Literal(c))),
  error_description: Type.Optional(Type.String()),
}, { $id: 'OAuthError' })

export const OAUTH_SHARED_SCHEMAS = [ClientTokenSchema, OAuthTokenPairSchema, OAuthErrorSchema]
