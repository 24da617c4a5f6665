// A request line far over Node's header limit was answered 400, and the socket
// destroyed as soon as more of the line arrived: the connection was reset
// while the client was still writing, so the client got EPIPE or ECONNRESET
// instead of the answer (the spec-driven fuzz test met it with a 600 KB path,
// when the line arrived in more than one read). The rest is now read and
// dropped for a moment before the socket closes, as nginx's lingering close does.
import t from 'tap'
import { connect } from 'node:net'
import { buildTestApp } from '../helpers/app.js'

t.test('an over-long request line gets its 400, and the client can finish writing without a reset', async (t) => {
  const app = await buildTestApp(t)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true }) // a client that keeps writing after the answer
  let answer = ''
  let failure: string | undefined
  socket.on('data', (d) => { answer += d })
  socket.on('error', (err) => { failure = (err as NodeJS.ErrnoException).code })
  const ended = new Promise<void>((r) => socket.once('end', () => r()))
  await new Promise<void>((r) => socket.once('connect', () => r()))
  // More than the 16 KiB header limit, in one read: the server answers 400 and half-closes.
  socket.write(`DELETE /${'a'.repeat(20_000)}`)
  await ended
  t.match(answer, /^HTTP\/1\.1 400 Bad Request/, 'the 400 arrives')
  // The client, still sending its request line, writes the rest.
  for (let i = 0; i < 10; i++) {
    socket.write('b'.repeat(64 * 1024))
    await new Promise((r) => setTimeout(r, 20))
  }
  await new Promise((r) => setTimeout(r, 200))
  t.equal(failure, undefined, 'the rest of the request is read and dropped, not answered with a reset')
  socket.destroy()
})
