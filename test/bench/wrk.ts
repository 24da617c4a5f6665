// wrk as the load generator: one thread, 50 connections by default. wrk is C
// and uses a fraction of the CPU a Node load generator does, so on 2 cores the
// ratio to a bare route shows the service's own cost. Lua scripts do what
// needs scripting (rotating credentials, a token pool, a POST body).
import { execFile } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

export interface Run {
  rps: number
  /** Latency percentiles in milliseconds. */
  p50: number
  p99: number
  total: number
  /** Responses wrk counted outside 2xx/3xx (wrk's own count). */
  non2xx: number
  /** Socket errors and timeouts wrk reported. */
  errors: number
  /** What a script's done() printed after the marker line, parsed as JSON. */
  script?: Record<string, unknown>
  /** CPU the serving process spent per request, in µs, when the run measured it. */
  cpuUs?: number
}

export interface WrkOptions {
  connections: number
  seconds: number
  headers?: Record<string, string>
  /** Lua source, written to a temporary file. */
  script?: string
  /** Arguments after `--`, given to the script's init(args). */
  scriptArgs?: string[]
}

const scriptDir = mkdtempSync(join(tmpdir(), 'portcullis-bench-'))
let scripts = 0

const MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 }
const toMs = (value: string, unit: string) => Number(value) * (MS[unit] ?? NaN)

/** Parses wrk's report (with --latency). */
export function parseWrk(out: string): Run {
  const num = (re: RegExp) => Number(re.exec(out)?.[1] ?? 0)
  const pct = (p: string) => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(out)
    return m ? toMs(m[1]!, m[2]!) : NaN
  }
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)
  const marker = out.indexOf('\n#json ')
  return {
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    p50: pct('50'),
    p99: pct('99'),
    total: num(/(\d+) requests in/),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/),
    errors: errors ? errors.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
    ...(marker >= 0 ? { script: JSON.parse(out.slice(marker + 7).split('\n')[0]!) } : {}),
  }
}

export async function wrk(url: string, options: WrkOptions): Promise<Run> {
  const args = ['-t1', `-c${options.connections}`, `-d${options.seconds}s`, '--latency', '--timeout', '10s']
  for (const [name, value] of Object.entries(options.headers ?? {})) args.push('-H', `${name}: ${value}`)
  if (options.script) {
    const file = join(scriptDir, `s${scripts++}.lua`)
    writeFileSync(file, options.script)
    args.push('-s', file)
  }
  args.push(url)
  if (options.scriptArgs) args.push('--', ...options.scriptArgs)
  const { stdout } = await promisify(execFile)('wrk', args, { maxBuffer: 16 << 20 }).catch((err: NodeJS.ErrnoException) => {
    throw err.code === 'ENOENT' ? new Error('wrk is not installed: apt-get install -y wrk (.ci/run installs it)') : err
  })
  return parseWrk(stdout)
}

/** Lua: every request is one of `requests`, in turn (formatted once in init, so the script costs little per request). */
export function rotatingRequests(requests: { method: string; path: string; headers: Record<string, string>; body?: string }[]): string {
  const lua = (s: string) => JSON.stringify(s) // a JSON string literal is a valid Lua string literal for ASCII
  return `
local reqs = {}
local i = 0
function init(args)
${requests.map((r) => `  table.insert(reqs, wrk.format(${lua(r.method)}, ${lua(r.path)}, {${Object.entries(r.headers).map(([k, v]) => `[${lua(k)}] = ${lua(v)}`).join(', ')}}${r.body !== undefined ? `, ${lua(r.body)}` : ''}))`).join('\n')}
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
`
}

/**
 * Lua: refreshes that each spend one token of a pool (read from the file given as the script's
 * argument) and put the answer's new token back, so no token is ever sent twice.
 */
export const REFRESH_POOL = `
-- done() runs in wrk's main Lua state: it reads each thread's counts through setup's handles.
local threads = {}
function setup(thread) table.insert(threads, thread) end
pool = {}
ok, failed = 0, 0
function init(args)
  for line in io.lines(args[1]) do table.insert(pool, line) end
end
function request()
  local token = table.remove(pool)
  return wrk.format("POST", "/api/v1/auth/refresh", { ["content-type"] = "application/json" }, '{"refresh_token":"' .. (token or "") .. '"}')
end
function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
    table.insert(pool, string.match(body, '"refresh_token":"([^"]+)"'))
  else
    failed = failed + 1
  end
end
function done(summary, latency, requests)
  local o, f = 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); f = f + t:get("failed") end
  io.write("\\n#json {\\"ok\\":" .. o .. ",\\"failed\\":" .. f .. "}\\n")
end
`
