// Regression (found in review of the one-statement refresh): a refresh whose statement waited for
// its token's row lock past the deadline was answered 503, and the statement, outside any
// transaction, still rotated the token once the lock was free. The client's retry after the grace
// window then presented a used token whose child it never received: REFRESH_TOKEN_REUSED, and the
// session was revoked. The statement now never waits: a held token goes to the transaction, which
// rolls back when it is given up. Behind PgBouncer (DATABASE_SERVER_TIMEOUT=false) nothing on the
// server ends the wait; with the server's own timeout too.
import t from 'tap'
import postgres from 'postgres'
import { eq } from 'drizzle-orm'
import { refreshTokens } from '../../src/db/schema.js'
import { hashRefreshToken } from '../../src/lib/refresh-token.js'
import { buildTestApp, FAST_ARGON2, FakeClock, TEST_DATABASE_URL } from '../helpers/app.js'
import { register } from '../helpers/api.js'

t.test('a refresh answered 503 rotates nothing later', { skip: TEST_DATABASE_URL ? false : 'TEST_DATABASE_URL not set (PGlite has one connection: no lock can be held from outside)' }, async (t) => {
  for (const serverTimeout of ['false', 'true']) {
    await t.test(`DATABASE_SERVER_TIMEOUT=${serverTimeout}`, async (t) => {
      const clock = new FakeClock()
      const app = await buildTestApp(t, { env: { ...FAST_ARGON2, DATABASE_QUERY_TIMEOUT: '400', DATABASE_SERVER_TIMEOUT: serverTimeout }, clock })
      const outside = postgres(app.config.DATABASE_URL!, { max: 1, onnotice: () => {} })
      t.teardown(() => outside.end())
      const refresh = (token: string) => app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: token } })
      const a = await register(app)
      let first!: Awaited<ReturnType<typeof refresh>>
      await outside.begin(async (tx) => {
        await tx`select id from refresh_tokens where token_hash = ${hashRefreshToken(a.refresh_token)} for update`
        first = await refresh(a.refresh_token)
        clock.advance(11_000) // the client retries after the grace window
      })
      t.equal(first.statusCode, 503, 'given up at the deadline')
      await new Promise((r) => setTimeout(r, 500)) // time for a statement still waiting to run, if one were
      const [token] = await app.db.select().from(refreshTokens).where(eq(refreshTokens.tokenHash, hashRefreshToken(a.refresh_token)))
      t.equal(token!.usedAt, null, 'the token was not used by the refresh answered 503')
      const retry = await refresh(a.refresh_token)
      t.equal(retry.statusCode, 200, 'the retry rotates it, not taken for reuse')
    })
  }
})
