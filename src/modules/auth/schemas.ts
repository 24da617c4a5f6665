import { Type, type Static } from '@sinclair/typebox'
import { Email, PublicId, RoleSchema, ScopeSchema, Timestamp } from '../../schemas/common.js'
import { PASSWORD_MAX_LENGTH } from '../../lib/password-policy.js'

// Email is trimmed and lower-cased by the service; the schema only bounds it.
const EmailInput = Type.String({ minLength: 3, maxLength: 320, description: 'Email address (case-insensitive)' })
// maxLength counts UTF-16 units; twice the limit admits 256 astral code points,
// and the policy then counts real code points before any hashing.
const PasswordInput = Type.String({ minLength: 1, maxLength: 2 * PASSWORD_MAX_LENGTH, description: 'Password, 12–256 characters' })
// A password being set: the contract states the policy's bounds (JSON Schema counts code points, as
// the policy does; plugins/openapi fills them in from PASSWORD_MIN_LENGTH). The validator stays as
// lenient as PasswordInput, and the policy answers a 422 saying why.
const NewPasswordInput = Type.String({
  minLength: 1, maxLength: 2 * PASSWORD_MAX_LENGTH, 'x-new-password': true,
  description: 'At least PASSWORD_MIN_LENGTH and at most 256 characters; not a common password, nor the email, name or company name',
})

export const UserSchema = Type.Object({
  id: PublicId('usr'),
  email: Email,
  name: Type.Union([Type.String(), Type.Null()]),
  is_superadmin: Type.Boolean(),
  mfa_enabled: Type.Boolean(),
  email_verified: Type.Boolean({ description: 'The current address was proven by a mailed link' }),
  created_at: Timestamp,
}, { $id: 'User' })

export const OrganizationWithRoleSchema = Type.Object({
  id: PublicId('org'),
  name: Type.String(),
  role: RoleSchema,
  credits: Type.Integer(),
  created_at: Timestamp,
}, { $id: 'OrganizationMembership' })

export const RegisterBodySchema = Type.Object({
  email: EmailInput,
  password: NewPasswordInput,
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  company_name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  invitation_token: Type.Optional(Type.String({
    minLength: 1, maxLength: 200,
    description: 'The token of a mailed invitation: the account joins that organization with the invited role and creates none (company_name is ignored); email must be the invited address, which is then verified',
  })),
}, { additionalProperties: false })
export type RegisterBody = Static<typeof RegisterBodySchema>

export const TokenFields = {
  access_token: Type.String({ description: 'RFC 9068 JWT' }),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer({ description: 'Access-token lifetime, seconds' }),
  refresh_token: Type.String({ description: 'Opaque, single-use; rotate it with POST /auth/refresh' }),
}

export const RegisteredSchema = Type.Object({
  user: Type.Ref(UserSchema),
  organization: Type.Ref(OrganizationWithRoleSchema),
  ...TokenFields,
}, { $id: 'Registered' })

export const RegisteredUnverifiedSchema = Type.Object({
  user: Type.Ref(UserSchema),
  organization: Type.Ref(OrganizationWithRoleSchema),
  email_verification_required: Type.Literal(true),
}, { $id: 'RegisteredUnverified', description: 'EMAIL_VERIFICATION=required: no session until the mailed link is followed' })

export const RegisterResponseSchema = Type.Union([Type.Ref(RegisteredSchema), Type.Ref(RegisteredUnverifiedSchema)], {
  description: 'The account with its tokens; or, when email verification is required, the account alone',
})

export const LoginJsonBodySchema = Type.Object({
  email: EmailInput,
  password: PasswordInput,
  org_id: Type.Optional(PublicId('org', 'Organization of the access token; default: the first one joined')),
}, { additionalProperties: false })

/** OAuth2 password-grant style form (RFC 6749 §4.3). */
export const LoginFormBodySchema = Type.Object({
  grant_type: Type.Optional(Type.Literal('password')),
  username: EmailInput,
  password: PasswordInput,
  scope: Type.Optional(Type.String({ maxLength: 1000 })),
  org_id: Type.Optional(PublicId('org')),
}, { additionalProperties: false })

export type LoginInput = { email: string; password: string; orgId?: string }

export const LoginTokensSchema = Type.Object({
  ...TokenFields,
  user: Type.Ref(UserSchema),
}, { $id: 'LoginTokens' })

export const MfaRequiredSchema = Type.Object({
  mfa_required: Type.Literal(true),
  mfa_token: Type.String({ description: 'Single-use; send it with a code to POST /auth/verify-2fa' }),
  expires_in: Type.Integer({ description: 'Seconds the mfa_token stays valid' }),
}, { $id: 'MfaRequired' })

export const LoginResponseSchema = Type.Union([Type.Ref(LoginTokensSchema), Type.Ref(MfaRequiredSchema)], {
  description: 'Tokens, or (for an account with two-factor authentication) an mfa_token for the second step',
})

export const MeResponseSchema = Type.Object({
  user: Type.Optional(Type.Ref(UserSchema, { description: 'The signed-in user (sessions only)' })),
  api_key: Type.Optional(Type.Object({
    id: PublicId('key'),
    name: Type.Union([Type.String(), Type.Null()]),
    organization_id: PublicId('org'),
    scopes: Type.Array(ScopeSchema),
    created_by: PublicId('usr', 'Who created the key (provenance; the key does not act as them)'),
    expires_at: Type.Union([Timestamp, Type.Null()]),
  }, { description: 'The calling API key (API keys only): an identity of its organization, not of its creator' })),
  organization: Type.Object({
    id: PublicId('org'), name: Type.String(),
    role: Type.Union([RoleSchema, Type.Null()], { description: "The caller's role; null for an API key" }),
    credits: Type.Integer(),
  }, { description: 'The organization context of the request' }),
  memberships: Type.Array(Type.Object({ id: PublicId('org'), name: Type.String(), role: RoleSchema }), {
    description: "The user's organizations (empty for an API key, which sees only its own)",
  }),
  auth: Type.Object({
    method: Type.Union([Type.Literal('session'), Type.Literal('api_key')]),
    scopes: Type.Array(ScopeSchema),
    session_id: Type.Optional(PublicId('ses')),
    key_id: Type.Optional(PublicId('key')),
  }),
})

export const ChangePasswordBodySchema = Type.Object({
  current_password: PasswordInput,
  new_password: NewPasswordInput,
  code: Type.Optional(Type.String({ minLength: 6, maxLength: 32, description: 'With 2FA on: a TOTP or recovery code, unless the session logged in within REAUTH_WINDOW' })),
}, { additionalProperties: false })

export const SHARED_SCHEMAS = [UserSchema, OrganizationWithRoleSchema, LoginTokensSchema, MfaRequiredSchema, RegisteredSchema, RegisteredUnverifiedSchema]
