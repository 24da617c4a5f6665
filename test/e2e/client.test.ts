// End to end through a client generated from openapi/openapi.yaml
// (openapi-typescript + openapi-fetch) against a real listening server; every
// response is also checked against the schema the document declares for it.
import t from 'tap'
import createClient, { type Middleware } from 'openapi-fetch'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { paths } from './generated/portcullis.js'
import { checkResponse } from '../helpers/spec-validator.js'
import { ROOT, startServer } from '../helpers/server.js'
import { STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'
import { mailEnv, startSmtp, tokenIn } from '../helpers/smtp.js'

const GENERATED = join(ROOT, 'test', 'e2e', 'generated', 'portcullis.d.ts')

t.test('the committed client types are what openapi-typescript generates from openapi.yaml', async (t) => {
  const out = join(t.testdir(), 'portcullis.d.ts')
  await promisify(execFile)(process.execPath, [join(ROOT, 'node_modules', 'openapi-typescript', 'bin', 'cli.js'), 'openapi/openapi.yaml', '-o', out], { cwd: ROOT })
  t.equal(readFileSync(out, 'utf8'), readFileSync(GENERATED, 'utf8'), 'run `npm run client:generate` after changing the contract')
})

t.test('register → login → me → org → invite → mail → sign-up with the invitation → key → call with key → refresh → logout, via the generated client', async (t) => {
  const smtp = await startSmtp(t)
  const server = await startServer(t, mailEnv(smtp))
  const checked: string[] = []
  const conformance: Middleware = {
    async onResponse({ request, response }) {
      const text = await response.clone().text()
      const body = text ? JSON.parse(text) : undefined
      const { pathname } = new URL(request.url)
      const result = checkResponse(request.method, pathname, response.status, body)
      t.ok(result.declared && result.ok, `${request.method} ${pathname} → ${response.status} matches the spec ${result.errors}`)
      checked.push(`${request.method} ${pathname} ${response.status}`)
    },
  }
  const client = createClient<paths>({ baseUrl: server.base })
  client.use(conformance)
  const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } })

  const email = uniqueEmail('e2e')
  const registered = await client.POST('/api/v1/auth/register', { body: { email, password: STRONG_PASSWORD, name: 'Eve', company_name: 'E2E Inc' } })
  t.equal(registered.response.status, 201)
  t.equal(registered.data?.organization.role, 'owner')

  const login = await client.POST('/api/v1/auth/login', { body: { email, password: STRONG_PASSWORD } })
  t.equal(login.response.status, 200)
  const tokens = login.data!
  if (!('access_token' in tokens)) throw new Error('2FA is not enabled for this account')

  const me = await client.GET('/api/v1/auth/me', bearer(tokens.access_token))
  t.equal(me.data?.user?.email, email)
  t.equal(me.data?.organization.name, 'E2E Inc')

  const org = await client.POST('/api/v1/organizations', { ...bearer(tokens.access_token), body: { name: 'Second Org' } })
  t.equal(org.response.status, 201)
  const orgId = org.data!.id

  const colleague = uniqueEmail('colleague')
  const invitation = await client.POST('/api/v1/organizations/{org_id}/invitations', {
    ...bearer(tokens.access_token), params: { path: { org_id: orgId } }, body: { email: colleague, role: 'member' },
  })
  t.equal(invitation.response.status, 201)
  t.match(invitation.data, { email: colleague, role: 'member', state: 'pending' })
  const invited = await smtp.waitFor(colleague, (m) => /invited to join an organization/.test(m.subject ?? ''))
  const joined = await client.POST('/api/v1/auth/register', { body: { email: colleague, password: STRONG_PASSWORD, invitation_token: tokenIn(invited) } })
  t.equal(joined.response.status, 201)
  t.match(joined.data, { organization: { id: orgId, role: 'member' }, user: { email: colleague, email_verified: true } }, 'joined with the invited role; the address is verified')

  const key = await client.POST('/api/v1/api-keys', {
    headers: { authorization: `Bearer ${tokens.access_token}`, 'x-org-id': orgId },
    body: { name: 'ci', scopes: ['agents:read', 'members:read'] },
  })
  t.equal(key.response.status, 201)
  t.match(key.data?.key, /^pc_live_sk_/)

  const asKey = await client.GET('/api/v1/organizations/{org_id}/members', {
    headers: { 'x-api-key': key.data!.key }, params: { path: { org_id: orgId } },
  })
  t.equal(asKey.response.status, 200)
  t.same(asKey.data?.items.map((m) => m.email).sort(), [email, colleague].sort(), 'the key sees the members of its organization')
  const verified = await client.GET('/api/v1/auth/verify', { headers: { 'x-api-key': key.data!.key, accept: 'application/json' }, params: { query: { scope: 'agents:read' } } })
  t.equal(verified.response.headers.get('x-auth-key-id'), key.data!.id)

  const refreshed = await client.POST('/api/v1/auth/refresh', { body: { refresh_token: tokens.refresh_token } })
  t.equal(refreshed.response.status, 200)
  t.not(refreshed.data?.refresh_token, tokens.refresh_token)

  const logout = await client.POST('/api/v1/auth/logout', bearer(refreshed.data!.access_token))
  t.equal(logout.response.status, 204)
  const refused = await client.GET('/api/v1/auth/me', bearer(refreshed.data!.access_token))
  t.equal(refused.response.status, 401, 'the old access token is refused')
  t.equal(refused.error?.error.code, 'UNAUTHORIZED')
  const refusedRefresh = await client.POST('/api/v1/auth/refresh', { body: { refresh_token: refreshed.data!.refresh_token } })
  t.equal(refusedRefresh.error?.error.code, 'REFRESH_FAILED', 'and so is its refresh token')

  t.equal(checked.length, 13, 'every response was checked against the spec')
})

t.test('forgot → mail → reset → login with the new password, and the old session refused, via the generated client', async (t) => {
  const smtp = await startSmtp(t)
  const server = await startServer(t, mailEnv(smtp))
  const client = createClient<paths>({ baseUrl: server.base })
  client.use({
    async onResponse({ request, response }) {
      const text = await response.clone().text()
      const result = checkResponse(request.method, new URL(request.url).pathname, response.status, text ? JSON.parse(text) : undefined)
      t.ok(result.declared && result.ok, `${request.method} ${new URL(request.url).pathname} → ${response.status} matches the spec ${result.errors}`)
    },
  })
  const email = uniqueEmail('e2e-reset')
  const registered = await client.POST('/api/v1/auth/register', { body: { email, password: STRONG_PASSWORD } })
  t.equal(registered.response.status, 201)
  const old = registered.data && 'access_token' in registered.data ? registered.data.access_token : ''
  t.ok(old, 'a session')

  const forgot = await client.POST('/api/v1/auth/password/forgot', { body: { email } })
  t.equal(forgot.response.status, 202)
  const mail = await smtp.waitFor(email, (m) => /reset your password/.test(m.subject ?? ''))
  const NEW = 'amber-falcon-meadow-58'
  const reset = await client.POST('/api/v1/auth/password/reset', { body: { token: tokenIn(mail), new_password: NEW } })
  t.equal(reset.response.status, 204)

  const oldLogin = await client.POST('/api/v1/auth/login', { body: { email, password: STRONG_PASSWORD } })
  t.equal(oldLogin.response.status, 401, 'the old password is refused')
  const login = await client.POST('/api/v1/auth/login', { body: { email, password: NEW } })
  t.equal(login.response.status, 200, 'the new password logs in')
  const me = await client.GET('/api/v1/auth/me', { headers: { authorization: `Bearer ${old}` } })
  t.equal(me.response.status, 401, 'the session from before the reset is refused')
})
