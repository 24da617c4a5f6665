// API keys (SPEC §4 "API keys", §7 /api-keys): the key is shown once and
// stored as SHA-256; it authenticates through X-API-Key or a bearer header,
// never the query string; its scopes never exceed its creator's; it is bound
// to its organization. A malformed key costs no database lookup, a known key
// no round trip; revocation and rotation reach every instance within 1 s;
// expiry and rotation grace follow the clock; last_used_at is written at most
// once a minute; create, rotate and revoke are audited.
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { eq } from 'drizzle-orm'
import type { LightMyRequestResponse } from 'fastify'
import type { App } from '../../src/app.js'
import { apiKeys } from '../../src/db/schema.js'
import { generateApiKey } from '../../src/lib/api-key-format.js'
import {
  buildTestApp, FakeClock, FAST_ARGON2, sharedDatabase, TEST_DATABASE_URL, TEST_REDIS_URL, within,
} from '../helpers/app.js'
import { bearer, register } from '../helpers/api.js'
import { addMember } from '../helpers/orgs.js'

const ENV: Record<string, string> = TEST_REDIS_URL ? { ...FAST_ARGON2, REDIS_URL: TEST_REDIS_URL } : FAST_ARGON2
const CHANNEL = TEST_REDIS_URL ? 'Redis pub/sub'
  : TEST_DATABASE_URL ? 'PostgreSQL LISTEN/NOTIFY' : 'PGlite in-process NOTIFY'
const LIVE_KEY = /^pc_live_sk_[0-9A-Za-z]{36}$/
const TEST_KEY = /^pc_test_sk_[0-9A-Za-z]{36}$/
const INVALID_KEY = 'Invalid or missing API key'

// Two instances on one database, as behind a load balancer; most subtests use only A.
const shared = await sharedDatabase(t)
const A = await buildTestApp(t, { ...shared, env: ENV })
const B = await buildTestApp(t, { ...shared, env: ENV })

interface Owner { access: string; orgId: string; userId: string; email: string }
interface ApiKeyView {
  id: string; name: string; key_prefix: string; environment: 'live' | 'test'; scopes: string[]
  organization_id: string; created_by: string; created_at: string
  expires_at: string | null; last_used_at: string | null; revoked_at: string | null
}
interface CreatedKey extends ApiKeyView { key: string }
interface AuditEvent {
  action: string; target_type: string | null; target_id: string | null
  actor_user_id: string | null; actor_key_id: string | null; metadata: Record<string, unknown>
}

/** A new account: the owner of a new organization. */
async function newOwner(app: App = A): Promise<Owner> {
  const reg = await register(app)
  return { access: reg.access_token, orgId: reg.organization.id, userId: reg.user.id, email: reg.email }
}

/** An app of its own on a fake clock, with an owner. */
async function clockedApp(t: Test) {
  const clock = new FakeClock()
  const app = await buildTestApp(t, { clock, env: FAST_ARGON2 })
  return { clock, app, owner: await newOwner(app) }
}

/** An API key goes in X-API-Key, a session access token in Authorization: Bearer. */
const authHeaders = (credential: string): Record<string, string> =>
  credential.startsWith('pc_') ? { 'x-api-key': credential } : bearer(credential)

function call(app: App, credential: string, method: 'GET' | 'POST' | 'DELETE', url: string,
  payload?: object, headers: Record<string, string> = {}) {
  return app.inject({ method, url: `/api/v1${url}`, headers: { ...authHeaders(credential), ...headers }, ...(payload ? { payload } : {}) })
}

const createKey = (app: App, credential: string, body: Record<string, unknown> = {}) =>
  call(app, credential, 'POST', '/api-keys', { name: 'ci', scopes: ['agents:read'], ...body })
async function newKey(app: App, credential: string, body: Record<string, unknown> = {}): Promise<CreatedKey> {
  const res = await createKey(app, credential, body)
  if (res.statusCode !== 201) throw new Error(`create key failed: ${res.statusCode} ${res.body}`)
  return res.json()
}
const getKey = (app: App, credential: string, id: string) => call(app, credential, 'GET', `/api-keys/${id}`)
const listKeys = (app: App, credential: string) => call(app, credential, 'GET', '/api-keys?limit=100')
const listedIds = async (app: App, credential: string) =>
  ((await listKeys(app, credential)).json().items as ApiKeyView[]).map((k) => k.id)
const revokeKey = (app: App, credential: string, id: string) => call(app, credential, 'DELETE', `/api-keys/${id}`)
const rotateKey = (app: App, credential: string, id: string, body?: object) =>
  call(app, credential, 'POST', `/api-keys/${id}/rotate`, body)

const me = (app: App, headers: Record<string, string>, url = '/api/v1/auth/me') => app.inject({ method: 'GET', url, headers })
const keyStatus = async (app: App, key: string) => (await me(app, { 'x-api-key': key })).statusCode
const lookups = (app: App) => app.apiKeys.databaseLookups
const sha256 = (value: string) => createHash('sha256').update(value).digest('hex')
const iso = (ms: number) => new Date(ms).toISOString()
/** The same key with its last (checksum) character changed. */
const flipLast = (key: string) => key.slice(0, -1) + (key.endsWith('A') ? 'B' : 'A')

function assertError(t: Test, res: LightMyRequestResponse, status: number, code: string, message?: string) {
  t.equal(res.statusCode, status, `${status} (got ${res.statusCode} ${res.body})`)
  t.equal(res.json().error?.code, code, code)
  if (message) t.equal(res.json().error?.message, message, message)
}
const assertKeyRefused = async (t: Test, app: App, headers: Record<string, string>) =>
  assertError(t, await me(app, headers), 401, 'UNAUTHORIZED', INVALID_KEY)

/** Counts UPDATEs of api_keys sent through app.db (the verifier's last_used_at writes go there). */
function countKeyUpdates(app: App) {
  const counter = { updates: 0 }
  const update = app.db.update.bind(app.db)
  app.db.update = ((table: Parameters<typeof update>[0]) => {
    if (table === apiKeys) counter.updates++
    return update(table)
  }) as typeof update
  return counter
}

/** `check` holds within 1 s; the time it took is part of the assertion message. */
async function assertWithin(t: Test, label: string, check: () => Promise<boolean> | boolean) {
  const ms = await within(1000, check)
  t.ok(ms >= 0, `${label} after ${ms} ms`)
}

t.test('POST /api-keys returns the key once, in the documented format, stored only as SHA-256', async (t) => {
  const owner = await newOwner()
  const res = await createKey(A, owner.access, { name: '  deploy bot ', scopes: ['agents:read', 'workflows:execute'] })
  t.equal(res.statusCode, 201, `201 (got ${res.statusCode} ${res.body})`)
  const created: CreatedKey = res.json()
  t.match(created.key, LIVE_KEY, 'pc_live_sk_ + 30 random + 6 checksum base62 characters')
  t.match(created, {
    id: /^key_[0-9a-hjkmnp-tv-z]{26}$/, name: 'deploy bot', environment: 'live', scopes: ['agents:read', 'workflows:execute'],
    organization_id: owner.orgId, created_by: owner.userId, key_prefix: created.key.slice(0, 16),
  })
  t.same([created.expires_at, created.last_used_at, created.revoked_at], [null, null, null], 'no expiry, never used, live')
  t.equal(created.key_prefix.length, 16, 'key_prefix is the first 16 characters')

  const testKey = await newKey(A, owner.access, { environment: 'test' })
  t.match(testKey.key, TEST_KEY, 'environment test: pc_test_sk_…')
  t.equal(testKey.environment, 'test', 'environment: test')
  t.equal(await keyStatus(A, testKey.key), 200, 'a test key authenticates too')

  // The whole key, everything after pc_live_sk_, and everything after the display prefix.
  const secrets = { key: created.key, 'random + checksum': created.key.slice(11), 'undisplayed part': created.key.slice(16) }

  t.test('GET /api-keys and GET /api-keys/{id} show key_prefix, never the key', async (t) => {
    const list = await listKeys(A, owner.access)
    const read = await getKey(A, owner.access, created.id)
    for (const [label, res] of [['list', list], ['read', read]] as const) {
      t.equal(res.statusCode, 200, `${label}: 200`)
      for (const [part, value] of Object.entries(secrets)) t.notOk(res.body.includes(value), `${label}: body lacks the ${part}`)
    }
    const item = (list.json().items as ApiKeyView[]).find((k) => k.id === created.id)
    t.ok(item, 'listed')
    for (const [label, view] of [['list', item], ['read', read.json()]] as const) {
      t.equal(view?.key_prefix, created.key.slice(0, 16), `${label}: key_prefix`)
      t.notOk(view && 'key' in view, `${label}: no key property`)
    }
    const { key: _key, ...withoutKey } = created
    t.same(read.json(), withoutKey, 'the read view is the creation response minus the key')
  })

  t.test('the database row holds the SHA-256 hex of the key, not the key', async (t) => {
    const [row] = await A.db.select().from(apiKeys).where(eq(apiKeys.id, created.id))
    t.ok(row, 'row exists')
    t.equal(row!.keyHash, sha256(created.key), 'key_hash = sha256(key), hex')
    t.equal(row!.keyPrefix, created.key.slice(0, 16), 'key_prefix column')
    const stored = JSON.stringify(row)
    for (const [part, value] of Object.entries(secrets)) t.notOk(stored.includes(value), `row lacks the ${part}`)
  })
})

t.test('a key authenticates through X-API-Key and Authorization: Bearer, never the query string', async (t) => {
  const owner = await newOwner()
  const other = await newOwner()
  const k = await newKey(A, owner.access, { scopes: ['agents:read', 'api_keys:read'] })
  for (const [label, headers] of [['X-API-Key', { 'x-api-key': k.key }], ['Authorization: Bearer', bearer(k.key)]] as const) {
    const res = await me(A, headers)
    t.equal(res.statusCode, 200, `${label}: 200 (got ${res.statusCode} ${res.body})`)
    const body = res.json()
    t.match(body, { api_key: { id: k.id, name: k.name, organization_id: owner.orgId, scopes: k.scopes, created_by: owner.userId }, organization: { id: owner.orgId } },
      `${label}: the key and its org`)
    t.notOk('user' in body, `${label}: no user profile (a key is the organization's identity, not its creator's)`)
    t.notOk(res.body.includes(owner.email), `${label}: the creator's email is nowhere in the answer`)
    t.equal(body.organization.role, null, `${label}: organization.role is null`)
    t.same(body.memberships, [], `${label}: memberships []`)
    t.match(body.auth, { method: 'api_key', key_id: k.id, scopes: k.scopes }, `${label}: auth`)
    t.notOk(body.auth.session_id, `${label}: no session_id`)
  }
  t.equal(await keyStatus(B, k.key), 200, 'the key works on another instance')

  for (const param of ['api_key', 'key', 'access_token']) {
    assertError(t, await me(A, {}, `/api/v1/auth/me?${param}=${k.key}`), 401, 'UNAUTHORIZED', 'No bearer token')
  }

  t.test('X-Org-ID of another organization is 403', async (t) => {
    assertError(t, await me(A, { 'x-api-key': k.key, 'x-org-id': other.orgId }), 403, 'FORBIDDEN')
    assertError(t, await call(A, k.key, 'GET', '/api-keys', undefined, { 'x-org-id': other.orgId }), 403, 'FORBIDDEN')
    t.equal((await me(A, { 'x-api-key': k.key, 'x-org-id': owner.orgId })).statusCode, 200, 'its own org in X-Org-ID: 200')
    const foreign = await newKey(A, other.access)
    assertError(t, await getKey(A, k.key, foreign.id), 404, 'NOT_FOUND')
    t.notOk((await listedIds(A, k.key)).includes(foreign.id), 'the list shows only the key\'s own org')
  })
})

t.test('scopes', async (t) => {
  const owner = await newOwner()
  const writer = await newKey(A, owner.access, { name: 'writer', scopes: ['api_keys:write'] })
  const reader = await newKey(A, owner.access, { name: 'reader', scopes: ['api_keys:read'] })
  const scopesIn = (res: LightMyRequestResponse) => ((res.json().error?.details ?? []) as { scope?: string }[]).map((d) => d.scope)

  t.test('a key cannot create a key with scopes it lacks', async (t) => {
    const before = await listedIds(A, owner.access)
    const res = await createKey(A, writer.key, { scopes: ['api_keys:write', 'agents:read', 'api_keys:read'] })
    assertError(t, res, 403, 'INSUFFICIENT_SCOPE')
    t.same(scopesIn(res), ['agents:read', 'api_keys:read'], 'details name the scopes the creator lacks')
    t.same(await listedIds(A, owner.access), before, 'no key was created')

    const child = await createKey(A, writer.key, { name: 'child', scopes: ['api_keys:write'] })
    t.equal(child.statusCode, 201, 'a subset of the creator\'s scopes is fine')
    t.match(child.json(), { scopes: ['api_keys:write'], organization_id: owner.orgId, created_by: owner.userId })
  })

  t.test('an unknown scope is 422', async (t) => {
    for (const credential of [owner.access, writer.key]) {
      const res = await createKey(A, credential, { scopes: ['agents:read', 'nuclear:launch'] })
      assertError(t, res, 422, 'VALIDATION_ERROR')
      t.equal(res.json().error?.details?.[0]?.field, 'scopes', 'field scopes')
    }
  })

  t.test('an api_keys:read key cannot create, revoke or rotate', async (t) => {
    for (const res of [await createKey(A, reader.key), await revokeKey(A, reader.key, writer.id), await rotateKey(A, reader.key, writer.id)]) {
      assertError(t, res, 403, 'INSUFFICIENT_SCOPE')
      t.same(scopesIn(res), ['api_keys:write'], 'details name api_keys:write')
    }
    t.equal(await keyStatus(A, writer.key), 200, 'the writer key is untouched')
    t.equal((await listKeys(A, reader.key)).statusCode, 200, 'but it can list')
  })

  t.test('a key without api_keys:read cannot list or read keys', async (t) => {
    for (const res of [await listKeys(A, writer.key), await getKey(A, writer.key, reader.id)]) {
      assertError(t, res, 403, 'INSUFFICIENT_SCOPE')
      t.same(scopesIn(res), ['api_keys:read'], 'details name api_keys:read')
    }
  })

  t.test('a member session cannot manage keys (admin or owner only)', async (t) => {
    const member = await newOwner()
    const add = await addMember(A, bearer(owner.access), owner.orgId, { email: member.email, token: member.access }, 'member')
    t.equal(add.statusCode, 200, `member invited, and accepted (got ${add.statusCode} ${add.body})`)
    const inOrg = { 'x-org-id': owner.orgId }
    assertError(t, await call(A, member.access, 'POST', '/api-keys', { name: 'x', scopes: ['agents:read'] }, inOrg), 403, 'FORBIDDEN')
    assertError(t, await call(A, member.access, 'GET', '/api-keys', undefined, inOrg), 403, 'FORBIDDEN')
  })
})

t.test('malformed keys are refused without a database lookup', async (t) => {
  const owner = await newOwner()
  const k = await newKey(A, owner.access)
  const before = lookups(A)
  const flipped = flipLast(k.key)
  await assertKeyRefused(t, A, { 'x-api-key': flipped })
  await assertKeyRefused(t, A, bearer(flipped))
  const others = ['pc_live_sk_short', `pc_live_sk_${'!'.repeat(36)}`, `${k.key}A`, k.key.replace('_live_', '_prod_'), '']
  for (const key of others) await assertKeyRefused(t, A, { 'x-api-key': key })

  const bad = Array.from({ length: 100 }, () => flipLast(generateApiKey('pc', 'live')))
  const statuses = await Promise.all(bad.map((key, i) => me(A, i % 2 ? { 'x-api-key': key } : bearer(key)).then((r) => r.statusCode)))
  t.same(statuses.filter((s) => s !== 401), [], '100 keys with a bad checksum: all 401')
  t.equal(lookups(A), before, `no database lookup for ${bad.length + others.length + 2} malformed keys`)
  t.equal(await keyStatus(A, k.key), 200, 'the real key still works')
})

t.test('a well-formed unknown key: one lookup, then remembered for 5 s', async (t) => {
  const { clock, app } = await clockedApp(t)
  const unknown = generateApiKey('pc', 'live')
  const before = lookups(app)
  await assertKeyRefused(t, app, { 'x-api-key': unknown })
  t.equal(lookups(app), before + 1, 'first use: one lookup')
  for (let i = 0; i < 20; i++) await assertKeyRefused(t, app, i % 2 ? { 'x-api-key': unknown } : bearer(unknown))
  clock.advance(4_999)
  await assertKeyRefused(t, app, { 'x-api-key': unknown })
  t.equal(lookups(app), before + 1, '21 repeats within 5 s: no further lookup')
  clock.advance(2)
  await assertKeyRefused(t, app, { 'x-api-key': unknown })
  t.equal(lookups(app), before + 2, 'after 5 s it is looked up again')
})

t.test('a known key is verified without a database round trip', async (t) => {
  const owner = await newOwner()
  const k = await newKey(A, owner.access)
  const before = lookups(A)
  t.equal(await keyStatus(A, k.key), 200, 'first use: 200')
  t.equal(lookups(A), before + 1, 'first use: one lookup')
  const statuses: number[] = []
  for (let i = 0; i < 50; i++) statuses.push((await me(A, i % 2 ? { 'x-api-key': k.key } : bearer(k.key))).statusCode)
  t.same(statuses.filter((s) => s !== 200), [], '50 more uses: all 200')
  t.equal(lookups(A), before + 1, '50 more uses: no lookup')
})

t.test('DELETE /api-keys/{id} revokes at once here and within 1 s on every instance', async (t) => {
  const owner = await newOwner()
  const victim = await newKey(A, owner.access, { name: 'victim' })
  const bystander = await newKey(A, owner.access, { name: 'bystander' })
  for (const [name, app] of [['A', A], ['B', B]] as const) {
    for (const k of [victim, bystander]) t.equal(await keyStatus(app, k.key), 200, `${k.name} works on ${name}`)
  }
  const cachedOnB = lookups(B)
  t.equal(await keyStatus(B, victim.key), 200, 'used again on B')
  t.equal(lookups(B), cachedOnB, 'B answers from its cache before the revocation')

  const res = await revokeKey(A, owner.access, victim.id)
  t.equal(res.statusCode, 204, `204 (got ${res.statusCode} ${res.body})`)
  t.equal(res.body, '', 'no body')
  await assertKeyRefused(t, A, { 'x-api-key': victim.key })
  await assertKeyRefused(t, A, bearer(victim.key))
  await assertWithin(t, `B refuses the revoked key (${CHANNEL})`, async () => await keyStatus(B, victim.key) === 401)
  await assertKeyRefused(t, B, bearer(victim.key))
  for (const app of [A, B]) t.equal(await keyStatus(app, bystander.key), 200, 'another key of the org still works')

  const ids = await listedIds(A, owner.access)
  t.notOk(ids.includes(victim.id), 'the list no longer shows it')
  t.ok(ids.includes(bystander.id), 'the list still shows the other key')
  const read = (await getKey(A, owner.access, victim.id)).json()
  t.ok(read.revoked_at && Math.abs(Date.parse(read.revoked_at) - Date.now()) < 60_000, 'GET shows revoked_at')

  assertError(t, await revokeKey(A, owner.access, victim.id), 404, 'NOT_FOUND')
  const stranger = await newOwner()
  assertError(t, await revokeKey(A, stranger.access, bystander.id), 404, 'NOT_FOUND')
  t.equal(await keyStatus(A, bystander.key), 200, 'another org\'s DELETE left the key alive')
  assertError(t, await revokeKey(A, owner.access, `key_${'0'.repeat(26)}`), 404, 'NOT_FOUND')
  assertError(t, await revokeKey(A, owner.access, 'not-a-key-id'), 422, 'VALIDATION_ERROR')
})

t.test('expires_at', async (t) => {
  const { clock, app, owner } = await clockedApp(t)
  const expiresAt = iso(clock.now() + 60_000)
  const k = await newKey(app, owner.access, { expires_at: expiresAt })
  t.equal(k.expires_at, expiresAt, 'expires_at echoed')
  t.equal(await keyStatus(app, k.key), 200, 'works before expiry')
  const before = lookups(app)
  clock.advance(59_000)
  t.equal(await keyStatus(app, k.key), 200, 'works 1 s before expiry')
  clock.advance(1_001)
  await assertKeyRefused(t, app, { 'x-api-key': k.key })
  t.equal(lookups(app), before, 'refused from the cache: no lookup')

  for (const [label, value] of [['in the past', iso(clock.now() - 1_000)], ['now', iso(clock.now())], ['not a date', 'tomorrow']]) {
    const res = await createKey(app, owner.access, { expires_at: value })
    assertError(t, res, 422, 'VALIDATION_ERROR')
    t.equal(res.json().error?.details?.[0]?.field, 'expires_at', `${label}: field expires_at`)
  }
})

t.test('POST /api-keys/{id}/rotate', async (t) => {
  t.test('grace_seconds keeps the old key alive until the grace ends', async (t) => {
    const { clock, app, owner } = await clockedApp(t)
    const old = await newKey(app, owner.access, { name: 'worker', scopes: ['agents:read', 'workflows:execute'], environment: 'test' })
    t.equal(await keyStatus(app, old.key), 200, 'old key in use (cached)')
    const res = await rotateKey(app, owner.access, old.id, { grace_seconds: 3600 })
    t.equal(res.statusCode, 201, `201 (got ${res.statusCode} ${res.body})`)
    const rotated: CreatedKey = res.json()
    t.match(rotated.key, TEST_KEY, 'a new key of the same environment')
    t.not(rotated.key, old.key, 'a different key')
    t.not(rotated.id, old.id, 'with its own id')
    t.match(rotated, { name: 'worker', scopes: old.scopes, environment: 'test', organization_id: owner.orgId, revoked_at: null })
    t.equal(rotated.key_prefix, rotated.key.slice(0, 16), 'its own key_prefix')
    t.equal((await getKey(app, owner.access, old.id)).json().expires_at, iso(clock.now() + 3_600_000), 'old key expires when the grace ends')
    t.same((await listedIds(app, owner.access)).sort(), [old.id, rotated.id].sort(), 'both listed during the grace')

    const both = { old: old.key, new: rotated.key }
    for (const [label, key] of Object.entries(both)) t.equal(await keyStatus(app, key), 200, `${label} key works`)
    clock.advance(3_599_000)
    for (const [label, key] of Object.entries(both)) t.equal(await keyStatus(app, key), 200, `${label} key works at 3599 s`)
    clock.advance(2_000)
    await assertKeyRefused(t, app, { 'x-api-key': old.key })
    t.equal(await keyStatus(app, rotated.key), 200, 'new key works at 3601 s')
  })

  t.test('without a body (grace 0) the old key dies at once here and within 1 s on B', async (t) => {
    const owner = await newOwner()
    const old = await newKey(A, owner.access)
    for (const app of [A, B]) t.equal(await keyStatus(app, old.key), 200, 'old key cached')
    const res = await rotateKey(A, owner.access, old.id)
    t.equal(res.statusCode, 201, `201 (got ${res.statusCode} ${res.body})`)
    const rotated: CreatedKey = res.json()
    await assertKeyRefused(t, A, { 'x-api-key': old.key })
    await assertWithin(t, `B refuses the rotated-out key (${CHANNEL})`, async () => await keyStatus(B, old.key) === 401)
    for (const app of [A, B]) t.equal(await keyStatus(app, rotated.key), 200, 'the new key works')
    t.ok((await getKey(A, owner.access, old.id)).json().revoked_at, 'old key revoked')
    t.same(await listedIds(A, owner.access), [rotated.id], 'only the new key is listed')

    assertError(t, await rotateKey(A, owner.access, old.id), 409, 'CONFLICT')
  })

  t.test('a revoked key is 409, another org\'s key 404, grace_seconds above 7 days 422', async (t) => {
    const owner = await newOwner()
    const revoked = await newKey(A, owner.access)
    t.equal((await revokeKey(A, owner.access, revoked.id)).statusCode, 204)
    assertError(t, await rotateKey(A, owner.access, revoked.id, { grace_seconds: 60 }), 409, 'CONFLICT')

    const live = await newKey(A, owner.access)
    assertError(t, await rotateKey(A, (await newOwner()).access, live.id), 404, 'NOT_FOUND')
    for (const grace of [604_801, -1, 1.5]) {
      assertError(t, await rotateKey(A, owner.access, live.id, { grace_seconds: grace }), 422, 'VALIDATION_ERROR')
    }
    t.same(await listedIds(A, owner.access), [live.id], 'refused rotations issued nothing')
    t.equal(await keyStatus(A, live.key), 200, 'and left the key alive')
    t.equal((await rotateKey(A, owner.access, live.id, { grace_seconds: 604_800 })).statusCode, 201, '7 days exactly is allowed')
  })
})

t.test('last_used_at is written after use, at most once a minute', async (t) => {
  const { clock, app, owner } = await clockedApp(t)
  const k = await newKey(app, owner.access)
  const writes = countKeyUpdates(app)
  const lastUsed = async () => (await getKey(app, owner.access, k.id)).json().last_used_at as string | null
  t.equal(await lastUsed(), null, 'null before the first use')

  const firstUse = clock.now()
  t.equal(await keyStatus(app, k.key), 200, 'first use')
  await assertWithin(t, 'last_used_at = time of the first use', async () => await lastUsed() === iso(firstUse))
  const listed = ((await listKeys(app, owner.access)).json().items as ApiKeyView[]).find((i) => i.id === k.id)
  t.equal(listed?.last_used_at, iso(firstUse), 'the list shows it too')
  t.equal(writes.updates, 1, 'one write for the first use')

  clock.advance(59_000)
  for (let i = 0; i < 3; i++) t.equal(await keyStatus(app, k.key), 200, `use ${i + 1} at +59 s`)
  t.equal(await within(300, async () => await lastUsed() !== iso(firstUse)), -1, 'uses 59 s later do not change it')
  t.equal(writes.updates, 1, 'and send no write at all (not one per request)')

  clock.advance(2_000)
  const laterUse = clock.now()
  t.equal(await keyStatus(app, k.key), 200, 'use at +61 s')
  await assertWithin(t, 'a use 61 s after the first updates it', async () => await lastUsed() === iso(laterUse))
  t.equal(writes.updates, 2, 'with one more write')
})

t.test('create, rotate and revoke are in the audit log with the key id as target', async (t) => {
  const owner = await newOwner()
  const created = await newKey(A, owner.access, { name: 'audited' })
  const rotated: CreatedKey = (await rotateKey(A, owner.access, created.id, { grace_seconds: 60 })).json()
  t.equal((await revokeKey(A, owner.access, rotated.id)).statusCode, 204, 'revoked')
  const writer = await newKey(A, owner.access, { name: 'writer', scopes: ['api_keys:write'] })
  const child = await newKey(A, writer.key, { name: 'child', scopes: ['api_keys:write'] })

  await A.audit.flush()
  const res = await A.inject({ method: 'GET', url: `/api/v1/organizations/${owner.orgId}/audit-events?limit=100`, headers: bearer(owner.access) })
  t.equal(res.statusCode, 200, `200 (got ${res.statusCode} ${res.body})`)
  const events = (res.json().items as AuditEvent[]).filter((e) => e.action.startsWith('api_key.'))
  const find = (action: string, targetId: string) => events.find((e) => e.action === action && e.target_id === targetId)
  const bySession = { target_type: 'api_key', actor_user_id: owner.userId, actor_key_id: null }

  t.match(find('api_key.created', created.id), { ...bySession, metadata: { name: 'audited', scopes: created.scopes } }, 'api_key.created')
  t.match(find('api_key.rotated', rotated.id), { ...bySession, metadata: { rotated_from: created.id } }, 'api_key.rotated (target: the new key)')
  t.match(find('api_key.revoked', rotated.id), bySession, 'api_key.revoked')
  t.match(find('api_key.created', child.id), { target_type: 'api_key', actor_user_id: null, actor_key_id: writer.id },
    'a key created by a key names that key as actor, and no user')
  t.equal(events.length, 5, 'five key events (3 created, 1 rotated, 1 revoked)')
  for (const k of [created, rotated, writer, child]) t.notOk(res.body.includes(k.key.slice(16)), `the log never contains the key ${k.key_prefix}…`)
})

t.test('a revocation whose notification was lost is picked up by the periodic resync', async (t) => {
  const app = await buildTestApp(t, { env: { ...FAST_ARGON2, REVOCATION_RESYNC_INTERVAL: '1' } })
  const owner = await newOwner(app)
  const k = await newKey(app, owner.access)
  t.equal(await keyStatus(app, k.key), 200, 'cached')
  // What another instance's DELETE leaves behind when its publish failed: the row revoked, no event.
  await app.db.update(apiKeys).set({ revokedAt: new Date() }).where(eq(apiKeys.id, k.id))
  const ms = await within(3_000, async () => await keyStatus(app, k.key) === 401)
  t.ok(ms >= 0, `refused within 3 s with REVOCATION_RESYNC_INTERVAL=1 (${ms} ms)`)
})
