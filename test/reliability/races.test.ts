// Races between concurrent requests, on two instances sharing one database
// (real PostgreSQL with TEST_DATABASE_URL, else one in-memory PGlite; Redis
// with TEST_REDIS_URL). The invariants hold on both:
//   - API-key revocation vs use: uses are 200 or 401, never 5xx; once the
//     DELETE has answered, every later use on that instance is 401 (on the
//     other within 1 s), and it stays 401;
//   - one email registered at once on both instances: exactly one user;
//   - one address invited at once: one invitation; one invitation accepted at
//     once: one membership row, the rest INVALID_LINK;
//   - one API key rotated at once: every successor works, the old key ends up
//     revoked (or expiring at the end of its grace), nothing in between;
//   - a cache fill that read the database before a revocation or role change
//     does not outlive it (made deterministic by holding the read back).
// Known defects are reproduced in subtests marked todo.
import t, { type Test } from 'tap'
import { sql, type SQL } from 'drizzle-orm'
import type { LightMyRequestResponse } from 'fastify'
import type { App } from '../../src/app.js'
import { buildTestApp, FAST_ARGON2, sharedDatabase, TEST_DATABASE_URL, TEST_REDIS_URL, testConfig, within } from '../helpers/app.js'
import { bearer, register, STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'
import { mailedToken, tapMail } from '../helpers/mail-tap.js'
import { addMember } from '../helpers/orgs.js'
import { after, sleep } from './infra.js'

const ENV: Record<string, string> = { ...FAST_ARGON2, ...(TEST_REDIS_URL ? { REDIS_URL: TEST_REDIS_URL } : {}) }
const PROPAGATION_MS = 1000

const shared = await sharedDatabase(t)
const A = await buildTestApp(t, { ...shared, env: ENV })
const B = await buildTestApp(t, { ...shared, env: ENV })
const instances: [App, string][] = [[A, 'A'], [B, 'B']]
tapMail(A)
tapMail(B)
t.comment(`database: ${TEST_DATABASE_URL ? 'PostgreSQL' : 'shared in-memory PGlite'}${TEST_REDIS_URL ? ', Redis' : ''}`)

/** Rows of a raw query on either driver (postgres.js returns an array, PGlite `{ rows }`). */
async function rows<T>(query: SQL): Promise<T[]> {
  const result = await A.db.execute(query)
  return (Array.isArray(result) ? result : (result as unknown as { rows: T[] }).rows) as T[]
}

const verify = (app: App, headers: Record<string, string>) => app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers })
const statuses = (responses: LightMyRequestResponse[]) => {
  const out: Record<number, number> = {}
  for (const r of responses) out[r.statusCode] = (out[r.statusCode] ?? 0) + 1
  return out
}

const owner = await register(A, { company_name: 'Races' })
const ownerAuth = bearer(owner.access_token)

async function createKey() {
  const res = await A.inject({ method: 'POST', url: '/api/v1/api-keys', headers: ownerAuth, payload: { name: 'race', scopes: ['api_keys:read'] } })
  if (res.statusCode !== 201) throw new Error(`create key: ${res.statusCode} ${res.body}`)
  return res.json() as { id: string; key: string }
}

interface Use { app: string; startedAt: number; status: number }

/**
 * 50 uses of a fresh key, half on A and half on B, spread over ~25 ms, with a
 * DELETE on A in the middle of them; then later uses on both. Returns what broke.
 */
async function revokeWhileUsed(round: number, cachedOnB: boolean) {
  const problems: string[] = []
  const { id, key } = await createKey()
  const headers = { 'x-api-key': key }
  if ((await verify(A, headers)).statusCode !== 200) throw new Error('the new key does not verify')
  if (cachedOnB && (await verify(B, headers)).statusCode !== 200) throw new Error('the new key does not verify on B')
  const one = async (app: App, name: string, delay: number): Promise<Use> => {
    await sleep(delay)
    const startedAt = performance.now()
    return { app: name, startedAt, status: (await verify(app, headers)).statusCode }
  }
  const usesDone = Promise.all(Array.from({ length: 50 }, (_, i) => one(i % 2 ? B : A, i % 2 ? 'B' : 'A', i % 25)))
  await sleep(8)
  const del = await A.inject({ method: 'DELETE', url: `/api/v1/api-keys/${id}`, headers: ownerAuth })
  const deletedAt = performance.now()
  if (del.statusCode !== 204) problems.push(`round ${round}: DELETE ${del.statusCode} ${del.body}`)
  for (const u of await usesDone) {
    if (u.status !== 200 && u.status !== 401) problems.push(`round ${round}: a use on ${u.app} answered ${u.status}`)
    const deadline = u.app === 'A' ? deletedAt : deletedAt + PROPAGATION_MS
    if (u.startedAt > deadline && u.status !== 401) {
      problems.push(`round ${round}: a use on ${u.app} started ${Math.round(u.startedAt - deletedAt)} ms after the DELETE answered ${u.status}`)
    }
  }
  // Later uses, on both instances, once the revocation has had its second to propagate.
  if (await within(PROPAGATION_MS, async () => (await verify(B, headers)).statusCode === 401) < 0) {
    problems.push(`round ${round}: B still accepts the key ${PROPAGATION_MS} ms after the DELETE`)
  }
  for (const [app, name] of instances) {
    const later = await Promise.all(Array.from({ length: 5 }, () => verify(app, headers)))
    if (later.some((r) => r.statusCode !== 401)) problems.push(`round ${round}: later uses on ${name}: ${JSON.stringify(statuses(later))}`)
  }
  return problems
}

t.test('API-key revocation vs 50 concurrent uses', async (t) => {
  const ROUNDS = 10
  const cached: string[] = []
  for (let round = 1; round <= ROUNDS; round++) cached.push(...await revokeWhileUsed(round, true))
  t.same(cached, [], `key cached on both instances, ${ROUNDS} rounds of 50 uses: only 200 or 401; 401 once the DELETE `
    + `answered (on B within ${PROPAGATION_MS} ms), and later`)

  // B's first lookups of the key race the revocation: a row read just before it can be cached just after
  // the eviction. Rare here (about one round in 300 on PostgreSQL); made deterministic in the last test of this file.
  const uncached: string[] = []
  for (let round = 1; round <= ROUNDS; round++) uncached.push(...await revokeWhileUsed(round, false))
  t.test(`key not yet cached on B, ${ROUNDS} rounds: the same`, async (t) => {
    t.same(uncached, [], 'only 200 or 401; 401 once the DELETE answered, and later')
  })
})

t.test('one email registered at once on both instances: exactly one account', async (t) => {
  for (let round = 1; round <= 5; round++) {
    const email = uniqueEmail('race')
    // The same address in different cases: uniqueness is case-insensitive.
    const spellings = [email, email.toUpperCase(), ` ${email}`, email.replace(/^./, (c) => c.toUpperCase())]
    const responses = await Promise.all(Array.from({ length: 10 }, (_, i) => instances[i % 2]![0].inject({
      method: 'POST', url: '/api/v1/auth/register', payload: { email: spellings[i % spellings.length], password: STRONG_PASSWORD },
    })))
    t.same(statuses(responses), { 201: 1, 409: 9 }, `round ${round}: one 201, nine 409`)
    t.same([...new Set(responses.filter((r) => r.statusCode === 409).map((r) => r.json().error.code))], ['EMAIL_TAKEN'], 'the 409s are EMAIL_TAKEN')
    const found = await rows<{ n: number; orgs: number }>(sql`
      select count(*)::int as n,
             (select count(*)::int from memberships m join users u2 on u2.id = m.user_id where lower(u2.email) = ${email}) as orgs
        from users u where lower(u.email) = ${email}`)
    t.same(found[0], { n: 1, orgs: 1 }, 'one user row, with one organization')
  }
})

t.test('one address invited at once, one invitation accepted at once: one 201 and one 200, one row', async (t) => {
  for (let round = 1; round <= 5; round++) {
    const person = await register(B)
    const invited = await Promise.all(Array.from({ length: 10 }, (_, i) => instances[i % 2]![0].inject({
      method: 'POST', url: `/api/v1/organizations/${owner.organization.id}/invitations`, headers: ownerAuth,
      payload: { email: person.email, role: i % 3 ? 'member' : 'admin' },
    })))
    t.same(statuses(invited), { 201: 1, 409: 9 }, `round ${round}: one invitation, nine 409 (one pending per address)`)
    // Either instance's sender may deliver a mail: look at both.
    const verification = await mailedToken([A, B], person.email, 'email_verification')
    t.equal((await A.inject({ method: 'POST', url: '/api/v1/auth/email/verify', payload: { token: verification } })).statusCode, 204, 'address verified')
    const token = await mailedToken([A, B], person.email, 'invitation')
    const accepted = await Promise.all(Array.from({ length: 10 }, (_, i) => instances[i % 2]![0].inject({
      method: 'POST', url: '/api/v1/invitations/accept', headers: bearer(person.access_token), payload: { token },
    })))
    t.equal(accepted.filter((r) => r.statusCode === 200).length, 1, `round ${round}: one acceptance`)
    // The others lost the token (INVALID_LINK), or looked after the winner committed (CONFLICT: already a member).
    t.same(accepted.filter((r) => r.statusCode !== 200).filter((r) => !['INVALID_LINK', 'CONFLICT'].includes(r.json().error?.code)).map((r) => r.body), [],
      'the rest INVALID_LINK or CONFLICT')
    const found = await rows<{ n: number }>(sql`
      select count(*)::int as n from memberships where org_id = ${owner.organization.id} and user_id = ${person.user.id}`)
    t.equal(found[0]!.n, 1, 'one membership row')
    // The new member's view agrees on both instances.
    const login = await A.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: person.email, password: STRONG_PASSWORD, org_id: owner.organization.id } })
    t.equal(login.statusCode, 200, 'the member can sign in to the organization')
  }
})

async function rotateConcurrently(t: Test, graceSeconds: number) {
  const old = await createKey()
  const oldHeaders = { 'x-api-key': old.key }
  for (const [app] of instances) t.equal((await verify(app, oldHeaders)).statusCode, 200, 'the key works (and is cached) before')
  const started = Date.now()
  const responses = await Promise.all(Array.from({ length: 10 }, (_, i) => instances[i % 2]![0].inject({
    method: 'POST', url: `/api/v1/api-keys/${old.id}/rotate`, headers: ownerAuth, payload: { grace_seconds: graceSeconds },
  })))
  const tally = statuses(responses)
  t.comment(`grace ${graceSeconds} s: ten concurrent rotations answered ${JSON.stringify(tally)}`)
  t.same(responses.filter((r) => r.statusCode !== 201 && r.statusCode !== 409).map((r) => `${r.statusCode} ${r.body}`), [], 'only 201 or 409')
  const successors = responses.filter((r) => r.statusCode === 201).map((r) => r.json() as { id: string; key: string })
  t.ok(successors.length >= 1, 'at least one rotation succeeded')

  const family = await rows<{ id: string; rotated_from_id: string | null; revoked_at: unknown; expires_at: unknown }>(sql`
    select id, rotated_from_id, revoked_at, expires_at from api_keys where id = ${old.id} or rotated_from_id = ${old.id}`)
  const children = family.filter((k) => k.rotated_from_id === old.id)
  t.same(children.map((k) => k.id).sort(), successors.map((k) => k.id).sort(), 'the successors in the database are exactly those answered 201')
  t.ok(children.every((k) => k.revoked_at === null), 'no successor is revoked')
  for (const s of successors) {
    for (const [app, name] of instances) t.equal((await verify(app, { 'x-api-key': s.key })).statusCode, 200, `successor ${s.id} works on ${name}`)
  }
  const oldRow = family.find((k) => k.id === old.id)!
  if (graceSeconds === 0) {
    t.ok(oldRow.revoked_at !== null, 'the old key is revoked')
    t.equal(oldRow.expires_at, null, 'and not re-dated')
    for (const [app, name] of instances) {
      const ms = await within(PROPAGATION_MS, async () => (await verify(app, oldHeaders)).statusCode === 401)
      t.ok(ms >= 0, `the old key is refused on ${name} (within ${PROPAGATION_MS} ms: ${ms} ms)`)
    }
  } else {
    t.equal(oldRow.revoked_at, null, 'the old key is not revoked during its grace')
    const expiresAt = new Date(String(oldRow.expires_at)).getTime()
    t.ok(expiresAt > Date.now() && expiresAt <= started + graceSeconds * 1000 + 2000, 'it expires at the end of one grace period, not later')
    for (const [app, name] of instances) t.equal((await verify(app, oldHeaders)).statusCode, 200, `the old key still works on ${name} (grace)`)
  }
  return successors.length
}

t.test('one API key rotated ten times at once (grace 0)', async (t) => {
  const forks = await rotateConcurrently(t, 0)
  // PGlite runs one statement at a time, so the fork shows on PostgreSQL only.
  t.test('exactly one rotation succeeds; the others are 409', async (t) => {
    t.equal(forks, 1, `live successors of one key: ${forks}`)
  })
})

t.test('one API key rotated ten times at once (grace 60 s)', async (t) => {
  await rotateConcurrently(t, 60)
})

/** A gate: `hold()` waits until `open()`; `reached()` resolves once something waits at it (fails after 5 s). */
function gate() {
  let open!: () => void
  let reach!: () => void
  const opened = new Promise<void>((r) => { open = r })
  const reachedP = new Promise<void>((r) => { reach = r })
  const reached = () => Promise.race([reachedP, after(5000, 'late').then((late) => { if (late) throw new Error('nothing reached the gate: is the mock applied?') })])
  return { open, reached, hold: () => { reach(); return opened } }
}

t.test('cache fills that race an invalidation (the database read held back until the change is done)', async (t) => {
  type Repo = Record<string, (...args: any[]) => Promise<any>>
  const keysRepo: Repo = await import('../../src/modules/api-keys/repository.js')
  const orgsRepo: Repo = await import('../../src/modules/organizations/repository.js')
  const holds = new Map<string, ReturnType<typeof gate>>()
  // The same repositories, except that a lookup someone armed a gate for waits there after reading.
  const { buildApp } = await t.mockImport<typeof import('../../src/app.js')>('../../src/app.js', {
    // Keyed by the source file (.ts): that is what the module graph resolves to under tsx.
    '../../src/modules/api-keys/repository.ts': {
      ...keysRepo,
      async findApiKeyByHash(db: unknown, hash: string) {
        const row = await keysRepo.findApiKeyByHash!(db, hash)
        await holds.get(hash)?.hold()
        return row
      },
    },
    '../../src/modules/organizations/repository.ts': {
      ...orgsRepo,
      async findMembership(db: unknown, orgId: string, userId: string) {
        const row = await orgsRepo.findMembership!(db, orgId, userId)
        await holds.get(userId)?.hold()
        return row
      },
    },
  })
  const app = await buildApp(testConfig({ DATABASE_URL: 'memory://', ...FAST_ARGON2 }))
  t.teardown(() => app.close())
  await app.ready()
  const boss = await register(app as unknown as App)
  const bossAuth = bearer(boss.access_token)

  t.test('an API key read before its revocation is not cached past it', async (t) => {
    const created = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: bossAuth, payload: { name: 'held', scopes: ['api_keys:read'] } })
    const { id, key } = created.json() as { id: string; key: string }
    const { createHash } = await import('node:crypto')
    const held = gate()
    holds.set(createHash('sha256').update(key).digest('hex'), held)
    const first = app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: { 'x-api-key': key } })
    await held.reached() // the first use has read the (live) row
    const del = await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${id}`, headers: bossAuth })
    t.equal(del.statusCode, 204, 'revoked (the cache was told)')
    held.open()
    t.equal((await first).statusCode, 200, 'the use that began before the revocation: 200')
    const later = await app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: { 'x-api-key': key } })
    t.equal(later.statusCode, 401, 'a use after the revocation answered: 401')
  })

  t.test('a role read before a role change is not cached past it', async (t) => {
    const person = await register(app as unknown as App)
    const added = await addMember(app as unknown as App, bossAuth, boss.organization.id, { email: person.email, token: person.access_token }, 'admin')
    t.equal(added.statusCode, 200, 'invited as admin, and accepted')
    const signed = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: person.email, password: STRONG_PASSWORD, org_id: boss.organization.id } })
    const auth = bearer(signed.json().access_token)
    const held = gate()
    holds.set(person.user.id, held)
    const first = app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: auth })
    await held.reached() // the first request has read the role (admin)
    holds.delete(person.user.id)
    const demoted = await app.inject({
      method: 'PATCH', url: `/api/v1/organizations/${boss.organization.id}/members/${person.user.id}`, headers: bossAuth, payload: { role: 'member' },
    })
    t.equal(demoted.statusCode, 200, 'demoted to member (the cache was told)')
    held.open()
    t.equal((await first).headers['x-auth-role'], 'admin', 'the request that began before the change: admin')
    const later = await app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: auth })
    t.equal(later.headers['x-auth-role'], 'member', 'a request after the change answered: member')
  })
})
