// The per-credential request budget (RATE_LIMIT_GLOBAL per minute): counted
// in process, with no I/O on the request's path. Windows are whole minutes of
// the wall clock, so every instance counts the same window. With Redis, each
// instance adds its new counts to shared counters in one pipeline per
// SYNC_INTERVAL_MS and learns the cluster's totals back: the limit holds
// across instances to within what they serve in one interval, and a request
// never waits for Redis. While Redis is away the counts stay local (each
// instance still limits what it sees) and are sent once it is back.
import type { Redis } from 'ioredis'
import type { Clock } from './clock.js'

export const SYNC_INTERVAL_MS = 100
/** Distinct callers remembered per window; beyond it the oldest are forgotten (a flood of new callers can't grow memory). */
const MAX_KEYS = 100_000

export interface Spend {
  allowed: boolean
  limit: number
  remaining: number
  /** Seconds until the window ends (1 at least). */
  resetSeconds: number
}

export class RequestBudget {
  private window = -1
  /** This instance's counts in the window, sent to Redis or not. */
  private readonly local = new Map<string, number>()
  /** Counts not yet added to Redis. */
  private pending = new Map<string, number>()
  /** The cluster's totals as Redis last reported them (this instance's sent counts included). */
  private readonly shared = new Map<string, number>()
  private timer: NodeJS.Timeout | undefined
  private flushing: Promise<void> | undefined

  constructor(private readonly opts: {
    max: number
    windowMs: number
    clock: Clock
    redis?: Redis
    keyPrefix?: string
    onStoreError?: (err: Error) => void
  }) {}

  /** Counts one request of `key` and says whether it is within the budget. */
  spend(key: string): Spend {
    const now = this.opts.clock.now()
    const window = Math.floor(now / this.opts.windowMs)
    if (window !== this.window) this.startWindow(window)
    const count = (this.local.get(key) ?? 0) + 1
    this.local.set(key, count)
    if (this.local.size > MAX_KEYS) this.local.delete(this.local.keys().next().value as string)
    let total = count
    if (this.opts.redis) {
      const unsent = (this.pending.get(key) ?? 0) + 1
      this.pending.set(key, unsent)
      total = Math.max(count, (this.shared.get(key) ?? 0) + unsent)
      this.timer ??= setTimeout(() => { void this.flush() }, SYNC_INTERVAL_MS).unref()
    }
    return {
      allowed: total <= this.opts.max,
      limit: this.opts.max,
      remaining: Math.max(0, this.opts.max - total),
      resetSeconds: Math.max(1, Math.ceil(((window + 1) * this.opts.windowMs - now) / 1000)),
    }
  }

  private startWindow(window: number) {
    this.window = window
    this.local.clear()
    this.pending.clear()
    this.shared.clear()
  }

  /** Adds the pending counts to Redis in one pipeline and keeps the totals it answers. */
  flush(): Promise<void> {
    return (this.flushing ??= this.send().finally(() => { this.flushing = undefined }))
  }

  private async send(): Promise<void> {
    this.timer = undefined
    const redis = this.opts.redis
    if (!redis || this.pending.size === 0) return
    const batch = this.pending
    const window = this.window
    this.pending = new Map()
    const pipeline = redis.pipeline()
    for (const [key, n] of batch) {
      const redisKey = `${this.opts.keyPrefix ?? 'portcullis-budget:'}${window}:${key}`
      pipeline.incrby(redisKey, n).pexpire(redisKey, this.opts.windowMs + 5000)
    }
    try {
      const results = await pipeline.exec()
      if (window !== this.window) return
      let i = 0
      for (const key of batch.keys()) {
        const [err, total] = results?.[i] ?? [new Error('no reply')]
        i += 2
        if (err) throw err
        this.shared.set(key, Number(total))
        if (this.shared.size > MAX_KEYS) this.shared.delete(this.shared.keys().next().value as string)
      }
    } catch (err) {
      // Kept for the next attempt: counts are never lost, only late.
      if (window === this.window) {
        for (const [key, n] of batch) this.pending.set(key, (this.pending.get(key) ?? 0) + n)
        this.timer ??= setTimeout(() => { void this.flush() }, SYNC_INTERVAL_MS * 10).unref()
      }
      this.opts.onStoreError?.(err as Error)
    }
  }

  /** Stops the sync timer (the instance is closing). */
  close(): void {
    clearTimeout(this.timer)
    this.timer = undefined
  }
}
