// Builds the app for one test file on a fresh database: in-memory PGlite by
// default, or a brand-new PostgreSQL database when TEST_DATABASE_URL is set.
import { randomBytes } from 'node:crypto'
import { tapMail } from './mail-tap.js'
import postgres from 'postgres'
import type { Test } from 'tap'
import { buildApp, type BuildOptions } from '../../src/app.js'
import { loadConfig, type Config } from '../../src/config.js'
import type { Clock } from '../../src/lib/clock.js'
import { openDatabase } from '../../src/db/client.js'

export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL

/** Manually advanced time, starting at the real now so tokens stay valid. */
export class FakeClock implements Clock {
  constructor(private t = Date.now()) {}
  now() { return this.t }
  advance(ms: number) { this.t += ms }
  set(ms: number) { this.t = ms }
}

/** Cheap argon2 parameters for tests that do not examine hashing cost. */
export const FAST_ARGON2 = { ARGON2_MEMORY_KIB: '4096', ARGON2_TIME_COST: '1' }

/** A fresh PostgreSQL database (dropped when the test ends), or memory:// without TEST_DATABASE_URL. */
export async function freshDatabaseUrl(t: Test): Promise<string> {
  if (!TEST_DATABASE_URL) return 'memory://'
  const name = `pc_test_${randomBytes(6).toString('hex')}`
  const admin = postgres(TEST_DATABASE_URL, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database ${name}`)
  await admin.end()
  t.teardown(async () => {
    const a = postgres(TEST_DATABASE_URL, { max: 1, onnotice: () => {} })
    await a.unsafe(`drop database if exists ${name} with (force)`)
    await a.end()
  })
  const url = new URL(TEST_DATABASE_URL)
  url.pathname = `/${name}`
  return url.toString()
}

export interface TestAppOptions extends BuildOptions {
  env?: Record<string, string>
  /** Reuse a database (second instance on the same data). */
  databaseUrl?: string
  secretKey?: string
  /** Adds routes or hooks before the app is ready (e.g. a route that fails on purpose). */
  beforeReady?: (app: Awaited<ReturnType<typeof buildApp>>) => void | Promise<void>
}

/** Per-IP limits out of the way: every inject() comes from 127.0.0.1. Rate-limit tests set their own. */
export const RELAXED_LIMITS = {
  RATE_LIMIT_LOGIN: '100000', RATE_LIMIT_REGISTER: '100000', RATE_LIMIT_REFRESH: '100000',
  RATE_LIMIT_VERIFY_2FA: '100000', RATE_LIMIT_GLOBAL: '1000000', RATE_LIMIT_AUTH_FAILURES: '1000000',
  RATE_LIMIT_PASSWORD_RESET: '100000', RATE_LIMIT_MAIL_PER_EMAIL: '100000', RATE_LIMIT_INVITATIONS: '100000',
}

export function testConfig(env: Record<string, string>): Config {
  return loadConfig({ LOG_LEVEL: 'silent', SECRET_KEY: randomBytes(32).toString('base64'), ...RELAXED_LIMITS, ...env })
}

export async function buildTestApp(t: Test, options: TestAppOptions = {}) {
  const databaseUrl = options.databaseUrl ?? await freshDatabaseUrl(t)
  const config = testConfig({
    ...throughPooler(databaseUrl),
    ...(options.secretKey ? { SECRET_KEY: options.secretKey } : {}),
    ...options.env,
  })
  const app = await buildApp(config, options)
  t.teardown(() => app.close())
  await options.beforeReady?.(app)
  await app.ready()
  tapMail(app)
  return app
}

/**
 * Set by test/reliability/pgbouncer-suites.test.ts, which runs the PostgreSQL suites of sessions,
 * keys and revocation again behind a real PgBouncer in transaction mode: every app's queries then go
 * through the pooler, configured as the README says (nothing prepared, no statement_timeout
 * parameter, LISTEN straight to the database). The tests' own connections stay direct.
 */
export const TEST_PGBOUNCER_URL = process.env.TEST_PGBOUNCER_URL

function throughPooler(databaseUrl: string): Record<string, string> {
  if (!TEST_PGBOUNCER_URL || !/^postgres(ql)?:/.test(databaseUrl)) return { DATABASE_URL: databaseUrl }
  const pooled = new URL(databaseUrl)
  const pooler = new URL(TEST_PGBOUNCER_URL)
  pooled.hostname = pooler.hostname
  pooled.port = pooler.port
  return {
    DATABASE_URL: pooled.toString(), DATABASE_LISTEN_URL: databaseUrl,
    DATABASE_PREPARED_STATEMENTS: 'false', DATABASE_SERVER_TIMEOUT: 'false',
  }
}

/**
 * Options that make several app instances share one database and SECRET_KEY, as
 * instances behind a load balancer do: one PostgreSQL database (each instance with
 * its own pool), or one in-memory PGlite handle (NOTIFY is delivered in-process).
 */
export async function sharedDatabase(t: Test): Promise<Pick<TestAppOptions, 'database' | 'databaseUrl' | 'secretKey'>> {
  const secretKey = randomBytes(32).toString('base64')
  const databaseUrl = await freshDatabaseUrl(t)
  if (databaseUrl !== 'memory://') return { databaseUrl, secretKey }
  const database = await openDatabase(testConfig({ DATABASE_URL: 'memory://', SECRET_KEY: secretKey }))
  t.teardown(() => database.close())
  return { database, secretKey }
}

/** Polls `check` until it is true or `ms` pass; returns how long it took, or -1. */
export async function within(ms: number, check: () => Promise<boolean> | boolean): Promise<number> {
  const start = Date.now()
  while (Date.now() - start <= ms) {
    if (await check()) return Date.now() - start
    await new Promise((r) => setTimeout(r, 10))
  }
  return -1
}
