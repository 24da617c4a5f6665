// Browser-facing hygiene: security headers on every response, and CORS for
// the dashboards named in CORS_ORIGINS (off when empty).
//
// The headers are helmet's defaults (no CSP: a JSON API has no HTML to protect,
// and /docs sets its own). For one configuration they never change, so helmet
// runs once at start-up and each response gets the resulting set in one sync
// hook per route; @fastify/helmet ran helmet's eleven middlewares in two hooks per request.
// A route opts out with `config: { securityHeaders: false }` (forward-auth: a
// gateway consumes that answer, no browser renders it).
import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import cors from '@fastify/cors'
import helmet, { type HelmetOptions } from 'helmet'
import type { IncomingMessage, ServerResponse } from 'node:http'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** false: no browser security headers on this route. */
    securityHeaders?: false
  }
}

const HELMET_OPTIONS: HelmetOptions = { contentSecurityPolicy: false, crossOriginResourcePolicy: { policy: 'same-site' } }

/** The headers helmet sets for these options, captured from one dry run. */
function securityHeadersOf(options: HelmetOptions): Record<string, string> {
  const headers: Record<string, string> = {}
  const response = {
    setHeader: (name: string, value: string) => { headers[name.toLowerCase()] = String(value) },
    removeHeader: () => {},
  }
  helmet(options)({} as IncomingMessage, response as unknown as ServerResponse, (err?: unknown) => { if (err) throw err })
  return headers
}

/** The security headers of every response but forward-auth's (Fastify's 404 handler sets them itself). */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze(securityHeadersOf(HELMET_OPTIONS))

export default fp(async (app) => {
  // A hook on each route that wants them, not a global one asking every request for its route.
  app.addHook('onRoute', (route) => {
    if (route.config?.securityHeaders === false) return
    route.onRequest = [(_request: FastifyRequest, reply: FastifyReply, done: () => void) => {
      reply.headers(SECURITY_HEADERS)
      done()
    }, ...(route.onRequest ? [route.onRequest].flat() : [])] as typeof route.onRequest
  })

  const origins = app.config.CORS_ORIGINS.split(',').map((o) => o.trim()).filter(Boolean)
  if (origins.length) {
    await app.register(cors, {
      origin: origins,
      methods: ['GET', 'HEAD', 'POST', 'PATCH', 'DELETE'],
      allowedHeaders: ['Authorization', 'Content-Type', 'X-API-Key', 'X-Org-ID', 'X-Request-Id'],
      exposedHeaders: ['X-Request-Id', 'Retry-After', 'RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset'],
      credentials: false, // bearer tokens, no cookies
      maxAge: 600,
    })
  }
}, { name: 'http-security' })
