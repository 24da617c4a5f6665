// HTTP shape of two-factor authentication.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { sessionAuth } from '../../plugins/authenticate.js'
import { Type } from '@sinclair/typebox'
import { errorResponses, NoContent } from '../../schemas/common.js'
import { LoginTokensSchema } from '../auth/schemas.js'
import {
  DisableBodySchema, EnableBodySchema, EnableResponseSchema, RegenerateRecoveryCodesBodySchema, SetupResponseSchema, VerifyTwoFactorBodySchema,
} from './schemas.js'

const TAGS = ['two-factor']

const mfaRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { mfa, authService, recentAuth } = app

  app.post('/auth/verify-2fa', {
    config: { rateLimit: app.ipRateLimit(app.config.RATE_LIMIT_VERIFY_2FA) },
    schema: {
      tags: TAGS, operationId: 'verifyTwoFactor', summary: 'Finish a two-factor login with a TOTP or recovery code',
      body: VerifyTwoFactorBodySchema,
      response: { 200: Type.Ref(LoginTokensSchema), ...errorResponses(401, 403, 423) },
    },
  }, async (request) => authService.verifySecondFactor(request.body.mfa_token, request.body.code))

  app.post('/auth/2fa/setup', {
    config: { auth: { org: false } },
    schema: {
      tags: TAGS, operationId: 'setupTwoFactor', summary: 'Start enabling TOTP: a secret to add to an authenticator app',
      response: { 200: SetupResponseSchema, ...errorResponses(409) },
    },
  }, async (request) => mfa.setup(sessionAuth(request)))

  app.post('/auth/2fa/enable', {
    config: { auth: { org: false } },
    schema: {
      tags: TAGS, operationId: 'enableTwoFactor', summary: 'Confirm a code; two-factor is on and recovery codes are returned once',
      description: 'Needs the password too, unless the session logged in within REAUTH_WINDOW. Every other session is revoked.',
      body: EnableBodySchema,
      response: { 200: EnableResponseSchema, ...errorResponses(409, 423) },
    },
  }, async (request) => {
    const auth = sessionAuth(request)
    await recentAuth.assert(auth, { password: request.body.password }, {}, request.ip)
    return mfa.enable(auth, request.body.code)
  })

  app.post('/auth/2fa/disable', {
    config: { auth: { org: false } },
    schema: {
      tags: TAGS, operationId: 'disableTwoFactor', summary: 'Turn two-factor off (password and a code required)',
      body: DisableBodySchema,
      response: { 204: NoContent, ...errorResponses(409, 423) },
    },
  }, async (request, reply) => {
    const auth = sessionAuth(request)
    await recentAuth.assert(auth, request.body, { password: 'always', code: 'always' }, request.ip)
    await mfa.disable(auth)
    return reply.code(204).send(null)
  })

  app.post('/auth/2fa/recovery-codes', {
    config: { auth: { org: false } },
    schema: {
      tags: TAGS, operationId: 'regenerateRecoveryCodes', summary: 'Replace the recovery codes (recent authentication required)',
      description: 'The password and a code, unless the session logged in within REAUTH_WINDOW. The old codes stop working.',
      body: RegenerateRecoveryCodesBodySchema,
      response: { 200: EnableResponseSchema, ...errorResponses(409, 423) },
    },
  }, async (request) => {
    const auth = sessionAuth(request)
    await recentAuth.assert(auth, request.body, {}, request.ip)
    return mfa.regenerateRecoveryCodes(auth)
  })
}

export default mfaRoutes
