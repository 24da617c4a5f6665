// Membership roles (tenancy) and /auth/me profiles were cached for
// MEMBERSHIP_CACHE_TTL and dropped only when a change notification arrived: had
// one been missed, a removed member kept access until the TTL ran out. Both
// caches now get the periodic resync that keys and revocations have, so the
// staleness is bounded by REVOCATION_RESYNC_INTERVAL.
import t from 'tap'
import { and, eq } from 'drizzle-orm'
import { memberships } from '../../src/db/schema.js'
import { buildTestApp, within } from '../helpers/app.js'
import { bearer } from '../helpers/api.js'
import { expectStatus, newTenant, TENANCY_ENV } from '../helpers/orgs.js'

t.test('a membership removed without a notification is no longer honoured after the next resync', async (t) => {
  const app = await buildTestApp(t, { env: { ...TENANCY_ENV, REVOCATION_RESYNC_INTERVAL: '1', MEMBERSHIP_CACHE_TTL: '3600' } })
  const tenant = await newTenant(app)
  const { member } = tenant
  const members = () => app.inject({ method: 'GET', url: `/api/v1/organizations/${tenant.id}/members`, headers: bearer(member.token) })
  // /auth/me in the member's own workspace, which they keep.
  const ownOrg = expectStatus(await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(member.token) }), 200, 'me')
    .memberships.find((m: { id: string }) => m.id !== tenant.id).id as string
  const listedIn = async () => {
    const me = expectStatus(await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { ...bearer(member.token), 'x-org-id': ownOrg } }), 200, 'me')
    return me.memberships.map((m: { id: string }) => m.id) as string[]
  }

  // Start just after a resync has finished (it waits for a database round trip), so the next one is most of a second away.
  await new Promise<void>((resolve) => app.events.onResync(async () => resolve()))
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.equal((await members()).statusCode, 200, 'member: the list of members (role now cached)')
  t.ok((await listedIn()).includes(tenant.id), '/auth/me lists the membership (profile now cached)')

  // Removed in the database with no event published: the notification that was missed.
  await app.db.delete(memberships).where(and(eq(memberships.orgId, tenant.id), eq(memberships.userId, member.id)))
  t.equal((await members()).statusCode, 200, 'right after: still allowed, from the cache (the test is not vacuous)')
  t.ok((await listedIn()).includes(tenant.id), 'right after: /auth/me still lists it, from the cache')

  const tookMs = await within(2500, async () => (await members()).statusCode === 403 && !(await listedIn()).includes(tenant.id))
  t.ok(tookMs >= 0, `403 and no longer listed within 2.5 s (took ${tookMs} ms)`)
  const denied = await members()
  t.equal(denied.statusCode, 403)
  t.equal(denied.json().error.code, 'FORBIDDEN')
  t.equal((await app.inject({ method: 'GET', url: `/api/v1/organizations/${tenant.id}/members`, headers: bearer(tenant.owner.token) })).statusCode,
    200, 'the owner, still a member, is unaffected')
})
