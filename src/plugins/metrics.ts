// Prometheus metrics (prom-client) on a registry of this app instance:
// request latency by route and status, authentication outcomes, lockouts,
// refresh-token reuse, API-key cache hits. GET /metrics, behind METRICS_TOKEN when set.
import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Counter, Registry, collectDefaultMetrics } from 'prom-client'
import { timingSafeEqual } from 'node:crypto'
import { unauthorized } from '../errors.js'
import { LabeledCounter, LatencyHistogram } from '../lib/hot-path-metrics.js'

export interface Metrics {
  registry: Registry
  authOutcome(method: 'session' | 'api_key' | 'none', result: 'success' | 'failure'): void
  lockout(): void
  refreshReuse(): void
  apiKeyCache(result: 'hit' | 'miss'): void
  rateLimitStoreError(): void
  /** A request no route matched (Fastify's 404 handler), as route "unknown". */
  observeUnrouted(method: string, status: number, seconds: number): void
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
}

export default fp(async (app) => {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'portcullis_process_' })
  const duration = new LatencyHistogram('portcullis_http_request_duration_seconds', 'Request latency by route and status',
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registry)
  const auth = new LabeledCounter('portcullis_auth_outcomes_total', 'Authentication outcomes', registry)
  const lockouts = new Counter({ name: 'portcullis_lockouts_total', help: 'Emails locked after repeated failures', registers: [registry] })
  const reuse = new Counter({ name: 'portcullis_refresh_reuse_detected_total', help: 'Refresh-token reuse detections (sessions revoked)', registers: [registry] })
  const keyCache = new LabeledCounter('portcullis_api_key_cache_lookups_total', 'API-key verifications by cache result', registry)
  const storeErrors = new Counter({ name: 'portcullis_rate_limit_store_errors_total', help: 'Rate-limit store failures (limits failed open)', registers: [registry] })

  // Each route observes its own latency through observers looked up once per route and status;
  // Fastify's 404 handler reports through observeUnrouted. A hook per route, not a global one
  // reading request.routeOptions (a getter that builds an object on every call).
  const observerFor = (method: string, route: string) => {
    const byStatus = new Map<number, (seconds: number) => void>()
    return (status: number, seconds: number) => {
      let observe = byStatus.get(status)
      if (!observe) byStatus.set(status, observe = duration.observerOf({ method, route, status_code: status }))
      observe(seconds)
    }
  }
  app.addHook('onRoute', (route) => {
    const methods = [route.method].flat()
    const observers = new Map(methods.map((m) => [m, observerFor(m, route.url)]))
    const observe = methods.length === 1 ? observers.get(methods[0]!)! : undefined
    route.onResponse = [(request: FastifyRequest, reply: FastifyReply, done: () => void) => {
      (observe ?? observers.get(request.method)!)(reply.statusCode, reply.elapsedTime / 1000)
      done()
    }, ...(route.onResponse ? [route.onResponse].flat() : [])] as typeof route.onResponse
  })
  const unrouted = new Map<string, ReturnType<typeof observerFor>>()
  const outcome = (method: string, result: string) => auth.incrementerOf({ method, result })
  const outcomes = {
    session: { success: outcome('session', 'success'), failure: outcome('session', 'failure') },
    api_key: { success: outcome('api_key', 'success'), failure: outcome('api_key', 'failure') },
    none: { success: outcome('none', 'success'), failure: outcome('none', 'failure') },
  }
  const keyCacheResults = { hit: keyCache.incrementerOf({ result: 'hit' }), miss: keyCache.incrementerOf({ result: 'miss' }) }

  app.decorate('metrics', {
    registry,
    authOutcome: (method, result) => outcomes[method][result](),
    lockout: () => lockouts.inc(),
    refreshReuse: () => reuse.inc(),
    apiKeyCache: (result) => keyCacheResults[result](),
    rateLimitStoreError: () => storeErrors.inc(),
    observeUnrouted: (method, status, seconds) => {
      let observe = unrouted.get(method)
      if (!observe) unrouted.set(method, observe = observerFor(method, 'unknown'))
      observe(status, seconds)
    },
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
