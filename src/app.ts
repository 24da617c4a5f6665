// buildApp(config): plugins first, then feature modules. No listen(), no process.env.
import Fastify, { type FastifyRequest, type FastifyServerOptions } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { IncomingMessage } from 'node:http'
import { availableParallelism } from 'node:os'
import type { Config } from './config.js'
import { AppError } from './errors.js'
import { systemClock, type Clock } from './lib/clock.js'
import { registerFormats } from './lib/formats.js'
import { validatorCompiler } from './schemas/validator.js'
import { newId } from './lib/ids.js'
import { maskCredentialsInUrl } from './lib/log-redaction.js'
import { PasswordHasher } from './lib/password-hasher.js'
import { AccessLogController, lazyRequestLogger } from './lib/request-logger.js'
import authenticate from './plugins/authenticate.js'
import database from './plugins/db.js'
import errors, { clientErrorBody, frameworkErrorHandler } from './plugins/errors.js'
import events from './plugins/events.js'
import openapi from './plugins/openapi.js'
import revocation from './plugins/revocation.js'
import tenancy from './plugins/tenancy.js'
import rateLimit from './plugins/rate-limit.js'
import metrics from './plugins/metrics.js'
import httpSecurity from './plugins/http-security.js'
import apiKeyRoutes from './modules/api-keys/routes.js'
import auditRoutes from './modules/audit/routes.js'
import { AuditLog } from './modules/audit/service.js'
import organizationRoutes from './modules/organizations/routes.js'
import tokens from './plugins/tokens.js'
import authRoutes from './modules/auth/routes.js'
import healthRoutes from './modules/health/routes.js'
import keysRoutes from './modules/keys/routes.js'
import sessionRoutes from './modules/sessions/routes.js'
import { SessionService } from './modules/sessions/service.js'
import { Lockout } from './modules/auth/lockout.js'
import { ProfileCache } from './modules/auth/profile-cache.js'
import { AuthService } from './modules/auth/service.js'
import { RecentAuthentication } from './modules/auth/recent-auth.js'
import mfaRoutes from './modules/mfa/routes.js'
import gatewayRoutes from './modules/gateway/routes.js'
import oauth from './modules/oauth/plugin.js'
import { MfaService } from './modules/mfa/service.js'
import mail from './modules/mail/plugin.js'
import mailbox from './modules/mailbox/plugin.js'
import mailboxRoutes from './modules/mailbox/routes.js'
import invitations from './modules/invitations/plugin.js'
import invitationRoutes from './modules/invitations/routes.js'
import admin from './modules/admin/plugin.js'
import janitor from './modules/janitor/plugin.js'
import adminRoutes from './modules/admin/routes.js'
import type { DatabaseHandle } from './db/client.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    clock: Clock
    passwordHasher: PasswordHasher
    sessions: SessionService
    audit: AuditLog
    mfa: MfaService
    authService: AuthService
    recentAuth: RecentAuthentication
    lockout: Lockout
  }
}

export interface BuildOptions {
  clock?: Clock
  /** Overrides the pino logger options (tests pass a stream to inspect logs). */
  logger?: FastifyServerOptions['logger']
  /** An already-open database to share (a second instance in tests); the caller closes it. */
  database?: DatabaseHandle
  /**
   * Compile, at start, the validators response serializers use for unions (anyOf) instead of on the
   * first response that needs each: that compile stopped the event loop for about 40 ms, every
   * request in flight with it, once per such route after each start. The service sets it
   * (server.ts); tests leave it off, since it adds about 0.3 s to every build.
   */
  compileSerializersAtStart?: boolean
}

/** How the service builds its app (server.ts); a test builds the same way to check what it buys. */
export const SERVICE_BUILD_OPTIONS: Readonly<BuildOptions> = Object.freeze({ compileSerializersAtStart: true })

// Never logged, wherever they appear.
export const REDACTED_PATHS = [
  'req.headers.authorization', 'req.headers["x-api-key"]', 'req.headers.cookie', 'res.headers["set-cookie"]',
  '*.password', '*.new_password', '*.current_password', '*.refresh_token', '*.access_token', '*.code', '*.secret',
  '*.token', '*.mfa_token', '*.api_key', '*.key',
]

// Fastify's default request serializer, with credentials in the query string masked.
export const LOG_SERIALIZERS = {
  req: (req: FastifyRequest) => ({
    method: req.method,
    url: maskCredentialsInUrl(req.url ?? ''),
    version: req.headers?.['accept-version'] as string | undefined,
    host: req.host,
    remoteAddress: req.ip,
    remotePort: req.socket?.remotePort,
  }),
}

/** The logger options with LOG_SERIALIZERS merged in, so a test's own options log what production does. */
function loggerOptions(config: Config, given: BuildOptions['logger']): BuildOptions['logger'] {
  const base = given ?? { level: config.LOG_LEVEL, redact: { paths: REDACTED_PATHS, censor: '[redacted]' } }
  if (base === false) return false
  const options = base === true ? {} : base
  return { ...options, serializers: { ...LOG_SERIALIZERS, ...options.serializers } }
}

const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

function requestId(req: IncomingMessage): string {
  const given = req.headers['x-request-id']
  return typeof given === 'string' && SANE_REQUEST_ID.test(given) ? given : newId('req')
}

/** How long a socket answered by clientErrorHandler may keep sending before it is closed. */
const LINGER_MS = 2000

export async function buildApp(config: Config, options: BuildOptions = {}) {
  const answered = new WeakSet<object>()
  if (!config.secretKey) throw new Error('buildApp needs a resolved SECRET_KEY (see resolveSecretKey)')
  registerFormats()

  const app = Fastify({
    logger: loggerOptions(config, options.logger),
    genReqId: requestId,
    ...(options.compileSerializersAtStart ? { serializerOpts: { compileValidators: true } } : {}),
    logController: new AccessLogController(),
    bodyLimit: config.BODY_LIMIT,
    requestTimeout: config.REQUEST_TIMEOUT,
    // Node looks for timed-out requests every 30 s by default: check each second so the limit holds.
    // Node ignores requestTimeout once headers are in if headersTimeout is longer, so cap it as Node's default does.
    http: config.REQUEST_TIMEOUT
      ? { connectionsCheckingInterval: 1000, requestTimeout: config.REQUEST_TIMEOUT, headersTimeout: Math.min(60_000, config.REQUEST_TIMEOUT) }
      : null,
    trustProxy: config.TRUST_PROXY as boolean | string[], // a hop count is accepted too
    // Requests that arrive while draining get the error shape (see the preClose hook below).
    return503OnClosing: false,
    frameworkErrors: frameworkErrorHandler,
    clientErrorHandler: (err, socket) => {
      // Answered already: the rest of what the client is still sending (an over-long request line)
      // reaches the spent parser as more errors. Read and drop it for a moment, as nginx's lingering
      // close does: destroying the socket with unread data resets the connection, and the client
      // gets EPIPE instead of the answer.
      if (answered.has(socket)) return
      // As Node does: once a response has begun on the socket (a request timed out mid-body), write nothing more.
      const responding = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent
      if (!socket.writable || responding) return socket.destroy()
      answered.add(socket)
      setTimeout(() => socket.destroy(), LINGER_MS).unref()
      const id = newId('req')
      const timedOut = (err as NodeJS.ErrnoException).code === 'ERR_HTTP_REQUEST_TIMEOUT'
      const body = clientErrorBody(id, timedOut ? 'Request not received in time' : undefined)
      socket.end(`HTTP/1.1 ${timedOut ? '408 Request Timeout' : '400 Bad Request'}\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\nX-Request-Id: ${id}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
    },
    routerOptions: { maxParamLength: 200 },
  }).withTypeProvider<TypeBoxTypeProvider>()
  // A request's child logger is made when it first logs (see lib/request-logger).
  app.setChildLoggerFactory(lazyRequestLogger)

  if (config.TRUST_PROXY === true) {
    app.log.warn('TRUST_PROXY=true believes X-Forwarded-For from any client, so a client can choose its rate-limit key and logged IP;'
      + ' set TRUST_PROXY to the number of proxy hops or to the proxies\' addresses/CIDRs instead')
  }

  if (options.compileSerializersAtStart) {
    // Routes compile their serializers as they are added, before onReady: say so, for operators and
    // for the test of the real process (test/server.test.ts), which builds as server.ts does.
    app.addHook('onReady', async () => { app.log.debug('response serializers compiled with their union validators (compileSerializersAtStart)') })
  }

  app.setValidatorCompiler(validatorCompiler)
  // Only JSON (and, where an operation declares it, forms) is accepted: text/plain is a 415.
  app.removeContentTypeParser('text/plain')

  app.decorate('config', config)
  app.decorate('clock', options.clock ?? systemClock)
  app.decorate('passwordHasher', new PasswordHasher({
    memoryCost: config.ARGON2_MEMORY_KIB, timeCost: config.ARGON2_TIME_COST, parallelism: config.ARGON2_PARALLELISM,
  }, config.ARGON2_CONCURRENCY || Math.max(1, availableParallelism() - 1), config.ARGON2_QUEUE_MAX))
  // While shutting down, responses close their keep-alive connection so that
  // close() does not wait for idle sockets until their keep-alive timeout.
  let closing = false
  app.addHook('preClose', async () => {
    closing = true
    // Stop accepting connections now: Fastify closes the listener only after every
    // preClose hook, and some of them (the database UNLISTEN) take a round trip.
    if (app.server.listening) {
      app.server.close()
      app.log.info('stopped accepting connections')
    }
  })
  // The one hook every request runs (callback-style: an async hook costs a promise). Headers set
  // here stay on error answers too; the rest of the per-request work hangs on the routes that need it.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id)
    done(closing ? new AppError('SERVICE_UNAVAILABLE', 'Shutting down', undefined, { 'retry-after': '5' }) : undefined)
  })
  // Answers sent while draining (to requests that arrived before) close their connection too.
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) reply.header('connection', 'close')
    done(null, payload)
  })

  await app.register(errors)
  await app.register(httpSecurity)
  await app.register(metrics)
  await app.register(openapi)
  await app.register(rateLimit)
  await app.register(database, { database: options.database })
  await app.register(events)
  await app.register(tokens)
  await app.register(revocation)
  await app.register(tenancy)
  await app.register(authenticate)
  await app.register(mail)
  const audit = new AuditLog({ db: app.db, clock: app.clock, log: app.log })
  app.addHook('onClose', () => audit.flush())
  app.decorate('audit', audit)
  // The services several modules share; each module's own service is built in its routes.
  const { db, clock, passwordHasher: hasher } = app
  const sessions = new SessionService({ db, config, clock, tokens: app.tokens, revocation: app.revocation, log: app.log, audit, metrics: app.metrics })
  const lockout = new Lockout({ db, config, clock, metrics: app.metrics })
  const mfa = new MfaService({ db, config, clock, sessions, lockout, audit, events: app.events })
  const recentAuth = new RecentAuthentication({ db, config, clock, hasher, lockout, secondFactor: mfa, audit })
  const profiles = new ProfileCache({ db, clock, ttlMs: config.MEMBERSHIP_CACHE_TTL * 1000, maxEntries: config.API_KEY_CACHE_MAX })
  app.events.subscribe((event) => profiles.onEvent(event))
  app.events.onResync(() => profiles.resync())
  app.decorate('sessions', sessions)
  app.decorate('mfa', mfa)
  app.decorate('recentAuth', recentAuth)
  app.decorate('lockout', lockout)
  await app.register(mailbox)
  await app.register(invitations)
  await app.register(admin)
  await app.register(janitor)
  app.decorate('authService', new AuthService({
    db, config, clock, hasher, sessions, audit, lockout, mfa, profiles, apiKeys: app.apiKeys, mailbox: app.mailbox, invitations: app.invitations,
  }))

  await app.register(healthRoutes)
  await app.register(keysRoutes)
  await app.register(authRoutes, { prefix: '/api/v1' })
  await app.register(mailboxRoutes, { prefix: '/api/v1' })
  await app.register(sessionRoutes, { prefix: '/api/v1' })
  await app.register(mfaRoutes, { prefix: '/api/v1' })
  await app.register(organizationRoutes, { prefix: '/api/v1' })
  await app.register(invitationRoutes, { prefix: '/api/v1' })
  await app.register(adminRoutes, { prefix: '/api/v1' })
  await app.register(auditRoutes, { prefix: '/api/v1' })
  await app.register(apiKeyRoutes, { prefix: '/api/v1' })
  await app.register(gatewayRoutes)
  await app.register(oauth)
  return app
}

export type App = Awaited<ReturnType<typeof buildApp>>
