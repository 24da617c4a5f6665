// The plain refresh is one statement (repository.prepareUnusedTokenRotation): it rotates an
// unused token of a live session for a member, in full or not at all, and leaves every other case
// untouched for the transaction that decides it. Run on PGlite and, with TEST_DATABASE_URL, on
// PostgreSQL, where the concurrent case exercises the row lock.
import t from 'tap'
import { and, eq, isNull } from 'drizzle-orm'
import { memberships, organizations, refreshTokens, sessions, users } from '../../src/db/schema.js'
import { hashRefreshToken } from '../../src/lib/refresh-token.js'
import { prepareUnusedTokenRotation, type UnusedTokenRotation } from '../../src/modules/sessions/repository.js'
import { buildTestApp, FAST_ARGON2, FakeClock } from '../helpers/app.js'
import { bearer, register } from '../helpers/api.js'

const clock = new FakeClock()
const app = await buildTestApp(t, { env: FAST_ARGON2, clock })
const rotate = prepareUnusedTokenRotation(app.db)
const DAY = 86_400_000
let children = 0

const sessionOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).sid as string
const refresh = (refresh_token: string, extra: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token, ...extra } })

function rotation(presented: string, orgId: string | null = null, ttl = 7 * DAY): UnusedTokenRotation {
  const now = new Date(clock.now())
  const n = ++children
  return { tokenHash: hashRefreshToken(presented), orgId, now, child: { id: `rtk_test${n}`, tokenHash: `child-hash-${n}`, expiresAt: new Date(now.getTime() + ttl) } }
}

/** Everything a rotation writes: the session's tokens and the session's row. */
async function stateOf(sessionId: string) {
  const tokens = await app.db.select().from(refreshTokens).where(eq(refreshTokens.sessionId, sessionId)).orderBy(refreshTokens.createdAt, refreshTokens.id)
  const [session] = await app.db.select().from(sessions).where(eq(sessions.id, sessionId))
  return JSON.parse(JSON.stringify({ tokens, session }))
}

type Account = Awaited<ReturnType<typeof register>>

const refusals: { name: string; arrange: (a: Account, other: Account) => Promise<string | null | void> }[] = [
  { name: 'an unknown token', arrange: async () => { /* the rotation is asked for a token that does not exist */ } },
  { name: 'a used token', arrange: async (a) => { await app.db.update(refreshTokens).set({ usedAt: new Date(clock.now()) }).where(eq(refreshTokens.sessionId, sessionOf(a.access_token))) } },
  { name: 'an expired token', arrange: async (a) => { await app.db.update(refreshTokens).set({ expiresAt: new Date(clock.now()) }).where(eq(refreshTokens.sessionId, sessionOf(a.access_token))) } },
  { name: 'a revoked session', arrange: async (a) => { await app.db.update(sessions).set({ revokedAt: new Date(clock.now()) }).where(eq(sessions.id, sessionOf(a.access_token))) } },
  { name: 'an expired session', arrange: async (a) => { await app.db.update(sessions).set({ expiresAt: new Date(clock.now()) }).where(eq(sessions.id, sessionOf(a.access_token))) } },
  { name: 'a disabled account', arrange: async (a) => { await app.db.update(users).set({ disabledAt: new Date(clock.now()) }).where(eq(users.id, a.user.id)) } },
  { name: 'the session organization left', arrange: async (a) => { await app.db.delete(memberships).where(eq(memberships.userId, a.user.id)) } },
  { name: 'an organization asked for without a membership', arrange: async (_a, other) => other.organization.id },
]

t.test('every case but the plain one rotates nothing and writes nothing', async (t) => {
  for (const { name, arrange } of refusals) {
    const a = await register(app)
    const other = await register(app)
    const orgId = await arrange(a, other)
    const before = await stateOf(sessionOf(a.access_token))
    const presented = name === 'an unknown token' ? `rt_${'A'.repeat(43)}` : a.refresh_token
    t.equal(await rotate(rotation(presented, orgId ?? null)), undefined, `${name}: no row`)
    t.same(await stateOf(sessionOf(a.access_token)), before, `${name}: nothing written`)
  }
})

t.test('the plain case: the token used, one child capped at the session end, the session touched, in one statement', async (t) => {
  const a = await register(app)
  const other = await register(app)
  const sessionId = sessionOf(a.access_token)
  await app.db.insert(memberships).values({ orgId: other.organization.id, userId: a.user.id, role: 'member', createdAt: new Date(clock.now()) })
  const [session] = await app.db.select().from(sessions).where(eq(sessions.id, sessionId))
  clock.advance(5000)
  // A child lifetime past the session's end is capped at it.
  const asked = rotation(a.refresh_token, other.organization.id, 365 * DAY)
  const row = await rotate(asked)
  t.same(row, { sessionId, userId: a.user.id, authTime: session!.createdAt, emailVerified: false, orgId: other.organization.id, role: 'member' })
  const { tokens, session: touched } = await stateOf(sessionId)
  t.equal(tokens.length, 2)
  t.equal(tokens[0].usedAt, asked.now.toISOString(), 'the presented token is used')
  t.same(tokens[1], { id: asked.child.id, sessionId, parentId: tokens[0].id, tokenHash: asked.child.tokenHash, createdAt: asked.now.toISOString(), expiresAt: session!.expiresAt.toISOString(), usedAt: null })
  t.equal(touched.lastUsedAt, asked.now.toISOString(), 'the session is touched')
  t.equal(touched.orgId, other.organization.id, 'and moved to the organization asked for')
  t.equal(await rotate(rotation(a.refresh_token)), undefined, 'a second rotation of the same token finds it used')
})

t.test('20 concurrent rotations of one token: exactly one rotates, one child', async (t) => {
  const a = await register(app)
  const results = await Promise.all(Array.from({ length: 20 }, () => rotate(rotation(a.refresh_token))))
  t.equal(results.filter(Boolean).length, 1, 'one rotation returned a row')
  const live = await app.db.select().from(refreshTokens).where(and(eq(refreshTokens.sessionId, sessionOf(a.access_token)), isNull(refreshTokens.usedAt)))
  t.equal(live.length, 1, 'one live token: the family did not fork')
})

t.test('the cases the statement leaves alone are still answered by the transaction', async (t) => {
  // The session's organization left: the new token falls back to the first organization joined.
  const a = await register(app)
  const other = await register(app)
  await app.db.insert(memberships).values({ orgId: other.organization.id, userId: a.user.id, role: 'admin', createdAt: new Date(clock.now()) })
  await app.db.delete(memberships).where(and(eq(memberships.userId, a.user.id), eq(memberships.orgId, a.organization.id)))
  const fellBack = await refresh(a.refresh_token)
  t.equal(fellBack.statusCode, 200, 'the organization left: refreshed')
  const view = (await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(fellBack.json().access_token) })).json()
  t.equal(view.organization.id, other.organization.id, 'into the organization still joined')

  // A disabled account is refused, and its token stays unused.
  const b = await register(app)
  await app.db.update(users).set({ disabledAt: new Date(clock.now()) }).where(eq(users.id, b.user.id))
  t.equal((await refresh(b.refresh_token)).json().error.code, 'REFRESH_FAILED', 'disabled: refused')
  t.equal((await stateOf(sessionOf(b.access_token))).tokens[0].usedAt, null, 'disabled: the token is not used')

  // A deleted organization asked for is 403, as a non-member one is.
  const c = await register(app)
  await app.db.delete(organizations).where(eq(organizations.id, other.organization.id))
  t.equal((await refresh(c.refresh_token, { org_id: other.organization.id })).statusCode, 403, 'an organization that is gone: 403')
})
