// The postinstall patch of postgres.js (scripts/patch-postgres.mjs) leaves a
// version whose code it does not recognise untouched and says so only on
// stderr, where an install's output hides it; its regression tests need
// PostgreSQL and are skipped without it. This test needs neither: with
// postgres 3.4.x installed, every copy of the library (ESM, CommonJS,
// Cloudflare) must carry each of the patch's fixes.
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'

const root = join(dirname(createRequire(import.meta.url).resolve('postgres')), '..', '..')
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }

const FIXES: Record<string, [string, string][]> = {
  'connection.js': [
    ['a write to a closed socket fails its statement (#1154)', "if (!socket) {\n      chunk = nextWriteTimer = null"],
    ['a failed statement stops being the current one (#1193)', 'query && (queryError(query, err), query = null)'],
    ['a closed socket rejects what was written to it', "const closedError = Errors.connection('CONNECTION_CLOSED', options, socket)"],
  ],
  'index.js': [
    ['a transaction remembers that its connection closed (#1216)', 'closedError = e\n'],
    ['and refuses every later statement', 'if (closedError)\n          return q.reject(closedError)'],
  ],
}

t.test(`postgres ${version}: every copy carries every fix`, { skip: /^3\.4\./.test(version) ? false : `postgres ${version} is not 3.4.x: the patch does not apply (remove it once a fixed release is in use)` }, async (t) => {
  let copies = 0
  for (const dir of ['src', 'cjs/src', 'cf/src']) {
    for (const [name, fixes] of Object.entries(FIXES)) {
      const file = join(root, dir, name)
      if (!existsSync(file)) continue
      copies++
      const text = readFileSync(file, 'utf8')
      for (const [what, snippet] of fixes) t.ok(text.includes(snippet), `${dir}/${name}: ${what}`)
    }
  }
  t.ok(copies >= 2, `the library's copies were found (${copies})`)
})
