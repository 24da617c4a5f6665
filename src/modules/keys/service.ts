// Signing-key life cycle (next → current → previous → retired) and the
// in-process key ring that signs and verifies access tokens.
import { createPublicKey, generateKeyPairSync, type JsonWebKey } from 'node:crypto'
import type { Database } from '../../db/client.js'
import type { Clock } from '../../lib/clock.js'
import { decrypt, deriveKey, encrypt } from '../../lib/crypto.js'
import { newId } from '../../lib/ids.js'
import * as repo from './repository.js'

export type SigningAlgorithm = 'ES256' | 'EdDSA' | 'RS256'

export interface PublishedKey {
  kid: string
  alg: SigningAlgorithm
  state: repo.KeyState
  jwk: JsonWebKey
  /** SPKI PEM, the form fast-jwt verifies with. */
  publicPem: string
}

export interface SigningKey { kid: string; alg: SigningAlgorithm; privatePem: string }

export interface KeyRingOptions {
  db: Database
  clock: Clock
  secretKey: Buffer
  algorithm: SigningAlgorithm
  /** How long a token signed by a key can live; a previous key is published that long. */
  accessTokenTtlSeconds: number
}

function generateKeyPair(alg: SigningAlgorithm) {
  switch (alg) {
    case 'ES256': return generateKeyPairSync('ec', { namedCurve: 'P-256' })
    case 'EdDSA': return generateKeyPairSync('ed25519')
    case 'RS256': return generateKeyPairSync('rsa', { modulusLength: 2048 })
  }
}

export class KeyRing {
  private published = new Map<string, PublishedKey>()
  /** Bumped when a reload changes the keys: whatever remembers a verification result compares it. */
  generation = 0
  private signing: SigningKey | undefined
  private readonly sealKey: Buffer

  constructor(private readonly opts: KeyRingOptions) {
    this.sealKey = deriveKey(opts.secretKey, 'signing-keys')
  }

  /** The key new tokens are signed with. */
  get current(): SigningKey {
    if (!this.signing) throw new Error('key ring not loaded')
    return this.signing
  }

  /** A published key by kid, or undefined for unknown and retired kids. */
  publicKey(kid: unknown): PublishedKey | undefined {
    return typeof kid === 'string' ? this.published.get(kid) : undefined
  }

  publishedKeys(): PublishedKey[] {
    return [...this.published.values()]
  }

  /** Creates the first current and next keys when missing; safe when several instances start at once. */
  async ensureKeys(): Promise<void> {
    await this.opts.db.transaction(async (tx) => {
      await repo.lockKeyRing(tx)
      const rows = await repo.listPublishedKeys(tx)
      if (!rows.some((r) => r.state === 'current')) await this.createKey(tx, 'current')
      const next = rows.find((r) => r.state === 'next')
      // After a JWT_ALGORITHM change the next key is replaced, so the next rotation signs with the new algorithm.
      if (next && next.algorithm !== this.opts.algorithm) await repo.setKeyState(tx, next.kid, 'retired', new Date(this.opts.clock.now()))
      if (!next || next.algorithm !== this.opts.algorithm) await this.createKey(tx, 'next')
    })
    await this.reload()
  }

  /** next → current → previous, a fresh next, and retirement of previous keys nothing can still use. */
  async rotate(): Promise<{ current: string; next: string }> {
    const now = new Date(this.opts.clock.now())
    const result = await this.opts.db.transaction(async (tx) => {
      await repo.lockKeyRing(tx)
      const rows = await repo.listPublishedKeys(tx)
      const current = rows.find((r) => r.state === 'current')
      let next = rows.find((r) => r.state === 'next')
      if (!next) next = await this.createKey(tx, 'next')
      if (current) await repo.setKeyState(tx, current.kid, 'previous', now)
      await repo.setKeyState(tx, next.kid, 'current', now)
      const fresh = await this.createKey(tx, 'next')
      await repo.retireExpiredPreviousKeys(tx, this.previousCutoff(now), now)
      return { current: next.kid, next: fresh.kid }
    })
    await this.reload()
    return result
  }

  /** Re-reads the published keys (after a rotation anywhere). */
  async reload(): Promise<void> {
    const now = new Date(this.opts.clock.now())
    const rows = (await repo.listPublishedKeys(this.opts.db))
      .filter((r) => r.state !== 'previous' || r.stateChangedAt >= this.previousCutoff(now))
    const published = new Map<string, PublishedKey>()
    let signing: SigningKey | undefined
    for (const row of rows) {
      const alg = row.algorithm as SigningAlgorithm
      const publicPem = createPublicKey({ key: row.publicJwk as JsonWebKey, format: 'jwk' })
        .export({ type: 'spki', format: 'pem' }).toString()
      published.set(row.kid, { kid: row.kid, alg, state: row.state, jwk: row.publicJwk, publicPem })
      if (row.state === 'current') {
        signing = { kid: row.kid, alg, privatePem: decrypt(this.sealKey, row.privateKeySealed, row.kid) }
      }
    }
    if (!signing) throw new Error('no current signing key')
    // A resync re-reads the same keys every few seconds: what remembers verified tokens is
    // emptied only when the set of keys, or the one signing, really changed.
    const changed = signing.kid !== this.signing?.kid || published.size !== this.published.size
      || [...published.keys()].some((kid) => !this.published.has(kid))
    this.published = published
    this.signing = signing
    if (changed) this.generation++
  }

  private previousCutoff(now: Date): Date {
    // A token signed just before rotation lives ACCESS_TOKEN_TTL, plus clock tolerance.
    return new Date(now.getTime() - (this.opts.accessTokenTtlSeconds + 60) * 1000)
  }

  private async createKey(tx: Parameters<typeof repo.insertKey>[0], state: repo.KeyState) {
    const alg = this.opts.algorithm
    const kid = newId('kid', this.opts.clock.now())
    const { privateKey, publicKey } = generateKeyPair(alg)
    const jwk = { ...publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' } as Record<string, string>
    const privatePem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
    const now = new Date(this.opts.clock.now())
    const row = {
      kid, algorithm: alg, state, publicJwk: jwk,
      privateKeySealed: encrypt(this.sealKey, privatePem, kid),
      createdAt: now, stateChangedAt: now,
    }
    await repo.insertKey(tx, row)
    return row
  }
}
