import { Type, type Static } from '@sinclair/typebox'
import { PublicId, ScopeSchema, Timestamp } from '../../schemas/common.js'

export const ApiKeySchema = Type.Object({
  id: PublicId('key'),
  name: Type.String(),
  key_prefix: Type.String({ description: 'The first 16 characters, to recognise the key' }),
  environment: Type.Union([Type.Literal('live'), Type.Literal('test')]),
  scopes: Type.Array(ScopeSchema),
  organization_id: PublicId('org'),
  created_by: PublicId('usr'),
  created_at: Timestamp,
  expires_at: Type.Union([Timestamp, Type.Null()]),
  last_used_at: Type.Union([Timestamp, Type.Null()], { description: 'Updated at most once a minute' }),
  revoked_at: Type.Union([Timestamp, Type.Null()]),
}, { $id: 'ApiKey' })

export const CreatedApiKeySchema = Type.Composite([ApiKeySchema, Type.Object({
  key: Type.String({ description: 'The full key. Shown once: store it now.' }),
})], { $id: 'CreatedApiKey' })

export const CreateApiKeyBodySchema = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 100 }),
  scopes: Type.Array(ScopeSchema, { minItems: 1, maxItems: 50, uniqueItems: true }),
  environment: Type.Optional(Type.Union([Type.Literal('live'), Type.Literal('test')], { default: 'live' })),
  expires_at: Type.Optional(Type.String({ format: 'date-time', maxLength: 40 })),
}, { additionalProperties: false })
export type CreateApiKeyBody = Static<typeof CreateApiKeyBodySchema>

export const RotateApiKeyBodySchema = Type.Object({
  grace_seconds: Type.Optional(Type.Integer({ format: 'int32', minimum: 0, maximum: 604_800, default: 0, description: 'How long the old key keeps working' })),
}, { additionalProperties: false })

export const ApiKeyParamsSchema = Type.Object({ id: PublicId('key') })

export const ApiKeyPageSchema = Type.Object({
  items: Type.Array(Type.Ref(ApiKeySchema)),
  next_cursor: Type.Union([Type.String(), Type.Null()]),
})

export const API_KEY_SHARED_SCHEMAS = [ApiKeySchema, CreatedApiKeySchema]
