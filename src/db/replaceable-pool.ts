// A postgres.js pool that can be replaced while in use. After a failover an
// instance may still reach the old primary, now read-only: its statements fail
// with SQLSTATE 25006 however often they are retried, because the pool's
// connections stay where they are. Replacing the pool ends those connections
// (letting what runs on them finish) and opens new ones, which, with a
// multi-host DATABASE_URL and target_session_attrs=read-write, find the
// writable primary. Everything else is the current pool itself.
import type { Sql } from 'postgres'

export interface ReplaceablePool {
  /** Always the current pool (a stable reference for Drizzle). */
  readonly client: Sql
  /** Ends the current pool and opens a new one; at most once per `minIntervalMs`. True when it did. */
  replace(): boolean
  end(): Promise<void>
}

export function replaceablePool(open: () => Sql, minIntervalMs = 5000): ReplaceablePool {
  let current = open()
  let replacedAt = 0
  // Bound methods of the current pool, made once per pool (this sits on every statement's path).
  let bound = new Map<PropertyKey, unknown>()
  const client = new Proxy(function pool() {} as unknown as Sql, {
    get(_target, prop) {
      let value = bound.get(prop)
      if (value === undefined) {
        value = Reflect.get(current, prop, current)
        if (typeof value === 'function') value = (value as (...a: unknown[]) => unknown).bind(current)
        bound.set(prop, value)
      }
      return value
    },
    apply(_target, _this, args) {
      return (current as unknown as (...a: unknown[]) => unknown)(...args)
    },
  })
  return {
    client,
    replace() {
      const now = Date.now()
      if (now - replacedAt < minIntervalMs) return false
      replacedAt = now
      const old = current
      current = open()
      // Drizzle set its own type handling on the first pool's options (jsonb and json passed
      // through untouched, dates as text): without it the new pool serialized every jsonb twice,
      // and API-key scopes were stored as a string (test/regressions/replaced-pool-double-encodes-jsonb).
      Object.assign(current.options.parsers, old.options.parsers)
      Object.assign(current.options.serializers, old.options.serializers)
      bound = new Map()
      void old.end({ timeout: 5 }).catch(() => {})
      return true
    },
    end: () => current.end({ timeout: 5 }),
  }
}
