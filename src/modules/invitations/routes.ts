// HTTP shape of invitations. Rules live in service.ts.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { sessionAuth } from '../../plugins/authenticate.js'
import { DEFAULT_PAGE_SIZE, errorResponses, NoContent } from '../../schemas/common.js'
import { limitInvitationMail } from '../mail/limits.js'
import { MailedTokenBodySchema } from '../mailbox/schemas.js'
import { OrganizationSchema, OrgParamsSchema } from '../organizations/schemas.js'
import { InvitationListQuerySchema, InvitationPageSchema, InvitationParamsSchema, InvitationSchema, InviteBodySchema } from './schemas.js'

const TAGS = ['organizations']
const ADMINS = ['owner', 'admin'] as ('owner' | 'admin')[]
const EITHER = ['session', 'api_key'] as ('session' | 'api_key')[]
/** Inviting, like adding a member did, is for owners and admins, or a key with members:write. */
const MANAGE = { auth: { methods: EITHER, roles: ADMINS, scopes: ['members:write'] } }

const invitationRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const service = app.invitations
  const Invitation = Type.Ref(InvitationSchema)

  app.post('/organizations/:org_id/invitations', {
    config: MANAGE,
    schema: {
      tags: TAGS, operationId: 'createInvitation', summary: 'Invite an address with a role (capped by the inviter\'s own); the link goes by mail',
      description: 'The same answer whether or not the address has an account. 409 when it already belongs to a member or has a pending invitation (resend that one).',
      params: OrgParamsSchema, body: InviteBodySchema, response: { 201: Invitation, ...errorResponses(404, 409, 429) },
    },
  }, async (request, reply) => {
    const beforeMail = (email: string) => limitInvitationMail(app, request, request.auth!.orgId, email)
    return reply.code(201).send(await service.invite(request.auth!, request.body, beforeMail))
  })

  app.get('/organizations/:org_id/invitations', {
    config: { auth: { methods: EITHER, roles: ADMINS, scopes: ['members:read'] } },
    schema: {
      tags: TAGS, operationId: 'listInvitations', summary: 'Invitations of an organization, newest first; filter by state',
      params: OrgParamsSchema, querystring: InvitationListQuerySchema, response: { 200: InvitationPageSchema },
    },
  }, async (request) => service.list(request.auth!, request.query.limit ?? DEFAULT_PAGE_SIZE, request.query.cursor, request.query.state))

  app.delete('/organizations/:org_id/invitations/:invitation_id', {
    config: MANAGE,
    schema: {
      tags: TAGS, operationId: 'revokeInvitation', summary: 'Revoke a pending invitation: its link stops working',
      params: InvitationParamsSchema, response: { 204: NoContent, ...errorResponses(404, 409) },
    },
  }, async (request, reply) => {
    await service.revoke(request.auth!, request.params.invitation_id)
    return reply.code(204).send(null)
  })

  app.post('/organizations/:org_id/invitations/:invitation_id/resend', {
    config: MANAGE,
    schema: {
      tags: TAGS, operationId: 'resendInvitation', summary: 'Mail a new link for a pending invitation (the old link stops working) with a new expiry',
      params: InvitationParamsSchema, response: { 200: Invitation, ...errorResponses(404, 409, 429) },
    },
  }, async (request) => {
    const beforeMail = (email: string) => limitInvitationMail(app, request, request.auth!.orgId, email)
    return service.resend(request.auth!, request.params.invitation_id, beforeMail)
  })

  app.post('/invitations/accept', {
    config: { auth: { org: false }, rateLimit: app.ipRateLimit(app.config.RATE_LIMIT_PASSWORD_RESET) },
    schema: {
      tags: TAGS, operationId: 'acceptInvitation', summary: 'Join the organization of an invitation, signed in with the invited, verified address',
      description: '400 INVALID_LINK when the invitation is unknown, revoked, expired or used; 403 when the signed-in address is not the invited one or is not verified (the invitation stays usable); 409 when already a member. To join without an account, register with `invitation_token`.',
      body: MailedTokenBodySchema, response: { 200: Type.Ref(OrganizationSchema), ...errorResponses(409) },
    },
  }, async (request) => service.accept(sessionAuth(request), request.body.token))
}

export default invitationRoutes
