// Validates a response against the response schema that openapi/openapi.yaml
// declares for its operation and status (JSON Schema 2020-12, as OpenAPI 3.1 is).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import Ajv2020Module from 'ajv/dist/2020.js'
import addFormatsModule from 'ajv-formats'

const Ajv2020 = Ajv2020Module as unknown as typeof Ajv2020Module.default
const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default

type Doc = { paths: Record<string, Record<string, { responses?: Record<string, { content?: Record<string, unknown> }> }>> }

export const OPENAPI_DOC = parse(readFileSync(join(import.meta.dirname, '..', '..', 'openapi', 'openapi.yaml'), 'utf8')) as Doc

const ajv = new Ajv2020({ strict: false, allErrors: true })
addFormats(ajv)
ajv.addSchema({ ...OPENAPI_DOC, $id: 'openapi' })

const pointer = (...parts: string[]) => parts.map((p) => p.replaceAll('~', '~0').replaceAll('/', '~1')).join('/')

/** The path template of the document that matches a concrete path, e.g. /api-keys/key_1 → /api-keys/{id}. */
export function pathTemplate(path: string): string | undefined {
  return Object.keys(OPENAPI_DOC.paths).find((template) =>
    new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`).test(path))
}

export interface SpecCheck { ok: boolean; declared: boolean; errors: string }

/** Whether the status is declared for the operation and the body matches its schema. */
export function checkResponse(method: string, path: string, status: number, body: unknown): SpecCheck {
  const template = pathTemplate(path)
  const op = template ? OPENAPI_DOC.paths[template]?.[method.toLowerCase()] : undefined
  const response = op?.responses?.[String(status)]
  if (!template || !response) return { ok: false, declared: false, errors: `${method} ${path} → ${status} is not declared` }
  if (!response.content?.['application/json']) return { ok: body === undefined || body === '' || body === null, declared: true, errors: 'expected no body' }
  const ref = `openapi#/${pointer('paths', template, method.toLowerCase(), 'responses', String(status), 'content', 'application/json', 'schema')}`
  const validate = ajv.getSchema(ref) ?? ajv.compile({ $ref: ref })
  const ok = validate(body) as boolean
  return { ok, declared: true, errors: ok ? '' : ajv.errorsText(validate.errors) }
}
