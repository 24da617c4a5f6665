// Looks for strings in every text column of every table: what an erasure must leave nowhere.
import { sql, type SQL } from 'drizzle-orm'
import type { App } from '../../src/app.js'

async function rows<T>(app: App, query: SQL): Promise<T[]> {
  const result = await app.db.execute(query)
  return (Array.isArray(result) ? result : (result as unknown as { rows: T[] }).rows) as T[]
}

/** Where each needle appears ("table.column holds needle (n)"); empty when nowhere. */
export async function tracesOf(app: App, needles: string[]): Promise<string[]> {
  await app.audit.flush()
  const columns = await rows<{ table_name: string; column_name: string }>(app, sql`
    select table_name, column_name from information_schema.columns
     where table_schema = 'public' and data_type in ('text', 'character varying', 'jsonb', 'json')`)
  if (columns.length < 20) throw new Error(`only ${columns.length} text columns found: is the schema there?`)
  const traces: string[] = []
  for (const { table_name, column_name } of columns) {
    for (const needle of needles) {
      const [hit] = await rows<{ n: number }>(app, sql`select count(*)::int as n from ${sql.identifier(table_name)} where ${sql.identifier(column_name)}::text ilike ${`%${needle}%`}`)
      if (hit!.n) traces.push(`${table_name}.${column_name} holds ${needle} (${hit!.n})`)
    }
  }
  return traces
}
