// The floor under every route of the service: the production build's app (its
// logger, request ids, global and per-route hooks, rate limiting, metrics, the
// same configuration as the service in the bench) with two routes that do
// nothing but answer from onRequest, as forward-auth answers a remembered
// credential. What a route costs here, the service pays before its own work.
import { fileURLToPath } from 'node:url'

// The build the service runs (the bench has just made it), typed by its sources.
const dist = (file: string) => fileURLToPath(new URL(`../../dist/${file}`, import.meta.url))
const { loadConfig, resolveSecretKey } = await import(dist('config.js')) as typeof import('../../src/config.js')
const { buildApp } = await import(dist('app.js')) as typeof import('../../src/app.js')

const config = resolveSecretKey(loadConfig(), () => {})
const app = await buildApp(config)
const answer = (_request: unknown, reply: { send(): void }) => { reply.send() }
// As forward-auth: no browser security headers (a gateway consumes the answer).
app.get('/floor/gateway', { config: { securityHeaders: false }, onRequest: answer }, answer)
// As every other route: helmet's security headers.
app.get('/floor/browser', { onRequest: answer }, answer)
await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT) })
process.on('SIGTERM', () => { void app.close().then(() => process.exit(0)) })
