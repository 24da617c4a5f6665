// HTTP shape of the mailed-link flows. Rules live in service.ts.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { sessionAuth } from '../../plugins/authenticate.js'
import { errorResponses, NoContent } from '../../schemas/common.js'
import { clientMeta } from '../auth/routes.js'
import { limitMailTo } from '../mail/limits.js'
import { AcceptedSchema, ChangeEmailBodySchema, ForgotPasswordBodySchema, MailedTokenBodySchema, ResetPasswordBodySchema } from './schemas.js'

const TAGS = ['auth']

const mailboxRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config } = app
  const service = app.mailbox
  const perAddress = (request: FastifyRequest, email: string) => limitMailTo(app, request, email)

  app.post('/auth/password/forgot', {
    config: { rateLimit: app.ipRateLimit(config.RATE_LIMIT_PASSWORD_RESET) },
    schema: {
      tags: TAGS, operationId: 'forgotPassword', summary: 'Mail a password-reset link',
      description: 'Always 202 with the same body, whether or not an account has the address; the link (valid PASSWORD_RESET_TTL, single-use) goes to APP_URL/reset-password?token=.',
      body: ForgotPasswordBodySchema,
      response: { 202: AcceptedSchema },
    },
  }, async (request, reply) => {
    await perAddress(request, request.body.email)
    await service.forgotPassword(request.body.email)
    return reply.code(202).send({ message: 'If an account has this address, a link to reset its password is on its way' })
  })

  app.post('/auth/password/reset', {
    config: { rateLimit: app.ipRateLimit(config.RATE_LIMIT_PASSWORD_RESET) },
    schema: {
      tags: TAGS, operationId: 'resetPassword', summary: 'Set a new password with a mailed reset token',
      description: 'Every session and refresh token of the account is revoked, any other pending reset or change-of-address link spent, the lockout cleared, and a notice mailed.',
      body: ResetPasswordBodySchema,
      response: { 204: NoContent },
    },
  }, async (request, reply) => {
    await service.resetPassword(request.body.token, request.body.new_password, clientMeta(request))
    return reply.code(204).send(null)
  })

  app.post('/auth/email/verify', {
    config: { rateLimit: app.ipRateLimit(config.RATE_LIMIT_PASSWORD_RESET) },
    schema: {
      tags: TAGS, operationId: 'verifyEmail', summary: 'Prove the account\'s address with a mailed verification token',
      body: MailedTokenBodySchema,
      response: { 204: NoContent },
    },
  }, async (request, reply) => {
    await service.verifyEmail(request.body.token, clientMeta(request))
    return reply.code(204).send(null)
  })

  app.post('/auth/email/verify/resend', {
    config: { rateLimit: app.ipRateLimit(config.RATE_LIMIT_PASSWORD_RESET) },
    schema: {
      tags: TAGS, operationId: 'resendEmailVerification', summary: 'Mail a new verification link (the previous one stops working)',
      description: 'Always 202 with the same body, whether or not an unverified account has the address (no session needed: with EMAIL_VERIFICATION=required there is none yet).',
      body: ForgotPasswordBodySchema,
      response: { 202: AcceptedSchema },
    },
  }, async (request, reply) => {
    await perAddress(request, request.body.email)
    await service.resendVerification(request.body.email)
    return reply.code(202).send({ message: 'If an unverified account has this address, a new link is on its way' })
  })

  app.post('/auth/email', {
    config: { auth: { org: false } },
    schema: {
      tags: TAGS, operationId: 'changeEmail', summary: 'Change the address: a link to the new one, a notice to the old one',
      description: 'Needs the password always (and, with 2FA, a code unless the session logged in within REAUTH_WINDOW). Nothing changes until the link mailed to the new address is followed (POST /auth/email/confirm).',
      body: ChangeEmailBodySchema,
      response: { 202: AcceptedSchema, ...errorResponses(423) },
    },
  }, async (request, reply) => {
    const auth = sessionAuth(request)
    // The password every time, as for a password change: a stolen token that could move the
    // address could then reset the password by mail (test/regressions/stolen-token-moves-the-account).
    const verified = await app.recentAuth.assert(auth, { password: request.body.password, code: request.body.code }, { password: 'always' }, request.ip)
    await perAddress(request, request.body.new_email)
    await service.requestEmailChange(verified, auth.sessionId, request.body.new_email, clientMeta(request))
    return reply.code(202).send({ message: 'A link to confirm the new address is on its way; the address changes once it is followed' })
  })

  app.post('/auth/email/confirm', {
    config: { rateLimit: app.ipRateLimit(config.RATE_LIMIT_PASSWORD_RESET) },
    schema: {
      tags: TAGS, operationId: 'confirmEmailChange', summary: 'Move the account to the new address with the token mailed there',
      description: 'The new address is verified by the same act; 409 when another account has taken it meanwhile.',
      body: MailedTokenBodySchema,
      response: { 204: NoContent, ...errorResponses(409) },
    },
  }, async (request, reply) => {
    await service.confirmEmailChange(request.body.token, clientMeta(request))
    return reply.code(204).send(null)
  })
}

export default mailboxRoutes
