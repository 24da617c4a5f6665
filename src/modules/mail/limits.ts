// The one limit on mail to an address, whoever asks for it and by which flow
// (reset, verification, change of email, invitation): RATE_LIMIT_MAIL_PER_EMAIL
// an hour, counted for addresses without an account too, so a 429 tells nothing.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { KeyedLimit } from '../../plugins/rate-limit.js'
import { normalizeEmail } from '../auth/service.js'

const HOUR = 3_600_000

/**
 * Counted under the lockout's HMAC of the address, never the address: the counter lives an hour
 * (in Redis, with several instances), and an erased account's address must not stay behind in it.
 */
const mailTo = (app: FastifyInstance, email: string): KeyedLimit =>
  ({ name: 'mail-to', key: app.lockout.keyOf(normalizeEmail(email)), max: app.config.RATE_LIMIT_MAIL_PER_EMAIL, windowMs: HOUR })

export const limitMailTo = (app: FastifyInstance, request: FastifyRequest, email: string) => app.consumeKeyedLimit(request, mailTo(app, email))

/**
 * An invitation about to be mailed: it counts toward the address's limit and toward its
 * organization's RATE_LIMIT_INVITATIONS an hour (invitations are mail whose words an organization
 * chooses). Both are read before either is counted, so one refused by either costs neither budget.
 * Counted the organization's first: were a race to refuse between the two counts, the inviter's
 * budget pays, not the address's owner (whose password resets share it).
 */
export const limitInvitationMail = (app: FastifyInstance, request: FastifyRequest, orgId: string, email: string) =>
  app.consumeKeyedLimits(request, [
    { name: 'invitations', key: orgId, max: app.config.RATE_LIMIT_INVITATIONS, windowMs: HOUR },
    mailTo(app, email),
  ])
