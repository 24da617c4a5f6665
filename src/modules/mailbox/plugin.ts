// The mailed-link flows as one module: the service other modules use
// (registration queues a verification mail through it) and its routes.
import fp from 'fastify-plugin'
import { MailTokens } from '../mail/tokens.js'
import { MailboxService } from './service.js'

declare module 'fastify' {
  interface FastifyInstance {
    mailbox: MailboxService
  }
}

export default fp(async (app) => {
  app.decorate('mailbox', new MailboxService({
    db: app.db, config: app.config, clock: app.clock, hasher: app.passwordHasher, outbox: app.outbox,
    tokens: new MailTokens({ clock: app.clock }), sessions: app.sessions, lockout: app.lockout, audit: app.audit,
    events: app.events, log: app.log,
  }))
}, { name: 'mailbox', dependencies: ['mail', 'events'] })
