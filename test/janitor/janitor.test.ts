// The janitor on a fake clock: what has expired goes, what is live stays, in
// every table it sweeps; a backlog larger than a batch goes in several short
// batches; while another instance holds the lock, a run does nothing.
// Regression (found in review): revoked and accepted invitations were never
// deleted, so one to someone who never signed up kept the address forever
// (revoked-and-accepted-invitations-kept-forever).
import t from 'tap'
import { count, sql, type SQL } from 'drizzle-orm'
import type { PgTable } from 'drizzle-orm/pg-core'
import type { App } from '../../src/app.js'
import {
  auditEvents, invitations, loginFailures, mailOutbox, mailTokens, mfaChallenges, platformAuditEvents, refreshTokens, sessions,
} from '../../src/db/schema.js'
import { JANITOR_BATCH } from '../../src/modules/janitor/janitor.js'
import { buildTestApp, FakeClock, FAST_ARGON2, sharedDatabase } from '../helpers/app.js'
import { bearer, login, register, STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'
import { mailedToken } from '../helpers/mail-tap.js'
import { expectStatus } from '../helpers/orgs.js'

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

t.test('revoked-and-accepted-invitations-kept-forever: every invitation goes a day past its expiry; its audit events stay', async (t) => {
  const clock = new FakeClock()
  const app = await buildTestApp(t, { clock, env: FAST_ARGON2 })
  const owner = await register(app)
  const url = `/api/v1/organizations/${owner.organization.id}/invitations`
  const invite = async (email: string) =>
    expectStatus(await app.inject({ method: 'POST', url, headers: bearer(owner.access_token), payload: { email, role: 'member' } }), 201, `invite ${email}`)
  const revoked = await invite(uniqueEmail('never-signed-up'))
  expectStatus(await app.inject({ method: 'DELETE', url: `${url}/${revoked.id}`, headers: bearer(owner.access_token) }), 204, 'revoke')
  const joiner = uniqueEmail('joined')
  await invite(joiner)
  const token = await mailedToken(app, joiner, 'invitation')
  expectStatus(await app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { email: joiner, password: STRONG_PASSWORD, invitation_token: token } }), 201, 'accepted')
  await invite(uniqueEmail('lapsed'))
  await app.audit.flush()
  const history = () => rowsIn(app, auditEvents, sql`${auditEvents.action} in ('invitation.created', 'invitation.revoked', 'invitation.accepted')`)
  const kept = await history()

  clock.advance(app.config.INVITATION_TTL * 1000 + 60_000)
  t.equal((await app.janitor.runOnce()).deleted.invitations, 0, 'expired, but kept for a day')
  clock.advance(DAY)
  t.equal((await app.janitor.runOnce()).deleted.invitations, 3, 'then revoked, accepted and lapsed go alike')
  t.equal(await rowsIn(app, invitations), 0, 'none left')
  t.equal(await history(), kept, `their audit events stay (${kept})`)
})

t.test('expired refresh tokens, mail tokens and 2FA challenges, old failed mail and platform audit events go; live ones stay', async (t) => {
  const clock = new FakeClock()
  const app = await buildTestApp(t, { clock, env: FAST_ARGON2 })
  await app.mailSender.stop()
  const user = await register(app)
  const userId = user.user.id as string
  const now = new Date(clock.now())
  const stale = new Date(clock.now() - 400 * DAY)
  const later = new Date(clock.now() + DAY)
  const [session] = await app.db.select({ id: sessions.id }).from(sessions).where(sql`${sessions.userId} = ${userId}`)
  await app.db.insert(refreshTokens).values({ id: 'rt_expired', sessionId: session!.id, tokenHash: 'rt-expired', createdAt: stale, expiresAt: stale })
  await app.db.insert(mailTokens).values([
    { id: 'mt_expired', purpose: 'password_reset', userId, email: user.email, tokenHash: 'mt-expired', createdAt: stale, expiresAt: stale },
    { id: 'mt_used', purpose: 'password_reset', userId, email: user.email, tokenHash: 'mt-used', createdAt: now, expiresAt: later, usedAt: new Date(clock.now() - 2 * DAY) },
    { id: 'mt_live', purpose: 'password_reset', userId, email: user.email, tokenHash: 'mt-live', createdAt: now, expiresAt: later },
  ])
  await app.db.insert(mfaChallenges).values([
    { tokenHash: 'expired', userId, passwordFingerprint: 'pf', createdAt: stale, expiresAt: stale },
    { tokenHash: 'live', userId, passwordFingerprint: 'pf', createdAt: now, expiresAt: later },
  ])
  await app.db.insert(mailOutbox).values([
    { id: 'mail_failed_old', kind: 'password_reset', recipient: user.email, state: 'failed', nextAttemptAt: stale, createdAt: stale },
    { id: 'mail_failed_new', kind: 'password_reset', recipient: user.email, state: 'failed', nextAttemptAt: now, createdAt: now },
  ])
  await app.db.insert(platformAuditEvents).values([
    { id: 'evt_old', action: 'user.disabled', targetType: 'user', targetId: userId, createdAt: stale },
    { id: 'evt_new', action: 'user.enabled', targetType: 'user', targetId: userId, createdAt: now },
  ])

  const run = await app.janitor.runOnce()
  t.match(run.deleted, { refresh_tokens: 1, mail_tokens: 2, mfa_challenges: 1, mail_outbox: 1, platform_audit_events: 1 }, 'the expired rows (and the used mail token)')
  t.same((await app.db.select({ id: mailTokens.id }).from(mailTokens).where(sql`${mailTokens.id} in ('mt_expired', 'mt_used', 'mt_live')`)).map((r) => r.id), ['mt_live'], 'the live mail token stays')
  t.equal(await rowsIn(app, mfaChallenges), 1, 'the live 2FA challenge stays')
  t.same((await app.db.select({ id: mailOutbox.id }).from(mailOutbox).where(sql`${mailOutbox.state} = 'failed'`)).map((r) => r.id), ['mail_failed_new'], 'recent failed mail stays')
  t.same((await app.db.select({ id: platformAuditEvents.id }).from(platformAuditEvents)).map((r) => r.id), ['evt_new'], 'the recent platform event stays')
  t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: user.refresh_token } })).statusCode, 200, 'the live refresh token works')
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
    { tokenHash: 'used', userId: user.user.id, passwordFingerprint: 'pf', createdAt: now, expiresAt: new Date(clock.now() + 60_000), usedAt: now },
    { tokenHash: 'live', userId: user.user.id, passwordFingerprint: 'pf', createdAt: now, expiresAt: new Date(clock.now() + 60_000) },
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
