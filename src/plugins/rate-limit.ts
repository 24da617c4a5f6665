// Rate limits. Per-client limits that routes declare in `config.rateLimit`
// (login, register, refresh, verify-2fa) and a per-client limit on failed
// credentials (RATE_LIMIT_AUTH_FAILURES, which a valid credential never meets)
// are @fastify/rate-limit's, in Redis when REDIS_URL is set, else in memory.
// A client is an IPv4 address or an IPv6 /64. A Redis outage fails open:
// requests are served and the failure is logged, never a 500.
//
// Every other request spends from a budget (RATE_LIMIT_GLOBAL a minute): the
// verified caller's (its session or API key) once authenticated, the
// client's on public routes. The budget is counted in process and shared
// through Redis in batches (lib/request-budget): it is on every request's
// path, and a Redis round trip there would cost more than the request.
import fp from 'fastify-plugin'
import rateLimit, { type FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Redis } from 'ioredis'
import { AppError } from '../errors.js'
import { clientAddressKey } from '../lib/client-address.js'
import { RequestBudget } from '../lib/request-budget.js'
import { SnapshotLocalStore } from './rate-limit-store.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Per-client limit for a route: `config: { rateLimit: app.ipRateLimit(10) }`. */
    ipRateLimit(perMinute: number): { max: number; timeWindow: number; keyGenerator: (request: FastifyRequest) => string }
    /**
     * Counts a failed credential against the request's client; throws 429 once the client has
     * failed RATE_LIMIT_AUTH_FAILURES times this minute. Only failures are counted, so valid
     * credentials from the same address (everyone's, behind a gateway) are never refused by it.
     */
    recordAuthFailure(request: FastifyRequest): void | Promise<void>
    /**
     * Spends one request of the caller's RATE_LIMIT_GLOBAL budget (`key`: its session or API key)
     * and sets the RateLimit-* headers; throws 429 past it. Authentication calls it once per request.
     */
    spendBudget(reply: FastifyReply, key: string): void
    /** Counts a request against a named per-client limit decided inside a handler (429 past it). */
    consumeClientLimit(request: FastifyRequest, name: string, perMinute: number): Promise<void>
    /** Counts a request against a named limit on something other than the client (an email address): 429 past it. */
    consumeKeyedLimit(request: FastifyRequest, limit: KeyedLimit): Promise<void>
    /**
     * Counts a request against several keyed limits, all or none: each is read first, and one already
     * spent refuses the request (429) before any is counted. Two requests racing between the read and
     * the count may still see one counted where a later one refuses (the counters have no refund).
     */
    consumeKeyedLimits(request: FastifyRequest, limits: KeyedLimit[]): Promise<void>
  }
}

export interface KeyedLimit { name: string; key: string; max: number; windowMs: number }

const MINUTE = 60_000

/** The client (X-Forwarded-For only through TRUST_PROXY, via Fastify's request.ip): an IPv4 address or an IPv6 /64. */
export const byIp = (request: FastifyRequest) => `ip:${clientAddressKey(request.ip)}`

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
    global: false, // only routes that declare `config.rateLimit`; the rest spend from the budget below
    timeWindow: MINUTE,
    // In process: a store that hands each request its own count (see rate-limit-store.ts).
    ...(redis ? { redis, nameSpace: 'portcullis-rl:' } : { store: SnapshotLocalStore as unknown as FastifyRateLimitStoreCtor }),
    skipOnError: true,
    enableDraftSpec: true, // RateLimit-Limit / -Remaining / -Reset, plus Retry-After on 429
    errorResponseBuilder: (_request, context) =>
      new AppError('RATE_LIMITED', `Too many requests; retry in ${Math.ceil(context.ttl / 1000)} s`),
  })

  const budget = new RequestBudget({
    max: config.RATE_LIMIT_GLOBAL, windowMs: MINUTE, clock: app.clock, redis, keyPrefix: 'portcullis-budget:',
    onStoreError: () => app.metrics.rateLimitStoreError(),
  })
  app.addHook('onClose', async () => budget.close())
  const limit = String(config.RATE_LIMIT_GLOBAL)
  const spendBudget = (reply: FastifyReply, key: string) => {
    const spent = budget.spend(key)
    const reset = String(spent.resetSeconds)
    reply.headers({ 'ratelimit-limit': limit, 'ratelimit-remaining': String(spent.remaining), 'ratelimit-reset': reset })
    if (!spent.allowed) {
      throw new AppError('RATE_LIMITED', `Too many requests; retry in ${reset} s`, undefined, { 'retry-after': reset })
    }
  }
  const budgetOn = config.RATE_LIMIT_GLOBAL > 0
  app.decorate('spendBudget', budgetOn ? spendBudget : () => {})
  // Public routes without a limit of their own spend from the client's budget, before anything else.
  app.addHook('onRoute', (route) => {
    if (!budgetOn || route.config?.auth || route.config?.rateLimit) return
    route.onRequest = [(request: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => {
      try { spendBudget(reply, byIp(request)) } catch (err) { return done(err as Error) }
      done()
    }, ...(route.onRequest ? [route.onRequest].flat() : [])] as typeof route.onRequest
  })

  app.decorate('ipRateLimit', (perMinute: number) => ({ max: perMinute, timeWindow: MINUTE, keyGenerator: byIp }))

  // Limits applied from inside a handler, where the route alone does not say which applies.
  const limiters = new Map<string, ReturnType<typeof app.createRateLimit>>()
  // What each request is counted as, for the limiter's keyGenerator (which sees only the request).
  const countedAs = new WeakMap<FastifyRequest, string>()
  /** Counts the request (or with `peek`, only reads whether one more would pass); 429 when it does not. */
  async function consume(request: FastifyRequest, name: string, perMinute: number, what: string, key = byIp(request), windowMs = MINUTE, peek = false) {
    let limiter = limiters.get(name)
    if (!limiter) {
      limiter = app.createRateLimit({ max: perMinute, timeWindow: windowMs, keyGenerator: (r) => `${name}:${countedAs.get(r)}` })
      limiters.set(name, limiter)
    }
    countedAs.set(request, key)
    const counted = await limiter(request, { increment: !peek })
    if (!counted.isAllowed && (peek ? counted.remaining === 0 : counted.isExceeded)) {
      throw new AppError('RATE_LIMITED', `${what}; retry in ${counted.ttlInSeconds} s`, undefined, {
        'retry-after': String(counted.ttlInSeconds), 'ratelimit-limit': String(perMinute), 'ratelimit-remaining': '0',
        'ratelimit-reset': String(counted.ttlInSeconds),
      })
    }
  }
  app.decorate('consumeClientLimit', (request: FastifyRequest, name: string, perMinute: number) => consume(request, name, perMinute, 'Too many requests'))
  app.decorate('consumeKeyedLimit', (request: FastifyRequest, limit: KeyedLimit) =>
    consume(request, limit.name, limit.max, 'Too many requests', limit.key, limit.windowMs))
  app.decorate('consumeKeyedLimits', async (request: FastifyRequest, limits: KeyedLimit[]) => {
    for (const l of limits) await consume(request, l.name, l.max, 'Too many requests', l.key, l.windowMs, true)
    for (const l of limits) await consume(request, l.name, l.max, 'Too many requests', l.key, l.windowMs)
  })
  // Failed credentials guard against guessing, so across instances they are counted exactly: in
  // Redis, one round trip per failure (only failures pay it). A single instance counts them in
  // process, with no I/O (a flood of bad credentials is the load this counter exists for).
  const failures = new RequestBudget({ max: config.RATE_LIMIT_AUTH_FAILURES, windowMs: MINUTE, clock: app.clock })
  const failureLimit = String(config.RATE_LIMIT_AUTH_FAILURES)
  const failureMessage = 'Too many failed credentials from this client'
  app.decorate('recordAuthFailure', (request: FastifyRequest): void | Promise<void> => {
    if (config.RATE_LIMIT_AUTH_FAILURES === 0) return
    if (redis) return consume(request, 'fail', config.RATE_LIMIT_AUTH_FAILURES, failureMessage)
    const spent = failures.spend(byIp(request))
    if (spent.allowed) return
    const reset = String(spent.resetSeconds)
    throw new AppError('RATE_LIMITED', `${failureMessage}; retry in ${reset} s`, undefined, {
      'retry-after': reset, 'ratelimit-limit': failureLimit, 'ratelimit-remaining': '0', 'ratelimit-reset': reset,
    })
  })
}, { name: 'rate-limit', dependencies: ['metrics'] })
