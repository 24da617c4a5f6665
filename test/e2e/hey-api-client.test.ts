// A second generator, as a team would use it: @hey-api/openapi-ts builds a
// fetch client from openapi/openapi.yaml (at test time, into a temporary
// folder), and the flow register → API key → verify → logout runs through it
// with its default auth handling: one `auth` callback, which it calls for every
// security scheme an operation declares, so the session token travels in both
// Authorization and X-API-Key (issue 11: that used to be a 401).
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildTestApp } from '../helpers/app.js'
import { STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'
import { TENANCY_ENV } from '../helpers/orgs.js'
import { freePort } from '../helpers/server.js'

const root = join(import.meta.dirname, '..', '..')
const out = mkdtempSync(join(tmpdir(), 'portcullis-hey-api-'))
t.teardown(() => rmSync(out, { recursive: true, force: true }))
execFileSync(process.execPath, [join(root, 'node_modules', '@hey-api', 'openapi-ts', 'bin', 'run.js'),
  '-i', join(root, 'openapi', 'openapi.yaml'), '-o', out, '-c', '@hey-api/client-fetch', '--no-log-file', '-s'], { cwd: root, stdio: 'pipe' })

const sdk = await import(join(out, 'index.ts'))
const { client } = await import(join(out, 'client.gen.ts'))
const port = await freePort()
const app = await buildTestApp(t, { env: TENANCY_ENV })
await app.listen({ host: '127.0.0.1', port })

t.test('register → key → verify → logout through the generated client, default auth', async (t) => {
  let credential: string | undefined
  client.setConfig({ baseUrl: `http://127.0.0.1:${port}`, auth: () => credential })

  const email = uniqueEmail('heyapi')
  const registered = await sdk.register({ body: { email, password: STRONG_PASSWORD, company_name: 'Hey API Inc' } })
  t.equal(registered.response.status, 201, 'register')
  credential = registered.data.access_token

  const me = await sdk.getMe()
  t.equal(me.response.status, 200, 'me, with the session token sent in both headers')
  t.equal(me.request.headers.get('x-api-key'), credential, 'the generated client did send it as X-API-Key too')
  t.equal(me.data.user.email, email)

  const key = await sdk.createApiKey({ body: { name: 'generated', scopes: ['agents:read'] } })
  t.equal(key.response.status, 201, 'create a key')

  credential = key.data.key
  const verified = await sdk.verify({ query: { scope: 'agents:read' } })
  t.equal(verified.response.status, 200, 'verify with the key')
  t.equal(verified.response.headers.get('x-auth-key-id'), key.data.id)

  credential = registered.data.access_token
  const loggedOut = await sdk.logout()
  t.equal(loggedOut.response.status, 204, 'logout')
  const after = await sdk.getMe()
  t.equal(after.response.status, 401, 'the session is over')
})
