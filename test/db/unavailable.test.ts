// What counts as "the database is unavailable" (503 with Retry-After) rather than
// a fault of the service (500): by what happened, not by a short list of codes.
// The network failures and resource classes were answered 500 until the review.
import t from 'tap'
import { databaseUnavailable } from '../../src/db/errors.js'

const wrapped = (code: string, extra: Record<string, unknown> = {}) =>
  Object.assign(new Error('Failed query'), { cause: Object.assign(new Error('driver'), { code, ...extra }) }) // as Drizzle wraps it

t.test('unavailable: connection, network, DNS, resources, locks, read-only, conflicts, FATAL of any code', async (t) => {
  for (const code of ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED', 'EADDRNOTAVAIL',
    'CONNECT_TIMEOUT', 'QUERY_TIMEOUT', '08006', '53100', '53200', '53300', '58030', '55P03', '57014', '57P01', '25006', '40001', '40P01']) {
    t.equal(databaseUnavailable(wrapped(code)), code, code)
  }
  t.equal(databaseUnavailable(wrapped('3D000', { severity: 'FATAL' })), '3D000', 'a FATAL of any code (a dropped database)')
})

t.test('not unavailable: the request or the service is at fault', async (t) => {
  for (const code of ['23505', '23503', '22P02', '42P01', '42703']) t.equal(databaseUnavailable(wrapped(code)), undefined, code)
  t.equal(databaseUnavailable(new Error('plain')), undefined, 'an error without a code')
})
