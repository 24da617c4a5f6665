// The ceiling: a bare Fastify app (same version) with one route and no logger.
import Fastify from 'fastify'

const app = Fastify({ logger: false })
app.get('/hello', async () => ({ hello: 'world' }))
await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT) })
process.on('SIGTERM', () => { void app.close().then(() => process.exit(0)) })
