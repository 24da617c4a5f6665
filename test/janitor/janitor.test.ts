// The janitor on a fake clock: what has expired goes, what is live stays; a
// backlog larger than a batch goes in several short batches; while another
// instance holds the lock, a run does nothing.
import t from 'tap'
import { count, sql, type SQL } from 'drizzle-orm'
import type { PgTable } from 'drizzle-orm/pg-core'
import type { App } from '../../src/app.js'
import { auditEvents, invitations, loginFailures, mailOutbox, mfaChallenges, sessions } from '../../src/db/schema.js'
import { JANITOR_BATCH } from '../../src/modules/janitor/janitor.js'
import { buildTestApp, FakeClock, FAST_ARGON2, sharedDatabase } from '../helpers/app.js'
import { bearer, login, register, uniqueEmail } from '../helpers/api.js'

const DAY = 86_400_000
const rowsIn = async (app: App, table: PgTable, where?: SQL) => (await app.db.select({ n: count() }).from(table).where(where))[0]!.n

t.test('expired rows go, live ones stay', async (t) => {
  const clock = new FakeClock()
  const app = await buildTestApp(t, { clock, env: { ...FAST_ARGON2, LOCKOUT_MAX_ATTEMPTS: '3' } })
  // Then: an account with sessions, a failed login, an invitation, mail, audit events.
  const old = await register(app)
  await login(app, old.email, 'wrong-password-here')
  await app.inject({ method: 'POST', url: `/api/v1/organizations/${old.organization.id}/invitations`, headers: bearer(old.access_token), payload: { email: uniqueEmail(), role: 'member' } })
  await app.audit.flush()
  await new Promise((r) => setTimeout(r, 300)) // the verification and invitation mails leave the outbox

  // Thirteen months later: a new account, used now.
  clock.advance(400 * DAY)
  const fresh = await register(app)
  await login(app, fresh.email, 'wrong-password-here')
  await app.inject({ method: 'POST', url: `/api/v1/organizations/${fresh.organization.id}/invitations`, headers: bearer(fresh.access_token), payload: { email: uniqueEmail(), role: 'member' } })
  await app.audit.flush()

  const run = await app.janitor.runOnce()
  t.equal(run.skipped, false)
  t.ok(run.deleted.sessions! >= 1, `expired sessions deleted (${run.deleted.sessions})`)
  t.equal(run.deleted.login_failures, 1, 'the stale failure counter')
  t.equal(run.deleted.invitations, 1, 'the long-expired invitation')
  t.ok(run.deleted.mail_outbox! >= 2, `delivered mail past MAIL_RETENTION_DAYS (${run.deleted.mail_outbox})`)
  t.ok(run.deleted.audit_events! >= 1, `audit events past AUDIT_RETENTION_DAYS (${run.deleted.audit_events})`)

  t.equal((await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(fresh.access_token) })).statusCode, 200, 'the live session works')
  t.equal(await rowsIn(app, sessions, sql`${sessions.userId} = ${fresh.user.id}`), 1, 'and is kept')
  t.equal(await rowsIn(app, loginFailures), 1, "the live failure counter is kept")
  t.equal(await rowsIn(app, invitations), 1, 'the pending invitation is kept')
  t.ok(await rowsIn(app, auditEvents) >= 1, 'recent audit events are kept')
  t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: fresh.refresh_token } })).statusCode, 200, 'the live refresh token works')
  const again = await app.janitor.runOnce()
  t.same(Object.values(again.deleted).reduce((a, b) => a + b, 0), 0, 'a second run finds nothing')
})

t.test('a backlog larger than a batch goes in several batches; used 2FA challenges go', async (t) => {
  const clock = new FakeClock()
  const app = await buildTestApp(t, { clock, env: FAST_ARGON2 })
  const now = new Date(clock.now())
  const stale = new Date(clock.now() - 400 * DAY)
  const backlog = Math.floor(JANITOR_BATCH * 2.5)
  for (let i = 0; i < backlog; i += 500) {
    await app.db.insert(loginFailures).values(Array.from({ length: Math.min(500, backlog - i) }, (_, j) => ({ emailKey: `stale-${i + j}`, failures: 1, windowStartedAt: stale })))
  }
  const user = await register(app)
  await app.db.insert(mfaChallenges).values([
    { tokenHash: 'used', userId: user.user.id, createdAt: now, expiresAt: new Date(clock.now() + 60_000), usedAt: now },
    { tokenHash: 'live', userId: user.user.id, createdAt: now, expiresAt: new Date(clock.now() + 60_000) },
  ])
  await app.db.insert(mailOutbox).values({ id: 'mail_old_pending', kind: 'password_changed', recipient: 'x@example.com', state: 'pending', nextAttemptAt: stale, createdAt: stale })
  await app.mailSender.stop() // the pending row stays pending: only delivered mail is deleted

  const run = await app.janitor.runOnce()
  t.equal(run.deleted.login_failures, backlog, `all ${backlog} stale counters`)
  t.ok(run.batches >= 3 + 8, `in batches of ${JANITOR_BATCH} (${run.batches} batches in all)`)
  t.equal(await rowsIn(app, mfaChallenges), 1, 'the used challenge went, the live one stayed')
  t.equal(await rowsIn(app, mailOutbox, sql`${mailOutbox.id} = 'mail_old_pending'`), 1, 'undelivered mail is never deleted')
})

t.test('one instance at a time: while the lock is held elsewhere, a run does nothing', async (t) => {
  const shared = await sharedDatabase(t)
  const clock = new FakeClock()
  const a = await buildTestApp(t, { ...shared, clock, env: FAST_ARGON2 })
  const b = await buildTestApp(t, { ...shared, clock, env: FAST_ARGON2 })
  await a.db.insert(loginFailures).values({ emailKey: 'stale', failures: 1, windowStartedAt: new Date(clock.now() - 400 * DAY) })
  let released!: () => void
  const hold = new Promise<void>((r) => { released = r })
  let locked!: () => void
  const holding = new Promise<void>((r) => { locked = r })
  const holder = a.db.transaction(async (tx) => {
    await tx.execute(sql`select pg_advisory_xact_lock(${0x706a_616e})`)
    locked()
    await hold
  })
  await holding
  if (!shared.database) {
    // PostgreSQL: the other instance's pool is another connection, and sees the lock.
    const run = await b.janitor.runOnce()
    t.equal(run.skipped, true, 'skipped while another instance holds the lock')
    t.equal(await rowsIn(b, loginFailures), 1, 'nothing deleted')
  } else {
    t.comment('one PGlite connection serves both instances here: the lock is shown on PostgreSQL (TEST_DATABASE_URL)')
  }
  released()
  await holder
  const run = await b.janitor.runOnce()
  t.equal(run.skipped, false)
  t.equal(run.deleted.login_failures, 1, 'the lock released: deleted')
})
