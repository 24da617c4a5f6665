// Verifies API keys on the hot path: the checksum refuses malformed keys with
// no lookup; a known key is answered from a bounded in-process cache; changes
// (revoke, rotate) arrive through the cluster channel and evict. Unknown keys
// are remembered apart, in a bounded negative cache, so a flood of made-up
// keys can never push a real key out.
import type { FastifyBaseLogger } from 'fastify'
import type { Database } from '../../db/client.js'
import { isWellFormedApiKey } from '../../lib/api-key-format.js'
import type { Clock } from '../../lib/clock.js'
import { sha256 } from '../../lib/crypto.js'
import type { Metrics } from '../../plugins/metrics.js'
import * as repo from './repository.js'

export interface VerifiedApiKey {
  id: string
  name: string
  orgId: string
  scopes: readonly string[]
  createdByUserId: string
  expiresAt: number | null
  revoked: boolean
}

const LAST_USED_INTERVAL_MS = 60_000
// Unknown (but well-formed) keys are remembered briefly so a flood of one bad key costs one lookup.
const UNKNOWN_TTL_MS = 5_000
export const UNKNOWN_KEYS_MAX = 10_000

export class ApiKeyVerifier {
  private readonly byHash = new Map<string, VerifiedApiKey>()
  /** Well-formed keys the database does not know, until when (bounded apart from real keys). */
  private readonly unknown = new Map<string, number>()
  private readonly hashById = new Map<string, string>()
  private readonly lastTouched = new Map<string, number>()
  /** Lookups that reached the database (observable by tests and metrics). */
  databaseLookups = 0
  /** Bumped by every eviction: a lookup that raced one is answered but not cached. */
  private generation = 0

  constructor(private readonly opts: {
    db: Database; clock: Clock; prefix: string; maxEntries: number; log: FastifyBaseLogger; metrics: Metrics
    /** How far each resync reads back before the previous one (resyncLookBackMs). */
    lookBackMs: number
  }) {}

  /** The key's record when it is live; null for malformed, unknown, revoked or expired keys. */
  async verify(key: string): Promise<VerifiedApiKey | null> {
    if (!isWellFormedApiKey(this.opts.prefix, key)) return null
    const hash = sha256(key)
    const now = this.opts.clock.now()
    let entry: VerifiedApiKey | null | undefined = this.byHash.get(hash)
    if (!entry && (this.unknown.get(hash) ?? 0) > now) entry = null
    this.opts.metrics.apiKeyCache(entry === undefined ? 'miss' : 'hit')
    if (entry === undefined) entry = await this.load(hash, now)
    if (!entry || entry.revoked || (entry.expiresAt !== null && entry.expiresAt <= now)) return null
    this.touch(entry.id, now)
    return entry
  }

  /**
   * Whether the key is refused without a database lookup: malformed (its checksum fails), unknown
   * (looked up in vain within UNKNOWN_TTL_MS), or known here as revoked or expired. False means the
   * full verify() must decide.
   */
  knownInvalid(key: string): boolean {
    if (!isWellFormedApiKey(this.opts.prefix, key)) return true
    const hash = sha256(key)
    const now = this.opts.clock.now()
    const entry = this.byHash.get(hash)
    if (entry) return entry.revoked || (entry.expiresAt !== null && entry.expiresAt <= now)
    return (this.unknown.get(hash) ?? 0) > now
  }

  /**
   * A live key by id: what a client-credentials token speaks for. From the cache (evicted on
   * every revocation, on every instance) or, once, from the database.
   */
  async verifyById(id: string): Promise<VerifiedApiKey | null> {
    const now = this.opts.clock.now()
    let entry: VerifiedApiKey | null | undefined = this.cached(id)
    if (!entry) {
      const generation = this.generation
      this.databaseLookups++
      const row = await repo.findApiKeyById(this.opts.db, id)
      entry = row ? this.entryOf(row) : null
      if (entry && generation === this.generation) this.remember(row!.keyHash, entry)
    }
    if (!entry || entry.revoked || (entry.expiresAt !== null && entry.expiresAt <= now)) return null
    return entry
  }

  /** A key this instance has verified, by id (what /auth/me shows of the calling key). */
  cached(id: string): VerifiedApiKey | undefined {
    const hash = this.hashById.get(id)
    return hash ? this.byHash.get(hash) : undefined
  }

  private syncedUntil = 0

  /** Evicts keys changed since the last resync, in case their notification was missed. */
  async resync(): Promise<void> {
    const now = this.opts.clock.now()
    // Overlap the previous read: commits land out of order, and later than their stamp.
    const since = new Date((this.syncedUntil || now) - this.opts.lookBackMs)
    this.evict(await repo.listApiKeysChangedSince(this.opts.db, since))
    this.syncedUntil = now
  }

  /** Forgets keys (revoked, rotated, changed) so the next use reads the database. */
  evict(ids: string[]): void {
    if (ids.length) this.generation++
    for (const id of ids) {
      const hash = this.hashById.get(id)
      if (hash) this.byHash.delete(hash)
      this.hashById.delete(id)
    }
  }

  private async load(hash: string, now: number): Promise<VerifiedApiKey | null> {
    this.databaseLookups++
    const generation = this.generation
    const row = await repo.findApiKeyByHash(this.opts.db, hash)
    if (!row) {
      this.unknown.delete(hash)
      this.unknown.set(hash, now + UNKNOWN_TTL_MS)
      if (this.unknown.size > UNKNOWN_KEYS_MAX) this.unknown.delete(this.unknown.keys().next().value as string)
      return null
    }
    const entry = this.entryOf(row)
    // The row may predate a revocation whose eviction ran while we read it.
    if (generation === this.generation) this.remember(hash, entry)
    return entry
  }

  private entryOf(row: repo.ApiKeyRow): VerifiedApiKey {
    return {
      id: row.id, name: row.name, orgId: row.orgId, scopes: Object.freeze([...row.scopes]), createdByUserId: row.createdByUserId,
      expiresAt: row.expiresAt?.getTime() ?? null, revoked: row.revokedAt !== null,
    }
  }

  private remember(hash: string, entry: VerifiedApiKey) {
    this.unknown.delete(hash) // a key created since it was looked up in vain
    this.byHash.set(hash, entry)
    this.hashById.set(entry.id, hash)
    while (this.byHash.size > this.opts.maxEntries) {
      const [oldestHash, oldest] = this.byHash.entries().next().value as [string, VerifiedApiKey]
      this.byHash.delete(oldestHash)
      this.hashById.delete(oldest.id)
    }
  }

  /** How many real and unknown keys are held (for tests and metrics). */
  get sizes() {
    return { known: this.byHash.size, unknown: this.unknown.size }
  }

  /** A use of a live key answered from elsewhere (a remembered verification): recorded like one verified here. */
  noteUse(id: string): void {
    this.touch(id, this.opts.clock.now())
  }

  /** last_used_at: at most one write a minute per key, never awaited by the request. */
  private touch(id: string, now: number) {
    if (now - (this.lastTouched.get(id) ?? 0) < LAST_USED_INTERVAL_MS) return
    this.lastTouched.set(id, now)
    if (this.lastTouched.size > this.opts.maxEntries) this.lastTouched.delete(this.lastTouched.keys().next().value as string)
    repo.touchApiKey(this.opts.db, id, new Date(now))
      .catch((err) => this.opts.log.warn({ err }, 'could not record API key use'))
  }
}
