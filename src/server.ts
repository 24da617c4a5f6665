// The only file that listens: config → buildApp → listen → graceful close.
import closeWithGrace from 'close-with-grace'
import { ConfigError, loadConfig, loadDotEnv, resolveSecretKey } from './config.js'
import { buildApp, SERVICE_BUILD_OPTIONS } from './app.js'

async function main() {
  loadDotEnv()
  let config
  try {
    config = resolveSecretKey(loadConfig(), (msg) => process.emitWarning(msg))
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message)
      process.exit(1)
    }
    throw err
  }
  const app = await buildApp(config, SERVICE_BUILD_OPTIONS)

  // postgres.js 3.4.9 can throw from a setImmediate when a connection dies mid-transaction
  // (porsager/postgres#1154, #1208; fixes not released): the query has already been rejected
  // with CONNECTION_CLOSED, so this one is logged and survived. Anything else shuts down.
  process.on('uncaughtException', (err) => {
    if (isPostgresClosedSocketWrite(err)) {
      app.log.error({ err }, 'postgres.js wrote to a closed connection (known driver bug); continuing')
      return
    }
    app.log.fatal({ err }, 'uncaught exception; shutting down')
    app.close().finally(() => process.exit(1))
  })

  // SIGTERM/SIGINT: stop accepting, drain in-flight requests, close the database.
  closeWithGrace({ delay: 10_000, skip: ['uncaughtException'] }, async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'shutting down after an error')
    else app.log.info({ signal }, 'shutting down')
    await app.close()
  })

  await app.listen({ host: config.HOST, port: config.PORT })
}

function isPostgresClosedSocketWrite(err: unknown): boolean {
  const e = err as { name?: string; message?: string; stack?: string } | undefined
  return e?.name === 'TypeError' && /reading 'write'/.test(e.message ?? '')
    && /nextWrite/.test(e.stack ?? '') && /postgres[\\/]src[\\/]connection\.js/.test(e.stack ?? '')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
