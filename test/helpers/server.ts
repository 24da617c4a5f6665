// Starts Portcullis as a real process on a free loopback port (the README's
// way, `node --import tsx src/server.ts`), for tests that need a listening server.
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { join } from 'node:path'
import type { Test } from 'tap'
import { RELAXED_LIMITS } from './app.js'

export const ROOT = join(import.meta.dirname, '..', '..')

export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

export interface RunningServer {
  base: string
  port: number
  child: ChildProcess
  exited: Promise<number | null>
  logs(): string
}

export async function startServer(t: Test, env: Record<string, string> = {}): Promise<RunningServer> {
  const port = await freePort()
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: ROOT,
    env: {
      ...process.env, DATABASE_URL: 'memory://', HOST: '127.0.0.1', LOG_LEVEL: 'info', ARGON2_MEMORY_KIB: '8192',
      ...RELAXED_LIMITS, ...env, PORT: String(port),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let logs = ''
  child.stdout!.on('data', (d) => { logs += d })
  child.stderr!.on('data', (d) => { logs += d })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  t.teardown(() => { child.kill('SIGKILL') })
  const base = `http://127.0.0.1:${port}`
  for (let i = 0; i < 300; i++) {
    try { if ((await fetch(`${base}/healthz`)).ok) return { base, port, child, exited, logs: () => logs } } catch { /* not up yet */ }
    if (child.exitCode !== null) break
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`server did not start:\n${logs}`)
}
