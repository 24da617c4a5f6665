// Regression: the PostgreSQL deadline sent a cancel request for a statement it
// gave up on. PostgreSQL cancels whatever the backend runs when the request
// arrives, and postgres.js pipelines prepared statements: after a hang, the
// request arrived with the thaw, when the connection had moved on, and it hit
// another statement. In the hung-database fault test with prepared statements
// (3 runs of 4) a login read another statement's row ("lockedUntil.getTime is
// not a function", a 500) and a registration committed an organization without
// its member. The deadline now never cancels: the server's own
// statement_timeout (serverDeadline) ends the statement that ran long, and no
// other. The fault test runs with prepared statements on (the default) and
// checks for both symptoms.
import t from 'tap'
import type { Sql } from 'postgres'
import { QueryTimeoutError, withDeadline } from '../../src/db/deadline.js'

/** A client whose every statement hangs, as on a frozen server, and which counts cancel requests. */
function frozenClient() {
  const cancels: string[] = []
  const statement = (text: string) => ({
    then: () => new Promise(() => {}),
    values() { return this },
    cancel: () => { cancels.push(text) },
  })
  const client = { unsafe: (text: string) => statement(text) } as unknown as Sql
  return { client, cancels }
}

t.test('a given-up statement sends no cancel request', async (t) => {
  const { client, cancels } = frozenClient()
  const deadlined = withDeadline(client, 50, true)
  const err = await (deadlined.unsafe('select 1') as unknown as Promise<unknown>).then(() => null, (e: unknown) => e)
  t.ok(err instanceof QueryTimeoutError, 'given up at the deadline')
  await new Promise((r) => setTimeout(r, 50))
  t.same(cancels, [], 'no cancel request, which would stop whatever the connection runs when it arrives')
})

