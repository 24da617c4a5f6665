// Graceful shutdown under load (SPEC §3, README "operations"): a real process
// with ~50 concurrent clients (forward-auth with an API key, logins) gets
// SIGTERM. Every request the server had received completes with a response
// (each carries its own X-Request-Id, so the client's view can be matched to
// the server's log); requests that arrive while it drains are 503 or refused;
// new connections are refused; the process exits 0 within 10 s.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { connect } from 'node:net'
import { freshDatabaseUrl, TEST_DATABASE_URL } from '../helpers/app.js'
import { STRONG_PASSWORD } from '../helpers/api.js'
import { startServer } from '../helpers/server.js'
import { after, json, sleep, tally, timed, type Timed } from './infra.js'

const CLIENTS = 50
const EXIT_WITHIN_MS = 10_000
// Regression: a request parsed while draining used to get Fastify's own 503 body (no Retry-After, no X-Request-Id).

interface Sent extends Timed { id: string; op: 'verify' | 'login'; startedAt: number; endedAt: number; requestId: string | null }

/** A connection attempt: 'connected' or the error code. */
const tryConnect = (port: number) => new Promise<string>((resolve) => {
  const s = connect(port, '127.0.0.1')
  s.once('connect', () => { s.destroy(); resolve('connected') })
  s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
})

t.test('SIGTERM under load: received requests complete, new connections are refused, exit 0', async (t) => {
  const server = await startServer(t, {
    DATABASE_URL: await freshDatabaseUrl(t), SECRET_KEY: randomBytes(32).toString('base64'), LOG_LEVEL: 'debug', // "incoming request" lines are written at debug
  })
  t.comment(`database: ${TEST_DATABASE_URL ? 'PostgreSQL' : 'memory://'}`)
  const api = (path: string) => `${server.base}/api/v1${path}`
  const email = `shutdown.${randomBytes(4).toString('hex')}@example.com`
  const reg = await timed(api('/auth/register'), json({ email, password: STRONG_PASSWORD }))
  t.equal(reg.status, 201, 'registered')
  const created = await timed(api('/api-keys'), json({ name: 'shutdown', scopes: ['api_keys:read'] }, { authorization: `Bearer ${reg.body.access_token}` }))
  t.equal(created.status, 201, 'API key created')
  const key = created.body.key as string
  t.equal((await timed(api('/auth/verify'), { headers: { 'x-api-key': key } })).status, 200, 'the key verifies')

  // ---- the load: every request has an id of its own
  const sent: Sent[] = []
  let n = 0
  let stopping = false
  let sigtermAt = Infinity
  const one = async (op: Sent['op']) => {
    const id = `shutdown-${++n}`
    const startedAt = performance.now()
    const res = op === 'verify'
      ? await timed(api('/auth/verify'), { headers: { 'x-api-key': key, 'x-request-id': id } })
      : await timed(api('/auth/login'), json({ email, password: STRONG_PASSWORD }, { 'x-request-id': id }))
    sent.push({ ...res, id, op, startedAt, endedAt: performance.now(), requestId: res.requestId ?? null })
    return res
  }
  const workers = Array.from({ length: CLIENTS }, async (_, w) => {
    for (let i = w; !stopping; i++) {
      const res = await one(i % 5 === 0 ? 'login' : 'verify')
      // Once the server is gone there is no point hammering a closed port.
      if (res.status === null && performance.now() > sigtermAt && server.child.exitCode !== null) break
    }
  })
  await sleep(1500)

  // ---- SIGTERM while ~50 requests are in flight
  sigtermAt = performance.now()
  server.child.kill('SIGTERM')
  // A new connection once the server has begun to close.
  while (!/"msg":"stopped accepting connections"/.test(server.logs()) && server.child.exitCode === null) await new Promise((r) => setImmediate(r))
  const newConnection = await tryConnect(server.port)
  const exitCode = await Promise.race([server.exited, after(EXIT_WITHIN_MS, 'timeout' as const)])
  const exitMs = performance.now() - sigtermAt
  stopping = true
  await Promise.all(workers)
  const afterExit = await tryConnect(server.port)

  // ---- what the server says it received and answered
  const received = new Set<string>()
  const completed = new Set<string>()
  for (const line of server.logs().split('\n')) {
    if (!line.startsWith('{')) continue
    let entry: { reqId?: string; msg?: string }
    try { entry = JSON.parse(line) } catch { continue }
    if (!entry.reqId?.startsWith('shutdown-')) continue
    if (entry.msg === 'incoming request') received.add(entry.reqId)
    if (entry.msg === 'request completed') completed.add(entry.reqId)
  }

  const before = sent.filter((s) => s.endedAt < sigtermAt)
  const across = sent.filter((s) => s.startedAt < sigtermAt && s.endedAt >= sigtermAt)
  const late = sent.filter((s) => s.startedAt >= sigtermAt)
  t.comment(`${sent.length} requests: before SIGTERM ${JSON.stringify(tally(before))}; in flight at SIGTERM ${JSON.stringify(tally(across))}; `
    + `sent after ${JSON.stringify(tally(late))}; the server logged ${received.size} received, ${completed.size} completed; exit after ${Math.round(exitMs)} ms`)

  t.equal(exitCode, 0, 'exit code 0')
  t.ok(exitMs < EXIT_WITHIN_MS, `exited within ${EXIT_WITHIN_MS} ms of SIGTERM (${Math.round(exitMs)} ms)`)
  t.equal(newConnection, 'ECONNREFUSED', 'a new connection while draining is refused')
  t.equal(afterExit, 'ECONNREFUSED', 'and after exit')

  t.ok(across.length >= CLIENTS / 2, `requests were in flight when SIGTERM came (${across.length})`)
  t.ok(across.filter((s) => s.status === 200).length > 0, 'some of them completed with 200 after SIGTERM')
  t.same(before.filter((s) => s.status !== 200).map((s) => `${s.id} ${s.op}: ${s.status ?? s.error}`), [], 'before SIGTERM every request is 200')
  t.same([...received].filter((id) => !completed.has(id)), [], 'every request the server received, it answered (its own log)')
  t.same(sent.filter((s) => received.has(s.id) && s.status === null).map((s) => `${s.id} ${s.op}: ${s.error}`), [],
    'no received request ended in a connection error on the client')
  t.same(sent.filter((s) => s.status !== null && ![200, 503].includes(s.status)).map((s) => `${s.id} ${s.op}: ${s.status} ${s.code}`), [],
    'every response is a 200 or a 503 (never a 500, never a 401 from a half-closed app)')
  const refused = sent.filter((s) => s.status === null)
  t.same([...new Set(refused.map((s) => s.error))].filter((e) => !['ECONNREFUSED', 'ECONNRESET', 'UND_ERR_SOCKET', 'EPIPE'].includes(e!)), [],
    `requests the server never received failed as refused or closed connections (${JSON.stringify(tally(refused))})`)

  const unavailable = sent.filter((s) => s.status === 503)
  for (const s of unavailable) t.comment(`503 while draining: ${s.id} ${JSON.stringify(s.body)} retry-after=${s.retryAfter} x-request-id=${s.requestId}`)
  t.same(unavailable.filter((s) => s.code !== 'SERVICE_UNAVAILABLE' || !(Number(s.retryAfter) > 0) || s.requestId !== s.id)
    .map((s) => `${s.id}: ${JSON.stringify(s.body)} retry-after=${s.retryAfter} x-request-id=${s.requestId}`), [],
  `the ${unavailable.length} requests answered 503 while draining: SERVICE_UNAVAILABLE, Retry-After, X-Request-Id`,
  {})
})
