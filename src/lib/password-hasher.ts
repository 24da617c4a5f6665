// argon2id hashing with the configured cost, the rehash check, and an equal-cost
// path for unknown accounts so timing does not reveal whether an email exists.
import argon2 from 'argon2'
import { randomBytes } from 'node:crypto'

export interface Argon2Params {
  memoryCost: number
  timeCost: number
  parallelism: number
}

/**
 * At most `concurrency` hashes run at once (the rest wait in line): argon2 runs on
 * libuv's thread pool, and leaving a core to the event loop keeps token and key
 * verification answering while logins saturate the CPU.
 */
export class PasswordHasher {
  private dummyHash: Promise<string> | undefined
  private running = 0
  private readonly waiting: (() => void)[] = []

  constructor(private readonly params: Argon2Params, private readonly concurrency = 1) {}

  hash(password: string): Promise<string> {
    return this.limited(() => argon2.hash(password, { type: argon2.argon2id, ...this.params }))
  }

  async verify(hash: string, password: string): Promise<boolean> {
    try {
      return await this.limited(() => argon2.verify(hash, password))
    } catch {
      return false // a corrupt stored hash is a failed login, not a 500
    }
  }

  private async limited<T>(work: () => Promise<T>): Promise<T> {
    if (this.running >= this.concurrency) await new Promise<void>((resolve) => this.waiting.push(resolve))
    this.running++
    try {
      return await work()
    } finally {
      this.running--
      this.waiting.shift()?.()
    }
  }

  /** True when the stored hash was made with other parameters or another algorithm. */
  needsRehash(hash: string): boolean {
    return !hash.startsWith('$argon2id$') || argon2.needsRehash(hash, this.params)
  }

  /** Spends the same argon2 work as verify() against a real account, and always fails. */
  async verifyAgainstNothing(password: string): Promise<false> {
    this.dummyHash ??= this.hash(randomBytes(16).toString('hex'))
    await this.verify(await this.dummyHash, password)
    return false
  }
}
