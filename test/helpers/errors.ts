// The SPEC §3 error shape, asserted: status, code and (optionally) message.
import type { Test } from 'tap'
import type { LightMyRequestResponse as InjectResponse } from 'fastify'

export function assertError(t: Test, res: InjectResponse, status: number, code: string, message?: string | RegExp, label = '') {
  const what = `${label ? `${label}: ` : ''}${status} ${code}`
  t.equal(res.statusCode, status, `${what} (got ${res.statusCode} ${res.body})`)
  const error = res.json().error
  t.equal(error?.code, code, `${what}: code`)
  t.type(error?.request_id, 'string', `${what}: request_id`)
  if (message !== undefined) t.match(error?.message, message, `${what}: message`)
}
