// Prometheus metrics (prom-client) on a registry of this app instance:
// request latency by route and status, authentication outcomes, lockouts,
// refresh-token reuse, API-key cache hits. GET /metrics, behind METRICS_TOKEN when set.
import fp from 'fastify-plugin'
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { timingSafeEqual } from 'node:crypto'
import { unauthorized } from '../errors.js'

export interface Metrics {
  registry: Registry
  authOutcome(method: 'session' | 'api_key' | 'none', result: 'success' | 'failure'): void
  lockout(): void
  refreshReuse(): void
  apiKeyCache(result: 'hit' | 'miss'): void
  rateLimitStoreError(): void
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
}

export default fp(async (app) => {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'portcullis_process_' })
  const duration = new Histogram({
    name: 'portcullis_http_request_duration_seconds', help: 'Request latency by route and status',
    labelNames: ['method', 'route', 'status_code'], registers: [registry],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
  })
  const auth = new Counter({ name: 'portcullis_auth_outcomes_total', help: 'Authentication outcomes', labelNames: ['method', 'result'], registers: [registry] })
  const lockouts = new Counter({ name: 'portcullis_lockouts_total', help: 'Emails locked after repeated failures', registers: [registry] })
  const reuse = new Counter({ name: 'portcullis_refresh_reuse_detected_total', help: 'Refresh-token reuse detections (sessions revoked)', registers: [registry] })
  const keyCache = new Counter({ name: 'portcullis_api_key_cache_lookups_total', help: 'API-key verifications by cache result', labelNames: ['result'], registers: [registry] })
  const storeErrors = new Counter({ name: 'portcullis_rate_limit_store_errors_total', help: 'Rate-limit store failures (limits failed open)', registers: [registry] })

  app.addHook('onResponse', (request, reply, done) => {
    duration.observe({ method: request.method, route: request.routeOptions.url ?? 'unknown', status_code: reply.statusCode }, reply.elapsedTime / 1000)
    done()
  })

  app.decorate('metrics', {
    registry,
    authOutcome: (method, result) => auth.inc({ method, result }),
    lockout: () => lockouts.inc(),
    refreshReuse: () => reuse.inc(),
    apiKeyCache: (result) => keyCache.inc({ result }),
    rateLimitStoreError: () => storeErrors.inc(),
  } satisfies Metrics)

  const token = app.config.METRICS_TOKEN
  const expected = Buffer.from(token)
  app.get('/metrics', { schema: { hide: true } }, async (request, reply) => {
    if (token) {
      const given = Buffer.from(/^Bearer[ \t]+(\S+)\s*$/i.exec(request.headers.authorization ?? '')?.[1] ?? '')
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw unauthorized('Invalid or missing metrics token')
    }
    return reply.type(registry.contentType).send(await registry.metrics())
  })
}, { name: 'metrics' })
