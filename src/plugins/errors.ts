// Turns every error into the one public shape of SPEC §3 and masks 5xx details.
import fp from 'fastify-plugin'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { AppError, CODE_BY_STATUS, ERROR_CODES, type ErrorCode, type ErrorDetail } from '../errors.js'
import { databaseUnavailable, isDatabaseUnavailable, pgErrorOf } from '../db/errors.js'
import { SECURITY_HEADERS } from './http-security.js'

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: ErrorDetail[]; request_id: string }
}

// Fastify's own errors that are the client's fault, by their code.
const FASTIFY_CODES: Record<string, { code: ErrorCode; message: string }> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { code: 'UNSUPPORTED_MEDIA_TYPE', message: 'Unsupported content type' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { code: 'BAD_REQUEST', message: 'Content-Length does not match the body' },
  FST_ERR_CTP_BODY_TOO_LARGE: { code: 'PAYLOAD_TOO_LARGE', message: 'Request body is too large' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { code: 'BAD_REQUEST', message: 'Body cannot be empty when Content-Type is application/json' },
  FST_ERR_CTP_INVALID_JSON_BODY: { code: 'BAD_REQUEST', message: 'Malformed JSON body' },
  FST_ERR_CTP_EMPTY_TYPE: { code: 'UNSUPPORTED_MEDIA_TYPE', message: 'Content-Type is empty' },
  FST_ERR_CTP_INVALID_TYPE: { code: 'UNSUPPORTED_MEDIA_TYPE', message: 'Unsupported content type' },
  FST_ERR_BAD_URL: { code: 'BAD_REQUEST', message: 'Malformed URL' },
  FST_ERR_ASYNC_CONSTRAINT: { code: 'BAD_REQUEST', message: 'Malformed request' },
}

export { databaseUnavailable, isDatabaseUnavailable } from '../db/errors.js'

const VALIDATION_LOCATIONS: Record<string, string> = {
  body: 'Invalid request body', querystring: 'Invalid query string', params: 'Invalid path parameters',
  headers: 'Invalid request headers',
}

function validationDetails(error: FastifyError): ErrorDetail[] {
  return (error.validation ?? []).map((v) => {
    const missing = (v.params as { missingProperty?: string } | undefined)?.missingProperty
    const extra = (v.params as { additionalProperty?: string } | undefined)?.additionalProperty
    const path = v.instancePath.replace(/^\//, '').replaceAll('/', '.')
    const field = [path, missing ?? extra].filter(Boolean).join('.') || (error.validationContext ?? 'body')
    return { field, message: v.message ?? 'is invalid' }
  })
}

export function toErrorBody(request: FastifyRequest, code: ErrorCode, message: string, details?: ErrorDetail[]): ErrorBody {
  return { error: { code, message, ...(details?.length ? { details } : {}), request_id: String(request.id) } }
}

function sendError(reply: FastifyReply, status: number, body: ErrorBody, headers?: Readonly<Record<string, string>>) {
  if (headers) reply.headers(headers)
  return reply.code(status).type('application/json; charset=utf-8').send(body)
}

/**
 * A refusal a hot path decided without raising an error (forward-auth refusing a key it knows
 * is invalid), answered exactly as the error handler answers that refusal: the same shape,
 * status, headers and log line. Constructing an error and Fastify's error path cost more than
 * the rest of such a refusal's own work (the bad-key flood's profile).
 */
export function sendRefusal(request: FastifyRequest, reply: FastifyReply, code: ErrorCode, message: string, headers?: Readonly<Record<string, string>>, details?: ErrorDetail[]) {
  request.log.debug({ code }, message)
  return sendError(reply, ERROR_CODES[code].status, toErrorBody(request, code, message, details), headers)
}

function classify(error: FastifyError & { errno?: string | number }): {
  status: number; code: ErrorCode; message: string; details?: ErrorDetail[]; headers?: Record<string, string>
} {
  if (error instanceof AppError) {
    return { status: error.statusCode, code: error.code, message: error.message, details: error.details, headers: error.headers }
  }
  if (error.validation) {
    return {
      status: 422, code: 'VALIDATION_ERROR',
      message: VALIDATION_LOCATIONS[error.validationContext ?? 'body'] ?? 'Invalid request',
      details: validationDetails(error),
    }
  }
  const known = error.code ? FASTIFY_CODES[error.code] : undefined
  if (known) return { status: ERROR_CODES[known.code].status, ...known }
  if (error instanceof SyntaxError && error.statusCode === 400) {
    return { status: 400, code: 'BAD_REQUEST', message: 'Malformed JSON body' }
  }
  // A value PostgreSQL refuses to store (a NUL character, an out-of-range number): the input's fault.
  const pg = pgErrorOf(error)
  if (pg && typeof pg.code === 'string' && pg.code.startsWith('22')) {
    return { status: 422, code: 'VALIDATION_ERROR', message: 'The request contains a value that cannot be stored (e.g. a NUL character)' }
  }
  if (isDatabaseUnavailable(error)) {
    return { status: 503, code: 'SERVICE_UNAVAILABLE', message: ERROR_CODES.SERVICE_UNAVAILABLE.message, headers: { 'retry-after': '5' } }
  }
  const status = error.statusCode ?? 500
  if (status >= 400 && status < 500) {
    const code = CODE_BY_STATUS[status] ?? 'BAD_REQUEST'
    return { status: ERROR_CODES[code].status, code, message: ERROR_CODES[code].message }
  }
  if (status === 503) {
    return { status, code: 'SERVICE_UNAVAILABLE', message: ERROR_CODES.SERVICE_UNAVAILABLE.message, headers: { 'retry-after': '5' } }
  }
  return { status: 500, code: 'INTERNAL_ERROR', message: ERROR_CODES.INTERNAL_ERROR.message }
}

/**
 * Errors raised before routing (Fastify's frameworkErrors: a malformed URL, an over-long
 * path parameter) in the same shape, with the request id.
 */
export function frameworkErrorHandler(error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
  const message = error.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 'Path parameter too long' : 'Malformed URL'
  reply.header('x-request-id', request.id)
  return sendError(reply, 400, toErrorBody(request, 'BAD_REQUEST', message))
}

/** Requests Node's HTTP parser refuses (headers over the size limit, garbage): answered before Fastify sees them. */
export function clientErrorBody(requestId: string, message = 'Malformed request or request headers too large'): string {
  return JSON.stringify({ error: { code: 'BAD_REQUEST', message, request_id: requestId } })
}

export default fp(async (app) => {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const { status, code, message, details, headers } = classify(error)
    const sqlstate = databaseUnavailable(error)
    if (sqlstate) {
      // Read-only: this instance reached a replica (the old primary). A new pool finds the writable one.
      const reconnecting = sqlstate === '25006' && request.server.database.reconnect()
      // Out of disk or memory, an I/O error (classes 53 and 58, but too many connections): the
      // client may retry, but an operator must act, so it is an error, not a warning.
      const needsOperator = /^5[38]/.test(sqlstate) && sqlstate !== '53300'
      request.log[needsOperator ? 'error' : 'warn']({ sqlstate, reconnecting, err: error }, 'database unavailable; answered 503')
      return sendError(reply, status, toErrorBody(request, code, message, details), headers)
    }
    // An AppError 5xx is an answer chosen on purpose (overloaded, shutting down): a warning, no stack.
    if (status >= 500 && error instanceof AppError) request.log.warn({ code }, message)
    else if (status >= 500) request.log.error({ err: error }, 'request failed')
    // Every 4xx (its status is its code's): the one refusal answer, shared with the hot paths.
    else return sendRefusal(request, reply, code, message, headers, details)
    return sendError(reply, status, toErrorBody(request, code, message, details), headers)
  })

  // No route, so no route hooks: the headers and the metric every route's hooks give.
  app.setNotFoundHandler((request, reply) => {
    reply.headers(SECURITY_HEADERS)
    request.server.metrics.observeUnrouted(request.method, 404, reply.elapsedTime / 1000)
    return sendError(reply, 404, toErrorBody(request, 'NOT_FOUND', 'Route not found'))
  })
}, { name: 'errors' })
