// Recognises driver errors across postgres.js and PGlite (Drizzle wraps them in `cause`).
interface PgErrorLike { code?: unknown; constraint?: unknown; constraint_name?: unknown; cause?: unknown }

export function pgErrorOf(err: unknown): PgErrorLike | undefined {
  let e = err as PgErrorLike | undefined
  for (let i = 0; e && i < 4; i++) {
    if (typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code)) return e
    e = e.cause as PgErrorLike | undefined
  }
  return undefined
}

export const isUniqueViolation = (err: unknown) => pgErrorOf(err)?.code === '23505'

// The database is unavailable, not the request wrong: the driver could not reach it or lost it,
const UNAVAILABLE_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'CONNECT_TIMEOUT',
  // its name does not resolve or its network cannot be reached (a DNS-switched failover),
  'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED', 'EADDRNOTAVAIL',
  // a lock it could not have in time (lock_timeout),
  '55P03',
  'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'QUERY_TIMEOUT', '57P01', '57P02', '57P03',
  // the server's statement_timeout ended a statement (src/db/deadline.ts),
  '57014',
  // it is read-only (the old primary after a failover: the error handler then replaces the pool),
  '25006',
  // or a transaction kept conflicting with others.
  '40001', '40P01'])

/**
 * Why the database is unavailable, anywhere in the cause chain (Drizzle wraps driver errors in
 * `cause`): the SQLSTATE or driver code, or undefined when it is not. Any error the server sends
 * as FATAL or PANIC counts, whatever its SQLSTATE: it refused or ended the session (a database
 * closed to connections sends 55000, a dropped one 3D000, a changed password 28P01, …).
 */
export function databaseUnavailable(error: unknown): string | undefined {
  let e = error as { code?: unknown; errno?: unknown; severity?: unknown; cause?: unknown } | undefined
  for (let depth = 0; e && depth < 5; depth++) {
    const code = String(e.code ?? e.errno ?? '')
    // Classes 08 (connection), 53 (out of resources: disk, memory, connections) and 58 (system, I/O).
    if (UNAVAILABLE_ERRNOS.has(code) || /^(08|53|58)/.test(code) || e.severity === 'FATAL' || e.severity === 'PANIC') return code || 'FATAL'
    e = e.cause as typeof e
  }
  return undefined
}

export const isDatabaseUnavailable = (error: unknown) => databaseUnavailable(error) !== undefined
