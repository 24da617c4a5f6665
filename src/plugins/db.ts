// Opens the database of the configured mode, applies migrations, closes on shutdown.
import fp from 'fastify-plugin'
import { openDatabase, type Database, type DatabaseHandle } from '../db/client.js'

declare module 'fastify' {
  interface FastifyInstance {
    db: Database
    database: DatabaseHandle
  }
}

export default fp<{ database?: DatabaseHandle }>(async (app, opts) => {
  const owned = !opts.database
  const handle = opts.database ?? await openDatabase(app.config)
  try {
    await handle.migrate()
  } catch (err) {
    if (owned) await handle.close().catch(() => {})
    throw err
  }
  app.decorate('database', handle)
  app.decorate('db', handle.db)
  if (owned) app.addHook('onClose', async () => handle.close())
}, { name: 'db' })
