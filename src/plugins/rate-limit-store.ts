// The in-process counter store for @fastify/rate-limit, fixed for parallel requests.
//
// @fastify/rate-limit 11.2's LocalStore answers every increment with the same
// mutable counter object, and the plugin reads it only after an `await`: requests
// arriving together all read the count the last of them reached. A burst one
// request over a limit was refused whole, the first requests included (12
// parallel password-reset requests against a limit of 4 got 12 429s;
// test/regressions/parallel-burst-refused-whole). This store hands each request
// a copy of the count its own increment reached. Redis's store already does.
import { createRequire } from 'node:module'

interface Count { current: number; ttl: number }
type Answer = (err: Error | null, count: Count | null) => void
interface CounterStore {
  incr(key: string, answer: Answer, timeWindow: number, max: number): void
  read(key: string, answer: Answer, timeWindow: number, max: number): void
}
type LocalStoreClass = new (continueExceeding: boolean, exponentialBackoff: boolean, cache?: number) => CounterStore

const LocalStore = createRequire(import.meta.url)('@fastify/rate-limit/store/LocalStore') as LocalStoreClass

interface StoreOptions { continueExceeding?: boolean; exponentialBackoff?: boolean; cache?: number }

export class SnapshotLocalStore {
  private readonly counters: CounterStore

  constructor(private readonly options: StoreOptions) {
    this.counters = new LocalStore(options.continueExceeding ?? false, options.exponentialBackoff ?? false, options.cache)
  }

  incr(key: string, answer: Answer, timeWindow: number, max: number): void {
    this.counters.incr(key, (err, count) => answer(err, count && { current: count.current, ttl: count.ttl }), timeWindow, max)
  }

  read(key: string, answer: Answer, timeWindow: number, max: number): void {
    this.counters.read(key, answer, timeWindow, max) // already a fresh object
  }

  /** A route's own counters (the plugin asks for one per route with its own limit). */
  child(routeOptions: StoreOptions): SnapshotLocalStore {
    return new SnapshotLocalStore({ ...this.options, ...routeOptions })
  }
}
