// A request's logger that becomes a real pino child only when something is
// logged at a level that is on. Fastify makes a child logger (bound to the
// request id) for every request; on routes whose request lines are off (the
// forward-auth hot path runs at `warn`) most requests never log, and the
// child, with its serialized bindings, was work thrown away. Errors still
// reach the log with the request id, through the child made at that moment.
import { LogController, type FastifyBaseLogger, type FastifyReply, type FastifyRequest } from 'fastify'

type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'

class LazyRequestLogger {
  level: string
  private real: FastifyBaseLogger | undefined
  private readonly threshold: number

  constructor(
    private readonly parent: FastifyBaseLogger & { levels: { values: Record<string, number> } },
    private readonly bindings: Record<string, unknown>,
    private readonly options: { level?: string },
  ) {
    this.level = options.level ?? parent.level
    this.threshold = parent.levels.values[this.level] ?? Infinity
  }

  isLevelEnabled(level: string): boolean {
    return (this.parent.levels.values[level] ?? -Infinity) >= this.threshold
  }

  private logger(): FastifyBaseLogger {
    return (this.real ??= this.parent.child(this.bindings, this.options))
  }

  private log(level: Level, args: unknown[]) {
    if (this.isLevelEnabled(level)) (this.logger()[level] as (...a: unknown[]) => void)(...args)
  }

  // Prototype methods: a logger is made for every request, so no closures per instance.
  fatal(...args: unknown[]) { this.log('fatal', args) }
  error(...args: unknown[]) { this.log('error', args) }
  warn(...args: unknown[]) { this.log('warn', args) }
  info(...args: unknown[]) { this.log('info', args) }
  debug(...args: unknown[]) { this.log('debug', args) }
  trace(...args: unknown[]) { this.log('trace', args) }
  silent() {}

  child(bindings: Record<string, unknown>, options?: object): FastifyBaseLogger {
    return this.logger().child(bindings, options)
  }
}

/** Fastify's `childLoggerFactory`. */
export function lazyRequestLogger(logger: FastifyBaseLogger, bindings: Record<string, unknown>, options: { level?: string }): FastifyBaseLogger {
  // With `logger: false` Fastify's logger is a no-op without pino's levels: its child is itself.
  if (!(logger as { levels?: unknown }).levels) return logger.child(bindings, options)
  return new LazyRequestLogger(logger as never, bindings, options) as unknown as FastifyBaseLogger
}

/**
 * One access line per request, as nginx writes, carrying the request (method, masked URL, client)
 * with the status and time. At info it is written for what changes state or fails: every method
 * but GET and HEAD, and every answer of 400 or more. Successful reads, and Fastify's separate
 * "incoming request" line, are written at debug. At info the two lines per request were most of
 * the cost of a small request (npm run bench); what changed and who did it is in the audit log.
 */
export class AccessLogController extends LogController {
  override incomingRequest(request: FastifyRequest): void {
    if (!this.isLogDisabled(request)) request.log.debug({ req: request }, 'incoming request')
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (this.isLogDisabled(request)) return
    if (error) {
      reply.log.error({ req: request, res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored')
      return
    }
    const read = reply.statusCode < 400 && (request.method === 'GET' || request.method === 'HEAD')
    if (read && !(reply.log as FastifyBaseLogger & { isLevelEnabled(level: string): boolean }).isLevelEnabled('debug')) return
    reply.log[read ? 'debug' : 'info']({ req: request, res: reply, responseTime: reply.elapsedTime }, 'request completed')
  }
}
