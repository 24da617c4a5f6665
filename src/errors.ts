// Every public error code, its HTTP status and default message, in one place.
// Services throw AppError; the errors plugin turns anything into the one
// public error shape.

export const ERROR_CODES = {
  BAD_REQUEST: { status: 400, message: 'Malformed request' },
  UNAUTHORIZED: { status: 401, message: 'Authentication required' },
  INVALID_CREDENTIALS: { status: 401, message: 'Invalid email or password' },
  REFRESH_FAILED: { status: 401, message: 'Refresh token is invalid, expired or revoked' },
  REFRESH_TOKEN_REUSED: { status: 401, message: 'Refresh token was already used; the session has been revoked' },
  MFA_INVALID: { status: 401, message: 'Invalid or expired two-factor code' },
  INVALID_LINK: { status: 400, message: 'This link is invalid, expired or already used' },
  FORBIDDEN: { status: 403, message: 'Not allowed' },
  INSUFFICIENT_SCOPE: { status: 403, message: 'The credential lacks a required scope' },
  REAUTHENTICATION_REQUIRED: { status: 403, message: 'This change needs the password (and a two-factor code), or a recent login' },
  EMAIL_NOT_VERIFIED: { status: 403, message: 'Confirm your email address first: follow the link mailed to you, or ask for a new one' },
  NOT_FOUND: { status: 404, message: 'Not found' },
  EMAIL_TAKEN: { status: 409, message: 'An account with this email already exists' },
  CONFLICT: { status: 409, message: 'Conflict' },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'Request body is too large' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Unsupported content type' },
  VALIDATION_ERROR: { status: 422, message: 'Invalid request' },
  ACCOUNT_LOCKED: { status: 423, message: 'Account temporarily locked' },
  RATE_LIMITED: { status: 429, message: 'Too many requests' },
  INTERNAL_ERROR: { status: 500, message: 'Internal server error' },
  SERVICE_UNAVAILABLE: { status: 503, message: 'Service temporarily unavailable' },
} as const satisfies Record<string, { status: number; message: string }>

export type ErrorCode = keyof typeof ERROR_CODES

export interface ErrorDetail {
  field?: string
  message: string
  [extra: string]: unknown
}

export class AppError extends Error {
  readonly statusCode: number

  constructor(
    readonly code: ErrorCode,
    message?: string,
    readonly details?: ErrorDetail[],
    readonly headers?: Record<string, string>,
  ) {
    // A 4xx is an answer, not a fault: nobody reads its stack, and capturing one was
    // the costliest step of a rejected forward-auth request (6 % of CPU in a bad-key flood).
    const stackTraceLimit = Error.stackTraceLimit
    if (ERROR_CODES[code].status < 500) Error.stackTraceLimit = 0
    super(message ?? ERROR_CODES[code].message)
    Error.stackTraceLimit = stackTraceLimit
    this.name = 'AppError'
    this.statusCode = ERROR_CODES[code].status
  }
}

/** Status code → the generic code used when an error carries only a status. */
export const CODE_BY_STATUS: Record<number, ErrorCode> = Object.fromEntries(
  (Object.entries(ERROR_CODES) as [ErrorCode, { status: number }][])
    .filter(([code]) => !['INVALID_CREDENTIALS', 'REFRESH_FAILED', 'REFRESH_TOKEN_REUSED', 'MFA_INVALID',
      'INSUFFICIENT_SCOPE', 'REAUTHENTICATION_REQUIRED', 'EMAIL_TAKEN', 'INVALID_LINK', 'EMAIL_NOT_VERIFIED'].includes(code))
    .map(([code, { status }]) => [status, code]),
)

/** The challenge of a credential that was presented and failed (RFC 6750 §3.1: invalid_token). */
export const INVALID_TOKEN_CHALLENGE: Readonly<Record<string, string>> = Object.freeze({ 'www-authenticate': 'Bearer error="invalid_token"' })

/** A credential was presented and failed (RFC 6750 §3.1: invalid_token). */
export const unauthorized = (message: string) => new AppError('UNAUTHORIZED', message, undefined, { ...INVALID_TOKEN_CHALLENGE })

/** No credential at all: a bare challenge, no error code (RFC 6750 §3.1). */
export const missingCredential = () =>
  new AppError('UNAUTHORIZED', 'No bearer token', undefined, { 'www-authenticate': 'Bearer realm="portcullis"' })

/** 403 INSUFFICIENT_SCOPE naming each scope the credential lacks. */
export const insufficientScope = (missing: string[]) =>
  new AppError('INSUFFICIENT_SCOPE', `Requires scope ${missing.join(' ')}`, missing.map((scope) => ({ message: `requires ${scope}`, scope })))

export const notFound = (what = 'Resource') => new AppError('NOT_FOUND', `${what} not found`)

export const validationError = (field: string, message: string) =>
  new AppError('VALIDATION_ERROR', 'Invalid request body', [{ field, message }])
