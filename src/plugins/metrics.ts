// Prometheus metrics (prom-client) on a registry of this app instance:
// request latency by route and status, authentication outcomes, lockouts,
// refresh-token reuse, API-key cache hits. GET /metrics, behind METRICS_TOKEN when set.
import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
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

  // Each route observes its own latency with label children bound once per status (prom-client
  // otherwise hashes a labels object on every observation); Fastify's 404 handler reports through
  // observeUnrouted. A hook per route, not a global one reading request.routeOptions (a getter that
  // builds an object on every call).
  const observerFor = (method: string, route: string) => {
    const byStatus = new Map<number, Histogram.Internal<'method' | 'route' | 'status_code'>>()
    return (status: number, seconds: number) => {
      let child = byStatus.get(status)
      if (!child) byStatus.set(status, child = duration.labels({ method, route, status_code: status }))
      child.observe(seconds)
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
  const outcomes = {
    session: { success: auth.labels('session', 'success'), failure: auth.labels('session', 'failure') },
    api_key: { success: auth.labels('api_key', 'success'), failure: auth.labels('api_key', 'failure') },
    none: { success: auth.labels('none', 'success'), failure: auth.labels('none', 'failure') },
  }
  const keyCacheResults = { hit: keyCache.labels('hit'), miss: keyCache.labels('miss') }

  app.decorate('metrics', {
    registry,
    authOutcome: (method, result) => outcomes[method][result].inc(),
    lockout: () => lockouts.inc(),
    refreshReuse: () => reuse.inc(),
    apiKeyCache: (result) => keyCacheResults[result].inc(),
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
