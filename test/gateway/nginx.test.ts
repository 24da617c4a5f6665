// A real nginx in front of a protected service, deciding every request with
// auth_request → Portcullis GET /api/v1/auth/verify (test/gateway/nginx.conf.template,
// the configuration the README shows). Three real processes on loopback ports:
// Portcullis, nginx, and an echo upstream in this process that counts its hits.
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { TEST_DATABASE_URL, TEST_REDIS_URL } from '../helpers/app.js'
import { STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'
import {
  exitOf, freePort, json, killOrphansOnExit, orphans, portAnswers, requestVia, sleep, startPortcullis, startUpstream,
} from '../helpers/gateway.js'
const TEMPLATE = join(import.meta.dirname, 'nginx.conf.template')

/** nginx on PATH (Debian installs it in /usr/sbin, which a non-root PATH may lack). */
function findNginx(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin']
  for (const dir of dirs.filter(Boolean)) {
    const file = join(dir, 'nginx')
    try { accessSync(file, constants.X_OK); return file } catch { /* not here */ }
  }
  return undefined
}

async function startNginx(t: Test, nginx: string, portcullisPort: number, upstreamPort: number) {
  const prefix = mkdtempSync(join(tmpdir(), 'portcullis-nginx-'))
  const port = await freePort()
  const conf = readFileSync(TEMPLATE, 'utf8')
    .replaceAll('{{PREFIX}}', prefix)
    .replaceAll('{{NGINX_PORT}}', String(port))
    .replaceAll('{{PORTCULLIS_PORT}}', String(portcullisPort))
    .replaceAll('{{UPSTREAM_PORT}}', String(upstreamPort))
  t.notMatch(conf, /\{\{[A-Z_]+\}\}/, 'every placeholder of the template is substituted')
  writeFileSync(join(prefix, 'nginx.conf'), conf)

  // Its own process group, so the master and its workers go together even if the master is killed hard.
  const child = spawn(nginx, ['-p', prefix, '-c', join(prefix, 'nginx.conf'), '-e', join(prefix, 'error.log')], {
    stdio: ['ignore', 'pipe', 'pipe'], detached: true,
  })
  let output = ''
  child.stdout!.on('data', (d) => { output += d })
  child.stderr!.on('data', (d) => { output += d })
  const killGroup = () => { try { process.kill(-child.pid!, 'SIGKILL') } catch { /* gone */ } }
  const killAndClean = () => { killGroup(); rmSync(prefix, { recursive: true, force: true }) }
  orphans.add(killAndClean)
  t.teardown(async () => {
    child.kill('SIGTERM') // fast shutdown: the master stops its workers, then exits
    await Promise.race([exitOf(child), sleep(5000)])
    killAndClean()
    orphans.delete(killAndClean)
  })
  const errorLog = () => { try { return readFileSync(join(prefix, 'error.log'), 'utf8') } catch { return '' } }
  for (let i = 0; !(await portAnswers(port)); i++) {
    if (child.exitCode !== null || i > 100) throw new Error(`nginx did not start:\n${output}\n${errorLog()}`)
    await sleep(50)
  }
  return { base: `http://127.0.0.1:${port}`, child, errorLog }
}

const nginx = findNginx()
if (!nginx) {
  t.test('nginx auth_request in front of a protected service', { skip: 'nginx is not installed (CI installs it)' }, async () => {})
} else {
  killOrphansOnExit()
  t.test('nginx auth_request in front of a protected service', async (t) => {
    t.comment(`Portcullis on ${TEST_DATABASE_URL ? 'PostgreSQL' : 'memory://'}${TEST_REDIS_URL ? ' with Redis' : ''}`)
    const portcullis = await startPortcullis(t)
    const upstream = await startUpstream(t)
    const gateway = await startNginx(t, nginx, portcullis.port, upstream.port)

      const via = requestVia(gateway.base, upstream)

    // Accounts and keys are made at Portcullis directly, as an operator or a dashboard would.
    const api = (path: string, init: { method?: string; token?: string; body?: unknown; headers?: Record<string, string> } = {}) =>
      fetch(`${portcullis.base}/api/v1${path}`, {
        method: init.method ?? (init.body ? 'POST' : 'GET'),
        headers: {
          ...(init.body ? { 'content-type': 'application/json' } : {}),
          ...(init.token ? { authorization: `Bearer ${init.token}` } : {}),
          ...init.headers,
        },
        body: init.body ? JSON.stringify(init.body) : undefined,
      })

    const email = uniqueEmail('nginx')
    const owner = await json(await api('/auth/register', { body: { email, password: STRONG_PASSWORD, company_name: 'Gateway Co' } }), 201, 'register')
    const userId: string = owner.user.id
    const orgId: string = owner.organization.id
    const token: string = owner.access_token
    const readKey = await json(await api('/api-keys', { token, body: { name: 'agents reader', scopes: ['agents:read'] } }), 201, 'create key')

    await t.test('no credential: 401 from nginx with the challenge, the upstream never reached', async (t) => {
      for (const path of ['/agents/list', '/admin/keys', '/anything']) {
        const r = await via(path)
        t.equal(r.status, 401, `${path}: 401`)
        t.equal(r.res.headers.get('www-authenticate'), 'Bearer realm="portcullis"', `${path}: WWW-Authenticate from Portcullis (no credential: no error code)`)
        t.equal(r.reached.length, 0, `${path}: upstream not hit`)
        t.match(r.res.headers.get('content-type'), /^application\/json/, `${path}: a JSON error body`)
      }
      const garbage = await via('/agents/list', { authorization: 'Bearer not-a-token' })
      t.equal(garbage.status, 401, 'a malformed bearer token: 401')
      t.equal(garbage.res.headers.get('www-authenticate'), 'Bearer error="invalid_token"')
      t.equal(garbage.reached.length, 0)
      const unknownKey = await via('/agents/list', { 'x-api-key': `pc_live_sk_${'a'.repeat(40)}` })
      t.equal(unknownKey.status, 401, 'an unknown API key: 401')
      t.equal(unknownKey.reached.length, 0)
    })

    await t.test('session access token: 200, the upstream sees who is calling', async (t) => {
      const r = await via('/agents/list?page=2', { authorization: `Bearer ${token}` })
      t.equal(r.status, 200)
      t.equal(r.reached.length, 1, 'upstream hit once')
      t.equal(r.reached[0]!.url, '/agents/list?page=2', 'the original path and query reach the upstream')
      t.equal(r.seen!['x-auth-user-id'], userId, 'X-Auth-User-Id')
      t.equal(r.seen!['x-auth-org-id'], orgId, 'X-Auth-Org-Id')
      t.equal(r.seen!['x-auth-method'], 'session', 'X-Auth-Method')
      t.equal(r.seen!['x-auth-role'], 'owner', 'X-Auth-Role')
      t.ok(String(r.seen!['x-auth-scopes']).split(' ').includes('agents:read'), 'X-Auth-Scopes holds agents:read')
      t.notOk('x-auth-key-id' in r.seen!, 'no X-Auth-Key-Id for a session')
      t.same(JSON.parse(r.body).headers['x-auth-user-id'], userId, 'the upstream answer reaches the client')

      const admin = await via('/admin/keys', { authorization: `Bearer ${token}` })
      t.equal(admin.status, 200, 'the owner holds api_keys:write: /admin/ lets the session through')
      t.equal(admin.reached.length, 1)
    })

    await t.test('X-Org-ID reaches Portcullis: another organization of the same user', async (t) => {
      const second = await json(await api('/organizations', { token, body: { name: 'Second Co' } }), 201, 'create organization')
      const r = await via('/agents/list', { authorization: `Bearer ${token}`, 'x-org-id': second.id })
      t.equal(r.status, 200)
      t.equal(r.seen!['x-auth-org-id'], second.id, 'the organization of X-Org-ID')
      t.equal(r.seen!['x-auth-role'], 'owner')

      const stranger = await json(await api('/auth/register', { body: { email: uniqueEmail('stranger'), password: STRONG_PASSWORD } }), 201, 'register')
      const foreign = await via('/agents/list', { authorization: `Bearer ${token}`, 'x-org-id': stranger.organization.id })
      t.equal(foreign.status, 403, 'an organization the user is not a member of: 403')
      t.equal(foreign.reached.length, 0, 'upstream not hit')
      const keyElsewhere = await via('/agents/list', { 'x-api-key': readKey.key, 'x-org-id': second.id })
      t.equal(keyElsewhere.status, 403, 'an API key with the X-Org-ID of another organization: 403')
      t.equal(keyElsewhere.reached.length, 0, 'upstream not hit')
    })

    await t.test('API key via X-API-Key and via Authorization: Bearer', async (t) => {
      for (const [how, headers] of [
        ['X-API-Key', { 'x-api-key': readKey.key }],
        ['Authorization: Bearer', { authorization: `Bearer ${readKey.key}` }],
      ] as const) {
        const r = await via('/agents/list', headers)
        t.equal(r.status, 200, `${how}: 200`)
        t.equal(r.reached.length, 1, `${how}: upstream hit once`)
        t.equal(r.seen!['x-auth-method'], 'api_key', `${how}: X-Auth-Method`)
        t.equal(r.seen!['x-auth-key-id'], readKey.id, `${how}: X-Auth-Key-Id`)
        t.notOk('x-auth-user-id' in r.seen!, `${how}: no X-Auth-User-Id (a key is its organization's identity, not its creator's)`)
        t.equal(r.seen!['x-auth-org-id'], orgId, `${how}: X-Auth-Org-Id`)
        t.equal(r.seen!['x-auth-scopes'], 'agents:read', `${how}: X-Auth-Scopes`)
        t.notOk('x-auth-role' in r.seen!, `${how}: no X-Auth-Role for an API key`)
      }
    })

    await t.test('missing scope: 403, the upstream never reached', async (t) => {
      const viaHeader = await via('/admin/keys', { 'x-api-key': readKey.key })
      t.equal(viaHeader.status, 403, 'agents:read key on /admin/ (api_keys:write): 403')
      t.equal(viaHeader.reached.length, 0, 'upstream not hit')
      const viaBearer = await via('/admin/keys', { authorization: `Bearer ${readKey.key}` })
      t.equal(viaBearer.status, 403)
      t.equal(viaBearer.reached.length, 0)
      const writeKey = await json(await api('/api-keys', { token, body: { name: 'key admin', scopes: ['api_keys:write'] } }), 201, 'create key')
      const wrongOne = await via('/agents/list', { 'x-api-key': writeKey.key })
      t.equal(wrongOne.status, 403, 'an api_keys:write key on /agents/ (agents:read): 403')
      t.equal(wrongOne.reached.length, 0)
      const rightOne = await via('/admin/keys', { 'x-api-key': writeKey.key })
      t.equal(rightOne.status, 200, 'the api_keys:write key on /admin/: 200')
      t.equal(rightOne.seen!['x-auth-key-id'], writeKey.id)
    })

    await t.test('client-supplied X-Auth-* headers are overwritten or removed, never trusted', async (t) => {
      const forged = {
        'x-auth-user-id': 'usr_forged', 'x-auth-org-id': 'org_forged', 'x-auth-method': 'session',
        'x-auth-role': 'owner', 'x-auth-scopes': 'api_keys:write', 'x-auth-key-id': 'key_forged',
      }
      for (const path of ['/agents/list', '/anything']) {
        const r = await via(path, { ...forged, 'x-api-key': readKey.key })
        t.equal(r.status, 200, `${path}: a valid key with forged headers passes`)
        t.equal(r.reached.length, 1)
        t.notOk('x-auth-user-id' in r.seen!, `${path}: the forged user id is removed (an API key has none)`)
        t.equal(r.seen!['x-auth-org-id'], orgId, `${path}: the real organization`)
        t.equal(r.seen!['x-auth-method'], 'api_key', `${path}: the real method`)
        t.equal(r.seen!['x-auth-scopes'], 'agents:read', `${path}: the real scopes`)
        t.equal(r.seen!['x-auth-key-id'], readKey.id, `${path}: the real key id`)
        t.notOk('x-auth-role' in r.seen!, `${path}: the forged role is removed (an API key has none)`)
      }
      const session = await via('/agents/list', { ...forged, authorization: `Bearer ${token}` })
      t.equal(session.seen!['x-auth-method'], 'session')
      t.notOk('x-auth-key-id' in session.seen!, 'the forged key id is removed for a session')
      t.equal(session.seen!['x-auth-user-id'], userId, 'the real user id for a session, not usr_forged')

      const noCredential = await via('/agents/list', forged)
      t.equal(noCredential.status, 401, 'forged headers without a credential: 401')
      t.equal(noCredential.reached.length, 0, 'upstream not hit')
      const forgedAdmin = await via('/admin/keys', { ...forged, 'x-api-key': readKey.key })
      t.equal(forgedAdmin.status, 403, 'a forged X-Auth-Scopes grants nothing: 403')
      t.equal(forgedAdmin.reached.length, 0)
    })

    await t.test('HEAD through nginx', async (t) => {
      const ok = await via('/agents/list', { 'x-api-key': readKey.key }, 'HEAD')
      t.equal(ok.status, 200, 'HEAD with a key: 200')
      t.equal(ok.reached.length, 1)
      t.equal(ok.reached[0]!.method, 'HEAD', 'the upstream received HEAD')
      t.equal(ok.seen!['x-auth-key-id'], readKey.id)
      t.equal(ok.body, '', 'no body')
      const denied = await via('/agents/list', {}, 'HEAD')
      t.equal(denied.status, 401, 'HEAD without a credential: 401')
      t.equal(denied.res.headers.get('www-authenticate'), 'Bearer realm="portcullis"')
      t.equal(denied.reached.length, 0)
      const forbidden = await via('/admin/keys', { 'x-api-key': readKey.key }, 'HEAD')
      t.equal(forbidden.status, 403, 'HEAD with too few scopes: 403')
      t.equal(forbidden.reached.length, 0)

      // And the endpoint itself answers HEAD with the same headers as GET.
      const direct = await fetch(`${portcullis.base}/api/v1/auth/verify?scope=agents:read`, { method: 'HEAD', headers: { 'x-api-key': readKey.key } })
      t.equal(direct.status, 200)
      t.equal(direct.headers.get('x-auth-key-id'), readKey.id)
    })

    await t.test('a revoked API key: 401 through nginx at once', async (t) => {
      const key = await json(await api('/api-keys', { token, body: { name: 'short-lived', scopes: ['agents:read'] } }), 201, 'create key')
      t.equal((await via('/agents/list', { 'x-api-key': key.key })).status, 200, 'works before revocation (and is cached)')
      t.equal((await api(`/api-keys/${key.id}`, { method: 'DELETE', token })).status, 204, 'revoked')
      const revokedHeaders: Record<string, string>[] = [{ 'x-api-key': key.key }, { authorization: `Bearer ${key.key}` }]
      for (const headers of revokedHeaders) {
        const r = await via('/agents/list', headers)
        t.equal(r.status, 401, 'the next request: 401')
        t.equal(r.res.headers.get('www-authenticate'), 'Bearer error="invalid_token"')
        t.equal(r.reached.length, 0, 'upstream not hit')
      }
      t.equal((await via('/agents/list', { 'x-api-key': readKey.key })).status, 200, 'other keys still work')
    })

    await t.test('a logged-out session: its access token is refused at once', async (t) => {
      const login = await json(await api('/auth/login', { body: { email, password: STRONG_PASSWORD } }), 200, 'login')
      t.equal((await via('/agents/list', { authorization: `Bearer ${login.access_token}` })).status, 200, 'works before logout')
      t.equal((await api('/auth/logout', { method: 'POST', token: login.access_token })).status, 204, 'logged out')
      const r = await via('/agents/list', { authorization: `Bearer ${login.access_token}` })
      t.equal(r.status, 401, 'after logout: 401')
      t.equal(r.res.headers.get('www-authenticate'), 'Bearer error="invalid_token"')
      t.equal(r.reached.length, 0, 'upstream not hit')
      t.equal((await via('/agents/list', { authorization: `Bearer ${token}` })).status, 200, 'the other session still works')
    })

    t.notMatch(gateway.errorLog(), /\[(emerg|alert|crit|error)\]|uninitialized variable/, 'nginx logged no error')
  })
}
