import t, { type Test } from 'tap'
import { buildTestApp, FAST_ARGON2 } from './helpers/app.js'
import { bearer, register, STRONG_PASSWORD } from './helpers/api.js'
import { AppError } from '../src/errors.js'

const app = await buildTestApp(t, {
  env: { ...FAST_ARGON2, BODY_LIMIT: '65536' },
  beforeReady(app) {
    app.get('/test/boom', async () => { throw new Error('secret detail: select * from users') })
    app.get('/test/db-down', async () => {
      throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })
    })
  },
})

function assertErrorShape(t: Test, res: { statusCode: number; json(): any; headers: Record<string, unknown> }, status: number, code: string) {
  t.equal(res.statusCode, status, `status ${status}`)
  const body = res.json()
  t.equal(body.error.code, code, `code ${code}`)
  t.type(body.error.message, 'string')
  t.match(body.error.request_id, /^req_/)
  t.equal(res.headers['x-request-id'], body.error.request_id, 'request id echoed in header')
  return body
}

t.test('400 BAD_REQUEST for malformed JSON', async (t) => {
  const res = await app.inject({
    method: 'POST', url: '/api/v1/auth/register', headers: { 'content-type': 'application/json' }, payload: '{"email": ',
  })
  assertErrorShape(t, res, 400, 'BAD_REQUEST')
})

t.test('400 for a __proto__ key (prototype poisoning)', async (t) => {
  const res = await app.inject({
    method: 'POST', url: '/api/v1/auth/register', headers: { 'content-type': 'application/json' },
    payload: '{"email":"a@b.co","password":"x","__proto__":{"admin":true}}',
  })
  assertErrorShape(t, res, 400, 'BAD_REQUEST')
})

t.test('401 UNAUTHORIZED with WWW-Authenticate when no bearer token', async (t) => {
  const res = await app.inject({ method: 'GET', url: '/api/v1/auth/me' })
  const body = assertErrorShape(t, res, 401, 'UNAUTHORIZED')
  t.equal(body.error.message, 'No bearer token')
  t.equal(res.headers['www-authenticate'], 'Bearer realm="portcullis"', 'no credential: a bare challenge, no error code (RFC 6750 §3.1)')

  const basic = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { authorization: 'Basic abc' } })
  t.equal(basic.json().error.message, 'No bearer token')
  const junk = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer('not.a.jwt') })
  t.equal(junk.json().error.message, 'Invalid or expired token')
  t.equal(junk.headers['www-authenticate'], 'Bearer error="invalid_token"', 'a credential that failed: invalid_token')
})

t.test('401 INVALID_CREDENTIALS for a wrong password', async (t) => {
  const { email } = await register(app)
  const res = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password: 'wrong-password-entirely' } })
  assertErrorShape(t, res, 401, 'INVALID_CREDENTIALS')
})

t.test('403 FORBIDDEN when logging in to an organization one is not a member of', async (t) => {
  const a = await register(app)
  const b = await register(app)
  const res = await app.inject({
    method: 'POST', url: '/api/v1/auth/login', payload: { email: a.email, password: STRONG_PASSWORD, org_id: b.organization.id },
  })
  assertErrorShape(t, res, 403, 'FORBIDDEN')
})

t.test('404 NOT_FOUND for an unknown route, same shape', async (t) => {
  const res = await app.inject({ method: 'GET', url: '/api/v1/nope?x=<script>' })
  const body = assertErrorShape(t, res, 404, 'NOT_FOUND')
  t.notMatch(body.error.message, /script/, 'hostile URL not echoed')
})

t.test('409 EMAIL_TAKEN', async (t) => {
  const { email } = await register(app)
  const res = await app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { email: email.toUpperCase(), password: STRONG_PASSWORD } })
  assertErrorShape(t, res, 409, 'EMAIL_TAKEN')
})

t.test('413 PAYLOAD_TOO_LARGE over 64 KiB', async (t) => {
  const res = await app.inject({
    method: 'POST', url: '/api/v1/auth/register', headers: { 'content-type': 'application/json' },
    payload: JSON.stringify({ email: 'a@b.co', password: 'x'.repeat(70 * 1024) }),
  })
  assertErrorShape(t, res, 413, 'PAYLOAD_TOO_LARGE')
})

t.test('415 UNSUPPORTED_MEDIA_TYPE', async (t) => {
  for (const type of ['text/plain', 'application/xml', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
    const res = await app.inject({
      method: 'POST', url: '/api/v1/auth/register', headers: { 'content-type': type }, payload: 'email=a@b.co',
    })
    assertErrorShape(t, res, 415, 'UNSUPPORTED_MEDIA_TYPE')
  }
})

t.test('422 VALIDATION_ERROR lists each field', async (t) => {
  const res = await app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { email: 42, extra: true } })
  const body = assertErrorShape(t, res, 422, 'VALIDATION_ERROR')
  const fields = body.error.details.map((d: { field: string }) => d.field)
  t.ok(fields.includes('email'), 'wrong-type email named')
  t.ok(fields.includes('password'), 'missing password named')
  t.ok(fields.includes('extra'), 'unknown field named')
})

t.test('Content-Type tricks never bypass validation', async (t) => {
  // Each body is valid JSON that fails the schema; none may reach the handler.
  const payload = JSON.stringify({ email: 123, password: ['x'] })
  for (const type of ['Application/JSON', ' application/json', 'application/jsonx', 'application/json; junk', 'application/json\tx', 'application/json;\tcharset=utf-8']) {
    const res = await app.inject({ method: 'POST', url: '/api/v1/auth/register', headers: { 'content-type': type }, payload })
    t.ok([400, 415, 422].includes(res.statusCode), `${JSON.stringify(type)} → ${res.statusCode}`)
    t.ok(res.json().error, 'error shape')
  }
})

t.test('500 INTERNAL_ERROR never leaks the message, stack or SQL', async (t) => {
  const res = await app.inject({ method: 'GET', url: '/test/boom' })
  const body = assertErrorShape(t, res, 500, 'INTERNAL_ERROR')
  t.equal(body.error.message, 'Internal server error')
  t.notMatch(res.body, /secret detail|select|at .*\.ts/)
})

t.test('503 SERVICE_UNAVAILABLE with Retry-After when the database is unreachable', async (t) => {
  const res = await app.inject({ method: 'GET', url: '/test/db-down' })
  assertErrorShape(t, res, 503, 'SERVICE_UNAVAILABLE')
  t.ok(Number(res.headers['retry-after']) > 0)
  t.notMatch(res.body, /ECONNREFUSED|5432/)
})

t.test('request ids: a sane X-Request-Id is echoed, anything else replaced', async (t) => {
  const sane = await app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'abc-123.def' } })
  t.equal(sane.headers['x-request-id'], 'abc-123.def')
  const hostile = await app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'a b\u0000<script>' } })
  t.match(hostile.headers['x-request-id'], /^req_[0-9a-z]{26}$/)
  const none = await app.inject({ method: 'GET', url: '/healthz' })
  t.match(none.headers['x-request-id'], /^req_/)
})

t.test('a 4xx AppError skips the stack capture; a 5xx keeps its stack; the global limit is left as it was', async (t) => {
  const limit = Error.stackTraceLimit
  t.notMatch(new AppError('UNAUTHORIZED').stack ?? '', /\n\s+at /, '401: no stack frames')
  t.notMatch(new AppError('VALIDATION_ERROR').stack ?? '', /\n\s+at /, '422: no stack frames')
  t.match(new AppError('SERVICE_UNAVAILABLE').stack ?? '', /\n\s+at /, '503: stack frames kept')
  t.match(new AppError('INTERNAL_ERROR').stack ?? '', /\n\s+at /, '500: stack frames kept')
  t.equal(Error.stackTraceLimit, limit, 'Error.stackTraceLimit unchanged')
  t.match(new Error('plain').stack ?? '', /\n\s+at /, 'other errors still capture stacks')
})
