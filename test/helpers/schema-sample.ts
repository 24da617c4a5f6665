// A minimal valid instance of a JSON schema (as found in the OpenAPI document):
// required properties only, the first branch of a union, the first enum value,
// strings that satisfy format, pattern and length. `hints` supplies values for
// properties by name (e.g. the email of an existing account); a pattern it
// cannot satisfy throws, so a new schema never gets an invalid sample silently.
import { newId, type IdPrefix } from '../../src/lib/ids.js'

export interface JsonSchema {
  $ref?: string
  type?: string | string[]
  const?: unknown
  enum?: unknown[]
  anyOf?: JsonSchema[]
  oneOf?: JsonSchema[]
  allOf?: JsonSchema[]
  properties?: Record<string, JsonSchema>
  required?: string[]
  items?: JsonSchema
  minItems?: number
  uniqueItems?: boolean
  format?: string
  pattern?: string
  minLength?: number
  minimum?: number
  exclusiveMinimum?: number
}

export interface SampleOptions {
  /** Values for properties of that name, wherever they occur. */
  hints?: Record<string, unknown>
  /** Resolves a `$ref` (e.g. `#/components/schemas/X`). */
  resolve?: (ref: string) => JsonSchema
}

const FORMATS: Record<string, () => string> = {
  email: () => 'sample@example.com',
  'date-time': () => new Date(Date.now() + 86_400_000).toISOString(),
  uri: () => 'https://example.com/',
}

/** Our public ids: `^usr_[0-9a-hjkmnp-tv-z]{26}$` and the like. */
const ID_PATTERN = /^\^([a-z]+)_\[0-9a-hjkmnp-tv-z\]\{26\}\$$/

function sampleString(schema: JsonSchema): string {
  const min = schema.minLength ?? 1
  if (schema.format && FORMATS[schema.format]) return FORMATS[schema.format]!()
  if (!schema.pattern) return 'x'.repeat(min)
  const id = ID_PATTERN.exec(schema.pattern)
  const candidates = [...(id ? [newId(id[1] as IdPrefix)] : []), 'x'.repeat(min), 'a'.repeat(min), '0'.repeat(min)]
  const ok = candidates.find((c) => new RegExp(schema.pattern!, 'u').test(c))
  if (ok === undefined) throw new Error(`schema-sample: no sample for pattern ${schema.pattern}`)
  return ok
}

export function sampleOf(schema: JsonSchema, options: SampleOptions = {}): unknown {
  if (schema.$ref) {
    if (!options.resolve) throw new Error(`schema-sample: cannot resolve ${schema.$ref}`)
    return sampleOf(options.resolve(schema.$ref), options)
  }
  if ('const' in schema) return schema.const
  if (schema.enum?.length) return schema.enum[0]
  const branches = schema.anyOf ?? schema.oneOf
  if (branches?.length) return sampleOf(branches.find((b) => b.type !== 'null') ?? branches[0]!, options)
  if (schema.allOf?.length) {
    return Object.assign({}, ...schema.allOf.map((s) => sampleOf(s, options) as object))
  }
  const type = [schema.type ?? (schema.properties ? 'object' : 'string')].flat().find((t) => t !== 'null') ?? 'null'
  switch (type) {
    case 'object':
      return Object.fromEntries((schema.required ?? []).map((name) => [
        name, name in (options.hints ?? {}) ? options.hints![name] : sampleOf(schema.properties?.[name] ?? {}, options),
      ]))
    case 'array':
      return Array.from({ length: schema.minItems ?? 0 }, (_, i) => {
        const item = sampleOf(schema.items ?? {}, options)
        return schema.uniqueItems && typeof item === 'string' ? `${item}${i}` : item
      })
    case 'integer':
    case 'number':
      return schema.minimum ?? (schema.exclusiveMinimum !== undefined ? schema.exclusiveMinimum + 1 : 0)
    case 'boolean':
      return false
    case 'null':
      return null
    default:
      return sampleString(schema)
  }
}
