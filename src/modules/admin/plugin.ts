// Platform administration as one module: the service (also used by the CLI) and its routes.
import fp from 'fastify-plugin'
import { AdminService } from './service.js'

declare module 'fastify' {
  interface FastifyInstance {
    admin: AdminService
  }
}

export default fp(async (app) => {
  app.decorate('admin', new AdminService({ db: app.db, clock: app.clock, sessions: app.sessions, mailbox: app.mailbox, tenancy: app.tenancy, lockout: app.lockout, events: app.events }))
}, { name: 'admin', dependencies: ['mailbox', 'events'] })
