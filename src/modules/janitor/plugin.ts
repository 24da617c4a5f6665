// The janitor as a plugin: started when the app is ready, stopped on close.
import fp from 'fastify-plugin'
import { Janitor } from './janitor.js'

declare module 'fastify' {
  interface FastifyInstance {
    janitor: Janitor
  }
}

export default fp(async (app) => {
  const janitor = new Janitor({ db: app.db, config: app.config, clock: app.clock, log: app.log })
  app.decorate('janitor', janitor)
  app.addHook('onReady', async () => { janitor.start() })
  app.addHook('onClose', async () => { await janitor.stop() })
}, { name: 'janitor', dependencies: ['db'] })
