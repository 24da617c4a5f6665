// Regression (found in review): the refresh transaction held the membership it read, and the
// organization's row with it, in that order (FOR SHARE OF memberships, organizations). A role
// change, removal, departure or erasure locks the organization first and writes the membership
// after: opposite orders, a deadlock in 8 interleavings of 8, and under a loop of role changes
// refreshes and role changes answered 503 once PostgreSQL had chosen them as the victim three
// times. The refresh now holds the membership only, and the one statement locks no organization.
// To show a deadlock as a failure rather than as a second's delay, the database here detects
// none for 30 s: one would hold both requests until the 2 s deadline, a 503.
import t from 'tap'
import postgres from 'postgres'
import { memberships } from '../../src/db/schema.js'
import { buildTestApp, FAST_ARGON2, FakeClock, freshDatabaseUrl, TEST_DATABASE_URL } from '../helpers/app.js'
import { bearer, register } from '../helpers/api.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const sessionOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).sid as string

t.test('a refresh and an owner\'s change to the membership never wait for each other in a cycle', { skip: TEST_DATABASE_URL ? false : 'TEST_DATABASE_URL not set (PGlite has one connection: no lock can be held from outside)' }, async (t) => {
  const databaseUrl = await freshDatabaseUrl(t)
  const outside = postgres(databaseUrl, { max: 1, onnotice: () => {} })
  t.teardown(() => outside.end())
  await outside.unsafe(`alter database ${new URL(databaseUrl).pathname.slice(1)} set deadlock_timeout = '30s'`)
  const clock = new FakeClock()
  const app = await buildTestApp(t, { databaseUrl, env: { ...FAST_ARGON2, DATABASE_QUERY_TIMEOUT: '2000' }, clock })

  const operations = {
    'role change': (orgId: string, userId: string, owner: string) => app.inject({ method: 'PATCH', url: `/api/v1/organizations/${orgId}/members/${userId}`, headers: bearer(owner), payload: { role: 'member' } }),
    removal: (orgId: string, userId: string, owner: string) => app.inject({ method: 'DELETE', url: `/api/v1/organizations/${orgId}/members/${userId}`, headers: bearer(owner) }),
  }
  for (const [name, operation] of Object.entries(operations)) {
    await t.test(name, async (t) => {
      const owner = await register(app)
      const member = await register(app)
      const orgId = owner.organization.id
      await app.db.insert(memberships).values({ orgId, userId: member.user.id, role: 'admin', createdAt: new Date(clock.now()) })
      const inOrg = (await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: member.email, password: member.password, org_id: orgId } })).json()
      let changed!: ReturnType<typeof operation>
      let refreshed!: ReturnType<typeof operation>
      await outside.begin(async (tx) => {
        // The owner's operation queues for the organization; the member's session row held sends the
        // refresh to the transaction, which reads (and holds) the membership, then waits for the session.
        await tx`select 1 from organizations where id = ${orgId} for update`
        await tx`select 1 from sessions where id = ${sessionOf(inOrg.access_token)} for share`
        changed = operation(orgId, member.user.id, owner.access_token)
        await sleep(200)
        refreshed = app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: inOrg.refresh_token } })
        await sleep(200)
      })
      const [change, refresh] = await Promise.all([changed, refreshed])
      t.ok(change.statusCode < 300, `the ${name} went through (${change.statusCode})`)
      t.equal(refresh.statusCode, 200, 'the refresh went through')
    })
  }
})
