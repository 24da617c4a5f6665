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

/** A client whose every statement hangs, as on a frozen server, and which records cancels. */
function frozenClient(written: boolean) {
  const cancels: string[] = []
  const statement = (text: string) => ({
    // postgres.js sets `state` (the backend's) once it has written the statement to a connection.
    state: written ? { pid: 1, secret: 2 } : undefined,
    then: () => new Promise(() => {}),
    values() { return this },
    cancel: () => { cancels.push(text) },
  })
  const client = { unsafe: (text: string) => statement(text) } as unknown as Sql
  return { client, cancels }
}

const giveUp = async (client: Sql) => {
  const deadlined = withDeadline(client, 50, true)
  const err = await (deadlined.unsafe('select 1') as unknown as Promise<unknown>).then(() => null, (e: unknown) => e)
  await new Promise((r) => setTimeout(r, 50))
  return err
}

t.test('a given-up statement already written to a connection gets no cancel request', async (t) => {
  const { client, cancels } = frozenClient(true)
  t.ok(await giveUp(client) instanceof QueryTimeoutError, 'given up at the deadline')
  t.same(cancels, [], 'no cancel request, which would stop whatever the connection runs when it arrives')
})

t.test('a given-up statement still queued in the pool is dropped from the queue', async (t) => {
  const { client, cancels } = frozenClient(false)
  t.ok(await giveUp(client) instanceof QueryTimeoutError, 'given up at the deadline')
  t.same(cancels, ['select 1'], 'removed from the queue (postgres.js sends nothing for an unsent statement), so it never runs late')
})
