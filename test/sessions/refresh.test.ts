import t from 'tap'
import { and, eq, isNull } from 'drizzle-orm'
import { auditEvents, memberships, organizations, refreshTokens, sessions } from '../../src/db/schema.js'
import { buildTestApp, FAST_ARGON2, FakeClock, within } from '../helpers/app.js'
import { bearer, register } from '../helpers/api.js'

const clock = new FakeClock()
const app = await buildTestApp(t, { env: FAST_ARGON2, clock })
const SECOND = 1000
const DAY = 86_400 * SECOND

const refresh = (refresh_token: string, extra: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token, ...extra } })
const me = (token: string) => app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(token) })
const sessionOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).sid as string

async function liveTokens(sessionId: string) {
  return (await app.db.select().from(refreshTokens)
    .where(and(eq(refreshTokens.sessionId, sessionId), isNull(refreshTokens.usedAt)))).length
}

t.test('refresh rotates: a new pair, the old refresh token used, the session unchanged', async (t) => {
  const reg = await register(app)
  t.match(reg.refresh_token, /^rt_[A-Za-z0-9_-]{43}$/)
  const res = await refresh(reg.refresh_token)
  t.equal(res.statusCode, 200)
  const pair = res.json()
  t.not(pair.refresh_token, reg.refresh_token, 'a new refresh token')
  t.not(pair.access_token, reg.access_token, 'a new access token')
  t.equal(pair.token_type, 'Bearer')
  t.equal(sessionOf(pair.access_token), sessionOf(reg.access_token), 'same session')
  t.equal((await me(pair.access_token)).statusCode, 200)
  t.equal(await liveTokens(sessionOf(pair.access_token)), 1, 'one live token in the family')
  const stored = await app.db.select().from(refreshTokens).where(eq(refreshTokens.sessionId, sessionOf(pair.access_token)))
  for (const row of stored) {
    t.match(row.tokenHash, /^[0-9a-f]{64}$/, 'stored as SHA-256')
    t.not(row.tokenHash, reg.refresh_token)
  }
})

t.test('a retry inside the grace window returns the identical child; after it, reuse revokes the session', async (t) => {
  const reg = await register(app)
  const first = (await refresh(reg.refresh_token)).json()
  clock.advance(9 * SECOND)
  const retry = await refresh(reg.refresh_token)
  t.equal(retry.statusCode, 200, 'retry within 10 s succeeds')
  t.equal(retry.json().refresh_token, first.refresh_token, 'identical child')
  t.equal(await liveTokens(sessionOf(first.access_token)), 1, 'still one live token')

  clock.advance(2 * SECOND) // 11 s after first use
  const replay = await refresh(reg.refresh_token)
  t.equal(replay.statusCode, 401)
  t.equal(replay.json().error.code, 'REFRESH_TOKEN_REUSED')

  const child = await refresh(first.refresh_token)
  t.equal(child.statusCode, 401, 'the live child is dead too')
  t.equal(child.json().error.code, 'REFRESH_FAILED')
  t.equal((await me(first.access_token)).statusCode, 401, 'the access token of the session is dead at once')
  const [row] = await app.db.select().from(sessions).where(eq(sessions.id, sessionOf(first.access_token)))
  t.ok(row!.revokedAt, 'session revoked in the database')
  // Recorded once the revocation has committed, never from inside the transaction (which may run again).
  const reuses = () => app.db.select().from(auditEvents)
    .where(and(eq(auditEvents.action, 'refresh.reuse_detected'), eq(auditEvents.targetId, sessionOf(first.access_token))))
  t.ok(await within(2000, async () => (await reuses()).length > 0) >= 0, 'the reuse is in the audit log')
  t.equal((await reuses()).length, 1, 'once')
})

t.test('only the immediate parent of the live token gets the grace: a grandparent is reuse', async (t) => {
  const reg = await register(app)
  const b = (await refresh(reg.refresh_token)).json()
  const c = (await refresh(b.refresh_token)).json()
  t.ok(c.refresh_token)
  const replay = await refresh(reg.refresh_token) // within 10 s, but its child b is no longer live
  t.equal(replay.json().error.code, 'REFRESH_TOKEN_REUSED')
  t.equal((await refresh(c.refresh_token)).json().error.code, 'REFRESH_FAILED', 'family revoked')
})

t.test('20 concurrent refreshes with one token never fork the family', async (t) => {
  const reg = await register(app)
  const results = await Promise.all(Array.from({ length: 20 }, () => refresh(reg.refresh_token)))
  const ok = results.filter((r) => r.statusCode === 200).map((r) => r.json().refresh_token)
  t.ok(ok.length >= 1, `${ok.length} succeeded`)
  t.equal(new Set(ok).size, 1, 'every success carries the same single child')
  for (const r of results.filter((r) => r.statusCode !== 200)) t.equal(r.statusCode, 401)
  t.equal(await liveTokens(sessionOf(reg.access_token)), 1, 'exactly one live token afterwards')
  t.equal((await refresh(ok[0]!)).statusCode, 200, 'the child works')
})

t.test('idle expiry: a refresh token unused for REFRESH_TOKEN_TTL is refused', async (t) => {
  const reg = await register(app)
  clock.advance(7 * DAY - SECOND)
  const stillOk = await refresh(reg.refresh_token)
  t.equal(stillOk.statusCode, 200, 'just inside 7 days')
  clock.advance(7 * DAY + SECOND)
  const expired = await refresh(stillOk.json().refresh_token)
  t.equal(expired.statusCode, 401)
  t.equal(expired.json().error.code, 'REFRESH_FAILED')
})

t.test('absolute expiry: a session ends after SESSION_MAX_AGE however often it refreshes', async (t) => {
  const reg = await register(app)
  let token = reg.refresh_token
  for (let day = 6; day < 30; day += 6) {
    clock.advance(6 * DAY)
    const res = await refresh(token)
    t.equal(res.statusCode, 200, `day ${day}`)
    token = res.json().refresh_token
  }
  clock.advance(6 * DAY) // day 30
  const res = await refresh(token)
  t.equal(res.statusCode, 401, 'day 30: session over')
  t.equal(res.json().error.code, 'REFRESH_FAILED')
})

t.test('org_id switches the organization of the new access token; a non-member org is 403 and consumes nothing', async (t) => {
  const a = await register(app)
  const b = await register(app)
  const now = new Date(clock.now())
  // Make a a member of b's organization (organization endpoints arrive later).
  await app.db.insert(memberships).values({ orgId: b.organization.id, userId: a.user.id, role: 'member', createdAt: now })
  const switched = await refresh(a.refresh_token, { org_id: b.organization.id })
  t.equal(switched.statusCode, 200)
  const view = (await me(switched.json().access_token)).json()
  t.equal(view.organization.id, b.organization.id)
  t.equal(view.organization.role, 'member')
  t.notOk(view.auth.scopes.includes('api_keys:write'), 'member scopes')

  const [org] = await app.db.insert(organizations).values({ id: 'org_01aaaaaaaaaaaaaaaaaaaaaaaa', name: 'Other', credits: 0, createdAt: now, updatedAt: now }).returning()
  const refused = await refresh(switched.json().refresh_token, { org_id: org!.id })
  t.equal(refused.statusCode, 403)
  t.equal(refused.json().error.code, 'FORBIDDEN')
  const after = await refresh(switched.json().refresh_token)
  t.equal(after.statusCode, 200, 'the refused attempt did not use the token')
  t.equal((await me(after.json().access_token)).json().organization.id, b.organization.id, 'the session keeps the switched org')
})

t.test('OAuth2 form refresh', async (t) => {
  const reg = await register(app)
  const res = await app.inject({
    method: 'POST', url: '/api/v1/auth/refresh', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: reg.refresh_token }).toString(),
  })
  t.equal(res.statusCode, 200)
  const wrongGrant = await app.inject({
    method: 'POST', url: '/api/v1/auth/refresh', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams({ grant_type: 'password', refresh_token: res.json().refresh_token }).toString(),
  })
  t.equal(wrongGrant.statusCode, 422)
})

t.test('unknown, malformed and non-refresh tokens are REFRESH_FAILED', async (t) => {
  const reg = await register(app)
  for (const token of ['rt_' + 'A'.repeat(43), 'garbage', reg.access_token, 'rt_' + 'x'.repeat(400)]) {
    const res = await refresh(token)
    t.equal(res.statusCode, 401)
    t.equal(res.json().error.code, 'REFRESH_FAILED')
  }
})
