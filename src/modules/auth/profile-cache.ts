// What GET /auth/me shows, kept per instance so the dashboard's most frequent
// call needs no database round trip: the user, their memberships, and
// organizations. Every change is pushed through the cluster channel
// (users.changed, memberships.changed, organizations.changed) and evicts;
// the periodic resync (and the TTL) bound staleness should a notification be missed.
import { sql } from 'drizzle-orm'
import type { Database } from '../../db/client.js'
import type { Clock } from '../../lib/clock.js'
import type { ClusterEvent } from '../../plugins/events.js'
import * as orgRepo from '../organizations/repository.js'
import * as repo from './repository.js'
import { SingleFlight } from '../../lib/single-flight.js'

interface Entry<T> { value: T; until: number }

export class ProfileCache {
  private readonly users = new Map<string, Entry<{ user: repo.UserRow; memberships: orgRepo.MembershipView[] } | null>>()
  private readonly orgs = new Map<string, Entry<orgRepo.OrganizationRow | null>>()
  private readonly loads = new SingleFlight<unknown>()
  /** Bumped by every change: a load that raced one is answered but not cached. */
  private generation = 0

  constructor(private readonly deps: { db: Database; clock: Clock; ttlMs: number; maxEntries: number }) {}

  /** The user and their memberships; null for an unknown user. */
  profile(userId: string) {
    return this.cached(this.users, userId, async () => {
      const user = await repo.findUserById(this.deps.db, userId)
      return user ? { user, memberships: await orgRepo.listMembershipsOfUser(this.deps.db, userId) } : null
    })
  }

  organization(orgId: string) {
    return this.cached(this.orgs, orgId, async () => (await orgRepo.findOrganization(this.deps.db, orgId)) ?? null)
  }

  onEvent(event: ClusterEvent): void {
    if (event.type === 'users.changed' || event.type === 'memberships.changed' || event.type === 'organizations.changed') this.generation++
    if (event.type === 'users.changed') for (const id of event.ids) this.users.delete(id)
    else if (event.type === 'memberships.changed') this.users.delete(event.userId)
    else if (event.type === 'organizations.changed') {
      for (const id of event.ids) this.orgs.delete(id)
      this.users.clear() // membership lists carry organization names
    }
  }

  /**
   * The periodic resync, should a notification have been missed: drops every entry,
   * but only while the database answers (during an outage the cache is all there is).
   */
  async resync(): Promise<void> {
    await this.deps.db.execute(sql`select 1`)
    this.generation++
    this.users.clear()
    this.orgs.clear()
  }

  private async cached<T>(map: Map<string, Entry<T>>, key: string, load: () => Promise<T>): Promise<T> {
    const now = this.deps.clock.now()
    const hit = map.get(key)
    if (hit && hit.until > now) return hit.value
    const generation = this.generation
    const value = await this.loads.run(`${map === this.users ? 'u' : 'o'}:${key}`, generation, load) as T
    if (generation !== this.generation) return value
    map.delete(key)
    map.set(key, { value, until: now + this.deps.ttlMs })
    if (map.size > this.deps.maxEntries) map.delete(map.keys().next().value as string)
    return value
  }
}
