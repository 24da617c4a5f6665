// The public contract: openapi/openapi.yaml is valid OpenAPI 3.1, is what the
// app serves byte for byte, matches the code (no drift), and declares the
// error responses of §3 on every operation.
import t from 'tap'
import SwaggerParser from '@apidevtools/swagger-parser'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import { ERROR_CODES } from '../src/errors.js'
import { buildTestApp } from './helpers/app.js'

const root = join(import.meta.dirname, '..')
const committed = readFileSync(join(root, 'openapi', 'openapi.yaml'), 'utf8')
const doc = parse(committed)

const ERROR_REF = '#/components/schemas/Error'
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']

interface Operation {
  operationId?: string
  summary?: string
  tags?: string[]
  security?: unknown[]
  requestBody?: unknown
  responses?: Record<string, { content?: Record<string, { schema?: { $ref?: string } }> }>
}

/** Every operation of the document as [label, operation]. */
function operations(): [string, Operation][] {
  return Object.entries(doc.paths as Record<string, Record<string, Operation>>).flatMap(([path, item]) =>
    HTTP_METHODS.filter((m) => item[m]).map((m): [string, Operation] => [`${m.toUpperCase()} ${path}`, item[m]!]))
}

/** Runs a command, resolving with its exit code and output instead of rejecting on failure. */
function runCommand(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: root }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0
      resolve({ code, stdout, stderr })
    })
  })
}

t.test('the committed document is valid OpenAPI 3.1', async (t) => {
  t.match(doc.openapi, /^3\.1\.\d+$/, 'declares openapi 3.1.x')
  await t.resolves(SwaggerParser.validate(structuredClone(doc)), 'swagger-parser validates it')
})

t.test('the app serves the committed document', async (t) => {
  const app = await buildTestApp(t)

  for (const url of ['/openapi.yaml', '/api/v1/openapi.yaml']) {
    const res = await app.inject({ method: 'GET', url })
    t.equal(res.statusCode, 200, `${url} 200`)
    t.match(res.headers['content-type'], /^application\/(x-)?yaml\b/, `${url} has a yaml content type`)
    t.equal(res.body, committed, `${url} is byte-identical to openapi/openapi.yaml`)
  }

  const json = await app.inject({ method: 'GET', url: '/openapi.json' })
  t.equal(json.statusCode, 200)
  t.match(json.headers['content-type'], /^application\/json\b/)
  t.strictSame(json.json(), doc, '/openapi.json is the same document')
})

t.test('openapi check: the committed document matches the code', async (t) => {
  const { code, stdout, stderr } = await runCommand('npx', ['tsx', 'src/cli.ts', 'openapi', 'check'])
  t.equal(code, 0, 'exit code 0', { stderr })
  t.match(stdout, 'openapi/openapi.yaml matches the code')
})

t.test('every operation is documented and declares the platform errors', async (t) => {
  const ops = operations()
  t.ok(ops.length > 0, 'the document has operations')

  const ids = ops.map(([, op]) => op.operationId)
  t.equal(new Set(ids).size, ids.length, 'operationIds are unique')

  for (const [label, op] of ops) {
    t.test(label, async (t) => {
      t.type(op.operationId, 'string', 'operationId')
      t.ok(op.summary, 'summary')
      t.ok(Array.isArray(op.tags) && op.tags.length > 0, 'tags')

      const responses = op.responses ?? {}
      t.ok(Object.keys(responses).some((s) => /^2\d\d$/.test(s)), 'a 2xx response')

      // The OAuth token endpoint answers RFC 6749 §5.2 bodies (malformed input of any kind is 400 invalid_request).
      const oauth = op.operationId === 'token'
      const errorStatuses = ['400', '500', '503']
      if (op.requestBody && !oauth) errorStatuses.push('413', '415', '422')
      if (op.security?.some((s: unknown) => Object.keys(s as object).length)) errorStatuses.push('401')
      for (const status of errorStatuses) {
        t.equal(responses[status]?.content?.['application/json']?.schema?.$ref, oauth ? '#/components/schemas/OAuthError' : ERROR_REF,
          `${status} uses the ${oauth ? 'OAuthError' : 'Error'} schema`)
      }
    })
  }
})

t.test('the Error component lists every error code', async (t) => {
  const codes: string[] = doc.components.schemas.Error.properties.error.properties.code.enum
  t.strictSame([...codes].sort(), Object.keys(ERROR_CODES).sort())
})
