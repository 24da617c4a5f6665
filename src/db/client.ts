// One Database type for the three runtime modes: embedded PGlite on disk,
// PGlite in memory, and PostgreSQL through postgres.js.
import { join } from 'node:path'
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core'
import * as schema from './schema.js'
import { serverDeadline, withDeadline, withinDeadline } from './deadline.js'
import { replaceablePool } from './replaceable-pool.js'
import type { Config } from '../config.js'

export type Schema = typeof schema
export type Database = PgDatabase<PgQueryResultHKT, Schema>
/** The handle a transaction callback receives; repositories accept either. */
export type Tx = Parameters<Parameters<Database['transaction']>[0]>[0]
export type Queryable = Database | Tx

export type NotificationHandler = (payload: string) => void

export interface DatabaseHandle {
  readonly db: Database
  readonly mode: Config['databaseMode']
  /**
   * Subscribes to a LISTEN/NOTIFY channel; resolves, once listening, to the unsubscribe function.
   * `onRelisten` runs whenever the listening connection was lost and LISTEN runs again: what was
   * sent in between never arrives.
   */
  listen(channel: string, onPayload: NotificationHandler, onRelisten?: () => void): Promise<() => Promise<void>>
  notify(channel: string, payload: string): Promise<void>
  /** Runs the migrations under an advisory lock (own connection on PostgreSQL). */
  migrate(): Promise<void>
  /**
   * The database answered that it is read-only (SQLSTATE 25006): after a failover, the old primary.
   * PostgreSQL: the pool is replaced (at most every 5 s), to find the writable primary. True when it was.
   */
  reconnect(): boolean
  close(): Promise<void>
}

export const MIGRATIONS_FOLDER = join(import.meta.dirname, '..', '..', 'drizzle')
export const MIGRATION_LOCK_KEY = 7_301_944_211 // any constant shared by every instance

export async function openDatabase(config: Config): Promise<DatabaseHandle> {
  return config.databaseMode === 'postgres' ? openPostgres(config) : openPglite(config)
}

async function openPglite(config: Config): Promise<DatabaseHandle> {
  const { PGlite } = await import('@electric-sql/pglite')
  const { drizzle } = await import('drizzle-orm/pglite')
  const { migrate } = await import('drizzle-orm/pglite/migrator')
  const client = config.databaseMode === 'memory'
    ? new PGlite()
    : new PGlite(join(config.DATA_DIR, 'pglite'))
  const db = drizzle(client, { schema }) as unknown as Database
  return {
    db,
    mode: config.databaseMode,
    async listen(channel, onPayload) {
      const unsubscribe = await client.listen(channel, onPayload)
      return async () => { await unsubscribe() }
    },
    async notify(channel, payload) {
      await client.query('select pg_notify($1, $2)', [channel, payload])
    },
    reconnect: () => false, // one embedded database: there is no other to find
    async migrate() {
      // PGlite is single-process; the lock keeps the code path identical to PostgreSQL.
      await client.query(`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`)
      try {
        await migrate(db as never, { migrationsFolder: MIGRATIONS_FOLDER })
      } finally {
        await client.query(`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`)
      }
    },
    async close() {
      if (!client.closed) await client.close()
    },
  }
}

async function openPostgres(config: Config): Promise<DatabaseHandle> {
  const { default: postgres } = await import('postgres')
  const { drizzle } = await import('drizzle-orm/postgres-js')
  const { migrate } = await import('drizzle-orm/postgres-js/migrator')
  const url = config.DATABASE_URL
  const options = {
    onnotice: () => {},
    // While the database is down, fail fast (503) instead of queueing behind postgres.js's
    // default reconnect backoff (3^n/100 s, up to 20 s); retry quickly once it is back.
    connect_timeout: 1,
    backoff: () => 0.2,
    // No catalog query of array types on each new connection: its promise is dropped by postgres.js
    // 3.4, so a connection terminated during it (an administrator's pg_terminate_backend, a
    // failover) rejected it unhandled and killed the process (porsager/postgres#1192, #1223; test
    // database-unavailable "sessions terminated under load"). Nothing here sends or reads
    // PostgreSQL arrays (scopes are jsonb; Drizzle sends a list as separate parameters).
    fetch_types: false,
    connection: { application_name: 'portcullis' },
  }
  const pool = replaceablePool(() => postgres(url, {
    ...options, max: config.DATABASE_POOL_SIZE, idle_timeout: 60,
    // For postgres.js's own statements too (BEGIN, COMMIT, SAVEPOINT): prepared, behind a pooler
    // without prepared-statement support they failed with 26000, the transaction aborted, and its
    // COMMIT answered ROLLBACK without an error: writes lost while the API answered 201.
    prepare: config.DATABASE_PREPARED_STATEMENTS,
    connection: { ...options.connection, ...(config.DATABASE_SERVER_TIMEOUT ? serverDeadline(config.DATABASE_QUERY_TIMEOUT) : {}) },
  }))
  const db = drizzle(withDeadline(pool.client, config.DATABASE_QUERY_TIMEOUT, config.DATABASE_PREPARED_STATEMENTS), { schema }) as unknown as Database
  // LISTEN on a connection of its own, apart from the pool: a pool can be replaced, and a
  // transaction pooler in front of the pool would never deliver a notification.
  const listener = postgres(config.DATABASE_LISTEN_URL || url, { ...options, max: 1 })
  return {
    db,
    mode: 'postgres',
    async listen(channel, onPayload, onRelisten) {
      let listening = false
      // postgres.js runs LISTEN again by itself after a reconnect, and calls this each time.
      const { unlisten } = await listener.listen(channel, onPayload, () => {
        if (listening) onRelisten?.()
        listening = true
      })
      return async () => { await unlisten() }
    },
    async notify(channel, payload) {
      // Under the deadline too: a logout must not wait on a stalled NOTIFY (it is logged, and the resync still carries it).
      await withinDeadline(pool.client.notify(channel, payload), config.DATABASE_QUERY_TIMEOUT, 'NOTIFY')
    },
    reconnect: () => pool.replace(),
    async migrate() {
      // One transaction takes the lock and runs every migration (Drizzle's own transaction becomes
      // this one). A session lock (pg_advisory_lock) taken through a transaction pooler stayed on
      // whichever server connection ran it, its unlock ran on another, and the next instance to
      // start waited for it forever (test/reliability/pgbouncer-suites); a transaction's lock is
      // released by its COMMIT, pooled or not.
      const single = postgres(url, { ...options, max: 1, prepare: false })
      try {
        await single.begin(async (tx) => {
          // No statement or lock timeout (a role's, as the README suggests behind PgBouncer): waiting
          // for another instance's migrations, or a long migration, must not stop this instance starting.
          await tx`set local statement_timeout = 0`
          await tx`set local lock_timeout = 0`
          await tx`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`
          // A migration's own table locks, though, are waited for a bounded time: an ALTER queued
          // behind a long transaction would queue every query of that table behind it.
          await tx`set local lock_timeout = '10s'`
          const inThisTransaction = new Proxy(tx, {
            get: (target, prop, receiver) => prop === 'begin' ? (body: (sql: typeof tx) => unknown) => body(target)
              : prop === 'options' ? single.options // the parsers Drizzle reads; a transaction's client has none
                : Reflect.get(target, prop, receiver),
          })
          await migrate(drizzle(inThisTransaction as unknown as typeof single), { migrationsFolder: MIGRATIONS_FOLDER })
        })
      } finally {
        await single.end({ timeout: 5 })
      }
    },
    async close() {
      await Promise.all([pool.end(), listener.end({ timeout: 5 })])
    },
  }
}
