// The real process: README walkthrough as written, logs without secrets, graceful SIGTERM.
import t from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ROOT as root, startServer } from './helpers/server.js'

t.test('the README walkthrough works as written; logs hold no secrets; SIGTERM drains', async (t) => {
  // Default per-IP limits: the walkthrough must work as a fresh install runs it.
  const server = await startServer(t, { RATE_LIMIT_LOGIN: '10', RATE_LIMIT_REGISTER: '5', RATE_LIMIT_GLOBAL: '6000', LOG_LEVEL: 'debug' }) // "incoming request" lines are written at debug
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('## Walkthrough'), readme.indexOf('Verify tokens'))
  const script = [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]).join('\n')
    .replaceAll('127.0.0.1:3000', `127.0.0.1:${server.port}`)
  t.match(script, /auth\/register[\s\S]*auth\/login[\s\S]*auth\/me/, 'walkthrough covers register, login, me')

  const { stdout } = await promisify(execFile)('bash', ['-euo', 'pipefail', '-c', script], { cwd: root })
  const [registered, me, formLogin] = concatenatedJson(stdout)
  t.equal(registered.user.email, 'ada@example.com')
  t.equal(me.user.email, 'ada@example.com', 'me answered with the logged-in user')
  t.equal(me.organization.name, 'Acme')
  t.ok(formLogin.access_token, 'form login answered with a token')

  const logs = server.logs()
  t.match(logs, /request completed/, 'JSON request logs are written')
  // server.ts builds with SERVICE_BUILD_OPTIONS (see test/regressions/first-response-compiles-a-validator.test.ts).
  t.match(logs, /response serializers compiled with their union validators/, 'the service compiles its serializers at start')
  for (const secret of ['correct-horse-battery-staple', registered.access_token, formLogin.access_token]) {
    t.notOk(logs.includes(secret), 'no password or token in the logs')
  }

  // Logins the server has received finish, then the process exits 0.
  const received = () => (server.logs().match(/incoming request/g) ?? []).length
  const before = received()
  const inflight = Array.from({ length: 6 }, () => fetch(`${server.base}/api/v1/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'ada@example.com', password: 'correct-horse-battery-staple' }),
  }).then((r) => r.status))
  while (received() < before + 6) await new Promise((r) => setTimeout(r, 2))
  server.child.kill('SIGTERM')
  t.same(await Promise.all(inflight), [200, 200, 200, 200, 200, 200], 'in-flight requests completed')
  t.equal(await server.exited, 0, 'exit code 0')
  await t.rejects(fetch(`${server.base}/healthz`), 'new connections refused')
})

/** The JSON documents of curl outputs printed back to back (no separator between them). */
function concatenatedJson(text: string): any[] {
  const docs: any[] = []
  let depth = 0
  let start = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (inString) {
      if (c === '\\') i++
      else if (c === '"') inString = false
    } else if (c === '"') inString = true
    else if (c === '{') { if (depth++ === 0) start = i }
    else if (c === '}' && --depth === 0) docs.push(JSON.parse(text.slice(start, i + 1)))
  }
  return docs
}
