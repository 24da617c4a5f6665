// The access log: one line per request, at info for what changes state or
// fails, at debug for successful reads; forward-auth writes none at info,
// but its errors are still logged with the request id (the request's logger
// is made when it first logs).
import t, { type Test } from 'tap'
import { Writable } from 'node:stream'
import { buildTestApp } from './helpers/app.js'
import { bearer, register } from './helpers/api.js'

async function appLoggingAt(t: Test, level: string) {
  const lines: Record<string, any>[] = []
  const stream = new Writable({ write(chunk, _enc, done) { lines.push(...String(chunk).trim().split('\n').map((l) => JSON.parse(l))); done() } })
  const app = await buildTestApp(t, {
    logger: { level, stream },
    beforeReady: (app) => {
      // A quiet route, as forward-auth is, that fails: its error must still be logged.
      app.get('/test/quiet-failure', { logLevel: 'warn' }, async () => { throw new Error('the database fell over') })
    },
  })
  return { app, lines, take: () => lines.splice(0) }
}

t.test('at info: one line for writes and failures, none for successful reads or forward-auth', async (t) => {
  const { app, take } = await appLoggingAt(t, 'info')
  const { access_token: token } = await register(app)
  const registered = take().filter((l) => l.msg === 'request completed')
  t.equal(registered.length, 1, 'a registration (a write) is one line')
  t.match(registered[0], { req: { method: 'POST', url: '/api/v1/auth/register' }, res: { statusCode: 201 } }, 'with the request and its answer')

  t.equal((await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(token) })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: bearer(token) })).statusCode, 200)
  t.same(take().filter((l) => /request/.test(l.msg)), [], 'successful reads write no line at info')

  t.equal((await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer('nope') })).statusCode, 401)
  const failed = take()
  t.equal(failed.filter((l) => l.msg === 'request completed').length, 1, 'a failed read is one line')
  t.equal(failed.filter((l) => l.msg === 'incoming request').length, 0, 'no "incoming request" line at info')

  for (let i = 0; i < 5; i++) await app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: { 'x-api-key': 'pc_live_sk_nope' } })
  t.same(take().filter((l) => /request/.test(l.msg)), [], 'forward-auth refusals write nothing at info (a flood of bad keys does not flood the log)')

  const res = await app.inject({ method: 'GET', url: '/test/quiet-failure' })
  t.equal(res.statusCode, 500)
  const errors = take().filter((l) => l.level >= 50)
  t.equal(errors.length, 1, 'the error of a quiet route is logged')
  t.equal(errors[0]!.reqId, res.headers['x-request-id'], 'with its request id')
})

t.test('at debug: every request, with its "incoming request" line', async (t) => {
  const { app, take } = await appLoggingAt(t, 'debug')
  const { access_token: token } = await register(app)
  take()
  const res = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(token) })
  const lines = take().filter((l) => l.reqId === res.headers['x-request-id'])
  t.same(lines.map((l) => l.msg).filter((m) => /request/.test(m)), ['incoming request', 'request completed'], 'both lines of a read')
})

t.test('an app built without a logger serves requests (the lazy request logger steps aside)', async (t) => {
  const app = await buildTestApp(t, { logger: false })
  const { access_token: token } = await register(app)
  t.equal((await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(token) })).statusCode, 200)
})
