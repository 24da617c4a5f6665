// Issue 10, smaller item: authentication ran after body parsing and validation,
// so an unauthenticated request with a bad body got 400/422 (and its body was
// parsed for nobody). Authentication now runs first: 401, whatever the body.
import t from 'tap'
import { buildTestApp } from '../helpers/app.js'
import { assertError } from '../helpers/errors.js'

const app = await buildTestApp(t)

const cases = [
  { label: 'malformed JSON', payload: '{"name": ', type: 'application/json' },
  { label: 'a body failing the schema', payload: JSON.stringify({ name: 42, scopes: 'all', extra: true }), type: 'application/json' },
  { label: 'an unsupported content type', payload: 'name=x', type: 'text/csv' },
]

for (const { label, payload, type } of cases) {
  t.test(`POST /api-keys without a credential and ${label}: 401`, async (t) => {
    const res = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { 'content-type': type }, payload })
    assertError(t, res, 401, 'UNAUTHORIZED')
    t.match(res.headers['www-authenticate'], /^Bearer/)
  })
  t.test(`POST /api-keys with a bad credential and ${label}: 401`, async (t) => {
    const res = await app.inject({
      method: 'POST', url: '/api/v1/api-keys', headers: { 'content-type': type, authorization: 'Bearer not-a-token' }, payload,
    })
    assertError(t, res, 401, 'UNAUTHORIZED')
  })
}
