// The real OAuth client (openid-client v6) against a listening Portcullis, as
// a platform team would use it without reading our code (issue 11): RFC 8414
// discovery; client_credentials with client_secret_basic and client_secret_post
// (the token verified with jose against the JWKS alone, carrying client_id and
// narrowed scopes); the password grant and refresh as the public client;
// introspection and revocation with standard client authentication; RFC 6749
// §5.2 errors where the client expects them.
import t from 'tap'
import * as client from 'openid-client'
import { createRemoteJWKSet, jwtVerify } from 'jose'
import { buildTestApp } from '../helpers/app.js'
import { bearer, register, STRONG_PASSWORD } from '../helpers/api.js'
import { createKey, TENANCY_ENV } from '../helpers/orgs.js'
import { freePort } from '../helpers/server.js'

const port = await freePort()
const base = `http://127.0.0.1:${port}`
const app = await buildTestApp(t, { env: { ...TENANCY_ENV, JWT_ISSUER: base } })
await app.listen({ host: '127.0.0.1', port })
const insecure = { algorithm: 'oauth2' as const, execute: [client.allowInsecureRequests] }

const owner = await register(app, { company_name: 'OAuth Client Inc' })
const machine = await createKey(app, bearer(owner.access_token), ['agents:read', 'workflows:execute', 'auth:introspect'], 'machine client')
const jwks = createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`))

t.test('discovery: RFC 8414 metadata that lists only what exists', async (t) => {
  const config = await client.discovery(new URL(base), machine.id, undefined, client.ClientSecretBasic(machine.key), insecure)
  const meta = config.serverMetadata()
  t.equal(meta.issuer, base)
  t.equal(meta.token_endpoint, `${base}/api/v1/oauth/token`)
  t.same(meta.grant_types_supported, ['password', 'refresh_token', 'client_credentials'])
  t.same(meta.token_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post', 'none'])
  t.same(meta.introspection_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post'])
  t.notOk('authorization_endpoint' in meta, 'no authorization endpoint is claimed')
  t.notOk('id_token_signing_alg_values_supported' in meta, 'no ID tokens are claimed')
  const oidc = await (await fetch(`${base}/.well-known/openid-configuration`)).json()
  t.same(oidc, meta, 'the OpenID discovery path serves the same document')
})

for (const [label, auth] of [['client_secret_basic', client.ClientSecretBasic], ['client_secret_post', client.ClientSecretPost]] as const) {
  t.test(`client_credentials with ${label}: a JWKS-verifiable token for the key's organization`, async (t) => {
    const config = await client.discovery(new URL(base), machine.id, undefined, auth(machine.key), insecure)
    const all = await client.clientCredentialsGrant(config)
    t.equal(all.token_type, 'bearer')
    t.equal(all.expires_in, app.config.CLIENT_TOKEN_TTL)
    t.equal(all.scope, 'agents:read workflows:execute auth:introspect', 'no scope asked: the key\'s scopes')
    const { payload, protectedHeader } = await jwtVerify(all.access_token, jwks, { issuer: base, audience: app.config.JWT_AUDIENCE, typ: 'at+jwt' })
    t.equal(protectedHeader.typ, 'at+jwt')
    t.match(payload, { sub: machine.id, client_id: machine.id, org_id: owner.organization.id, scope: all.scope })
    t.notOk('sid' in payload, 'no session')

    const narrow = await client.clientCredentialsGrant(config, { scope: 'agents:read' })
    t.equal(narrow.scope, 'agents:read', 'scope narrows')
    const verify = await fetch(`${base}/api/v1/auth/verify`, { headers: { authorization: `Bearer ${narrow.access_token}` } })
    t.equal(verify.status, 200, 'Portcullis accepts the token too')
    t.equal(verify.headers.get('x-auth-key-id'), machine.id)
    t.equal(verify.headers.get('x-auth-scopes'), 'agents:read')

    const widened = await client.clientCredentialsGrant(config, { scope: 'agents:read audit:read' }).catch((err: { error?: string }) => err)
    t.match(widened, { error: 'invalid_scope' }, 'never widens')
  })
}

t.test('a wrong client secret is invalid_client (401) for the real client', async (t) => {
  const other = await createKey(app, bearer(owner.access_token), ['agents:read'], 'other')
  const config = await client.discovery(new URL(base), machine.id, undefined, client.ClientSecretBasic(other.key), insecure)
  // RFC 6749 §5.2: a Basic-authenticated client that fails gets 401 with a WWW-Authenticate challenge, which the client surfaces as such.
  const refused = await client.clientCredentialsGrant(config).catch((err: Error) => err)
  t.match(refused, { name: 'WWWAuthenticateChallengeError', status: 401 }, "another key's secret under this client_id")
  const raw = await fetch(`${base}/api/v1/oauth/token`, {
    method: 'POST', headers: { authorization: `Basic ${Buffer.from(`${machine.id}:${other.key}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials',
  })
  t.equal(raw.status, 401)
  t.match(raw.headers.get('www-authenticate'), /^Basic /)
  t.match(await raw.json(), { error: 'invalid_client' })
})

t.test('password grant and refresh as the public client; invalid_grant for a wrong password', async (t) => {
  const config = await client.discovery(new URL(base), app.config.OAUTH_CLIENT_ID, undefined, client.None(), insecure)
  const tokens = await client.genericGrantRequest(config, 'password', { username: owner.email, password: STRONG_PASSWORD })
  t.ok(tokens.access_token && tokens.refresh_token, 'tokens')
  const { payload } = await jwtVerify(tokens.access_token, jwks, { issuer: base, audience: app.config.JWT_AUDIENCE })
  t.equal(payload.client_id, app.config.OAUTH_CLIENT_ID, 'RFC 9068 client_id on session tokens')
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token!)
  t.ok(refreshed.access_token && refreshed.refresh_token !== tokens.refresh_token, 'rotated')
  const wrong = await client.genericGrantRequest(config, 'password', { username: owner.email, password: 'not-the-password-xyz' }).catch((err: Error) => err)
  t.match(wrong, { error: 'invalid_grant', status: 400 }, 'a wrong password: 400 invalid_grant')
  const unknown = await client.refreshTokenGrant(config, 'rt_not-a-real-token-at-all-aaaaaaaaaaaaaaaaaaaaa').catch((err: Error) => err)
  t.match(unknown, { error: 'invalid_grant' }, 'an unknown refresh token: invalid_grant')
})

t.test('introspection and revocation with standard client authentication', async (t) => {
  for (const auth of [client.ClientSecretBasic, client.ClientSecretPost]) {
    const config = await client.discovery(new URL(base), machine.id, undefined, auth(machine.key), insecure)
    const session = await register(app)
    const active = await client.tokenIntrospection(config, owner.access_token, { token_type_hint: 'no_such_hint' })
    t.match(active, { active: true, token_type: 'access_token', sub: owner.user.id }, 'an unknown hint is advisory')
    const { access_token: clientToken } = await client.clientCredentialsGrant(config)
    t.match(await client.tokenIntrospection(config, clientToken), { active: true, client_id: machine.id })
    t.same(await client.tokenIntrospection(config, session.access_token), { active: false }, "another organization's token: inactive")
    const mine = await client.genericGrantRequest(await client.discovery(new URL(base), app.config.OAUTH_CLIENT_ID, undefined, client.None(), insecure),
      'password', { username: owner.email, password: STRONG_PASSWORD })
    await client.tokenRevocation(config, mine.refresh_token!)
    t.same(await client.tokenIntrospection(config, mine.access_token), { active: false }, 'revoking the refresh token ends the session')
  }
})
