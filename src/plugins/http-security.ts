// Browser-facing hygiene: security headers (helmet) on every response, and
// CORS for the dashboards named in CORS_ORIGINS (off when empty).
import fp from 'fastify-plugin'
import cors from '@fastify/cors'
import helmet from '@fastify/helmet'

export default fp(async (app) => {
  // JSON API: no HTML to protect with a CSP, except /docs, whose plugin sets its own.
  await app.register(helmet, { global: true, contentSecurityPolicy: false, crossOriginResourcePolicy: { policy: 'same-site' } })

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
