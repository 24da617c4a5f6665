// The one limit on mail to an address, whoever asks for it and by which flow
// (reset, verification, change of email, invitation): RATE_LIMIT_MAIL_PER_EMAIL
// an hour, counted for addresses without an account too, so a 429 tells nothing.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { normalizeEmail } from '../auth/service.js'

const HOUR = 3_600_000

export const limitMailTo = (app: FastifyInstance, request: FastifyRequest, email: string) =>
  app.consumeKeyedLimit(request, { name: 'mail-to', key: normalizeEmail(email), max: app.config.RATE_LIMIT_MAIL_PER_EMAIL, windowMs: HOUR })
