// Regression (found in review): a transaction whose statement was on the wire
// when its connection was reset (ECONNRESET, not a clean close) left
// postgres.js's automatic ROLLBACK as the connection's current statement: the
// socket's 'error' event rejected only what was current then, and its 'close'
// (with hadError) rejected nothing. When the server then refused new sessions
// (57P03, a database starting up or in recovery), a statement waiting for that
// pool slot was not refused at once but waited for the deadline, while the
// slot reconnected in a tight loop (hundreds of refused attempts), even after
// the caller gave up. scripts/patch-postgres.mjs rejects whatever was written
// to a socket that closed. A TCP proxy in front of PostgreSQL resets the
// connection and then answers new sessions with the refusal.
import t from 'tap'
import net from 'node:net'
import { sql } from 'drizzle-orm'
import { openDatabase } from '../../src/db/client.js'
import { freshDatabaseUrl, TEST_DATABASE_URL, testConfig } from '../helpers/app.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const skip = TEST_DATABASE_URL ? false : 'needs PostgreSQL (TEST_DATABASE_URL, which .ci/run sets)'

t.test('a statement waiting for a reset connection\'s slot gets the server\'s refusal at once, without a reconnect loop', { skip }, async (t) => {
  const url = new URL(await freshDatabaseUrl(t))
  const state = { refusing: false, attempts: 0 }
  const pairs = new Set<{ client: net.Socket, upstream: net.Socket }>()
  const server = net.createServer((client) => {
    client.on('error', () => {})
    if (state.refusing) {
      state.attempts++
      client.once('data', () => {
        const fields = Buffer.from('SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0')
        const head = Buffer.alloc(5); head.write('E'); head.writeInt32BE(fields.length + 4, 1)
        client.end(Buffer.concat([head, fields]))
      })
      return
    }
    const upstream = net.connect(Number(url.port || 5432), url.hostname)
    upstream.on('error', () => {})
    const pair = { client, upstream }
    pairs.add(pair)
    client.pipe(upstream); upstream.pipe(client)
    client.on('close', () => { upstream.destroy(); pairs.delete(pair) })
    upstream.on('close', () => { client.destroy(); pairs.delete(pair) })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => { state.refusing = false; server.close() })
  const proxied = new URL(url); proxied.host = `127.0.0.1:${(server.address() as net.AddressInfo).port}`

  const handle = await openDatabase(testConfig({ DATABASE_URL: proxied.toString(), DATABASE_POOL_SIZE: '1', DATABASE_QUERY_TIMEOUT: '1500' }))
  t.teardown(() => handle.close())
  await handle.db.execute(sql`create table written (step text not null)`)

  let reached!: () => void
  const between = new Promise<void>((r) => { reached = r })
  const transaction = handle.db.transaction(async (tx) => {
    await tx.execute(sql`insert into written values ('first')`)
    reached()
    await tx.execute(sql`select pg_sleep(1)`) // on the wire when the connection is reset
  }).then(() => 'committed', (err: any) => `failed: ${err?.code ?? err?.cause?.code ?? err?.message}`)

  await between
  await sleep(100)
  state.refusing = true
  const started = Date.now()
  const waiting = handle.db.execute(sql`select 1 as one`)
    .then(() => 'answered', (err: any) => `failed: ${err?.code ?? err?.cause?.code} after ${Date.now() - started} ms`)
  for (const p of pairs) { p.client.resetAndDestroy(); p.upstream.destroy() }
  t.comment('transaction:', await transaction)
  const outcome = await waiting
  const atDeadline = state.attempts
  await sleep(500)
  t.comment(`waiting statement: ${outcome}; refused session attempts: ${atDeadline} by then, ${state.attempts - atDeadline} more in the next 500 ms`)
  state.refusing = false
  t.match(outcome, /^failed: 57P03/, 'the waiting statement gets the refusal at once')
  t.ok(state.attempts - atDeadline < 5, 'no reconnect loop once the caller gave up')
})
