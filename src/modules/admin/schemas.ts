import { Type } from '@sinclair/typebox'
import { ListQueryFields, PublicId, RoleSchema, Timestamp } from '../../schemas/common.js'
import { PLATFORM_ACTIONS } from './service.js'

export const UserParamsSchema = Type.Object({ user_id: PublicId('usr') })

const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()])

export const AccountSchema = Type.Object({
  id: PublicId('usr'),
  email: Type.String({ description: 'erased+<id>@invalid once erased' }),
  name: Nullable(Type.String()),
  is_superadmin: Type.Boolean(),
  mfa_enabled: Type.Boolean(),
  email_verified: Type.Boolean(),
  disabled: Type.Boolean(),
  erased: Type.Boolean(),
  created_at: Timestamp,
}, { $id: 'Account', description: 'An account as a platform administrator sees it' })

export const AccountDetailSchema = Type.Intersect([Type.Ref(AccountSchema), Type.Object({
  memberships: Type.Array(Type.Object({ id: PublicId('org'), name: Type.String(), role: RoleSchema })),
  sessions: Type.Array(Type.Object({
    id: PublicId('ses'), organization_id: Type.String(), ip: Nullable(Type.String()), user_agent: Nullable(Type.String()),
    created_at: Timestamp, last_used_at: Timestamp, expires_at: Timestamp, revoked_at: Nullable(Timestamp),
  }), { description: 'The newest 100; never a token' }),
})])

export const AccountPageSchema = Type.Object({ items: Type.Array(Type.Ref(AccountSchema)), next_cursor: Nullable(Type.String()) })

export const AccountQuerySchema = Type.Object({
  ...ListQueryFields,
  email_prefix: Type.Optional(Type.String({ minLength: 1, maxLength: 320, description: 'Accounts whose address starts with this (case-insensitive)' })),
}, { additionalProperties: false })

export const OrganizationSummaryPageSchema = Type.Object({
  items: Type.Array(Type.Object({ id: PublicId('org'), name: Type.String(), credits: Type.Integer(), member_count: Type.Integer(), created_at: Timestamp })),
  next_cursor: Nullable(Type.String()),
})

export const PlatformEventPageSchema = Type.Object({
  items: Type.Array(Type.Object({
    id: PublicId('evt'),
    action: Type.Unsafe<string>({ type: 'string', enum: [...PLATFORM_ACTIONS] }),
    actor_user_id: Nullable(Type.String({ description: 'null for the CLI' })),
    target_type: Nullable(Type.String()),
    target_id: Nullable(Type.String()),
    ip: Nullable(Type.String()),
    metadata: Type.Record(Type.String(), Type.Unknown()),
    created_at: Timestamp,
  })),
  next_cursor: Nullable(Type.String()),
})

/** The proof a destructive action needs: the password always, and a code where 2FA is on. */
export const ProofBodySchema = Type.Object({
  password: Type.Optional(Type.String({ minLength: 1, maxLength: 512, description: 'The caller\'s own password: always needed' })),
  code: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'TOTP or recovery code, where 2FA is on (unless the login is within REAUTH_WINDOW)' })),
}, { additionalProperties: false })

export const ADMIN_SHARED_SCHEMAS = [AccountSchema]
