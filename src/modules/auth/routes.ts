// HTTP shape of accounts: register, login, me. Rules live in service.ts.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { sessionAuth } from '../../plugins/authenticate.js'
import type { FastifyRequest } from 'fastify'
import { withFormBodies } from '../../plugins/form-body.js'
import { errorResponses, NoContent } from '../../schemas/common.js'
import {
  ChangePasswordBodySchema, LoginFormBodySchema, LoginJsonBodySchema, LoginResponseSchema, MeResponseSchema, RegisterBodySchema,
  RegisterResponseSchema, type LoginInput,
} from './schemas.js'
import type { ClientMeta } from '../sessions/service.js'

const TAGS = ['auth']

export const clientMeta = (request: FastifyRequest): ClientMeta => ({
  userAgent: request.headers['user-agent'], ip: request.ip,
})

const authRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config } = app
  const service = app.authService

  app.post('/auth/register', {
    config: { rateLimit: app.ipRateLimit(config.RATE_LIMIT_REGISTER) },
    schema: {
      tags: TAGS, operationId: 'register', summary: 'Create an account and its organization',
      body: RegisterBodySchema,
      response: { 201: RegisterResponseSchema, ...errorResponses(409) },
    },
  }, async (request, reply) => {
    return reply.code(201).send(await service.register(request.body, clientMeta(request)))
  })

  // Login also speaks the OAuth2 password grant's form encoding.
  await withFormBodies(app, (scope) => {
    scope.post('/auth/login', {
      config: { rateLimit: app.ipRateLimit(config.RATE_LIMIT_LOGIN) },
      schema: {
        tags: TAGS, operationId: 'login', summary: 'Log in with email and password',
        description: 'JSON `{email, password}` or an OAuth2 password-grant form `username=&password=`.',
        body: {
          content: {
            'application/json': { schema: LoginJsonBodySchema },
            'application/x-www-form-urlencoded': { schema: LoginFormBodySchema },
          },
        },
        response: { 200: LoginResponseSchema, ...errorResponses(401, 403, 423) },
      },
    }, async (request) => {
      const body = request.body as Record<string, string>
      const input: LoginInput = { email: body.email ?? body.username!, password: body.password!, orgId: body.org_id }
      return service.login(input, clientMeta(request))
    })
  })

  app.get('/auth/me', {
    config: { auth: { methods: ['session', 'api_key'] } },
    schema: {
      tags: TAGS, operationId: 'getMe', summary: 'The caller, its organization context and memberships',
      response: { 200: MeResponseSchema, ...errorResponses(403) },
    },
  }, async (request) => service.me(request.auth!))

  app.post('/auth/password', {
    config: { auth: { org: false } },
    schema: {
      tags: TAGS, operationId: 'changePassword', summary: 'Change the password; every other session is revoked',
      description: 'The current password always; with 2FA on, also a code unless the session logged in within REAUTH_WINDOW. Any pending password-reset or change-of-address link stops working.',
      body: ChangePasswordBodySchema,
      response: { 204: NoContent, ...errorResponses(423) },
    },
  }, async (request, reply) => {
    const auth = sessionAuth(request)
    await app.recentAuth.assert(auth, { password: request.body.current_password, code: request.body.code }, { password: 'always' }, request.ip)
    await service.changePassword(auth, request.body.new_password)
    return reply.code(204).send(null)
  })
}

export default authRoutes
