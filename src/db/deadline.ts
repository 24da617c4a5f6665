// A deadline for every PostgreSQL statement and transaction (postgres.js has no
// client-side query timeout). When the database stops, new connections fail
// within connect_timeout; when it hangs (a frozen host, a network black hole),
// an open connection simply never answers, and without this a request would
// wait as long as the database does. Past the deadline the caller gets an
// error the error handler answers with 503.
//
// The client never sends a cancel request for a statement it has written to
// the connection (one still queued in the pool is dropped from the queue,
// which involves no request). PostgreSQL cancels whatever a backend runs when
// the request arrives, not the statement it was meant for:
// after a hang, the requests arrive with the thaw, and a pipelined connection
// has moved on, so a cancel hit the next statement (a login's lockout read got
// another statement's row; a registration committed an organization without
// its member, in the hung-database fault test with prepared statements). The
// server ends its own long statements instead: `statement_timeout`, set to the
// same deadline on every connection (serverDeadline), applies to the very
// statement that runs long. What that leaves: a statement already written
// behind a slow one (postgres.js pipelines prepared statements) still runs
// when its turn comes, after its caller was answered 503; outside a
// transaction, such a write may land late.
//
// What a deadline cannot settle: when COMMIT itself times out, the transaction
// may still commit once the database answers. It commits whole or not at all.
import type { Sql } from 'postgres'
import { pgErrorOf } from './errors.js'

/** Recognised by the error handler as "database unavailable" (503). */
export class QueryTimeoutError extends Error {
  readonly code = 'QUERY_TIMEOUT'
  constructor(what: string, ms: number) {
    super(`PostgreSQL did not answer ${what} within ${ms} ms`)
    this.name = 'QueryTimeoutError'
  }
}

type Query = ReturnType<Sql['unsafe']>

/**
 * Connection parameters that make the server end a statement running past the deadline
 * itself (SQLSTATE 57014, answered 503): the statement that ran long, and no other.
 */
export function serverDeadline(ms: number): Record<string, string> {
  return { statement_timeout: String(ms) }
}
type Fail = (err: Error) => void
type Open = (...args: unknown[]) => Promise<unknown>
/** `begin` of a client, or `savepoint` of a transaction's client (postgres.js types it on TransactionSql only). */
const opener = (client: Sql, name: 'begin' | 'savepoint'): Open => (...args) => (client as unknown as Record<string, Open>)[name]!(...args)

/**
 * The client Drizzle is given: `unsafe` (every Drizzle statement, prepared when `prepare`) and
 * `begin` (every Drizzle transaction) run under `ms`; everything else is the client itself.
 * Inside a transaction, `onTimeout` gives the whole transaction up.
 */
export function withDeadline(client: Sql, ms: number, prepare: boolean, onTimeout?: Fail): Sql {
  return new Proxy(client, {
    get(target, prop, receiver) {
      // Drizzle names no statement, so postgres.js would parse and plan each one on every run;
      // prepared, a statement is parsed once per connection and its plan reused (npm run bench: refresh).
      if (prop === 'unsafe') {
        return (query: string, params?: Parameters<Sql['unsafe']>[1], options?: Parameters<Sql['unsafe']>[2]) =>
          deadlined(target.unsafe(query, params, { ...options, prepare }), ms, onTimeout)
      }
      if (prop === 'begin' && !onTimeout) {
        return (...args: unknown[]) => retryingConflicts(() => phasedTransaction(opener(target, 'begin'), ms, prepare, args))
      }
      // A nested transaction (Drizzle's savepoint): its statements run on a client of their own,
      // which must carry the deadline too, and giving it up gives up the transaction around it.
      if (prop === 'savepoint' && onTimeout) return (...args: unknown[]) => phasedTransaction(opener(target, 'savepoint'), ms, prepare, args, onTimeout)
      return Reflect.get(target, prop, receiver)
    },
  })
}

/** A statement: what Drizzle uses of it (`values()` and awaiting), raced against the deadline. */
function deadlined(query: Query, ms: number, onTimeout?: Fail) {
  let outcome: Promise<unknown> | undefined
  const run = () => outcome ??= new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      const err = new QueryTimeoutError('a statement', ms)
      // Not yet written to a connection (no backend state): dropping it from the pool's queue sends nothing.
      if (!(query as unknown as { state?: unknown }).state) Promise.resolve(query.cancel()).catch(() => {})
      onTimeout?.(err)
      reject(err)
    }, ms)
    query.then((rows) => { clearTimeout(timer); resolve(rows) }, (err: unknown) => { clearTimeout(timer); reject(err) })
  })
  const guarded = {
    values() { query.values(); return guarded },
    then<A, B>(onFulfilled?: (rows: any) => A | PromiseLike<A>, onRejected?: (err: any) => B | PromiseLike<B>) {
      return run().then(onFulfilled, onRejected)
    },
    catch<B>(onRejected?: (err: any) => B | PromiseLike<B>) { return run().catch(onRejected) },
  }
  return guarded as unknown as Query
}

/**
 * `sql.begin` (or, nested, `sql.savepoint`) in three phases, each under `ms`: getting a connection
 * and BEGIN (SAVEPOINT), each statement inside, and COMMIT (RELEASE). A transaction given up before
 * its body started never runs it (the body throws, so postgres.js rolls back). A savepoint given up
 * gives up its enclosing transaction (`outer`) as well.
 */
function phasedTransaction(open: Open, ms: number, prepare: boolean, args: unknown[], outer?: Fail): Promise<unknown> {
  const body = args[args.length - 1] as (sql: Sql) => Promise<unknown>
  const options = args.slice(0, -1)
  const opening = outer ? 'SAVEPOINT' : 'BEGIN'
  const closing = outer ? 'RELEASE SAVEPOINT' : 'COMMIT'
  return new Promise((resolve, reject) => {
    let settled = false
    let timer: NodeJS.Timeout | undefined
    const fail: Fail = (err) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      outer?.(err)
      reject(err)
    }
    timer = setTimeout(() => fail(new QueryTimeoutError(opening, ms)), ms)
    const transaction = open(...options, async (sql: Sql) => {
      clearTimeout(timer)
      if (settled) throw new QueryTimeoutError(opening, ms)
      const result = await body(withDeadline(sql, ms, prepare, fail))
      // Given up while the body ran (and the body went on, say by catching the error): roll back, never commit.
      if (settled) throw new QueryTimeoutError('a statement', ms)
      timer = setTimeout(() => fail(new QueryTimeoutError(closing, ms)), ms)
      return result
    })
    transaction.then((value) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve(value)
    }, fail)
  })
}

/** A promise that is not a statement (NOTIFY), rejected with QueryTimeoutError past `ms`. */
export function withinDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new QueryTimeoutError(what, ms)), ms) })
  return Promise.race([work, late]).finally(() => clearTimeout(timer))
}

/** SQLSTATEs of a transaction that lost to another (serialization failure, deadlock): run again, it may pass. */
const CONFLICTS = new Set(['40001', '40P01'])
/** Attempts of a transaction that keeps losing before its error is answered (503). */
export const TRANSACTION_ATTEMPTS = 3

/**
 * Runs a transaction again when PostgreSQL aborted it as the loser of a conflict, after a short
 * random pause (so the two do not meet again), at most TRANSACTION_ATTEMPTS times. Its body only
 * writes through the transaction, so a rolled-back attempt left nothing behind.
 */
async function retryingConflicts<T>(run: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run()
    } catch (err) {
      if (attempt >= TRANSACTION_ATTEMPTS || !CONFLICTS.has(String(pgErrorOf(err)?.code))) throw err
      await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20 * attempt))
    }
  }
}
