// HTTP shape of sessions: refresh, logout, logout-all, list and revoke.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { sessionAuth } from '../../plugins/authenticate.js'
import { AppError } from '../../errors.js'
import { withFormBodies } from '../../plugins/form-body.js'
import { DEFAULT_PAGE_SIZE, errorResponses, ListQuerySchema, NoContent } from '../../schemas/common.js'
import {
  LogoutBodySchema, RefreshFormBodySchema, RefreshJsonBodySchema, SessionPageSchema,
  SessionParamsSchema, TokenPairSchema,
} from './schemas.js'
import { Type } from '@sinclair/typebox'

const TAGS = ['sessions']

const sessionRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const sessions = app.sessions

  await withFormBodies(app, (scope) => {
    scope.post('/auth/refresh', {
      config: { rateLimit: app.ipRateLimit(app.config.RATE_LIMIT_REFRESH) },
      schema: {
        tags: TAGS, operationId: 'refresh', summary: 'Rotate a refresh token for a new token pair',
        description: 'JSON `{refresh_token, org_id?}` or an OAuth2 form `grant_type=refresh_token&refresh_token=`. '
          + 'A token that was already used is answered with the same new pair for a few seconds (a retry); '
          + 'after that it revokes the whole session (REFRESH_TOKEN_REUSED).',
        body: {
          content: {
            'application/json': { schema: RefreshJsonBodySchema },
            'application/x-www-form-urlencoded': { schema: RefreshFormBodySchema },
          },
        },
        response: { 200: Type.Ref(TokenPairSchema), ...errorResponses(401, 403) },
      },
    }, async (request) => {
      const body = request.body as { refresh_token: string; org_id?: string }
      return sessions.refresh(body.refresh_token, body.org_id)
    })
  })

  app.post('/auth/logout', {
    config: { auth: { org: false } },
    schema: {
      tags: TAGS, operationId: 'logout', summary: 'Revoke the current session (its refresh and access tokens)',
      body: Type.Optional(LogoutBodySchema),
      response: { 204: NoContent },
    },
  }, async (request, reply) => {
    const auth = sessionAuth(request)
    const ids = [auth.sessionId!]
    const presented = request.body?.refresh_token
    const other = presented ? await sessions.sessionOfRefreshToken(auth.userId, presented) : undefined
    if (other) ids.push(other)
    await sessions.revoke(auth.userId, ids)
    return reply.code(204).send(null)
  })

  app.post('/auth/logout-all', {
    config: { auth: { org: false } },
    schema: {
      tags: TAGS, operationId: 'logoutAll', summary: 'Revoke every session of the caller',
      description: 'Also spends any pending password-reset or change-of-address link of the account.',
      response: { 204: NoContent },
    },
  }, async (request, reply) => {
    await app.authService.logoutEverywhere(sessionAuth(request).userId)
    return reply.code(204).send(null)
  })

  app.get('/auth/sessions', {
    config: { auth: { org: false } },
    schema: {
      tags: TAGS, operationId: 'listSessions', summary: 'The caller\'s live sessions, newest first',
      querystring: ListQuerySchema,
      response: { 200: SessionPageSchema },
    },
  }, async (request) => {
    const auth = sessionAuth(request)
    return sessions.list(auth.userId, auth.sessionId, request.query.limit ?? DEFAULT_PAGE_SIZE, request.query.cursor)
  })

  app.delete('/auth/sessions/:id', {
    config: { auth: { org: false } },
    schema: {
      tags: TAGS, operationId: 'revokeSession', summary: 'Revoke one of the caller\'s sessions',
      params: SessionParamsSchema,
      response: { 204: NoContent, ...errorResponses(404) },
    },
  }, async (request, reply) => {
    const auth = sessionAuth(request)
    const revoked = await sessions.revoke(auth.userId, [request.params.id])
    if (!revoked.length) throw new AppError('NOT_FOUND', 'Session not found')
    return reply.code(204).send(null)
  })
}

export default sessionRoutes
