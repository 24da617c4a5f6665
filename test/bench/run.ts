// npm run bench: what Portcullis costs, as ratios to ceilings measured side by
// side in the same run. The service and the bare Fastify ceiling run as their
// own processes on real PostgreSQL; autocannon drives them from this process.
// Prints a table and writes bench-results/bench-<time>.json.
//   BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test), BENCH_DURATION (s, default 10),
//   BENCH_SOAK (s, default 60), BENCH_CONNECTIONS (default 32)
import autocannon from 'autocannon'
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import postgres from 'postgres'
import { freePort, ROOT } from '../helpers/server.js'
import { generateApiKey } from '../../src/lib/api-key-format.js'

const DURATION = Number(process.env.BENCH_DURATION ?? 10)
const SOAK = Number(process.env.BENCH_SOAK ?? 60)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32)
const LOGIN_CONNECTIONS = 8
const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const PASSWORD = 'violet-otter-grammar-47'

interface Run { rps: number; p50: number; p99: number; total: number; statuses: Record<string, number> }
interface Row { scenario: string; value: Run; ceilingName: string; ceiling: { rps: number; p99?: number }; target: string; met: boolean; note?: string }

const children: ChildProcess[] = []
process.on('exit', () => { for (const c of children) c.kill('SIGKILL') })

async function startProcess(args: string[], env: Record<string, string>, port: number, probe: string): Promise<ChildProcess> {
  // Compiled JavaScript runs as is (the service, as the Dockerfile runs it); TypeScript through tsx.
  const child = spawn(process.execPath, [...(args[0]!.endsWith('.ts') ? ['--import', 'tsx'] : []), ...args], { cwd: ROOT, env: { ...process.env, ...env, PORT: String(port) }, stdio: ['ignore', 'inherit', 'inherit'] })
  children.push(child)
  for (let i = 0; i < 300; i++) {
    try { if ((await fetch(`http://127.0.0.1:${port}${probe}`)).ok) return child } catch { /* starting */ }
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`${args.join(' ')} did not start`)
}

function load(opts: autocannon.Options): Promise<Run> {
  return new Promise((resolve, reject) => {
    autocannon({ connections: CONNECTIONS, duration: DURATION, ...opts }, (err, r) => {
      if (err) return reject(err)
      const statuses = Object.fromEntries(Object.entries(r.statusCodeStats ?? {}).map(([k, v]) => [k, (v as { count: number }).count]))
      resolve({ rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, total: r.requests.total, statuses })
    })
  })
}

async function ceilingScript(args: string[]): Promise<Record<string, number>> {
  // The same runtime settings as the service, so the ratio compares like with like.
  const env = { ...process.env, ...dockerfileEnv(RUNTIME_ENV) }
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'test/bench/ceilings.ts', ...args], { cwd: ROOT, env, maxBuffer: 1 << 20 })
  return JSON.parse(stdout.trim().split('\n').pop()!)
}

const RUNTIME_ENV = ['MALLOC_ARENA_MAX']

/** Runtime settings the Dockerfile sets with ENV (only the named ones: HOST, PORT and DATA_DIR are the bench's own). */
function dockerfileEnv(names: string[]): Record<string, string> {
  const env: Record<string, string> = {}
  for (const line of readFileSync(join(ROOT, 'Dockerfile'), 'utf8').split('\n')) {
    if (!line.startsWith('ENV ')) continue
    for (const [, name, value] of line.slice(4).matchAll(/(\w+)=(\S+)/g)) if (names.includes(name!)) env[name!] = value!
  }
  for (const name of names) if (!(name in env)) throw new Error(`the Dockerfile no longer sets ${name}`)
  return env
}

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024
const pct = (x: number) => `${(x * 100).toFixed(0)} %`

async function main() {
  // A fresh database for this run.
  const dbName = `pc_bench_${randomBytes(4).toString('hex')}`
  const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database ${dbName}`)
  const dbUrl = Object.assign(new URL(ADMIN_URL), { pathname: `/${dbName}` }).toString()

  const portcullisPort = await freePort()
  const helloPort = await freePort()
  // The production build, as the Dockerfile runs it (with the Dockerfile's ENV).
  await promisify(execFile)('npm', ['run', '-s', 'build'], { cwd: ROOT })
  const service = await startProcess(['dist/server.js'], {
    ...dockerfileEnv(RUNTIME_ENV),
    DATABASE_URL: dbUrl, SECRET_KEY: randomBytes(32).toString('base64'), LOG_LEVEL: 'warn', HOST: '127.0.0.1',
    // The per-IP limits would stop a load test from one address; the global limiter stays on the path.
    RATE_LIMIT_LOGIN: '100000', RATE_LIMIT_REGISTER: '100000', RATE_LIMIT_REFRESH: '100000', RATE_LIMIT_GLOBAL: '100000000',
  }, portcullisPort, '/readyz')
  await startProcess(['test/bench/hello.ts'], {}, helloPort, '/hello')
  const P = `http://127.0.0.1:${portcullisPort}`
  const HELLO = `http://127.0.0.1:${helloPort}/hello`

  const post = async (path: string, body: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(P + path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`)
    return res.json() as Promise<Record<string, any>>
  }
  const email = `bench-${Date.now()}@example.com`
  const reg = await post('/api/v1/auth/register', { email, password: PASSWORD, company_name: 'Bench' })
  const key = await post('/api/v1/api-keys', { name: 'bench', scopes: ['agents:read'] }, { authorization: `Bearer ${reg.access_token}` })
  const accessToken = reg.access_token as string
  const rows: Row[] = []
  const hello = () => load({ url: HELLO })
  const verifyUrl = `${P}/api/v1/auth/verify`

  console.log('· verify with an ES256 access token')
  let ceiling = await hello()
  let run = await load({ url: verifyUrl, headers: { authorization: `Bearer ${accessToken}` } })
  rows.push({ scenario: 'GET /auth/verify, ES256 access token', value: run, ceilingName: 'hello', ceiling, target: '≥ 60 %, p99 ≤ 2× hello',
    met: run.rps >= 0.6 * ceiling.rps && run.p99 <= 2 * Math.max(ceiling.p99, 1) })

  console.log('· verify with an API key')
  ceiling = await hello()
  run = await load({ url: verifyUrl, headers: { 'x-api-key': key.key } })
  rows.push({ scenario: 'GET /auth/verify, API key', value: run, ceilingName: 'hello', ceiling, target: '≥ 80 %', met: run.rps >= 0.8 * ceiling.rps })

  console.log('· verify with malformed and unknown keys (flood)')
  const badKeys = [
    ...Array.from({ length: 50 }, () => generateApiKey('pc', 'live').slice(0, -1) + 'A'), // checksum broken
    ...Array.from({ length: 50 }, () => generateApiKey('pc', 'live')), // well-formed, unknown
  ]
  ceiling = await hello()
  run = await load({ url: verifyUrl, requests: badKeys.map((k) => ({ method: 'GET', path: '/api/v1/auth/verify', headers: { 'x-api-key': k } })) })
  const all401 = (run.statuses['401'] ?? 0) === run.total
  rows.push({ scenario: 'GET /auth/verify, malformed/unknown keys', value: run, ceilingName: 'hello', ceiling, target: '≥ 80 %, all 401',
    met: run.rps >= 0.8 * ceiling.rps && all401, note: all401 ? 'all 401' : `statuses ${JSON.stringify(run.statuses)}` })

  console.log('· GET /auth/me with an access token')
  ceiling = await hello()
  run = await load({ url: `${P}/api/v1/auth/me`, headers: { authorization: `Bearer ${accessToken}` } })
  rows.push({ scenario: 'GET /auth/me, access token', value: run, ceilingName: 'hello', ceiling, target: '≥ 40 %', met: run.rps >= 0.4 * ceiling.rps })

  console.log('· POST /auth/login vs argon2 alone')
  const loginBody = JSON.stringify({ email, password: PASSWORD })
  const loginOpts = { url: `${P}/api/v1/auth/login`, method: 'POST' as const, headers: { 'content-type': 'application/json' }, body: loginBody, connections: LOGIN_CONNECTIONS }
  const argon2Ceiling = await ceilingScript(['argon2', String(LOGIN_CONNECTIONS), String(DURATION)])
  run = await load(loginOpts)
  rows.push({ scenario: 'POST /auth/login', value: run, ceilingName: 'argon2 verify alone', ceiling: { rps: argon2Ceiling.opsPerSec! }, target: '≥ 85 %',
    met: run.rps >= 0.85 * argon2Ceiling.opsPerSec! })

  console.log('· verify while logins saturate the CPU')
  const idle = await load({ url: verifyUrl, headers: { authorization: `Bearer ${accessToken}` } })
  const loginLoad = load({ ...loginOpts, duration: DURATION + 2 })
  await new Promise((r) => setTimeout(r, 1000))
  run = await load({ url: verifyUrl, headers: { authorization: `Bearer ${accessToken}` } })
  const concurrentLogins = await loginLoad
  rows.push({ scenario: '/auth/verify while logins saturate the CPU', value: run, ceilingName: '/auth/verify idle', ceiling: idle, target: '≥ 50 %',
    met: run.rps >= 0.5 * idle.rps, note: `${concurrentLogins.rps.toFixed(0)} logins/s alongside` })

  console.log('· POST /auth/refresh vs postgres.js running the same statements')
  const refreshCeiling = await ceilingScript(['refresh', dbUrl, String(CONNECTIONS), String(DURATION)])
  // Each in-flight request holds one token of the pool exclusively; its child goes back in.
  const pool: string[] = []
  for (let i = 0; i < CONNECTIONS * 2; i++) pool.push((await post('/api/v1/auth/login', { email, password: PASSWORD })).refresh_token)
  run = await load({
    url: `${P}/api/v1/auth/refresh`,
    requests: [{
      method: 'POST', path: '/api/v1/auth/refresh', headers: { 'content-type': 'application/json' },
      setupRequest: (req) => ({ ...req, body: JSON.stringify({ refresh_token: pool.pop() }) }),
      onResponse: (status, body, context) => { if (status === 200) pool.push(JSON.parse(body).refresh_token) },
    }],
  })
  const refreshOk = (run.statuses['200'] ?? 0) === run.total
  rows.push({ scenario: 'POST /auth/refresh (PostgreSQL)', value: run, ceilingName: 'postgres.js, same statements', ceiling: { rps: refreshCeiling.opsPerSec! },
    target: '≥ 60 %', met: run.rps >= 0.6 * refreshCeiling.opsPerSec! && refreshOk, note: refreshOk ? 'all 200' : `statuses ${JSON.stringify(run.statuses)}` })

  console.log(`· memory: ${SOAK} s at full load (API-key verify)`)
  const samples: number[] = []
  const sampler = setInterval(() => samples.push(rssMb(service.pid!)), 1000)
  const soak = await load({ url: verifyUrl, headers: { 'x-api-key': key.key }, duration: SOAK })
  clearInterval(sampler)
  const at20 = samples[Math.min(19, samples.length - 1)] ?? 0
  const atEnd = samples[samples.length - 1] ?? 0
  const growth = at20 ? (atEnd - at20) / at20 : 0

  console.log('· argon2 vs @node-rs/argon2')
  const compare = await ceilingScript(['argon2-compare', String(LOGIN_CONNECTIONS), String(Math.max(3, DURATION / 2))])

  // Report.
  const table = rows.map((r) => ({
    scenario: r.scenario,
    'req/s': r.value.rps.toFixed(0),
    'p50 ms': r.value.p50,
    'p99 ms': r.value.p99,
    ceiling: `${r.ceilingName}: ${r.ceiling.rps.toFixed(0)}/s${r.ceiling.p99 !== undefined ? `, p99 ${r.ceiling.p99} ms` : ''}`,
    ratio: pct(r.value.rps / r.ceiling.rps),
    target: r.target,
    met: r.met ? 'yes' : 'NO',
    note: r.note ?? '',
  }))
  console.log()
  console.table(table)
  const memory = { rssAt20sMb: at20, rssAtEndMb: atEnd, growth, peakMb: Math.max(...samples), soakRps: soak.rps, met: Math.max(...samples) <= 250 && growth <= 0.1 }
  console.log(`memory: RSS ${at20.toFixed(0)} MB at 20 s, ${atEnd.toFixed(0)} MB at ${samples.length} s (growth ${pct(growth)}, peak ${memory.peakMb.toFixed(0)} MB) under ${soak.rps.toFixed(0)} req/s — target ≤ 250 MB, ≤ 10 %: ${memory.met ? 'yes' : 'NO'}`)
  console.log(`argon2 ${compare.argon2!.toFixed(1)} verifies/s vs @node-rs/argon2 ${compare.nodeRsArgon2!.toFixed(1)}/s at m=19456,t=2,p=1 (ratio ${compare.ratio!.toFixed(2)})`)

  const dir = join(ROOT, 'bench-results')
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
  writeFileSync(file, JSON.stringify({ when: new Date().toISOString(), durationSeconds: DURATION, connections: CONNECTIONS, rows, memory, argon2: compare }, null, 2))
  console.log(`results: ${join('bench-results', file.split('/').pop()!)}`)

  for (const c of children) c.kill('SIGTERM')
  await new Promise((r) => setTimeout(r, 500))
  await admin.unsafe(`drop database if exists ${dbName} with (force)`)
  await admin.end()
}

main().then(() => process.exit(0), (err) => {
  console.error(err)
  process.exit(1)
})
