// postinstall: applies scripts/postgres-fixes.mjs to postgres.js 3.4.x (fixes for defects
// open upstream: a crash, a reconnect loop, statements escaping a dead transaction, a stale
// statement after a reset; each is described there).
// Idempotent; does nothing for other versions (remove it once a fixed release is out).
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { POSTGRES_FIXES } from './postgres-fixes.mjs'

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

// Every file is checked before any is written: a version whose code differs anywhere is left
// whole, not half patched (test/db/postgres-patch fails then, so the suite says so).
const writes = []
for (const [name, edits] of Object.entries(POSTGRES_FIXES)) for (const dir of ['src', 'cjs/src', 'cf/src']) {
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
