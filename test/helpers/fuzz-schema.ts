// fast-check arbitraries derived from the JSON schemas of openapi/openapi.yaml,
// for spec-driven fuzzing: valid values, boundary values, wrong types, odd
// unicode, huge strings, missing and extra fields, prototype-pollution keys,
// odd content types and malformed bodies. A request is generated as plain data
// (`RequestSpec`) in which `Hint`s stand for live values (a valid token, an id
// that exists) that the test resolves just before sending, so a seed replays
// the same requests against fresh fixtures.
import fc from 'fast-check'
import { OPENAPI_DOC } from './spec-validator.js'

export interface Schema {
  $ref?: string
  type?: string | string[]
  enum?: unknown[]
  const?: unknown
  anyOf?: Schema[]
  oneOf?: Schema[]
  properties?: Record<string, Schema>
  required?: string[]
  additionalProperties?: boolean | Schema
  items?: Schema
  minItems?: number
  maxItems?: number
  uniqueItems?: boolean
  minLength?: number
  maxLength?: number
  minimum?: number
  maximum?: number
  pattern?: string
  format?: string
}

/** A live value resolved at send time, e.g. new Hint('orgId'); `n` picks among several. */
export class Hint {
  constructor(readonly name: string, readonly n = 0) {}
  toJSON() { return `<${this.name}${this.n ? `#${this.n}` : ''}>` }
}

/** A path segment or query value sent exactly as written (e.g. malformed percent-encoding). */
export class Raw {
  constructor(readonly text: string) {}
  toJSON() { return `<raw ${this.text.length > 60 ? `${this.text.slice(0, 60)}…(${this.text.length})` : this.text}>` }
}

export type Val = string | Hint | Raw

// ---------------------------------------------------------------- the document

type Doc = typeof OPENAPI_DOC & { components: { schemas: Record<string, Schema> } }
const DOC = OPENAPI_DOC as unknown as Doc

export function deref(schema: Schema | undefined): Schema {
  let s = schema ?? {}
  while (s.$ref) {
    const name = s.$ref.replace('#/components/schemas/', '')
    s = DOC.components.schemas[name] ?? {}
  }
  return s
}

export interface Parameter { name: string; in: 'path' | 'query' | 'header'; required: boolean; schema: Schema }

export interface Operation {
  id: string
  method: string
  template: string
  params: Parameter[]
  /** Content type → schema; undefined when the operation declares no request body. */
  body?: { required: boolean; content: Record<string, Schema> }
  /** Whether the operation has a security requirement, and whether an API key satisfies it. */
  secured: boolean
  acceptsApiKey: boolean
}

interface RawOperation {
  operationId: string
  parameters?: { name: string; in: Parameter['in']; required?: boolean; schema: Schema }[]
  requestBody?: { required?: boolean; content: Record<string, { schema: Schema }> }
  security?: Record<string, unknown>[]
}

/** Every operation of the document (path × method). */
export function operations(): Operation[] {
  const out: Operation[] = []
  const paths = DOC.paths as unknown as Record<string, Record<string, RawOperation>>
  for (const [template, methods] of Object.entries(paths)) {
    for (const [method, op] of Object.entries(methods)) {
      if (!['get', 'post', 'put', 'patch', 'delete'].includes(method)) continue
      const security = op.security ?? []
      out.push({
        id: op.operationId,
        method: method.toUpperCase(),
        template,
        params: (op.parameters ?? []).map((p) => ({ name: p.name, in: p.in, required: p.required ?? p.in === 'path', schema: deref(p.schema) })),
        body: op.requestBody ? {
          required: op.requestBody.required ?? false,
          content: Object.fromEntries(Object.entries(op.requestBody.content).map(([type, c]) => [type, deref(c.schema)])),
        } : undefined,
        secured: security.length > 0,
        acceptsApiKey: security.some((s) => 'apiKeyHeader' in s),
      })
    }
  }
  return out
}

// ---------------------------------------------------------------- values

/** Strings that have broken parsers, databases and normalisers before. */
export const ODD_STRINGS = [
  '', ' ', '\u0000', 'a\u0000b', '\ud800', '\udfff', 'x\udc00y', '\udbff\udfff', '\u202eevil\u202c', '\u200f\u05d0\u05d1\u05d2',
  '😀', '👩‍👩‍👧‍👦', '𝕏𝕐𝕫', '\ufeffbom', '\u200b', 'İı', 'e\u0301', '\u2028\u2029', '%00', '%', '%ZZ', '../../etc/passwd',
  "' OR 1=1 --", '"; DROP TABLE users; --', '<script>alert(1)</script>', '${jndi:ldap://127.0.0.1/x}', '{{7*7}}', '\\', '"',
  'null', 'undefined', 'NaN', 'true', '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', '١٢٣٤٥٦',
  '０１２３４５', 'ＡＢＣ', 'ß', '\r\n', '\t', '\u0085', '\u00a0', 'usr_', 'org_', 'key_', 'ses_',
]

const ODD_CHARS = ['\u0000', '\u0001', '\u001f', '\u007f', '\ud800', '\udfff', '\u202e', '\u200b', '\ufeff', '😀', '𝕏', 'é', 'ß',
  '\u0301', '\n', '"', '\\', '/', '%', '&', '=', '?', '#', '+', ' ', 'א', '\u2028', '\uffff', '\ufffd']

export const oddString: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...ODD_STRINGS),
  fc.string({ unit: fc.oneof(fc.constantFrom(...ODD_CHARS), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })), maxLength: 40 }),
)

/** 300 B to 100 KB: over the 200-character path limit, the 16 KiB header limit and the 64 KiB body limit. */
export const hugeString: fc.Arbitrary<string> = fc.tuple(
  fc.constantFrom(201, 300, 4_097, 16_500, 65_600, 100_000),
  fc.constantFrom('a', 'é', '😀', '\u0000', '%'),
).map(([n, c]) => c.repeat(Math.ceil(n / c.length)))

export const wrongType: fc.Arbitrary<unknown> = fc.constantFrom<unknown>(
  null, true, false, 0, -1, 1.5, -0.0001, 1e21, 2 ** 53 + 2, '', 'x', '123', [], {}, [1, 2], { a: 1 }, [null], [[]], { '': '' },
)

const typeOf = (s: Schema) => [s.type ?? (s.properties ? 'object' : s.enum || s.pattern || s.format ? 'string' : undefined)].flat()[0]

/** Flattens anyOf/oneOf of enums (TypeBox unions of literals) into one enum. */
function enumOf(s: Schema): unknown[] | undefined {
  if (s.enum) return s.enum
  const branches = s.anyOf ?? s.oneOf
  if (branches?.every((b) => deref(b).enum || deref(b).const !== undefined || deref(b).anyOf)) {
    return branches.flatMap((b) => enumOf(deref(b)) ?? [deref(b).const])
  }
  return undefined
}

function validString(s: Schema): fc.Arbitrary<string> {
  const min = s.minLength ?? 0
  const max = Math.min(s.maxLength ?? 60, 60)
  if (s.pattern) return fc.stringMatching(new RegExp(s.pattern))
  if (s.format === 'email') {
    return fc.emailAddress().filter((e) => e.length >= min && e.length <= (s.maxLength ?? 254)).map((e) => e.replace(/^[^@]*/, (l) => l || 'x'))
  }
  if (s.format === 'date-time') {
    return fc.date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('2200-01-01T00:00:00Z'), noInvalidDate: true }).map((d) => d.toISOString())
  }
  const bounds = { minLength: min, maxLength: Math.max(min, max) }
  return fc.oneof(
    { arbitrary: fc.string({ ...bounds, unit: 'grapheme-ascii' }), weight: 3 },
    { arbitrary: fc.string({ ...bounds, unit: 'grapheme' }).filter((x) => x.length <= (s.maxLength ?? Infinity)), weight: 1 },
  )
}

/** min/max lengths and one off either side, in ASCII and in astral characters (2 UTF-16 units each). */
function boundaryString(s: Schema): fc.Arbitrary<string> {
  const lengths = [...new Set([s.minLength, s.minLength === undefined ? undefined : s.minLength - 1, s.maxLength,
    s.maxLength === undefined ? undefined : s.maxLength + 1, 0, 1].filter((n): n is number => n !== undefined && n >= 0))]
  const plain = fc.tuple(fc.constantFrom(...lengths), fc.constantFrom('a', '😀', 'é', ' ')).map(([n, c]) =>
    c === '😀' ? c.repeat(Math.floor(n / 2)) + (n % 2 ? 'a' : '') : c.repeat(n))
  if (!s.pattern && !s.format) return plain
  // A valid value bent slightly: one character more or less, case changed, padded, prefix swapped.
  const mutations: ((v: string) => string)[] = [
    (v) => v.slice(0, -1), (v) => `${v}a`, (v) => v.toUpperCase(), (v) => ` ${v} `, (v) => `${v}\n`, (v) => v.replace(/^[a-z]+_/, 'usr_'),
    (v) => v.replace(/^[a-z]+_/, 'org_'), (v) => v.replace(/.$/, 'u'), (v) => v.replace(/.$/, 'I'), (v) => `${v}\u0000`, (v) => v.normalize('NFKD'),
  ]
  return fc.oneof(plain, fc.tuple(validString(s), fc.constantFrom(...mutations)).map(([v, m]) => m(v)))
}

function validValue(s0: Schema, depth = 0): fc.Arbitrary<unknown> {
  const s = deref(s0)
  if (s.const !== undefined) return fc.constant(s.const)
  const e = enumOf(s)
  if (e) return fc.constantFrom(...e)
  switch (typeOf(s)) {
    case 'integer': return fc.integer({ min: s.minimum ?? -1000, max: s.maximum ?? 1_000_000 })
    case 'number': return fc.double({ min: s.minimum ?? -1000, max: s.maximum ?? 1e6, noNaN: true })
    case 'boolean': return fc.boolean()
    case 'array': {
      const item = validValue(s.items ?? {}, depth + 1)
      const opts = { minLength: s.minItems ?? 0, maxLength: Math.min(s.maxItems ?? 5, 5) }
      return s.uniqueItems ? fc.uniqueArray(item, { ...opts, selector: (v) => JSON.stringify(v) }) : fc.array(item, opts)
    }
    case 'object': return depth > 3 ? fc.constant({}) : objectOf(s, () => undefined, depth + 1)
    case 'string': return validString(s)
    default: return fc.jsonValue({ maxDepth: 2 })
  }
}

function boundaryValue(s0: Schema): fc.Arbitrary<unknown> {
  const s = deref(s0)
  const e = enumOf(s)
  if (e) return fc.constantFrom(...e.flatMap((v) => (typeof v === 'string' ? [v.toUpperCase(), ` ${v}`, `${v} `, `${v}\u0000`, v.slice(1)] : [v])))
  switch (typeOf(s)) {
    case 'integer':
    case 'number': {
      const { minimum: lo = 0, maximum: hi = 2 ** 31 } = s
      return fc.constantFrom(lo - 1, lo, hi, hi + 1, 0, -1, 2 ** 31, 2 ** 31 - 1, 2 ** 53, -(2 ** 53), 1e308, lo + 0.5, -0)
    }
    case 'array': {
      const item = validValue(s.items ?? {})
      return fc.oneof(
        fc.constant([]),
        fc.array(item, { minLength: (s.maxItems ?? 50) + 1, maxLength: (s.maxItems ?? 50) + 1 }),
        item.map((v) => [v, v]),
        fc.array(wrongType, { minLength: 1, maxLength: 3 }),
        fc.array(fc.constantFrom(...ODD_STRINGS), { minLength: 1, maxLength: 3 }),
      )
    }
    case 'string': return boundaryString(s)
    default: return wrongType
  }
}

/** One property's value: a hint (when there is one), valid, boundary, odd unicode or a wrong type. */
export function fieldValue(s: Schema, hint?: fc.Arbitrary<Hint>): fc.Arbitrary<unknown> {
  const type = typeOf(deref(s))
  return fc.oneof(
    ...(hint ? [{ arbitrary: hint as fc.Arbitrary<unknown>, weight: 8 }] : []),
    { arbitrary: validValue(s), weight: 5 },
    { arbitrary: boundaryValue(s), weight: 2 },
    { arbitrary: oddString as fc.Arbitrary<unknown>, weight: type === 'string' ? 2 : 1 },
    { arbitrary: wrongType, weight: 1 },
  )
}

export type HintsFor = (field: string) => fc.Arbitrary<Hint> | undefined

/** An object with every required property and some optional ones. */
export function objectOf(s0: Schema, hints: HintsFor, _depth = 0): fc.Arbitrary<Record<string, unknown>> {
  const s = deref(s0)
  const props = Object.entries(s.properties ?? {})
  if (!props.length) return fc.constant({})
  return fc.record(Object.fromEntries(props.map(([k, v]) => [k, fieldValue(v, hints(k))])), {
    requiredKeys: s.required ?? [], noNullPrototype: true,
  }) as fc.Arbitrary<Record<string, unknown>>
}

/** An object that satisfies the schema: hints where there are some, else valid values. */
export function validObject(s0: Schema, hints: HintsFor): fc.Arbitrary<Record<string, unknown>> {
  const s = deref(s0)
  const props = Object.entries(s.properties ?? {})
  return fc.record(Object.fromEntries(props.map(([k, v]) => {
    const hint = hints(k)
    return [k, hint ? fc.oneof({ arbitrary: hint as fc.Arbitrary<unknown>, weight: 3 }, { arbitrary: validValue(v), weight: 1 }) : validValue(v)]
  })), { requiredKeys: s.required ?? [], noNullPrototype: true }) as fc.Arbitrary<Record<string, unknown>>
}

/** Sets an own enumerable property, also for `__proto__` (which a plain assignment would not create). */
export function withOwn(o: Record<string, unknown>, key: string, value: unknown): Record<string, unknown> {
  const copy: Record<string, unknown> = {}
  for (const k of Object.keys(o)) Object.defineProperty(copy, k, { value: o[k], enumerable: true, writable: true, configurable: true })
  Object.defineProperty(copy, key, { value, enumerable: true, writable: true, configurable: true })
  return copy
}

function without(o: Record<string, unknown>, key: string): Record<string, unknown> {
  const copy: Record<string, unknown> = {}
  for (const k of Object.keys(o)) if (k !== key) Object.defineProperty(copy, k, { value: o[k], enumerable: true, writable: true, configurable: true })
  return copy
}

export const POLLUTION_KEYS = ['__proto__', 'constructor', 'prototype']
const POLLUTION_VALUE = { isAdmin: true, is_superadmin: true, role: 'owner', polluted: 'yes', prototype: { polluted: 'yes' } }

/** A body object, then maybe one mutation: a required field dropped, an extra field, a pollution key, a huge field, another type. */
export function mutatedObject(s0: Schema, hints: HintsFor): fc.Arbitrary<unknown> {
  const s = deref(s0)
  const keys = Object.keys(s.properties ?? {})
  const required = s.required ?? []
  const mutation: fc.Arbitrary<(o: Record<string, unknown>) => unknown> = fc.oneof(
    { arbitrary: fc.constant((o: Record<string, unknown>) => o), weight: 12 },
    ...(required.length ? [{ arbitrary: fc.constantFrom(...required).map((k) => (o: Record<string, unknown>) => without(o, k)), weight: 2 }] : []),
    {
      arbitrary: fc.tuple(fc.oneof(fc.constantFrom('extra', 'is_superadmin', 'role', 'id', 'org_id', 'user_id', 'scopes', ''), fc.string({ maxLength: 10 })),
        fc.jsonValue({ maxDepth: 2 })).map(([k, v]) => (o: Record<string, unknown>) => withOwn(o, k, v)),
      weight: 2,
    },
    { arbitrary: fc.constantFrom(...POLLUTION_KEYS).map((k) => (o: Record<string, unknown>) => withOwn(o, k, POLLUTION_VALUE)), weight: 2 },
    ...(keys.length ? [{ arbitrary: fc.tuple(fc.constantFrom(...keys), hugeString).map(([k, v]) => (o: Record<string, unknown>) => withOwn(o, k, v)), weight: 1 }] : []),
    { arbitrary: fc.constantFrom<unknown>(null, [], [1, 2], 'a string', 42, true, {}).map((v) => () => v), weight: 1 },
    { arbitrary: fc.constant((o: Record<string, unknown>) => [o]), weight: 1 },
  )
  return fc.tuple(objectOf(s, hints), mutation).map(([o, m]) => m(o))
}

// ---------------------------------------------------------------- bodies

export interface BodySpec {
  /** json: JSON.stringify(value); form: URL-encoded value; raw: text as is; none: no body. */
  kind: 'json' | 'form' | 'raw' | 'none'
  value?: unknown
  text?: string
  /** undefined: no Content-Type header at all. */
  contentType?: string
  label: string
}

export const JSON_TYPES = ['application/json', 'application/json; charset=utf-8']
export const ODD_JSON_TYPES = [
  'Application/JSON', 'APPLICATION/JSON;CHARSET=UTF-8', 'application/json;charset=utf-16', 'application/json; foo=bar; baz="q;x"',
  'application/json ;charset=utf-8', 'application/json, text/plain', 'application/jsonx', 'application/json-patch+json',
  'application/problem+json', 'application/vnd.api+json', 'text/json', 'application/json; charset', 'application/json;;',
]
export const FORM_TYPES = ['application/x-www-form-urlencoded', 'application/x-www-form-urlencoded; charset=utf-8', 'APPLICATION/X-WWW-FORM-URLENCODED']
export const OTHER_TYPES = [
  'text/plain', 'text/plain; charset=utf-8', 'multipart/form-data; boundary=----fuzz', 'application/xml', 'application/octet-stream',
  '', '*/*', 'application/*', 'garbage', ';', 'application/json/extra', 'text/html',
]

const DEEP = 20_000
export const MALFORMED_JSON = [
  '{', '}', '{"a":', '{"a":1,}', "{'a':1}", '[1,2', 'nul', 'undefined', '{"a":1}}', '{"a" 1}', '\ufeff{}', '{"a":"\\x41"}',
  '"\\u0000"', 'NaN', '{"a":01}', '{"a":1e99999}', ' ', '', '\u0000', '{"__proto__":{"isAdmin":true}}',
  '{"constructor":{"prototype":{"isAdmin":true}}}', '{"a":"\\ud800"}', '[]', 'null', '0', '"x"', '{"a":1,"a":2}',
  `${'['.repeat(DEEP)}${']'.repeat(DEEP)}`, `${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}`, `{"a":"${'\\u0000'.repeat(100)}"}`,
  `{"${'k'.repeat(70_000)}":1}`,
]
export const MALFORMED_FORM = ['%ZZ=1', 'a=%E0%A4%A', '=&=&', 'a', '&&&', 'token', 'token=%', 'token=a&token=b', 'password=%00', '__proto__[x]=1', 'a[b][c]=1']

function multipart(value: unknown): string {
  const fields = value && typeof value === 'object' ? Object.entries(value as Record<string, unknown>) : [['data', value]]
  return fields.map(([k, v]) => `------fuzz\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${typeof v === 'string' ? v : JSON.stringify(v)}\r\n`).join('')
    + '------fuzz--\r\n'
}

/** JSON text with the first key duplicated before it (`{"k":"dup","k":…}`). */
function duplicateKey(value: unknown): string {
  const text = JSON.stringify(value) ?? 'null'
  const first = value && typeof value === 'object' && !Array.isArray(value) ? Object.keys(value)[0] : undefined
  return first === undefined ? text : text.replace(/^\{/, `{${JSON.stringify(first)}:"dup",`)
}

/**
 * Bodies for one operation: its JSON and form schemas (valid and mutated), the
 * same objects under odd or wrong content types, malformed JSON and forms, and no body.
 */
export function bodyOf(op: Operation, hints: HintsFor): fc.Arbitrary<BodySpec> {
  if (op.method === 'GET') return fc.constant({ kind: 'none', label: 'none' } satisfies BodySpec)
  const jsonSchema = op.body?.content['application/json']
  const formSchema = op.body?.content['application/x-www-form-urlencoded']
  if (!jsonSchema && !formSchema) {
    // No request body declared: mostly none, sometimes one anyway.
    return fc.oneof(
      { arbitrary: fc.constant<BodySpec>({ kind: 'none', label: 'none' }), weight: 14 },
      { arbitrary: fc.constantFrom(...JSON_TYPES, ...OTHER_TYPES).map((contentType): BodySpec => ({ kind: 'none', contentType, label: 'none+type' })), weight: 1 },
      { arbitrary: fc.tuple(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(...JSON_TYPES, 'text/plain')).map(([value, contentType]): BodySpec => ({ kind: 'json', value, contentType, label: 'unexpected json' })), weight: 1 },
      { arbitrary: fc.constantFrom(...MALFORMED_JSON.slice(0, 10)).map((text): BodySpec => ({ kind: 'raw', text, contentType: 'application/json', label: 'unexpected malformed json' })), weight: 1 },
    )
  }
  const jsonObj = jsonSchema ? mutatedObject(jsonSchema, hints) : fc.constant({})
  const formObj = formSchema ? mutatedObject(formSchema, hints) : jsonObj
  const anyObj = fc.oneof(jsonObj, formObj)
  return fc.oneof(
    // Well-formed requests, so that the happy path is reached as well.
    ...(jsonSchema ? [{ arbitrary: fc.tuple(validObject(jsonSchema, hints), fc.constantFrom(...JSON_TYPES)).map(([value, contentType]): BodySpec => ({ kind: 'json', value, contentType, label: 'valid json' })), weight: 6 }] : []),
    ...(formSchema ? [{ arbitrary: fc.tuple(validObject(formSchema, hints), fc.constantFrom(...FORM_TYPES)).map(([value, contentType]): BodySpec => ({ kind: 'form', value, contentType, label: 'valid form' })), weight: 3 }] : []),
    ...(jsonSchema ? [{ arbitrary: fc.tuple(jsonObj, fc.constantFrom(...JSON_TYPES)).map(([value, contentType]): BodySpec => ({ kind: 'json', value, contentType, label: 'json' })), weight: 12 }] : []),
    ...(formSchema ? [{ arbitrary: fc.tuple(formObj, fc.constantFrom(...FORM_TYPES)).map(([value, contentType]): BodySpec => ({ kind: 'form', value, contentType, label: 'form' })), weight: 6 }] : []),
    { arbitrary: fc.tuple(anyObj, fc.constantFrom(...ODD_JSON_TYPES)).map(([value, contentType]): BodySpec => ({ kind: 'json', value, contentType, label: 'json, odd content type' })), weight: 2 },
    ...(!formSchema ? [{ arbitrary: fc.tuple(jsonObj, fc.constantFrom(...FORM_TYPES)).map(([value, contentType]): BodySpec => ({ kind: 'form', value, contentType, label: 'form where only json is declared' })), weight: 1 }] : []),
    { arbitrary: fc.tuple(anyObj, fc.constantFrom(...OTHER_TYPES)).map(([value, contentType]): BodySpec => ({ kind: 'json', value, contentType, label: 'json text, wrong content type' })), weight: 2 },
    { arbitrary: anyObj.map((value): BodySpec => ({ kind: 'raw', text: multipart(value), contentType: 'multipart/form-data; boundary=----fuzz', label: 'multipart' })), weight: 1 },
    { arbitrary: anyObj.map((value): BodySpec => ({ kind: 'json', value, contentType: undefined, label: 'json text, no content type' })), weight: 1 },
    { arbitrary: anyObj.map((value): BodySpec => ({ kind: 'raw', text: duplicateKey(value), contentType: 'application/json', label: 'duplicate keys' })), weight: 1 },
    { arbitrary: fc.constantFrom(...MALFORMED_JSON).map((text): BodySpec => ({ kind: 'raw', text, contentType: 'application/json', label: 'malformed json' })), weight: 3 },
    ...(formSchema ? [{ arbitrary: fc.constantFrom(...MALFORMED_FORM).map((text): BodySpec => ({ kind: 'raw', text, contentType: FORM_TYPES[0], label: 'malformed form' })), weight: 1 }] : []),
    { arbitrary: fc.constantFrom<string | undefined>(undefined, 'application/json', ...FORM_TYPES.slice(0, 1)).map((contentType): BodySpec => ({ kind: 'none', contentType, label: 'no body' })), weight: 1 },
  )
}

// ---------------------------------------------------------------- encoding

/** Percent-encodes a path segment; a lone surrogate becomes its (invalid) WTF-8 bytes, which no decoder accepts. */
export function encodeSegment(value: string): string {
  let out = ''
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    const isHigh = c >= 0xd800 && c <= 0xdbff
    const next = value.charCodeAt(i + 1)
    if (isHigh && next >= 0xdc00 && next <= 0xdfff) {
      out += encodeURIComponent(value.slice(i, i + 2))
      i++
    } else if (c >= 0xd800 && c <= 0xdfff) {
      out += `%${(0xe0 | (c >> 12)).toString(16)}%${(0x80 | ((c >> 6) & 0x3f)).toString(16)}%${(0x80 | (c & 0x3f)).toString(16)}`.toUpperCase()
    } else if (value[i] === '.') {
      out += '%2E'
    } else {
      out += encodeURIComponent(value[i]!)
    }
  }
  // "." and ".." (also encoded) are dot segments that a URL parser removes: keep them a segment.
  return /^(%2E){1,2}$/.test(out) ? `${out}x` : out
}

/** Form encoding of an object: arrays as repeated keys, objects as JSON text. */
export function formEncode(value: unknown): string {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return encodeSegment(JSON.stringify(value) ?? '')
  const o = value as Record<string, unknown>
  const parts: string[] = []
  for (const k of Object.keys(o)) {
    for (const v of Array.isArray(o[k]) ? o[k] as unknown[] : [o[k]]) {
      parts.push(`${encodeSegment(k)}=${encodeSegment(typeof v === 'string' ? v : JSON.stringify(v) ?? '')}`)
    }
  }
  return parts.join('&')
}

/** Header values must be ByteStrings without CR, LF or NUL: anything else becomes '?'. */
export const headerSafe = (s: string) => s.replace(/[^\x20-\x7e\x80-\xff\t]/g, '?')
