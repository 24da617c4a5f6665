// Revoked sessions, known to every instance within a second and checked on
// the hot path with a Map lookup: no database or network round trip.
import fp from 'fastify-plugin'
import { listSessionsRevokedSince } from '../modules/sessions/repository.js'
import { resyncLookBackMs } from './events.js'

export interface Revocation {
  isSessionRevoked(sessionId: string): boolean
  /** How long a revocation matters: an access token outlives its session's revocation by at most its own lifetime (+ clock tolerance). */
  readonly rememberMs: number
  /** Records revocations already committed to the database and tells every instance. */
  publishRevokedSessions(ids: string[]): Promise<void>
}

declare module 'fastify' {
  interface FastifyInstance {
    revocation: Revocation
  }
}

export default fp(async (app) => {
  const { clock, config } = app
  // An access token outlives its session's revocation by at most its own lifetime (+ clock tolerance).
  const rememberMs = (config.ACCESS_TOKEN_TTL + 30) * 1000
  const lookBackMs = resyncLookBackMs(config)
  // sessionId → when the entry can be forgotten. Insertion order ≈ expiry order, so eviction drops the oldest.
  const revoked = new Map<string, number>()

  const remember = (ids: Iterable<string>, at: number) => {
    for (const id of ids) {
      revoked.delete(id)
      revoked.set(id, at + rememberMs)
    }
    while (revoked.size > config.REVOCATION_CACHE_MAX) {
      const oldest = revoked.keys().next().value as string
      revoked.delete(oldest)
    }
  }

  let syncedUntil = 0
  async function resync() {
    const now = clock.now()
    // Overlap the previous read: commits land out of order, and later than their stamp.
    const since = syncedUntil ? Math.max(syncedUntil - lookBackMs, now - rememberMs) : now - rememberMs
    const rows = await listSessionsRevokedSince(app.db, new Date(since))
    for (const row of rows) remember([row.id], row.revokedAt.getTime())
    for (const [id, forgetAt] of revoked) {
      if (forgetAt > now) break
      revoked.delete(id)
    }
    syncedUntil = now
  }
  // Subscribed before the first read: an event arriving during that read is kept, not left to the next resync.
  app.events.subscribe((event) => {
    if (event.type === 'sessions.revoked') remember(event.ids, event.at)
  })
  await resync()
  app.events.onResync(resync)

  app.decorate('revocation', {
    rememberMs,
    isSessionRevoked(sessionId) {
      const forgetAt = revoked.get(sessionId)
      return forgetAt !== undefined && forgetAt > clock.now()
    },
    async publishRevokedSessions(ids) {
      if (ids.length) await app.events.publish({ type: 'sessions.revoked', ids, at: clock.now() })
    },
  } satisfies Revocation)
}, { name: 'revocation', dependencies: ['db', 'events'] })
