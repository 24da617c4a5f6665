// A real Caddy (Debian's caddy) in front of a protected service, deciding every
// request with forward_auth → Portcullis GET /api/v1/auth/verify, with the
// Caddyfile the README shows (test/gateway/Caddyfile.template). Between Caddy
// and Portcullis sits a counting TCP relay, so the test sees how many
// connections Caddy opens: verify's 200 has no body, so Caddy keeps them.
import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'
import {
  exitOf, freePort, json, killOrphansOnExit, orphans, portAnswers, requestVia, sleep, startPortcullis, startUpstream,
} from '../helpers/gateway.js'

const TEMPLATE = join(import.meta.dirname, 'Caddyfile.template')
const caddy = spawnSync('caddy', ['version']).status === 0 ? 'caddy' : undefined

/** A TCP relay to `port` that counts the connections made through it. */
async function countingRelay(t: Test, port: number) {
  let connections = 0
  const server = createServer((client) => {
    connections++
    const upstream = connect(port, '127.0.0.1')
    client.pipe(upstream).pipe(client)
    const close = () => { client.destroy(); upstream.destroy() }
    client.on('error', close)
    upstream.on('error', close)
    client.on('close', close)
    upstream.on('close', close)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { port: (server.address() as { port: number }).port, connections: () => connections }
}

async function startCaddy(t: Test, portcullisPort: number, upstreamPort: number) {
  const prefix = mkdtempSync(join(tmpdir(), 'portcullis-caddy-'))
  const port = await freePort()
  const conf = readFileSync(TEMPLATE, 'utf8')
    .replaceAll('{{PREFIX}}', prefix).replaceAll('{{CADDY_PORT}}', String(port))
    .replaceAll('{{PORTCULLIS_PORT}}', String(portcullisPort)).replaceAll('{{UPSTREAM_PORT}}', String(upstreamPort))
  t.notMatch(conf, /\{\{[A-Z_]+\}\}/, 'every placeholder of the template is substituted')
  const file = join(prefix, 'Caddyfile')
  writeFileSync(file, conf)
  const child = spawn(caddy!, ['run', '--config', file, '--adapter', 'caddyfile'], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: prefix, XDG_DATA_HOME: prefix, XDG_CONFIG_HOME: prefix },
  })
  let output = ''
  child.stdout!.on('data', (d) => { output += d })
  child.stderr!.on('data', (d) => { output += d })
  const kill = () => { child.kill('SIGKILL'); rmSync(prefix, { recursive: true, force: true }) }
  orphans.add(kill)
  t.teardown(async () => {
    child.kill('SIGTERM')
    await Promise.race([exitOf(child), sleep(5000)])
    kill()
    orphans.delete(kill)
  })
  for (let i = 0; !(await portAnswers(port)); i++) {
    if (child.exitCode !== null || i > 200) throw new Error(`caddy did not start:\n${output}`)
    await sleep(50)
  }
  return { base: `http://127.0.0.1:${port}` }
}

if (!caddy) {
  t.test('Caddy forward_auth in front of a protected service', { skip: 'caddy is not installed (CI installs it)' }, async () => {})
} else {
  killOrphansOnExit()
  t.test('Caddy forward_auth in front of a protected service', async (t) => {
    const portcullis = await startPortcullis(t)
    const upstream = await startUpstream(t)
    const relay = await countingRelay(t, portcullis.port)
    const gateway = await startCaddy(t, relay.port, upstream.port)

    const via = requestVia(gateway.base, upstream)
    const api = (path: string, token: string | undefined, body?: unknown) => fetch(`${portcullis.base}/api/v1${path}`, {
      method: body ? 'POST' : 'GET',
      headers: { ...(body ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    })

    const owner = await json(await api('/auth/register', undefined, { email: uniqueEmail('caddy'), password: STRONG_PASSWORD, company_name: 'Caddy Co' }), 201, 'register')
    const token: string = owner.access_token
    const readKey = await json(await api('/api-keys', token, { name: 'agents reader', scopes: ['agents:read'] }), 201, 'key')
    const forged = {
      'x-auth-user-id': 'usr_forged', 'x-auth-org-id': 'org_forged', 'x-auth-method': 'session',
      'x-auth-role': 'owner', 'x-auth-scopes': 'api_keys:write', 'x-auth-key-id': 'key_forged',
    }

    await t.test('no credential: 401 with the bare challenge, the upstream never reached', async (t) => {
      for (const path of ['/agents/list', '/admin/keys', '/anything']) {
        const r = await via(path)
        t.equal(r.status, 401, `${path}: 401`)
        t.equal(r.res.headers.get('www-authenticate'), 'Bearer realm="portcullis"')
        t.equal(r.reached.length, 0, `${path}: upstream not hit`)
      }
    })

    await t.test('a session: the identity reaches the upstream; forged headers do not', async (t) => {
      const r = await via('/agents/list', { ...forged, authorization: `Bearer ${token}` })
      t.equal(r.status, 200)
      t.equal(r.reached.length, 1)
      t.match(r.seen, { 'x-auth-user-id': owner.user.id, 'x-auth-org-id': owner.organization.id, 'x-auth-role': 'owner', 'x-auth-method': 'session' })
      t.notOk('x-auth-key-id' in r.seen!, 'the forged X-Auth-Key-Id is removed', { seen: r.seen })
    })

    await t.test('an API key: its identity, no user and no role, forged ones removed', async (t) => {
      for (const headers of [{ 'x-api-key': readKey.key }, { authorization: `Bearer ${readKey.key}` }] as Record<string, string>[]) {
        const r = await via('/agents/list', { ...forged, ...headers })
        t.equal(r.status, 200)
        t.match(r.seen, { 'x-auth-key-id': readKey.id, 'x-auth-method': 'api_key', 'x-auth-scopes': 'agents:read', 'x-auth-org-id': owner.organization.id })
        t.notOk('x-auth-user-id' in r.seen!, 'no (forged) X-Auth-User-Id')
        t.notOk('x-auth-role' in r.seen!, 'no (forged) X-Auth-Role')
      }
    })

    await t.test('scopes per route: 403 and the upstream never reached; the client cannot choose the scope', async (t) => {
      const denied = await via('/admin/keys', { 'x-api-key': readKey.key })
      t.equal(denied.status, 403)
      t.equal(denied.reached.length, 0)
      const sneaky = await via('/admin/keys?scope=', { 'x-api-key': readKey.key })
      t.equal(sneaky.status, 403, "a client's ?scope= does not reach verify")
      t.equal(sneaky.reached.length, 0)
    })

    await t.test('revocation reaches the gateway at once', async (t) => {
      const key = await json(await api('/api-keys', token, { name: 'doomed', scopes: ['agents:read'] }), 201, 'key')
      t.equal((await via('/agents/list', { 'x-api-key': key.key })).status, 200)
      const revoked = await fetch(`${portcullis.base}/api/v1/api-keys/${key.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } })
      t.equal(revoked.status, 204)
      t.equal((await via('/agents/list', { 'x-api-key': key.key })).status, 401)
    })

    await t.test('HEAD through Caddy; a logged-out session is refused at once', async (t) => {
      const head = await via('/agents/list', { 'x-api-key': readKey.key }, 'HEAD')
      t.equal(head.status, 200)
      t.equal(head.reached[0]?.method, 'HEAD', 'the upstream received HEAD')
      t.equal((await via('/agents/list', {}, 'HEAD')).status, 401)
      const login = await json(await api('/auth/login', undefined, { email: owner.user.email, password: STRONG_PASSWORD }), 200, 'login')
      t.equal((await via('/agents/list', { authorization: `Bearer ${login.access_token}` })).status, 200)
      const out = await fetch(`${portcullis.base}/api/v1/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${login.access_token}` } })
      t.equal(out.status, 204)
      const after = await via('/agents/list', { authorization: `Bearer ${login.access_token}` })
      t.equal(after.status, 401, 'the logged-out token: 401 at the gateway')
      t.equal(after.reached.length, 0)
    })

    await t.test('connections to Portcullis are reused', async (t) => {
      const before = relay.connections()
      for (let i = 0; i < 100; i++) {
        const r = await via('/agents/list', { 'x-api-key': readKey.key, accept: 'application/json' })
        if (r.status !== 200) t.fail(`request ${i}: ${r.status}`)
      }
      const opened = relay.connections() - before
      t.ok(opened <= 5, `100 requests through Caddy opened ${opened} connection(s) to Portcullis`)
    })
  })
}
