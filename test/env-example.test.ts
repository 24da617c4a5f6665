// .env.example is the operator's list of every variable: it must not drift from the schema.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigSchema } from '../src/config.js'

t.test('.env.example lists every variable with its default', async (t) => {
  const text = readFileSync(join(import.meta.dirname, '..', '.env.example'), 'utf8')
  const listed = new Map(text.split('\n').filter((l) => /^[A-Z][A-Z0-9_]*=/.test(l)).map((l) => {
    const i = l.indexOf('=')
    return [l.slice(0, i), l.slice(i + 1)] as const
  }))
  for (const [name, schema] of Object.entries(ConfigSchema.properties)) {
    t.ok(listed.has(name), `${name} listed`)
    t.equal(listed.get(name), String((schema as { default?: unknown }).default ?? ''), `${name} default`)
  }
  t.same([...listed.keys()].filter((k) => !(k in ConfigSchema.properties)), [], 'no stale variables')
})
