// Liveness and readiness (§7): /healthz answers while the process runs,
// /readyz only while the database is reachable and migrated.
import t from 'tap'
import { buildTestApp } from './helpers/app.js'

const get = (app: Awaited<ReturnType<typeof buildTestApp>>, url: string) => app.inject({ method: 'GET', url })

t.test('GET /healthz is 200 ok', async (t) => {
  const app = await buildTestApp(t)
  const res = await get(app, '/healthz')
  t.equal(res.statusCode, 200)
  t.strictSame(res.json(), { status: 'ok' })
})

t.test('GET /readyz is 200 ok on a migrated database', async (t) => {
  const app = await buildTestApp(t)
  const res = await get(app, '/readyz')
  t.equal(res.statusCode, 200)
  t.equal(res.json().status, 'ok')
  t.match(res.json().notifications, /^(delivered|unknown)$/, 'the event channel: delivered (or not probed yet)')
})

t.test('GET /readyz is 503 SERVICE_UNAVAILABLE once the database is closed', async (t) => {
  // Own instance: its database is closed underneath the running app.
  const app = await buildTestApp(t)
  await app.database.close()

  const res = await get(app, '/readyz')
  t.equal(res.statusCode, 503)
  t.ok(Number(res.headers['retry-after']) > 0, 'Retry-After set')
  const body = res.json()
  t.equal(body.error.code, 'SERVICE_UNAVAILABLE')
  t.type(body.error.message, 'string')
  t.match(body.error.request_id, /^req_/)
  t.equal(res.headers['x-request-id'], body.error.request_id, 'request id echoed in header')

  const live = await get(app, '/healthz')
  t.equal(live.statusCode, 200, 'liveness does not depend on the database')

  // Shutdown must not trip over the already-closed database (teardown closes the app again).
  await t.resolves(app.close(), 'app.close() after the database was closed')
})
