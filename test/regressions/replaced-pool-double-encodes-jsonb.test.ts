// Regression (found in review): after a read-only answer (25006) replaced the
// pool, every jsonb was written as a JSON string holding the JSON. Drizzle sets
// its type handling (jsonb passed through as it serializes it itself) on the
// options of the pool it is given; the replacement pool had postgres.js's
// defaults and serialized a second time. Drizzle's reads hid it by parsing
// twice; SQL and every other reader saw a string: API-key scopes, audit
// metadata, public keys. The replacement now carries the same type handling.
import t from 'tap'
import postgres from 'postgres'
import { buildTestApp, FAST_ARGON2, TEST_DATABASE_URL } from '../helpers/app.js'
import { bearer, register } from '../helpers/api.js'

const skip = TEST_DATABASE_URL ? false : 'needs PostgreSQL (TEST_DATABASE_URL, which .ci/run sets): PGlite has no pool to replace'

t.test('after the pool is replaced, jsonb is stored as JSON, not as a string of JSON', { skip }, async (t) => {
  const app = await buildTestApp(t, { env: FAST_ARGON2 })
  const owner = await register(app)
  const direct = postgres(app.config.DATABASE_URL, { max: 1, onnotice: () => {} })
  t.teardown(() => direct.end({ timeout: 1 }))
  const typeOfScopes = async (id: string) => (await direct`select jsonb_typeof(scopes) as t from api_keys where id = ${id}`)[0]!.t
  const create = async (name: string) => {
    const res = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: bearer(owner.access_token), payload: { name, scopes: ['agents:read'] } })
    t.equal(res.statusCode, 201, `key ${name} created`)
    return res.json() as { id: string; key: string; scopes: string[] }
  }
  t.equal(await typeOfScopes((await create('before')).id), 'array', 'before the replacement: an array')
  t.equal(app.database.reconnect(), true, 'the pool was replaced (as after a 25006)')
  const after = await create('after')
  t.same(after.scopes, ['agents:read'], 'the answer is right either way')
  t.equal(await typeOfScopes(after.id), 'array', 'after the replacement: still an array')
  t.equal((await app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: { 'x-api-key': after.key } })).statusCode, 200, 'and the key verifies')
})
