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
