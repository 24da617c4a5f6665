// Single-use tokens sent by mail (reset, verification, email change): 256
// random bits, stored as SHA-256, one purpose each. A newer token of a purpose
// spends the user's older ones; spending is one statement, so of concurrent
// uses of one token exactly one succeeds.
import { randomBytes } from 'node:crypto'
import type { Queryable } from '../../db/client.js'
import { AppError } from '../../errors.js'
import type { Clock } from '../../lib/clock.js'
import { sha256 } from '../../lib/crypto.js'
import { newId } from '../../lib/ids.js'
import * as repo from './repository.js'

export type MailTokenPurpose = repo.MailTokenPurpose

/**
 * The links whoever holds can take the account with: a reset (recovers it) and a change of address
 * (moves it, and every later reset with it). A credential change, a logout everywhere and an
 * operator's disable or enable spend them, so a link asked for with a password the owner has since
 * replaced dies with that password.
 */
export const ACCOUNT_TAKING_PURPOSES: readonly MailTokenPurpose[] = ['password_reset', 'email_change']

/** 43 base64url characters: the shape every mailed token has (anything else is refused unread). */
const TOKEN_SHAPE = /^[A-Za-z0-9_-]{43}$/

export const invalidLink = () => new AppError('INVALID_LINK')

/** The stored form of a presented token; anything not shaped like one is refused unread. */
export function hashOf(token: string): string {
  if (!TOKEN_SHAPE.test(token)) throw invalidLink()
  return sha256(token)
}

/** A new mailed token (256 random bits) and the hash that is all the database keeps of it. */
export function mintToken(): { token: string; hash: string } {
  const token = randomBytes(32).toString('base64url')
  return { token, hash: sha256(token) }
}

export class MailTokens {
  constructor(private readonly deps: { clock: Clock }) {}

  /** A new token for `email`, valid `ttlSeconds`; the user's unused tokens of the same purpose are spent. */
  async issue(db: Queryable, purpose: MailTokenPurpose, user: { id: string; email: string }, ttlSeconds: number): Promise<string> {
    const now = new Date(this.deps.clock.now())
    const { token, hash } = mintToken()
    await repo.spendUnusedTokens(db, user.id, [purpose], now)
    await repo.insertMailToken(db, {
      id: newId('mtk', now.getTime()), purpose, userId: user.id, email: user.email, tokenHash: hash,
      createdAt: now, expiresAt: new Date(now.getTime() + ttlSeconds * 1000),
    })
    return token
  }

  /** The live token, unspent (to check what it would do before spending it); INVALID_LINK otherwise. */
  async peek(db: Queryable, purpose: MailTokenPurpose, token: string): Promise<repo.MailTokenRow> {
    const row = await repo.findLiveToken(db, purpose, hashOf(token), new Date(this.deps.clock.now()))
    if (!row) throw invalidLink()
    return row
  }

  /** Spends the token: exactly one caller gets it; INVALID_LINK for every other and for a dead token. */
  async spend(db: Queryable, purpose: MailTokenPurpose, token: string): Promise<repo.MailTokenRow> {
    const row = await repo.spendToken(db, purpose, hashOf(token), new Date(this.deps.clock.now()))
    if (!row) throw invalidLink()
    return row
  }

  /** Spends every unused token of these purposes (a password or address change makes them stale). */
  async spendAll(db: Queryable, userId: string, purposes: readonly MailTokenPurpose[]): Promise<void> {
    await repo.spendUnusedTokens(db, userId, purposes, new Date(this.deps.clock.now()))
  }
}
