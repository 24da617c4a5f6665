// There was no request timeout: a client that sent part of a request and then
// nothing held its socket for as long as it liked (Node's 60 s headers timeout,
// checked every 30 s, was the only limit). REQUEST_TIMEOUT now cuts it off.
import t from 'tap'
import { connect } from 'node:net'
import { startServer } from '../helpers/server.js'

const REQUEST_TIMEOUT = 1000
const GRACE = 2500

/** Sends `data` and then nothing: resolves with what the server answered and when it closed (or gave up waiting). */
function stall(port: number, data: string): Promise<{ answer: string; closedAfter: number }> {
  return new Promise((resolve) => {
    const start = Date.now()
    let answer = ''
    const socket = connect(port, '127.0.0.1', () => socket.write(data))
    const giveUp = setTimeout(() => { socket.destroy(); resolve({ answer, closedAfter: -1 }) }, REQUEST_TIMEOUT + GRACE + 2000)
    socket.on('data', (d) => { answer += d })
    socket.on('error', () => {})
    socket.on('close', () => { clearTimeout(giveUp); resolve({ answer, closedAfter: Date.now() - start }) })
  })
}

t.test('a client that stops mid-request is answered 408 and cut off soon after REQUEST_TIMEOUT', async (t) => {
  const server = await startServer(t, { REQUEST_TIMEOUT: String(REQUEST_TIMEOUT) })

  const cases = {
    'partial headers': 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ',
    'partial body': 'POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"email":',
  }
  const results = await Promise.all(Object.values(cases).map((data) => stall(server.port, data)))
  for (const [i, name] of Object.keys(cases).entries()) {
    const { answer, closedAfter } = results[i]!
    t.ok(closedAfter > 0 && closedAfter <= REQUEST_TIMEOUT + GRACE, `${name}: socket closed after ${closedAfter} ms`)
    t.ok(closedAfter >= REQUEST_TIMEOUT - 100, `${name}: not before REQUEST_TIMEOUT`)
    t.ok(answer === '' || answer.startsWith('HTTP/1.1 408 '), `${name}: 408 or nothing (${answer.split('\r\n')[0]})`)
  }

  const ok = await fetch(`${server.base}/healthz`)
  t.equal(ok.status, 200, 'a normal request on the same server still works')
  const slowButComplete = await fetch(`${server.base}/api/v1/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'nobody@example.com', password: 'not-the-password-99' }),
  })
  t.equal(slowButComplete.status, 401, 'and so does a login')
  t.equal(server.child.exitCode, null, 'the server is still running')
})
