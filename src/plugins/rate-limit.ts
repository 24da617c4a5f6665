// Rate limits (@fastify/rate-limit): a per-credential limit on every route,
// per-client limits that routes declare in `config.rateLimit` (login,
// register, refresh, verify-2fa), and a per-client limit on failed
// credentials (RATE_LIMIT_AUTH_FAILURES) that a valid credential never meets.
// A client is an IPv4 address or an IPv6 /64. Counters live in Redis when
// REDIS_URL is set, else in memory. A Redis outage fails open: requests are
// served and the failure is logged, never a 500.
import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import type { FastifyRequest } from 'fastify'
import { Redis } from 'ioredis'
import { hash } from 'node:crypto'
import { AppError } from '../errors.js'
import { clientAddressKey } from '../lib/client-address.js'
import { credentialOf } from '../lib/credentials.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Per-client limit for a route: `config: { rateLimit: app.ipRateLimit(10) }`. */
    ipRateLimit(perMinute: number): { max: number; timeWindow: number; keyGenerator: (request: FastifyRequest) => string }
    /**
     * Counts a failed credential against the request's client; throws 429 once the client has
     * failed RATE_LIMIT_AUTH_FAILURES times this minute. Only failures are counted, so valid
     * credentials from the same address (everyone's, behind a gateway) are never refused by it.
     */
    recordAuthFailure(request: FastifyRequest): Promise<void>
    /** Counts a request against a named per-client limit decided inside a handler (429 past it). */
    consumeClientLimit(request: FastifyRequest, name: string, perMinute: number): Promise<void>
  }
}

const MINUTE = 60_000

/** The client (X-Forwarded-For only through TRUST_PROXY, via Fastify's request.ip): an IPv4 address or an IPv6 /64. */
const byIp = (request: FastifyRequest) => `ip:${clientAddressKey(request.ip)}`

/**
 * The credential when there is one, as the credential parser reads it (so padding a header does
 * not make a new bucket; hashed: raw tokens never become store keys), else the client.
 */
const byCredential = (prefix: string) => (request: FastifyRequest): string => {
  const credential = credentialOf(prefix, { authorization: request.headers.authorization, apiKeyHeader: request.headers['x-api-key'] })
  if (!credential?.value) return byIp(request)
  return `cred:${hash('sha256', credential.value, 'base64url').slice(0, 22)}`
}

export default fp(async (app) => {
  const { config } = app
  let redis: Redis | undefined
  if (config.REDIS_URL) {
    redis = new Redis(config.REDIS_URL, {
      // Fail fast while Redis is away, so requests are not held up waiting for it.
      enableOfflineQueue: false, maxRetriesPerRequest: 0, connectTimeout: 1000, commandTimeout: 500, lazyConnect: true,
    })
    redis.on('error', (err) => {
      app.metrics.rateLimitStoreError()
      app.log.warn({ err: err.message }, 'rate-limit store unavailable; limits fail open')
    })
    await redis.connect().catch(() => { /* fail open; ioredis keeps reconnecting */ })
    app.addHook('onClose', async () => { redis?.disconnect() })
  }

  await app.register(rateLimit, {
    global: config.RATE_LIMIT_GLOBAL > 0,
    max: config.RATE_LIMIT_GLOBAL || 1,
    timeWindow: MINUTE,
    keyGenerator: byCredential(config.API_KEY_PREFIX),
    ...(redis ? { redis, nameSpace: 'portcullis-rl:' } : {}),
    skipOnError: true,
    enableDraftSpec: true, // RateLimit-Limit / -Remaining / -Reset, plus Retry-After on 429
    errorResponseBuilder: (_request, context) =>
      new AppError('RATE_LIMITED', `Too many requests; retry in ${Math.ceil(context.ttl / 1000)} s`),
  })

  app.decorate('ipRateLimit', (perMinute: number) => ({ max: perMinute, timeWindow: MINUTE, keyGenerator: byIp }))

  // Limits applied from inside a handler, where the route alone does not say which applies.
  const limiters = new Map<string, ReturnType<typeof app.createRateLimit>>()
  async function consume(request: FastifyRequest, name: string, perMinute: number, what: string) {
    let limiter = limiters.get(name)
    if (!limiter) {
      limiter = app.createRateLimit({ max: perMinute, timeWindow: MINUTE, keyGenerator: (r) => `${name}:${byIp(r)}` })
      limiters.set(name, limiter)
    }
    const counted = await limiter(request)
    if (!counted.isAllowed && counted.isExceeded) {
      throw new AppError('RATE_LIMITED', `${what}; retry in ${counted.ttlInSeconds} s`, undefined, {
        'retry-after': String(counted.ttlInSeconds), 'ratelimit-limit': String(perMinute), 'ratelimit-remaining': '0',
        'ratelimit-reset': String(counted.ttlInSeconds),
      })
    }
  }
  app.decorate('consumeClientLimit', (request: FastifyRequest, name: string, perMinute: number) => consume(request, name, perMinute, 'Too many requests'))
  app.decorate('recordAuthFailure', async (request: FastifyRequest) => {
    if (config.RATE_LIMIT_AUTH_FAILURES > 0) await consume(request, 'fail', config.RATE_LIMIT_AUTH_FAILURES, 'Too many failed credentials from this client')
  })
}, { name: 'rate-limit', dependencies: ['metrics'] })
