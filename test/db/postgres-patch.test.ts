// The postinstall patch of postgres.js (scripts/patch-postgres.mjs) leaves a
// version whose code it does not recognise untouched and says so only on
// stderr, where an install's output hides it; its regression tests need
// PostgreSQL and are skipped without it. This test needs neither: with
// postgres 3.4.x installed, every copy of the library (ESM, CommonJS,
// Cloudflare) must carry each fix the patch makes (scripts/postgres-fixes.mjs).
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
// @ts-expect-error: a plain ES module of the install scripts, without types
import { POSTGRES_FIXES } from '../../scripts/postgres-fixes.mjs'

const root = join(dirname(createRequire(import.meta.url).resolve('postgres')), '..', '..')
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }
const fixes = POSTGRES_FIXES as Record<string, [expected: string, patched: string][]>

t.test(`postgres ${version}: every copy carries every fix`, { skip: /^3\.4\./.test(version) ? false : `postgres ${version} is not 3.4.x: the patch does not apply (remove it once a fixed release is in use)` }, async (t) => {
  let copies = 0
  for (const dir of ['src', 'cjs/src', 'cf/src']) {
    for (const [name, edits] of Object.entries(fixes)) {
      const file = join(root, dir, name)
      if (!existsSync(file)) continue
      copies++
      const text = readFileSync(file, 'utf8')
      edits.forEach(([, patched], i) => t.ok(text.includes(patched), `${dir}/${name}: fix ${i + 1} of ${edits.length}`))
    }
  }
  t.ok(copies >= 2, `the library's copies were found (${copies})`)
})
