// Invitations as one module: the service registration uses (sign-up with a token) and its routes.
import fp from 'fastify-plugin'
import { InvitationService } from './service.js'

declare module 'fastify' {
  interface FastifyInstance {
    invitations: InvitationService
  }
}

export default fp(async (app) => {
  app.decorate('invitations', new InvitationService({
    db: app.db, config: app.config, clock: app.clock, audit: app.audit, outbox: app.outbox, tenancy: app.tenancy,
  }))
}, { name: 'invitations', dependencies: ['mail'] })
