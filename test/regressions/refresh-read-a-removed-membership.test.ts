// Regression (found in review of the one-statement refresh): a refresh that had to wait for its
// token's row lock acted on the rows its statement read before waiting. One statement reads one
// snapshot, and the lock re-read the token only: a member removed from an organization while their
// refresh into it waited got a 200 with an admin access token for it, on a session left live in an
// organization they no longer belonged to (the removal's revocation had missed it, still in the old
// one); a disabled account got a 200. The statement now never waits (SKIP LOCKED on every row it
// rests on): a held row sends the refresh to the transaction, which waits and reads again. An
// attacker could hold the lock themselves, with refused refreshes of the same token.
// The transaction had the same hole in a narrower window (2 races of 30 in the review): it read the
// membership unlocked, so a removal committed between that read and the session's move into the
// organization was missed the same way. It now holds the membership (FOR SHARE) to its commit.
import t from 'tap'
import postgres from 'postgres'
import { and, eq } from 'drizzle-orm'
import { memberships, sessions } from '../../src/db/schema.js'
import { hashRefreshToken } from '../../src/lib/refresh-token.js'
import { buildTestApp, FAST_ARGON2, FakeClock, TEST_DATABASE_URL } from '../helpers/app.js'
import { bearer, register, STRONG_PASSWORD } from '../helpers/api.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const claimsOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString())

t.test('a refresh waiting for its token sees what was committed meanwhile', { skip: TEST_DATABASE_URL ? false : 'TEST_DATABASE_URL not set (PGlite has one connection: no lock can be held from outside)' }, async (t) => {
  const clock = new FakeClock()
  const app = await buildTestApp(t, { env: FAST_ARGON2, clock })
  const outside = postgres(app.config.DATABASE_URL!, { max: 1, onnotice: () => {} })
  t.teardown(() => outside.end())
  const refresh = (token: string, extra: Record<string, string> = {}) => app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: token, ...extra } })
  /** Holds the token's row, as a refused refresh of it does, while `during` runs; then lets it go unchanged. */
  const whileTokenHeld = (token: string, during: () => Promise<void>) => outside.begin(async (tx) => {
    await tx`select id from refresh_tokens where token_hash = ${hashRefreshToken(token)} for update`
    await during()
  })

  await t.test('removed from the organization the refresh switches into', async (t) => {
    const owner = await register(app)
    const member = await register(app)
    await app.db.insert(memberships).values({ orgId: owner.organization.id, userId: member.user.id, role: 'admin', createdAt: new Date(clock.now()) })
    let pending!: ReturnType<typeof refresh>
    await whileTokenHeld(member.refresh_token, async () => {
      pending = refresh(member.refresh_token, { org_id: owner.organization.id })
      await sleep(300)
      const removed = await app.inject({ method: 'DELETE', url: `/api/v1/organizations/${owner.organization.id}/members/${member.user.id}`, headers: bearer(owner.access_token) })
      t.equal(removed.statusCode, 204, 'removed while the refresh waits')
    })
    const res = await pending
    t.equal(res.statusCode, 403, 'the refresh into the organization left is refused')
    const [session] = await app.db.select().from(sessions).where(eq(sessions.id, claimsOf(member.access_token).sid))
    t.equal(session!.orgId, member.organization.id, 'the session stays in its own organization')
    t.same(await app.db.select().from(memberships).where(and(eq(memberships.orgId, session!.orgId), eq(memberships.userId, member.user.id))).then((r) => r.length), 1, 'where it is a member')
    t.equal((await refresh(member.refresh_token)).statusCode, 200, 'the token was not spent by the refusal')
  })

  await t.test('disabled while the refresh waits', async (t) => {
    const operator = await register(app)
    await app.admin.setSuperadmin(operator.email, true)
    const victim = await register(app)
    let pending!: ReturnType<typeof refresh>
    await whileTokenHeld(victim.refresh_token, async () => {
      pending = refresh(victim.refresh_token)
      await sleep(300)
      const disabled = await app.inject({ method: 'POST', url: `/api/v1/admin/users/${victim.user.id}/disable`, headers: bearer(operator.access_token), payload: { password: STRONG_PASSWORD } })
      t.equal(disabled.statusCode, 204, 'disabled while the refresh waits')
    })
    const res = await pending
    t.equal(res.statusCode, 401, 'the disabled account gets no tokens')
    t.equal(res.json().error.code, 'REFRESH_FAILED')
  })

  await t.test('removed while the transaction, switching into the organization, waits to move the session', async (t) => {
    const owner = await register(app)
    const member = await register(app)
    await app.db.insert(memberships).values({ orgId: owner.organization.id, userId: member.user.id, role: 'admin', createdAt: new Date(clock.now()) })
    const sessionId = claimsOf(member.access_token).sid
    let pending!: ReturnType<typeof refresh>
    let removal!: Promise<{ statusCode: number }>
    // The session's row held: the statement skips it, and the transaction reads the membership, then waits to move the session.
    await outside.begin(async (tx) => {
      await tx`select id from sessions where id = ${sessionId} for update`
      pending = refresh(member.refresh_token, { org_id: owner.organization.id })
      await sleep(300)
      removal = app.inject({ method: 'DELETE', url: `/api/v1/organizations/${owner.organization.id}/members/${member.user.id}`, headers: bearer(owner.access_token) })
      await sleep(300)
    })
    await pending
    t.equal((await removal).statusCode, 204, 'removed')
    const [session] = await app.db.select().from(sessions).where(eq(sessions.id, sessionId))
    const stillMember = (await app.db.select().from(memberships).where(and(eq(memberships.orgId, session!.orgId), eq(memberships.userId, member.user.id)))).length === 1
    t.ok(session!.revokedAt || stillMember, 'no live session in an organization its user has left')
  })
})
