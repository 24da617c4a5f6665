// HTTP shape of platform administration (superadmin sessions) and of erasing
// one's own account. Rules live in service.ts.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { Type } from '@sinclair/typebox'
import { sessionAuth } from '../../plugins/authenticate.js'
import { limitMailTo } from '../mail/limits.js'
import { DEFAULT_PAGE_SIZE, errorResponses, ListQuerySchema, NoContent } from '../../schemas/common.js'
import {
  AccountDetailSchema, AccountPageSchema, AccountQuerySchema, OrganizationSummaryPageSchema, PlatformEventPageSchema, ProofBodySchema, UserParamsSchema,
} from './schemas.js'

const TAGS = ['admin']
const SESSION = { auth: { org: false, superadmin: true } }
/** A proof is optional in the body (a recent login may stand in for the code): no body reads as an empty one. */
const noBodyIsEmpty = async (request: FastifyRequest) => { request.body ??= {} }

const adminRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const service = app.admin
  /** The caller as an operator (403 unless a superadmin now). */
  const operator = (request: FastifyRequest) => service.operator(sessionAuth(request), request.ip)
  /** Destructive actions also need the caller's password (and code), as for their own account. */
  const proven = async (request: FastifyRequest, proof: { password?: string; code?: string }) => {
    const op = await operator(request)
    await app.recentAuth.assert(sessionAuth(request), proof, { password: 'always' }, request.ip)
    return op
  }

  app.get('/admin/users', {
    config: SESSION,
    schema: { tags: TAGS, operationId: 'adminListUsers', summary: 'Accounts, by address prefix', querystring: AccountQuerySchema, response: { 200: AccountPageSchema } },
  }, async (request) => {
    await operator(request)
    return service.searchUsers(request.query.limit ?? DEFAULT_PAGE_SIZE, request.query.cursor, request.query.email_prefix)
  })

  app.get('/admin/users/:user_id', {
    config: SESSION,
    schema: { tags: TAGS, operationId: 'adminGetUser', summary: 'An account with its memberships and sessions', params: UserParamsSchema, response: { 200: AccountDetailSchema, ...errorResponses(404) } },
  }, async (request) => {
    await operator(request)
    return service.getUser(request.params.user_id)
  })

  app.post('/admin/users/:user_id/disable', {
    config: SESSION, preValidation: noBodyIsEmpty,
    schema: {
      tags: TAGS, operationId: 'adminDisableUser', summary: 'Disable an account: every session and token dies at once; logins fail as with a wrong password',
      description: 'Needs the administrator\'s password (and code). 409 for one\'s own account.',
      params: UserParamsSchema, body: ProofBodySchema, response: { 204: NoContent, ...errorResponses(404, 409, 423) },
    },
  }, async (request, reply) => {
    await service.disable(await proven(request, request.body), request.params.user_id)
    return reply.code(204).send(null)
  })

  app.post('/admin/users/:user_id/enable', {
    config: SESSION, preValidation: noBodyIsEmpty,
    schema: {
      tags: TAGS, operationId: 'adminEnableUser', summary: 'Enable a disabled account',
      description: 'Needs the administrator\'s password (and code): it gives an account its access back.',
      params: UserParamsSchema, body: ProofBodySchema, response: { 204: NoContent, ...errorResponses(404, 423) },
    },
  }, async (request, reply) => {
    await service.enable(await proven(request, request.body), request.params.user_id)
    return reply.code(204).send(null)
  })

  app.post('/admin/users/:user_id/password-reset', {
    config: SESSION,
    schema: { tags: TAGS, operationId: 'adminSendPasswordReset', summary: 'Mail the account a password-reset link', params: UserParamsSchema, response: { 202: Type.Object({ message: Type.String() }), ...errorResponses(404, 429) } },
  }, async (request, reply) => {
    const op = await operator(request)
    await limitMailTo(app, request, await service.addressOf(request.params.user_id)) // the address's mail limit holds for operators too
    await service.sendPasswordReset(op, request.params.user_id)
    return reply.code(202).send({ message: 'A password-reset link is on its way (none for a disabled account)' })
  })

  app.post('/admin/users/:user_id/erase', {
    config: SESSION, preValidation: noBodyIsEmpty,
    schema: {
      tags: TAGS, operationId: 'adminEraseUser', summary: 'Erase an account (GDPR): personal data removed, memberships and sessions gone',
      description: 'Needs the administrator\'s password (and code). 409, naming them, while the account is the last owner of an organization with other members.',
      params: UserParamsSchema, body: ProofBodySchema, response: { 204: NoContent, ...errorResponses(404, 409, 423) },
    },
  }, async (request, reply) => {
    await service.erase(await proven(request, request.body), request.params.user_id)
    return reply.code(204).send(null)
  })

  app.get('/admin/organizations', {
    config: SESSION,
    schema: { tags: TAGS, operationId: 'adminListOrganizations', summary: 'Organizations with their member counts', querystring: ListQuerySchema, response: { 200: OrganizationSummaryPageSchema } },
  }, async (request) => {
    await operator(request)
    return service.listOrganizations(request.query.limit ?? DEFAULT_PAGE_SIZE, request.query.cursor)
  })

  app.get('/admin/audit-events', {
    config: SESSION,
    schema: { tags: TAGS, operationId: 'adminListAuditEvents', summary: 'The platform audit log (administrators\' actions), newest first', querystring: ListQuerySchema, response: { 200: PlatformEventPageSchema } },
  }, async (request) => {
    await operator(request)
    return service.listEvents(request.query.limit ?? DEFAULT_PAGE_SIZE, request.query.cursor)
  })

  app.delete('/auth/me', {
    config: { auth: { org: false } }, preValidation: noBodyIsEmpty,
    schema: {
      tags: ['auth'], operationId: 'eraseMyAccount', summary: 'Erase my account: personal data removed, every session ends',
      description: 'Needs the password (and a code where 2FA is on). 409, naming them, while the caller is the last owner of an organization with other members.',
      body: ProofBodySchema, response: { 204: NoContent, ...errorResponses(409, 423) },
    },
  }, async (request, reply) => {
    const auth = sessionAuth(request)
    await app.recentAuth.assert(auth, request.body, { password: 'always' }, request.ip)
    await service.erase({ userId: auth.userId, ip: request.ip }, auth.userId)
    return reply.code(204).send(null)
  })
}

export default adminRoutes
