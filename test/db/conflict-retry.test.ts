// Issue 15: a transaction PostgreSQL aborts as the loser of a deadlock (40P01)
// or a serialization failure (40001) is run again, a bounded number of times,
// before the error is answered (503). Two transactions locking two rows in
// opposite orders deadlock for certain; both must commit.
import t from 'tap'
import { sql } from 'drizzle-orm'
import { organizations } from '../../src/db/schema.js'
import { buildTestApp, FAST_ARGON2, TEST_DATABASE_URL } from '../helpers/app.js'
import { register } from '../helpers/api.js'

const ONLY_POSTGRES = { skip: TEST_DATABASE_URL ? false : 'needs PostgreSQL (TEST_DATABASE_URL, which .ci/run sets): PGlite runs one transaction at a time, so none can deadlock' }

t.test('two transactions that deadlock both commit: the loser is run again', ONLY_POSTGRES, async (t) => {
  const app = await buildTestApp(t, { env: FAST_ARGON2 })
  const [a, b] = [(await register(app)).organization.id as string, (await register(app)).organization.id as string]
  let attempts = 0
  let bothHoldOne!: () => void
  const met = new Promise<void>((resolve) => { let n = 0; bothHoldOne = () => { if (++n === 2) resolve() } })
  const lockBoth = (first: string, second: string, name: string) => app.db.transaction(async (tx) => {
    attempts++
    await tx.execute(sql`select 1 from ${organizations} where id = ${first} for update`)
    bothHoldOne()
    await Promise.race([met, new Promise((r) => setTimeout(r, 200))]) // on a retry the other is done: go on
    await tx.execute(sql`select 1 from ${organizations} where id = ${second} for update`)
    await tx.update(organizations).set({ name: name }).where(sql`${organizations.id} in (${first}, ${second})`)
    return name
  })
  const results = await Promise.allSettled([lockBoth(a, b, 'first'), lockBoth(b, a, 'second')])
  t.same(results.map((r) => r.status), ['fulfilled', 'fulfilled'], `both commit (${results.map((r) => (r.status === 'rejected' ? String((r.reason as Error).message) : 'ok')).join('; ')})`)
  t.equal(attempts, 3, 'three attempts: the deadlock\'s loser ran twice')
})
