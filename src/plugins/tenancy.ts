// The organization a request acts in: the path's {org_id}, else X-Org-ID,
// else the credential's own organization. Sessions must be members of it
// (memberships cached per instance, changes pushed through the cluster
// channel); an API key's organization is fixed.
import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import { sql } from 'drizzle-orm'
import type { Role } from '../config.js'
import { AppError } from '../errors.js'
import { ID_PATTERN } from '../lib/ids.js'
import { findMembership } from '../modules/organizations/repository.js'
import { scopesOfRole } from '../lib/authority.js'
import { SingleFlight } from '../lib/single-flight.js'

/** Who is calling, before an organization is chosen. */
export type Identity =
  | { method: 'session'; userId: string; sessionId: string; orgId: string; role: Role; authTime: number }
  | { method: 'api_key'; keyId: string; orgId: string; scopes: readonly string[]; createdByUserId: string; expiresAt: number | null }

/** A user acting through a session (access token) in an organization. */
export interface SessionAuth {
  method: 'session'
  userId: string
  /** The organization context of the request. */
  orgId: string
  /** The caller's role in it, as it is now (memberships are re-read on change). */
  role: Role
  scopes: readonly string[]
  sessionId: string
  /** When the user last proved a password (and second factor), epoch seconds: the access token's auth_time. */
  authTime: number
  keyId?: undefined
}

/**
 * An API key: an identity of its organization, not of the person who created it.
 * It has no user, no role and no profile; its authority is its scopes.
 */
export interface ApiKeyAuth {
  method: 'api_key'
  userId: null
  orgId: string
  role: null
  scopes: readonly string[]
  keyId: string
  /** Provenance only (the human behind the key's creation), never an identity to act as. */
  createdByUserId: string
  /** The key's expiry (ms), or null: what it grants cannot outlive it. */
  expiresAt: number | null
  sessionId?: undefined
}

export type AuthContext = SessionAuth | ApiKeyAuth

export interface Tenancy {
  /** The organization a request names: its path's {org_id}, else X-Org-ID; undefined when neither. */
  requestedOrg(request: FastifyRequest): string | undefined
  resolveOrgContext(request: FastifyRequest, identity: Identity): Promise<AuthContext>
  /** The user's role in the organization, from the cache when possible; null when not a member. */
  membershipRole(orgId: string, userId: string): Promise<Role | null>
  /** Tells every instance that a membership changed (role, added, removed). */
  publishMembershipChange(orgId: string, userId: string): Promise<void>
}

declare module 'fastify' {
  interface FastifyInstance {
    tenancy: Tenancy
  }
}

const ORG_ID = new RegExp(ID_PATTERN('org'))

export const apiKeyAuth = (identity: Extract<Identity, { method: 'api_key' }>): ApiKeyAuth => ({
  method: 'api_key', userId: null, orgId: identity.orgId, role: null, scopes: identity.scopes,
  keyId: identity.keyId, createdByUserId: identity.createdByUserId, expiresAt: identity.expiresAt,
})
const notMember = () => new AppError('FORBIDDEN', 'Not a member of this organization')

export default fp(async (app) => {
  const { clock, config } = app
  const ttlMs = config.MEMBERSHIP_CACHE_TTL * 1000
  const cache = new Map<string, { role: Role | null; until: number }>()
  const cacheKey = (orgId: string, userId: string) => `${orgId}:${userId}`

  // Bumped by every change: a lookup that raced one is answered but not cached.
  let generation = 0
  const loads = new SingleFlight<Role | null>()
  app.events.subscribe((event) => {
    if (event.type !== 'memberships.changed') return
    generation++
    cache.delete(cacheKey(event.orgId, event.userId))
  })
  // Should a notification be missed, staleness is bounded by REVOCATION_RESYNC_INTERVAL, not the TTL.
  // Dropped only while the database answers: during an outage cached members keep working.
  app.events.onResync(async () => {
    await app.db.execute(sql`select 1`)
    generation++
    cache.clear()
  })

  async function membershipRole(orgId: string, userId: string): Promise<Role | null> {
    const key = cacheKey(orgId, userId)
    const now = clock.now()
    const hit = cache.get(key)
    if (hit && hit.until > now) return hit.role
    const before = generation
    const role = await loads.run(key, before, async () => (await findMembership(app.db, orgId, userId))?.role ?? null)
    if (before !== generation) return role
    cache.delete(key)
    cache.set(key, { role, until: now + ttlMs })
    if (cache.size > config.API_KEY_CACHE_MAX) cache.delete(cache.keys().next().value as string)
    return role
  }

  function requestedOrg(request: FastifyRequest): string | undefined {
    const fromPath = (request.params as { org_id?: string } | undefined)?.org_id
    if (fromPath) return fromPath
    const header = request.headers['x-org-id']
    return typeof header === 'string' ? header.trim() || undefined : undefined
  }

  app.decorate('tenancy', {
    requestedOrg,
    membershipRole,
    async resolveOrgContext(request, identity) {
      const orgId = requestedOrg(request) ?? identity.orgId
      if (identity.method === 'api_key') {
        if (orgId !== identity.orgId) throw new AppError('FORBIDDEN', 'This API key belongs to another organization')
        return apiKeyAuth(identity)
      }
      const role = ORG_ID.test(orgId) ? await membershipRole(orgId, identity.userId) : null
      if (!role) throw notMember()
      return {
        method: 'session', userId: identity.userId, orgId, role,
        scopes: scopesOfRole(config, role), sessionId: identity.sessionId, authTime: identity.authTime,
      }
    },
    async publishMembershipChange(orgId, userId) {
      await app.events.publish({ type: 'memberships.changed', orgId, userId })
    },
  } satisfies Tenancy)
}, { name: 'tenancy', dependencies: ['db', 'events'] })
