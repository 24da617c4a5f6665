// argon2id hashing with the configured cost, the rehash check, and an equal-cost
// path for unknown accounts so timing does not reveal whether an email exists.
import argon2 from 'argon2'
import { randomBytes } from 'node:crypto'
import { AppError } from '../errors.js'
import { sha256 } from './crypto.js'

/** Names a stored password hash without repeating it (an mfa challenge keeps it): equal hashes, equal fingerprints. */
export const passwordFingerprint = (passwordHash: string): string => sha256(passwordHash)

export interface Argon2Params {
  memoryCost: number
  timeCost: number
  parallelism: number
}

/**
 * At most `concurrency` hashes run at once (the rest wait in line): argon2 runs on
 * libuv's thread pool, and leaving a core to the event loop keeps token and key
 * verification answering while logins saturate the CPU. At most `queueMax` wait;
 * beyond that a hash is refused with 503 rather than queued without bound.
 */
export class PasswordHasher {
  private dummyHash: Promise<string> | undefined
  private running = 0
  private readonly waiting: (() => void)[] = []

  constructor(private readonly params: Argon2Params, private readonly concurrency = 1, private readonly queueMax = 64) {}

  hash(password: string): Promise<string> {
    return this.limited(() => argon2.hash(password, { type: argon2.argon2id, ...this.params }))
  }

  verify(hash: string, password: string): Promise<boolean> {
    return this.limited(async () => {
      try {
        return await argon2.verify(hash, password)
      } catch {
        return false // a corrupt stored hash is a failed login, not a 500 (a full queue is neither)
      }
    })
  }

  private async limited<T>(work: () => Promise<T>): Promise<T> {
    if (this.running < this.concurrency) this.running++
    else if (this.waiting.length < this.queueMax) await new Promise<void>((resolve) => this.waiting.push(resolve))
    else throw new AppError('SERVICE_UNAVAILABLE', 'Too many password checks in progress; retry shortly', undefined, { 'retry-after': '1' })
    try {
      return await work()
    } finally {
      // A finished hash hands its slot straight to the next in line, so none can jump the queue.
      const next = this.waiting.shift()
      if (next) next()
      else this.running--
    }
  }

  /** True when the stored hash was made with other parameters or another algorithm. */
  needsRehash(hash: string): boolean {
    return !hash.startsWith('$argon2id$') || argon2.needsRehash(hash, this.params)
  }

  /** Spends the same argon2 work as verify() against a real account, and always fails. */
  async verifyAgainstNothing(password: string): Promise<false> {
    this.dummyHash ??= this.hash(randomBytes(16).toString('hex')).catch((err: unknown) => {
      this.dummyHash = undefined // a refusal (full queue) must not stick for every later unknown email
      throw err
    })
    await this.verify(await this.dummyHash, password)
    return false
  }
}
