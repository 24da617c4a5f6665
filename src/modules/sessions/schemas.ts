import { Type } from '@sinclair/typebox'
import { PublicId, Timestamp } from '../../schemas/common.js'
import { TokenFields } from '../auth/schemas.js'

const RefreshTokenInput = Type.String({ minLength: 1, maxLength: 4096 })

export const RefreshJsonBodySchema = Type.Object({
  refresh_token: RefreshTokenInput,
  org_id: Type.Optional(PublicId('org', 'Switch the organization of the new access token')),
}, { additionalProperties: false })

/** OAuth2 refresh grant (RFC 6749 §6). */
export const RefreshFormBodySchema = Type.Object({
  grant_type: Type.Literal('refresh_token'),
  refresh_token: RefreshTokenInput,
  scope: Type.Optional(Type.String({ maxLength: 1000 })),
  org_id: Type.Optional(PublicId('org')),
}, { additionalProperties: false })

export const TokenPairSchema = Type.Object(TokenFields, { $id: 'TokenPair' })

export const LogoutBodySchema = Type.Object({
  refresh_token: Type.Optional(RefreshTokenInput),
}, { additionalProperties: false })

export const SessionSchema = Type.Object({
  id: PublicId('ses'),
  user_agent: Type.Union([Type.String(), Type.Null()]),
  ip: Type.Union([Type.String(), Type.Null()]),
  organization_id: PublicId('org'),
  created_at: Timestamp,
  last_used_at: Timestamp,
  expires_at: Timestamp,
  current: Type.Boolean({ description: 'The session of the access token making this request' }),
}, { $id: 'Session' })

export const SessionPageSchema = Type.Object({
  items: Type.Array(Type.Ref(SessionSchema)),
  next_cursor: Type.Union([Type.String(), Type.Null()]),
})

export const SessionParamsSchema = Type.Object({ id: PublicId('ses') })

export const SESSION_SHARED_SCHEMAS = [TokenPairSchema, SessionSchema]
