// Infrastructure the reliability tests own and can break on purpose: a
// PostgreSQL cluster of their own (initdb + pg_ctl), a Redis server of their
// own (or a cuttable TCP proxy in front of TEST_REDIS_URL), and timed HTTP
// requests. Nothing here touches the machine's shared PostgreSQL or Redis.
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Test } from 'tap'
import { freePort } from '../helpers/server.js'

const run = promisify(execFile)
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
/** Resolves to `value` after `ms`, without keeping the process alive (for races against a deadline). */
export const after = <T>(ms: number, value: T) => new Promise<T>((r) => setTimeout(r, ms, value).unref())

/** Cleanups that must run even when the test process ends abruptly (a crashed test leaves no daemon behind). */
const onExit = new Set<() => void>()
process.once('exit', () => { for (const fn of onExit) { try { fn() } catch { /* best effort */ } } })

async function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

// ---------------------------------------------------------------- PostgreSQL

export interface PostgresBinaries { initdb: string; pgCtl: string }

/** initdb and pg_ctl of the newest installed PostgreSQL, or a reason why there are none. */
export function findPostgresBinaries(): PostgresBinaries | string {
  const root = '/usr/lib/postgresql'
  const versions = existsSync(root) ? readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : []
  for (const v of versions) {
    const initdb = join(root, v, 'bin', 'initdb')
    const pgCtl = join(root, v, 'bin', 'pg_ctl')
    if (existsSync(initdb) && existsSync(pgCtl)) return { initdb, pgCtl }
  }
  return `no PostgreSQL server binaries (${root}/*/bin/initdb, pg_ctl) on this machine`
}

export interface OwnPostgres {
  port: number
  /** postgres://postgres@127.0.0.1:<port>/postgres (trust auth). */
  url: string
  /** pg_ctl stop -m fast: open connections are terminated (57P01), new ones refused. */
  stop(): Promise<void>
  /** pg_ctl start on the same port and data directory; resolves once it accepts connections. */
  start(): Promise<void>
  /** SIGSTOP to the postmaster and every backend: connections stay open (and new ones are accepted by the kernel), nothing answers. */
  freeze(): Promise<void>
  thaw(): void
}

/** A throw-away PostgreSQL cluster on a free loopback port; stopped and removed when the test ends. */
export async function startPostgres(t: Test, bin: PostgresBinaries): Promise<OwnPostgres> {
  const asRoot = process.getuid?.() === 0
  // initdb refuses to run as root: the cluster belongs to the postgres OS user.
  const as = (cmd: string, args: string[]): [string, string[]] => asRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]
  const dir = mkdtempSync(join(tmpdir(), 'pc-reliability-pg-'))
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'postgres'])
    const { stdout: gid } = await run('id', ['-g', 'postgres'])
    chownSync(dir, Number(stdout.trim()), Number(gid.trim()))
  }
  const data = join(dir, 'data')
  const port = await freePort()
  const pgCtl = (...args: string[]) => {
    const [cmd, argv] = as(bin.pgCtl, ['-D', data, ...args])
    return run(cmd, argv, { timeout: 30_000 })
  }
  let running = false
  let frozen: number[] = []
  const thaw = () => {
    for (const pid of frozen) { try { process.kill(pid, 'SIGCONT') } catch { /* gone */ } }
    frozen = []
  }
  const cleanup = () => {
    thaw()
    if (running) spawnSync(...as(bin.pgCtl, ['-D', data, '-m', 'immediate', '-w', 'stop']), { timeout: 15_000 })
    running = false
    rmSync(dir, { recursive: true, force: true })
  }
  onExit.add(cleanup)
  t.teardown(() => { cleanup(); onExit.delete(cleanup) })

  await run(...as(bin.initdb, ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync']), { timeout: 60_000 })
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100`
  const pg: OwnPostgres = {
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      await pgCtl('-m', 'fast', '-w', 'stop')
      running = false
    },
    async start() {
      running = true
      await pgCtl('-l', join(dir, 'postgres.log'), '-o', options, '-w', '-t', '30', 'start')
    },
    async freeze() {
      const postmaster = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0])
      const { stdout } = await run('ps', ['-o', 'pid=', '--ppid', String(postmaster)])
      frozen = [postmaster, ...stdout.split('\n').map(Number).filter(Boolean)]
      for (const pid of frozen) process.kill(pid, 'SIGSTOP')
    },
    thaw,
  }
  await pg.start()
  return pg
}

// --------------------------------------------------------------------- Redis

export interface OwnRedis {
  url: string
  /** How it is broken: a redis-server this test started, or a proxy in front of TEST_REDIS_URL. */
  kind: 'redis-server' | 'proxy'
  /** The server (or the proxy) goes away: connections close, new ones are refused. */
  stop(): Promise<void>
  /** Back on the same port. */
  start(): Promise<void>
  /** Only for a redis-server of the test: SIGSTOP, so connections stay open and nothing answers (a hung server). */
  freeze?(): void
  thaw?(): void
}

export function hasRedisServer(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0
}

/** A redis-server of this test on a free port (no persistence); killed when the test ends. */
export async function startRedisServer(t: Test): Promise<OwnRedis> {
  const port = await freePort()
  let child: ChildProcess | undefined
  const kill = () => { if (child && child.exitCode === null) child.kill('SIGKILL') }
  onExit.add(kill)
  t.teardown(() => { kill(); onExit.delete(kill) })
  const redis: OwnRedis = {
    url: `redis://127.0.0.1:${port}`,
    kind: 'redis-server',
    async stop() {
      const c = child
      if (!c || c.exitCode !== null) return
      const exited = new Promise((r) => c.once('exit', r))
      c.kill('SIGTERM')
      await exited
    },
    async start() {
      child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], {
        stdio: 'ignore',
      })
      for (let i = 0; i < 100; i++) {
        if (await portOpen(port)) return
        if (child.exitCode !== null) break
        await sleep(50)
      }
      throw new Error(`redis-server did not start on port ${port}`)
    },
    freeze() { child?.kill('SIGSTOP') },
    thaw() { child?.kill('SIGCONT') },
  }
  await redis.start()
  return redis
}

/** A TCP proxy to an existing Redis that can be cut (every connection closed, new ones refused) and restored. */
export async function startRedisProxy(t: Test, targetUrl: string): Promise<OwnRedis> {
  const target = new URL(targetUrl)
  const port = await freePort()
  const sockets = new Set<Socket>()
  let server: Server | undefined
  const proxy: OwnRedis = {
    url: `redis://127.0.0.1:${port}${target.pathname}`,
    kind: 'proxy',
    async stop() {
      const s = server
      server = undefined
      for (const socket of sockets) socket.destroy()
      sockets.clear()
      if (s) await new Promise((r) => s.close(r))
    },
    async start() {
      server = createServer((client) => {
        const upstream = connect(Number(target.port || 6379), target.hostname)
        for (const s of [client, upstream]) {
          sockets.add(s)
          s.on('error', () => {})
          s.on('close', () => { sockets.delete(s); client.destroy(); upstream.destroy() })
        }
        client.pipe(upstream).pipe(client)
      })
      await new Promise<void>((resolve) => server!.listen(port, '127.0.0.1', resolve))
    },
  }
  t.teardown(() => proxy.stop())
  await proxy.start()
  return proxy
}

// ----------------------------------------------------------- timed requests

export interface Timed {
  status: number | null
  ms: number
  /** The error code of the body when it is the public error shape. */
  code?: string
  retryAfter?: string | null
  requestId?: string | null
  body?: any
  /** A network failure (refused, reset, hung past the deadline). */
  error?: string
}

/** One request with its latency; never throws (a network failure is recorded), gives up after `deadlineMs`. */
export async function timed(url: string, init: RequestInit = {}, deadlineMs = 10_000): Promise<Timed> {
  const started = performance.now()
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(deadlineMs) })
    const text = await res.text()
    let body: any
    try { body = text ? JSON.parse(text) : undefined } catch { body = text }
    return {
      status: res.status, ms: performance.now() - started, body,
      code: body?.error?.code, retryAfter: res.headers.get('retry-after'), requestId: res.headers.get('x-request-id'),
    }
  } catch (err) {
    const e = err as Error & { cause?: { code?: string } }
    return { status: null, ms: performance.now() - started, error: e.cause?.code ?? e.name ?? String(err) }
  }
}

export const json = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body),
})

/** Latency summary: count, median, p99, max (ms, rounded). */
export function latency(samples: Timed[]): string {
  if (!samples.length) return 'no samples'
  const ms = samples.map((s) => s.ms).sort((a, b) => a - b)
  const at = (q: number) => Math.round(ms[Math.min(ms.length - 1, Math.floor(q * ms.length))]!)
  return `n=${ms.length} median=${at(0.5)}ms p99=${at(0.99)}ms max=${Math.round(ms[ms.length - 1]!)}ms`
}

/** Counts of statuses (or error names), e.g. { 200: 10, 503: 4, ECONNREFUSED: 1 }. */
export function tally(samples: Timed[]): Record<string, number> {
  const out: Record<string, number> = {}
  for (const s of samples) {
    const k = s.status === null ? s.error! : String(s.status)
    out[k] = (out[k] ?? 0) + 1
  }
  return out
}

// ---------------------------------------------------------------------- load

export type Sample<Op extends string> = Timed & { op: Op; phase: string }

/**
 * Concurrent clients sending operations until stopped: each lane is a
 * round-robin mix of operations with its own workers, so that requests which
 * hang in one lane do not starve another. Each sample records the phase it ran
 * in; one that spans a phase change is labelled "a→b", so strict checks can
 * look at requests wholly inside a phase.
 */
export class Load<Op extends string> {
  readonly samples: Sample<Op>[] = []
  phase = 'before'
  private running = false
  private workers: Promise<void>[] = []

  constructor(
    private readonly send: (op: Op) => Promise<Timed>,
    private readonly lanes: { ops: Op[]; workers: number }[],
  ) {}

  start(): this {
    this.running = true
    this.workers = this.lanes.flatMap(({ ops, workers }) => Array.from({ length: workers }, async (_, w) => {
      for (let i = w; this.running; i++) {
        const op = ops[i % ops.length]!
        const at = this.phase
        const res = await this.send(op)
        this.samples.push({ ...res, op, phase: at === this.phase ? at : `${at}→${this.phase}` })
      }
    }))
    return this
  }

  async stop(): Promise<void> {
    this.running = false
    await Promise.all(this.workers)
  }

  in(phase: string, ops?: Op[]): Sample<Op>[] {
    return this.samples.filter((s) => s.phase === phase && (!ops || ops.includes(s.op)))
  }
}
