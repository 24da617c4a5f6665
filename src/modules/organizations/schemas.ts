import { Type, type Static } from '@sinclair/typebox'
import { Email, PublicId, RoleSchema, Timestamp } from '../../schemas/common.js'

export const OrgParamsSchema = Type.Object({ org_id: PublicId('org') })
export const MemberParamsSchema = Type.Object({ org_id: PublicId('org'), user_id: PublicId('usr') })

const OrgName = Type.String({ minLength: 1, maxLength: 200 })

export const OrganizationSchema = Type.Object({
  id: PublicId('org'),
  name: Type.String(),
  role: Type.Union([RoleSchema, Type.Null()], { description: "The caller's role; null for an API key" }),
  credits: Type.Integer(),
  created_at: Timestamp,
}, { $id: 'Organization', description: "An organization, with the caller's role in it" })

export const CreateOrganizationBodySchema = Type.Object({ name: OrgName }, { additionalProperties: false })
export const UpdateOrganizationBodySchema = Type.Object({ name: OrgName }, { additionalProperties: false })

export const OrganizationPageSchema = Type.Object({
  items: Type.Array(Type.Ref(OrganizationSchema)),
  next_cursor: Type.Union([Type.String(), Type.Null()]),
})

export const MemberSchema = Type.Object({
  user_id: PublicId('usr'),
  email: Email,
  name: Type.Union([Type.String(), Type.Null()]),
  role: RoleSchema,
  joined_at: Timestamp,
}, { $id: 'Member' })

export const MemberPageSchema = Type.Object({
  items: Type.Array(Type.Ref(MemberSchema)),
  next_cursor: Type.Union([Type.String(), Type.Null()]),
})

export const UpdateMemberBodySchema = Type.Object({ role: RoleSchema }, { additionalProperties: false })

export const ORGANIZATION_SHARED_SCHEMAS = [OrganizationSchema, MemberSchema]
