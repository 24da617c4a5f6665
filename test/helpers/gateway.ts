// The pieces of a real-gateway test: Portcullis as a real process, an echo
// upstream that counts its hits, and clean-up of child processes even when the
// test process ends without its teardowns.
import type { Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer as createHttpServer, type IncomingHttpHeaders } from 'node:http'
import { connect } from 'node:net'
import { join } from 'node:path'
import { freshDatabaseUrl, RELAXED_LIMITS, TEST_REDIS_URL } from './app.js'
import { freePort } from './server.js'

const root = join(import.meta.dirname, '..', '..')

export { freePort } from './server.js'

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Resolves when the child exits (at once if it already has). */
export const exitOf = (child: ChildProcess) => new Promise<void>((resolve) => {
  if (child.exitCode !== null || child.signalCode !== null) resolve()
  else child.once('exit', () => resolve())
})

/**
 * Kills for the children still running, for when this process ends without its
 * teardowns (a tap timeout, Ctrl-C): nginx does not notice its parent is gone.
 */
export const orphans = new Set<() => void>()
export function killOrphansOnExit() {
  const killAll = () => { for (const kill of orphans) kill(); orphans.clear() }
  process.once('exit', killAll)
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(signal, () => {
      killAll()
      process.kill(process.pid, signal) // then the usual end (or the next handler)
    })
  }
}

export async function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

export async function startPortcullis(t: Test) {
  const port = await freePort()
  // A fresh PostgreSQL database (and Redis) when the suite runs against them, else memory://.
  const databaseUrl = await freshDatabaseUrl(t)
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: root,
    env: {
      ...process.env, ...RELAXED_LIMITS,
      DATABASE_URL: databaseUrl, SECRET_KEY: randomBytes(32).toString('base64'),
      ...(TEST_REDIS_URL ? { REDIS_URL: TEST_REDIS_URL } : {}),
      PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', ARGON2_MEMORY_KIB: '8192',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let logs = ''
  child.stdout!.on('data', (d) => { logs += d })
  child.stderr!.on('data', (d) => { logs += d })
  const kill = () => { child.kill('SIGKILL') }
  orphans.add(kill)
  t.teardown(async () => { kill(); orphans.delete(kill); await exitOf(child) })
  const base = `http://127.0.0.1:${port}`
  for (let i = 0; ; i++) {
    try { if ((await fetch(`${base}/healthz`)).ok) break } catch { /* not up yet */ }
    if (child.exitCode !== null || i > 300) throw new Error(`Portcullis did not start:\n${logs}`)
    await sleep(100)
  }
  return { base, port }
}

export interface Hit { method: string; url: string; headers: IncomingHttpHeaders }

/** The protected service: answers the headers it received as JSON, and remembers every request. */
export async function startUpstream(t: Test) {
  const hits: Hit[] = []
  const server = createHttpServer((req, res) => {
    hits.push({ method: req.method!, url: req.url!, headers: req.headers })
    const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(req.method === 'HEAD' ? undefined : body)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return { port: (server.address() as { port: number }).port, hits }
}

export async function json(res: Response, status: number, what: string) {
  const text = await res.text()
  if (res.status !== status) throw new Error(`${what}: expected ${status}, got ${res.status} ${text}`)
  return text ? JSON.parse(text) : undefined
}


/** A request through the gateway at `base`, and what reached the upstream because of it. */
export const requestVia = (base: string, upstream: { hits: Hit[] }) =>
  async (path: string, headers: Record<string, string> = {}, method = 'GET') => {
    const before = upstream.hits.length
    const res = await fetch(`${base}${path}`, { method, headers })
    const body = await res.text()
    const reached = upstream.hits.slice(before)
    return { res, status: res.status, body, reached, seen: reached[0]?.headers }
  }
