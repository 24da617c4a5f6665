import { Type } from '@sinclair/typebox'
import { Email, ListQueryFields, PublicId, RoleSchema, Timestamp } from '../../schemas/common.js'

export const InvitationParamsSchema = Type.Object({ org_id: PublicId('org'), invitation_id: PublicId('inv') })

export const InvitationStateSchema = Type.Union([Type.Literal('pending'), Type.Literal('accepted'), Type.Literal('revoked'), Type.Literal('expired')])

export const InvitationSchema = Type.Object({
  id: PublicId('inv'),
  email: Email,
  role: RoleSchema,
  state: InvitationStateSchema,
  expires_at: Timestamp,
  created_at: Timestamp,
  invited_by: Type.Object({
    user_id: Type.Union([PublicId('usr'), Type.Null()]),
    api_key_id: Type.Union([PublicId('key'), Type.Null()], { description: 'Set when an API key invited (a key acts as nobody)' }),
  }),
}, { $id: 'Invitation', description: 'An invitation to join the organization; its token goes only to the invited address' })

export const InvitationPageSchema = Type.Object({
  items: Type.Array(Type.Ref(InvitationSchema)),
  next_cursor: Type.Union([Type.String(), Type.Null()]),
})

export const InviteBodySchema = Type.Object({
  email: Type.String({ minLength: 3, maxLength: 320 }),
  role: RoleSchema,
}, { additionalProperties: false })

export const InvitationListQuerySchema = Type.Object({
  ...ListQueryFields,
  state: Type.Optional(InvitationStateSchema),
}, { additionalProperties: false })

export const INVITATION_SHARED_SCHEMAS = [InvitationSchema]
