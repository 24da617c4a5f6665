// Fastify's "incoming request" line logged the whole URL, so a credential sent
// as a query parameter (?api_key=…, ?access_token=…) was written to the log.
import t from 'tap'
import { Writable } from 'node:stream'
import { buildTestApp } from '../helpers/app.js'

const NAMES = ['access_token', 'api_key', 'key', 'token', 'refresh_token', 'code', 'password']

t.test('credential-looking query values never reach the log; the rest of the URL does', async (t) => {
  let log = ''
  const stream = new Writable({ write(chunk, _enc, done) { log += chunk; done() } })
  // A test's own logger options: the masking must apply to them as it does in production.
  const app = await buildTestApp(t, { logger: { level: 'trace', stream } })

  const secrets: string[] = []
  const secret = (name: string) => {
    const s = `s3cret-${name}-${secrets.length}-${Math.random().toString(36).slice(2)}`
    secrets.push(s)
    return s
  }
  const urls = [
    ...NAMES.map((name) => `/api/v1/auth/me?${name}=${secret(name)}`),
    ...NAMES.map((name) => `/api/v1/no-such-route?page=2&${name.toUpperCase()}=${secret(name)}`),
    `/api/v1/auth/me?${NAMES.map((name) => `${name}=${secret(name)}`).join('&')}`,
    `/healthz?api%5Fkey=${secret('encoded')}`,
  ]
  for (const url of urls) await app.inject({ method: 'GET', url })

  t.ok(log.includes('incoming request'), 'requests were logged')
  for (const s of secrets) t.notOk(log.includes(s), `${s.split('-')[1]} value not logged`)
  for (const name of NAMES) {
    t.ok(log.includes(`${name}=[redacted]`), `${name} logged as masked`)
    t.ok(log.includes(`${name.toUpperCase()}=[redacted]`), `${name.toUpperCase()} logged as masked`)
  }
  const lines = log.trim().split('\n').map((l) => JSON.parse(l))
  const incoming = lines.filter((l) => l.msg === 'incoming request')
  t.equal(incoming.length, urls.length, 'one incoming-request line per request')
  t.match(incoming[0].req, { method: 'GET', url: '/api/v1/auth/me?access_token=[redacted]', remoteAddress: '127.0.0.1' },
    'the fields Fastify logs by default are still there')
  t.ok(incoming.some((l) => l.req.url === '/api/v1/no-such-route?page=2&ACCESS_TOKEN=[redacted]'), 'other parameters kept')
})
