// postinstall: patches postgres.js 3.4.x for a known crash that has no release yet
// (porsager/postgres#1154, #1208; the fix of PR #1209). When a connection dies with a
// small write pending (e.g. a transaction's ROLLBACK), nextWrite() dereferences the
// null socket from a setImmediate (an uncatchable TypeError), and closed() leaves the
// pending chunk and timer behind, so that pool slot never connects again.
//
// And for a second one (porsager/postgres#1193, #1223): errored() rejects the connection's
// current statement but keeps it as current. When that connection is opened again, the
// server's refusal (a database closed to connections) is taken for the old statement's error,
// the attempt ends without rejecting the statement waiting for it, and it reconnects in a loop:
// the new statement waited for our deadline instead of failing at once
// (test/regressions/terminated-connection-waits-for-the-deadline).
//
// And for a third (porsager/postgres#1216, #1186; PRs #1215, #1155): when the server ends a
// transaction's connection while its body is between statements, sql.begin() rejects but the
// body goes on, and the pool may have opened that same connection slot again for a waiting
// statement: the body's next statements ran on the new server session outside any transaction,
// each committing on its own (an account without its membership; test/regressions/
// transaction-writes-escape-a-terminated-connection). A transaction whose connection closed now
// refuses every later statement, its COMMIT included, and rejects those it had queued.
// Idempotent; does nothing for other versions (remove it once a fixed release is out).
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'

const MARK = '/* portcullis: closed-socket patch */'
let root
try {
  // The package's exports hide package.json; its CommonJS entry is cjs/src/index.js.
  root = join(dirname(createRequire(import.meta.url).resolve('postgres')), '..', '..')
} catch {
  process.exit(0) // not installed (e.g. a partial install): nothing to patch
}
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
if (!/^3\.4\./.test(version)) {
  console.log(`patch-postgres: postgres ${version} is not 3.4.x; leaving it alone`)
  process.exit(0)
}

const replacements = [
  [
    '  function nextWrite(fn) {\n    const x = socket.write(chunk, fn)',
    `  function nextWrite(fn) {\n    ${MARK}\n    if (!socket) {\n      chunk = nextWriteTimer = null\n      error(Errors.connection('CONNECTION_CLOSED', options))\n      return false\n    }\n    const x = socket.write(chunk, fn)`,
  ],
  [
    '    clearImmediate(nextWriteTimer)\n    socket.removeListener(\'data\', data)',
    '    clearImmediate(nextWriteTimer)\n    nextWriteTimer = chunk = null\n    socket.removeListener(\'data\', data)',
  ],
  [
    '    query && queryError(query, err)\n    initial && (queryError(initial, err), initial = null)',
    '    query && (queryError(query, err), query = null)\n    initial && (queryError(initial, err), initial = null)',
  ],
  // A reset socket emits 'error' (which rejects what is current) and then 'close' with hadError,
  // after which closed() rejected nothing: a statement written in between (a transaction's own
  // ROLLBACK) stayed current on the connection, was answered by the next session's startup, or
  // kept the slot reconnecting in a loop while the server refused sessions. Whatever was written
  // to a socket that closed is rejected, and the answer-parsing state is cleared.
  [
    "    if (initial)\n      return reconnect()\n\n    !hadError && (query || sent.length) && error(Errors.connection('CONNECTION_CLOSED', options, socket))\n",
    "    const closedError = Errors.connection('CONNECTION_CLOSED', options, socket)\n    stream && (stream.destroy(closedError), stream = null)\n    query && (queryError(query, closedError), query = null)\n    while (sent.length)\n      queryError(sent.shift(), closedError)\n    errorResponse = results = null\n    result = new Result()\n\n    if (initial)\n      return reconnect()\n\n",
  ],
]

const transactionReplacements = [
  [
    '    let savepoints = 0\n      , connection\n      , prepare = null',
    `    let savepoints = 0\n      , connection\n      , prepare = null\n      , closedError = null ${MARK}`,
  ],
  [
    '        new Promise((_, reject) => connection.onclose = reject)',
    '        new Promise((_, reject) => connection.onclose = (e) => {\n          closedError = e\n          while (queries.length) queries.shift().reject(e)\n          reject(e)\n        })',
  ],
  [
    '        q.catch(e => uncaughtError || (uncaughtError = e))\n        c.queue === full',
    '        q.catch(e => uncaughtError || (uncaughtError = e))\n        if (closedError)\n          return q.reject(closedError)\n        c.queue === full',
  ],
]

// Every file is checked before any is written: a version whose code differs anywhere is left
// whole, not half patched (test/db/postgres-patch fails then, so the suite says so).
const writes = []
for (const [name, edits] of [['connection.js', replacements], ['index.js', transactionReplacements]]) for (const dir of ['src', 'cjs/src', 'cf/src']) {
  const file = join(root, dir, name)
  if (!existsSync(file)) continue
  const original = readFileSync(file, 'utf8')
  let text = original
  for (const [from, to] of edits) {
    if (text.includes(to)) continue // applied by an earlier install
    if (!text.includes(from)) {
      console.error(`patch-postgres: ${dir}/${name} does not contain the expected code; postgres ${version} left unpatched`)
      process.exit(0)
    }
    text = text.replace(from, to)
  }
  if (text !== original) writes.push([file, text, `${dir}/${name}`])
}
for (const [file, text, label] of writes) {
  writeFileSync(file, text)
  console.log(`patch-postgres: patched postgres ${version} ${label}`)
}
