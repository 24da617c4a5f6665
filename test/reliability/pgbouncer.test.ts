// Issue 15 through a real PgBouncer (transaction mode, 1.18: no prepared
// statements, no statement_timeout parameter): sessions, refresh, keys and
// two-instance revocation work through it. (It found that postgres.js still
// prepared its own BEGIN and COMMIT with DATABASE_PREPARED_STATEMENTS=false:
// behind the pooler the COMMIT of an aborted transaction answered ROLLBACK,
// and registrations answered 201 were lost; the pool now prepares nothing.) With LISTEN through the pooler too,
// notifications never arrive: the probe finds it and the one-second resync
// keeps the promise; with DATABASE_LISTEN_URL straight to the database, they
// are delivered again.
import t from 'tap'
import { buildTestApp, FAST_ARGON2, sharedDatabase, TEST_DATABASE_URL, within } from '../helpers/app.js'
import { bearer, register } from '../helpers/api.js'
import { PGBOUNCER, startPgBouncer } from '../helpers/pgbouncer.js'

const skip = !TEST_DATABASE_URL ? 'needs PostgreSQL (TEST_DATABASE_URL, which .ci/run sets)' : !PGBOUNCER ? 'needs pgbouncer (.ci/run installs it)' : false

for (const listenDirect of [false, true]) {
  t.test(`behind PgBouncer, LISTEN ${listenDirect ? 'straight to the database' : 'through the pooler too'}: logout reaches the other instance within a second and a half`, { skip }, async (t) => {
    const shared = await sharedDatabase(t)
    const pooled = await startPgBouncer(t, shared.databaseUrl!)
    const env = {
      ...FAST_ARGON2, DATABASE_PREPARED_STATEMENTS: 'false', DATABASE_SERVER_TIMEOUT: 'false', NOTIFY_PROBE_INTERVAL: '1',
      ...(listenDirect ? { DATABASE_LISTEN_URL: shared.databaseUrl! } : {}),
    }
    const A = await buildTestApp(t, { ...shared, databaseUrl: pooled, env })
    const B = await buildTestApp(t, { ...shared, databaseUrl: pooled, env })
    const expected = listenDirect ? 'delivered' : 'lost'
    t.ok(await within(4000, async () => (await B.inject({ method: 'GET', url: '/readyz' })).json().notifications === expected) >= 0, `/readyz: notifications ${expected}`)

    const user = await register(A)
    t.equal((await B.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: user.email, password: user.password } })).statusCode, 200, 'the registration was written (B logs in)')
    const refreshed = await B.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: user.refresh_token } })
    t.equal(refreshed.statusCode, 200, `refresh through the pooler (${refreshed.body.slice(0, 200)})`)
    const key = await A.inject({ method: 'POST', url: '/api/v1/api-keys', headers: bearer(user.access_token), payload: { name: 'k', scopes: ['agents:read'] } })
    t.equal(key.statusCode, 201, 'an API key through the pooler')
    t.equal((await B.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: { 'x-api-key': key.json().key } })).statusCode, 200, 'verified on B')

    const token = refreshed.json().access_token
    t.equal((await A.inject({ method: 'DELETE', url: `/api/v1/api-keys/${key.json().id}`, headers: bearer(token) })).statusCode, 204, 'revoke the key on A')
    t.ok(await within(1500, async () => (await B.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: { 'x-api-key': key.json().key } })).statusCode === 401) >= 0, 'B refuses the key within a second and a half')
    t.equal((await B.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(token) })).statusCode, 200)
    t.equal((await A.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(token) })).statusCode, 204, 'logout on A')
    const ms = await within(1500, async () => (await B.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(token) })).statusCode === 401)
    t.ok(ms >= 0, `B refuses the token after ${ms} ms`)
  })
}
