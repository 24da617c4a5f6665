// HTTP shape of organizations and members.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { sessionAuth } from '../../plugins/authenticate.js'
import { Type } from '@sinclair/typebox'
import { DEFAULT_PAGE_SIZE, errorResponses, ListQuerySchema, NoContent } from '../../schemas/common.js'
import {
  CreateOrganizationBodySchema, MemberPageSchema, MemberParamsSchema, MemberSchema,
  OrganizationPageSchema, OrganizationSchema, OrgParamsSchema, UpdateMemberBodySchema, UpdateOrganizationBodySchema,
} from './schemas.js'
import { OrganizationService } from './service.js'

const TAGS = ['organizations']
const ADMINS = ['owner', 'admin'] as ('owner' | 'admin')[]
const EITHER = ['session', 'api_key'] as ('session' | 'api_key')[]

const organizationRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const service = new OrganizationService({
    db: app.db, config: app.config, clock: app.clock, audit: app.audit, sessions: app.sessions, tenancy: app.tenancy, events: app.events,
  })
  const Org = Type.Ref(OrganizationSchema)
  const Member = Type.Ref(MemberSchema)

  app.get('/organizations', {
    config: { auth: { org: false } },
    schema: {
      tags: TAGS, operationId: 'listOrganizations', summary: 'The organizations the caller belongs to',
      querystring: ListQuerySchema, response: { 200: OrganizationPageSchema },
    },
  }, async (request) => service.listMine(sessionAuth(request).userId, request.query.limit ?? DEFAULT_PAGE_SIZE, request.query.cursor))

  app.post('/organizations', {
    config: { auth: { org: false } },
    schema: {
      tags: TAGS, operationId: 'createOrganization', summary: 'Create an organization; the caller becomes its owner',
      body: CreateOrganizationBodySchema, response: { 201: Org },
    },
  }, async (request, reply) => reply.code(201).send(await service.create(sessionAuth(request), request.body.name)))

  app.get('/organizations/:org_id', {
    config: { auth: { methods: EITHER } },
    schema: {
      tags: TAGS, operationId: 'getOrganization', summary: 'An organization the caller belongs to',
      params: OrgParamsSchema, response: { 200: Org, ...errorResponses(404) },
    },
  }, async (request) => service.get(request.auth!))

  app.patch('/organizations/:org_id', {
    config: { auth: { roles: ADMINS } },
    schema: {
      tags: TAGS, operationId: 'updateOrganization', summary: 'Rename an organization (owner or admin)',
      params: OrgParamsSchema, body: UpdateOrganizationBodySchema, response: { 200: Org, ...errorResponses(404) },
    },
  }, async (request) => service.rename(request.auth!, request.body.name))

  app.get('/organizations/:org_id/members', {
    config: { auth: { methods: EITHER, scopes: ['members:read'] } },
    schema: {
      tags: TAGS, operationId: 'listMembers', summary: 'Members of an organization',
      params: OrgParamsSchema, querystring: ListQuerySchema, response: { 200: MemberPageSchema },
    },
  }, async (request) => service.listMembers(request.auth!, request.query.limit ?? DEFAULT_PAGE_SIZE, request.query.cursor))

  app.delete('/organizations/:org_id/members/me', {
    config: { auth: {} },
    schema: {
      tags: TAGS, operationId: 'leaveOrganization', summary: 'Leave the organization (any role; not its last owner)',
      description: "The caller's sessions lose the organization at once; API keys the caller created stay (they are the organization's).",
      params: OrgParamsSchema, response: { 204: NoContent, ...errorResponses(404, 409) },
    },
  }, async (request, reply) => {
    await service.leave(sessionAuth(request))
    return reply.code(204).send(null)
  })

  app.patch('/organizations/:org_id/members/:user_id', {
    config: { auth: { methods: EITHER, roles: ADMINS, scopes: ['members:write'] } },
    schema: {
      tags: TAGS, operationId: 'updateMember', summary: "Change a member's role (owner or admin; owners only for the owner role)",
      params: MemberParamsSchema, body: UpdateMemberBodySchema, response: { 200: Member, ...errorResponses(404, 409) },
    },
  }, async (request) => service.changeRole(request.auth!, request.params.user_id, request.body.role))

  app.delete('/organizations/:org_id/members/:user_id', {
    config: { auth: { methods: EITHER, roles: ADMINS, scopes: ['members:write'] } },
    schema: {
      tags: TAGS, operationId: 'removeMember', summary: "Remove a member; that user's sessions in the organization are revoked",
      params: MemberParamsSchema, response: { 204: NoContent, ...errorResponses(404, 409) },
    },
  }, async (request, reply) => {
    await service.removeMember(request.auth!, request.params.user_id)
    return reply.code(204).send(null)
  })
}

export default organizationRoutes
