// RFC 7662 introspection and RFC 7009 revocation (SPEC §7): an API key with
// auth:introspect asks about access tokens, refresh tokens and API keys of its
// own organization; anything else (unknown, malformed, expired, revoked, used,
// or another organization's) is exactly {"active":false}. Revocation always
// answers 200 {}, acts only on what the caller may revoke, and reaches every
// instance within 1 s.
import t, { type Test } from 'tap'
import { decodeJwt, importPKCS8, SignJWT, type JWTPayload } from 'jose'
import type { LightMyRequestResponse as InjectResponse } from 'fastify'
import type { App } from '../../src/app.js'
import { generateApiKey } from '../../src/lib/api-key-format.js'
import { buildTestApp, FakeClock, sharedDatabase, within } from '../helpers/app.js'
import { bearer, register, STRONG_PASSWORD } from '../helpers/api.js'
import { addMember, createKey, expectStatus, TENANCY_ENV, type Headers } from '../helpers/orgs.js'

// Two instances on one database; every subtest but the last uses only A.
const shared = await sharedDatabase(t)
const A = await buildTestApp(t, { ...shared, env: TENANCY_ENV })
const B = await buildTestApp(t, { ...shared, env: TENANCY_ENV })

const INACTIVE = '{"active":false}'
const ENCODINGS = ['form', 'json'] as const
type Encoding = (typeof ENCODINGS)[number]

/** An account with its own organization, a live session and an introspection key of that organization. */
interface Account { userId: string; orgId: string; access: string; refresh: string; sid: string; introspector: string }

async function newAccount(): Promise<Account> {
  const reg = await register(A)
  const key = await createKey(A, bearer(reg.access_token), ['auth:introspect', 'agents:read'], 'gateway')
  return {
    userId: reg.user.id, orgId: reg.organization.id, access: reg.access_token, refresh: reg.refresh_token,
    sid: decodeJwt(reg.access_token).sid as string, introspector: key.key,
  }
}

/** `fields` as application/x-www-form-urlencoded or as JSON. */
function tokenRequest(url: string, headers: Headers, fields: Record<string, string>, encoding: Encoding) {
  return encoding === 'form'
    ? { method: 'POST' as const, url, headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' }, payload: new URLSearchParams(fields).toString() }
    : { method: 'POST' as const, url, headers, payload: fields }
}

const INTROSPECT = '/api/v1/auth/introspect'
const introspect = (caller: Headers, token: string | undefined, encoding: Encoding = 'json', app: App = A) =>
  app.inject(tokenRequest(INTROSPECT, caller, token === undefined ? {} : { token }, encoding))
const revoke = (caller: Headers, token: string, encoding: Encoding = 'json', app: App = A) =>
  app.inject(tokenRequest('/api/v1/auth/revoke', caller, { token }, encoding))

const me = (credential: string, app: App = A) =>
  app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: credential.startsWith('pc_') ? { 'x-api-key': credential } : bearer(credential) })
const refresh = (refresh_token: string) => A.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token } })
const logout = (access: string) => A.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(access) })

/** A new admin of the account's organization, signed in there (access and refresh token). */
async function colleagueOf(acct: Account) {
  const reg = await register(A)
  expectStatus(await addMember(A, bearer(acct.access), acct.orgId, { email: reg.email, token: reg.access_token }, 'admin'), 200, 'invite an admin, who accepts')
  const res = await A.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: reg.email, password: STRONG_PASSWORD, org_id: acct.orgId } })
  const body = expectStatus(res, 200, 'login in the organization')
  return { access: body.access_token as string, refresh: body.refresh_token as string }
}

function assertError(t: Test, res: InjectResponse, status: number, code: string) {
  t.equal(res.statusCode, status, `${status} ${code} (got ${res.statusCode} ${res.body})`)
  t.equal(res.json().error?.code, code)
}

/** The introspection answer is exactly {"active":false}, in both encodings. */
async function assertInactive(t: Test, caller: Headers, token: string, label: string, app: App = A) {
  for (const encoding of ENCODINGS) {
    const res = await introspect(caller, token, encoding, app)
    t.equal(res.statusCode, 200, `${label} (${encoding}): 200`)
    t.equal(res.body, INACTIVE, `${label} (${encoding}): exactly {"active":false}`)
  }
}

/** Revocation answers 200 and an empty object (in both encodings unless one is given). */
async function assertRevokeOk(t: Test, caller: Headers, token: string, label: string, encodings: readonly Encoding[] = ENCODINGS) {
  for (const encoding of encodings) {
    const res = await revoke(caller, token, encoding)
    t.equal(res.statusCode, 200, `${label} (${encoding}): 200 (got ${res.statusCode} ${res.body})`)
    t.equal(res.body, '{}', `${label} (${encoding}): {}`)
  }
}

/** An access token signed with the current signing key: `claims` over those of `like`. */
async function signAccessToken(app: App, like: string, claims: JWTPayload) {
  const key = app.keyRing.current
  return new SignJWT({ ...decodeJwt(like), ...claims })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt' })
    .sign(await importPKCS8(key.privatePem, key.alg))
}

const status = async (res: Promise<InjectResponse>) => (await res).statusCode

t.test('POST /auth/introspect: the three kinds of active credential, form and JSON', async (t) => {
  const acct = await newAccount()
  const caller = bearer(acct.introspector)
  const key = await createKey(A, bearer(acct.access), ['agents:read', 'costs:read'], 'worker')

  for (const encoding of ENCODINGS) {
    t.test(`${encoding}: access token → every claim of the JWT`, async (t) => {
      const res = await introspect(caller, acct.access, encoding)
      t.equal(res.statusCode, 200)
      t.equal(res.headers['cache-control'], 'no-store')
      const claims = decodeJwt(acct.access)
      t.same(res.json(), { active: true, token_type: 'access_token', ...claims }, 'active, token_type and the claims, nothing else')
      t.match(res.json(), {
        sub: acct.userId, org_id: acct.orgId, org_role: 'owner', scope: /auth:introspect/, sid: acct.sid,
        exp: Number, iat: Number, iss: String, aud: String, jti: String,
      })
    })

    t.test(`${encoding}: refresh token → its session, user and organization`, async (t) => {
      const res = await introspect(caller, acct.refresh, encoding)
      t.equal(res.statusCode, 200)
      const body = res.json()
      t.same(Object.keys(body).sort(), ['active', 'exp', 'iat', 'org_id', 'sid', 'sub', 'token_type'])
      t.match(body, { active: true, token_type: 'refresh_token', sub: acct.userId, org_id: acct.orgId, sid: acct.sid })
      const now = Math.floor(Date.now() / 1000)
      t.ok(body.iat <= now + 1 && body.iat > now - 60, `iat is recent (${body.iat})`)
      t.ok(body.exp > now, `exp is in the future (${body.exp})`)
    })

    t.test(`${encoding}: API key → key id (its own subject), organization, scopes`, async (t) => {
      const res = await introspect(caller, key.key, encoding)
      t.equal(res.statusCode, 200)
      t.same(res.json(), {
        active: true, token_type: 'api_key', key_id: key.id, org_id: acct.orgId, scope: 'agents:read costs:read', sub: key.id,
      })
    })
  }

  t.test('token_type_hint is accepted, and only a hint', async (t) => {
    for (const encoding of ENCODINGS) {
      const res = await A.inject(tokenRequest(INTROSPECT, caller, { token: acct.access, token_type_hint: 'refresh_token' }, encoding))
      t.match(res.json(), { active: true, token_type: 'access_token' }, `${encoding}: a wrong hint still finds the access token`)
    }
  })

  t.test('the caller may send its key in X-API-Key as well', async (t) => {
    const res = await introspect({ 'x-api-key': acct.introspector }, acct.access)
    t.equal(res.json().active, true)
  })
})

t.test('POST /auth/introspect: inactive is exactly {"active":false}', async (t) => {
  const acct = await newAccount()
  const caller = bearer(acct.introspector)

  t.test('unknown and malformed strings', async (t) => {
    await assertInactive(t, caller, 'not-a-token-at-all', 'unknown string')
    await assertInactive(t, caller, 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl', 'malformed JWT')
    await assertInactive(t, caller, acct.access.slice(0, -4) + 'AAAA', 'JWT with a broken signature')
    await assertInactive(t, caller, `rt_${'A'.repeat(43)}`, 'well-formed unknown refresh token')
    await assertInactive(t, caller, generateApiKey('pc', 'live'), 'well-formed unknown API key')
  })

  t.test('an access token past its exp (signed with the current key)', async (t) => {
    const now = Math.floor(Date.now() / 1000)
    const live = await signAccessToken(A, acct.access, { iat: now - 60, exp: now + 600 })
    t.equal((await introspect(caller, live)).json().active, true, 'control: the same token with a future exp is active')
    const expired = await signAccessToken(A, acct.access, { iat: now - 3600, exp: now - 120 })
    await assertInactive(t, caller, expired, 'expired access token')
  })

  t.test('the access and refresh tokens of a logged-out session', async (t) => {
    const session = await register(A)
    const key = await createKey(A, bearer(session.access_token), ['auth:introspect'])
    t.equal((await logout(session.access_token)).statusCode, 204, 'logout: 204')
    await assertInactive(t, bearer(key.key), session.access_token, 'access token after logout')
    await assertInactive(t, bearer(key.key), session.refresh_token, 'refresh token after logout')
  })

  t.test('a used (rotated) refresh token; its child is active', async (t) => {
    const pair = expectStatus(await refresh(acct.refresh), 200, 'refresh')
    await assertInactive(t, caller, acct.refresh, 'rotated refresh token')
    t.equal((await introspect(caller, pair.refresh_token)).json().active, true, 'the child is active')
  })

  t.test('a revoked API key', async (t) => {
    const key = await createKey(A, bearer(acct.access), ['agents:read'])
    t.equal((await introspect(caller, key.key)).json().active, true, 'active before')
    expectStatus(await A.inject({ method: 'DELETE', url: `/api/v1/api-keys/${key.id}`, headers: bearer(acct.access) }), 204, 'revoke key')
    await assertInactive(t, caller, key.key, 'revoked API key')
  })

  t.test('an expired API key and an expired refresh token (fake clock)', async (t) => {
    const clock = new FakeClock()
    const app = await buildTestApp(t, { clock, env: { ...TENANCY_ENV, REFRESH_TOKEN_TTL: '60' } })
    const owner = await register(app)
    const caller = bearer((await createKey(app, bearer(owner.access_token), ['auth:introspect'])).key)
    const expiresAt = clock.now() + 60_000
    const res = await app.inject({
      method: 'POST', url: '/api/v1/api-keys', headers: bearer(owner.access_token),
      payload: { name: 'short-lived', scopes: ['agents:read'], expires_at: new Date(expiresAt).toISOString() },
    })
    const key = expectStatus(res, 201, 'create expiring key')
    t.match((await introspect(caller, key.key, 'json', app)).json(),
      { active: true, token_type: 'api_key', exp: Math.floor(expiresAt / 1000) }, 'the key is active, with its exp')
    t.equal((await introspect(caller, owner.refresh_token, 'json', app)).json().active, true, 'the refresh token is active')
    clock.advance(61_000)
    await assertInactive(t, caller, key.key, 'expired API key', app)
    await assertInactive(t, caller, owner.refresh_token, 'expired refresh token (REFRESH_TOKEN_TTL 60 s)', app)
  })

  t.test("another organization's access token, refresh token and API key", async (t) => {
    const other = await newAccount()
    const otherKey = await createKey(A, bearer(other.access), ['agents:read'])
    for (const [label, token] of [['access token', other.access], ['refresh token', other.refresh], ['API key', otherKey.key]]) {
      await assertInactive(t, caller, token!, `other organization's ${label}`)
      t.equal((await introspect(bearer(other.introspector), token!)).json().active, true, `active for its own organization's key: ${label}`)
    }
  })
})

t.test('POST /auth/introspect: who may call', async (t) => {
  const acct = await newAccount()
  const plain = await createKey(A, bearer(acct.access), ['agents:read', 'api_keys:read'])

  t.test('a key without auth:introspect → 403 INSUFFICIENT_SCOPE', async (t) => {
    const res = await introspect(bearer(plain.key), acct.access)
    assertError(t, res, 403, 'INSUFFICIENT_SCOPE')
    t.match(res.json().error.details, [{ scope: 'auth:introspect' }], 'names the missing scope')
  })

  t.test('a session (even an owner\'s) → 403: keys only', async (t) => {
    assertError(t, await introspect(bearer(acct.access), acct.access), 403, 'FORBIDDEN')
  })

  t.test('no credential → 401; a bad key → 401', async (t) => {
    for (const encoding of ENCODINGS) {
      const res = await introspect({}, acct.access, encoding)
      assertError(t, res, 401, 'UNAUTHORIZED')
      t.ok(res.headers['www-authenticate'], 'WWW-Authenticate')
    }
    assertError(t, await introspect(bearer(generateApiKey('pc', 'live')), acct.access), 401, 'UNAUTHORIZED')
  })

  t.test('no token field → 422', async (t) => {
    for (const encoding of ENCODINGS) {
      assertError(t, await introspect(bearer(acct.introspector), undefined, encoding), 422, 'VALIDATION_ERROR')
    }
    assertError(t, await introspect(bearer(acct.introspector), ''), 422, 'VALIDATION_ERROR')
  })
})

t.test('POST /auth/revoke: 200 {} whatever the token, acting only within the caller\'s rights', async (t) => {
  const acct = await newAccount()
  const caller = bearer(acct.introspector)

  t.test('an unknown or malformed token: 200 {}', async (t) => {
    await assertRevokeOk(t, caller, 'not-a-token-at-all', 'unknown string')
    await assertRevokeOk(t, caller, `rt_${'A'.repeat(43)}`, 'unknown refresh token')
    await assertRevokeOk(t, caller, generateApiKey('pc', 'live'), 'unknown API key')
    await assertRevokeOk(t, caller, 'eyJhbGciOiJFUzI1NiJ9.e30.c2ln', 'malformed JWT')
    await assertRevokeOk(t, bearer(acct.access), 'not-a-token-at-all', 'unknown string, session caller')
  })

  t.test("another organization's tokens: 200 {} and they stay valid", async (t) => {
    const other = await newAccount()
    const otherKey = await createKey(A, bearer(other.access), ['agents:read'])
    await assertRevokeOk(t, caller, other.access, 'access token')
    await assertRevokeOk(t, caller, other.refresh, 'refresh token')
    await assertRevokeOk(t, caller, otherKey.key, 'API key')
    t.equal(await status(me(other.access)), 200, 'the access token still works')
    t.equal(await status(me(otherKey.key)), 200, 'the API key still works')
    t.equal(await status(refresh(other.refresh)), 200, 'the refresh token still refreshes')
  })

  t.test('a key without auth:introspect revokes nothing (still 200 {})', async (t) => {
    const plain = await createKey(A, bearer(acct.access), ['agents:read'])
    const target = await createKey(A, bearer(acct.access), ['agents:read'])
    const colleague = await colleagueOf(acct)
    await assertRevokeOk(t, bearer(plain.key), target.key, 'same-organization key')
    await assertRevokeOk(t, bearer(plain.key), colleague.access, 'same-organization access token')
    t.equal(await status(me(target.key)), 200, 'the key still works')
    t.equal(await status(me(colleague.access)), 200, 'the session still works')
  })

  for (const encoding of ENCODINGS) {
    t.test(`${encoding}: a key with auth:introspect revokes an access token: its session dies`, async (t) => {
      const session = await colleagueOf(acct)
      t.equal(await status(me(session.access)), 200, 'valid before')
      expectStatus(await revoke(caller, session.access, encoding), 200, 'revoke')
      t.equal(await status(me(session.access)), 401, '/auth/me: 401')
      assertError(t, await refresh(session.refresh), 401, 'REFRESH_FAILED')
    })

    t.test(`${encoding}: a key with auth:introspect revokes a refresh token: refresh and access both fail`, async (t) => {
      const session = await colleagueOf(acct)
      expectStatus(await revoke(caller, session.refresh, encoding), 200, 'revoke')
      assertError(t, await refresh(session.refresh), 401, 'REFRESH_FAILED')
      t.equal(await status(me(session.access)), 401, 'the session\'s access token: 401')
    })

    t.test(`${encoding}: a key with auth:introspect and api_keys:write revokes an API key of its organization at once`, async (t) => {
      const key = await createKey(A, bearer(acct.access), ['agents:read'])
      const manager = bearer((await createKey(A, bearer(acct.access), ['auth:introspect', 'api_keys:write'], 'manager')).key)
      t.equal(await status(me(key.key)), 200, 'valid (and cached) before')
      expectStatus(await revoke(manager, key.key, encoding), 200, 'revoke')
      t.equal(await status(me(key.key)), 401, 'refused at once')
      await A.audit.flush()
      const audit = expectStatus(await A.inject({ method: 'GET', url: `/api/v1/organizations/${acct.orgId}/audit-events?limit=100`, headers: bearer(acct.access) }), 200, 'audit')
      t.match(audit.items.find((e: { action: string; target_id: string }) => e.action === 'api_key.revoked' && e.target_id === key.id),
        { actor_user_id: null, actor_key_id: String, metadata: { via: 'rfc7009' } }, 'the revocation is in the audit log, by the revoking key')
    })
  }

  for (const encoding of ENCODINGS) {
    t.test(`${encoding}: a session revokes its own refresh token, or its own access token: the session is dead`, async (t) => {
      for (const which of ['refresh_token', 'access_token'] as const) {
        const session = await register(A)
        await assertRevokeOk(t, bearer(session.access_token), session[which], `own ${which}`, [encoding])
        t.equal(await status(me(session.access_token)), 401, `after revoking its ${which}: access token 401`)
        assertError(t, await refresh(session.refresh_token), 401, 'REFRESH_FAILED')
      }
    })
  }

  t.test("a session cannot revoke another user's tokens, nor its organization's API keys", async (t) => {
    const colleague = await colleagueOf(acct)
    const stranger = await register(A)
    const key = await createKey(A, bearer(acct.access), ['agents:read'])
    await assertRevokeOk(t, bearer(acct.access), colleague.access, "a colleague's access token")
    await assertRevokeOk(t, bearer(acct.access), colleague.refresh, "a colleague's refresh token")
    await assertRevokeOk(t, bearer(acct.access), stranger.access_token, "another organization's access token")
    await assertRevokeOk(t, bearer(acct.access), key.key, 'an API key')
    t.equal(await status(me(colleague.access)), 200, 'colleague still signed in')
    t.equal(await status(refresh(colleague.refresh)), 200, "colleague's refresh token still refreshes")
    t.equal(await status(me(stranger.access_token)), 200, 'stranger still signed in')
    t.equal(await status(me(key.key)), 200, 'API key still valid')
    t.equal(await status(me(acct.access)), 200, 'the caller itself still signed in')
  })

  t.test('no credential → 401', async (t) => {
    for (const encoding of ENCODINGS) assertError(t, await revoke({}, acct.access, encoding), 401, 'UNAUTHORIZED')
    t.equal(await status(me(acct.access)), 200, 'nothing revoked')
  })
})

t.test('a session revoked through /auth/revoke is refused by a second instance within 1 s', async (t) => {
  const acct = await newAccount()
  const session = await colleagueOf(acct)
  t.equal(await status(me(session.access, B)), 200, 'B accepts the token before')
  expectStatus(await revoke(bearer(acct.introspector), session.access, 'form', A), 200, 'revoke on A')
  t.equal(await status(me(session.access, A)), 401, 'A refuses at once')
  const ms = await within(1000, async () => (await status(me(session.access, B))) === 401)
  t.ok(ms >= 0, `B refuses it after ${ms} ms`)
  t.equal((await introspect(bearer(acct.introspector), session.access, 'json', B)).body, INACTIVE, 'and introspects it as inactive')
})

// Issue 11: a client-credentials token verifies with the JWKS alone; Portcullis refuses it on every
// instance within a second once its key is revoked (the key cache is evicted through the cluster channel).
t.test('a client-credentials token is refused by verify and introspection on both instances within 1 s of its key\'s revocation', async (t) => {
  const acct = await newAccount()
  const machine = await createKey(A, bearer(acct.access), ['agents:read'], 'machine')
  const res = await A.inject({
    method: 'POST', url: '/api/v1/oauth/token', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams({ grant_type: 'client_credentials', client_id: machine.id, client_secret: machine.key }).toString(),
  })
  const token = expectStatus(res, 200, 'client_credentials').access_token as string
  t.equal(decodeJwt(token).client_id, machine.id, 'client_id claim')
  for (const app of [A, B]) {
    t.equal(await status(me(token, app)), 200, 'accepted before')
    t.match((await introspect(bearer(acct.introspector), token, 'form', app)).json(), { active: true, client_id: machine.id })
  }
  expectStatus(await A.inject({ method: 'DELETE', url: `/api/v1/api-keys/${machine.id}`, headers: bearer(acct.access) }), 204, 'revoke the key on A')
  t.equal(await status(me(token, A)), 401, 'A refuses at once')
  const ms = await within(1000, async () => (await status(me(token, B))) === 401)
  t.ok(ms >= 0, `B refuses it after ${ms} ms`)
  for (const app of [A, B]) t.equal((await introspect(bearer(acct.introspector), token, 'json', app)).body, INACTIVE, 'inactive on both')
})
