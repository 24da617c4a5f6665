// The one limit on mail to an address, whoever asks for it and by which flow
// (reset, verification, change of email, invitation): RATE_LIMIT_MAIL_PER_EMAIL
// an hour, counted for addresses without an account too, so a 429 tells nothing.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { normalizeEmail } from '../auth/service.js'

const HOUR = 3_600_000

export const limitMailTo = (app: FastifyInstance, request: FastifyRequest, email: string) =>
  app.consumeKeyedLimit(request, { name: 'mail-to', key: normalizeEmail(email), max: app.config.RATE_LIMIT_MAIL_PER_EMAIL, windowMs: HOUR })

/**
 * An invitation about to be mailed: it counts toward the address's limit and toward its
 * organization's RATE_LIMIT_INVITATIONS an hour (invitations are mail whose words an organization
 * chooses). Spent only once the invitation is allowed, so a refused one costs nobody's budget.
 */
export const limitInvitationMail = async (app: FastifyInstance, request: FastifyRequest, orgId: string, email: string) => {
  await app.consumeKeyedLimit(request, { name: 'invitations', key: orgId, max: app.config.RATE_LIMIT_INVITATIONS, windowMs: HOUR })
  await limitMailTo(app, request, email)
}
