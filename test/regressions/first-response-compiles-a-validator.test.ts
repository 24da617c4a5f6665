// The first /auth/me answer after a start took about 45 ms where the next took 2: fast-json-stringify
// compiled, on that first response, the Ajv validator it uses to pick a union's (anyOf's) branch.
// The event loop stopped for the compile, every request in flight with it, once per such route after
// each start. The service now builds with SERVICE_BUILD_OPTIONS (compileSerializersAtStart), which moves those
// compiles to the start. Observed by counting Ajv's compiles while requests are answered.
import { createRequire } from 'node:module'
import t, { type Test } from 'tap'
import { SERVICE_BUILD_OPTIONS } from '../../src/app.js'
import { buildTestApp, FAST_ARGON2 } from '../helpers/app.js'
import { bearer, login, register } from '../helpers/api.js'

// The Ajv fast-json-stringify loads (its own copy, should it ever differ from Fastify's).
const requireFromSerializer = createRequire(createRequire(import.meta.url).resolve('fast-json-stringify'))
const AjvModule = requireFromSerializer('ajv') as { default?: { prototype: object }; prototype: object }
const ajvCore = Object.getPrototypeOf((AjvModule.default ?? AjvModule).prototype) as { _compileSchemaEnv: (...args: unknown[]) => unknown }

let counting = false
let compiles = 0
const original = ajvCore._compileSchemaEnv
ajvCore._compileSchemaEnv = function (this: unknown, ...args: unknown[]) {
  if (counting) compiles++
  return original.apply(this, args)
}
t.teardown(() => { ajvCore._compileSchemaEnv = original })

/** Ajv compiles while the first register, login and /auth/me (each answered through a union) are answered. */
async function compilesWhileAnswering(t: Test, compileSerializersAtStart: boolean | undefined): Promise<number> {
  const app = await buildTestApp(t, { env: FAST_ARGON2, compileSerializersAtStart })
  compiles = 0
  counting = true
  try {
    const user = await register(app)
    const res = await login(app, user.email)
    t.equal(res.statusCode, 200)
    const me = await app.inject({ url: '/api/v1/auth/me', headers: bearer(res.json().access_token) })
    t.equal(me.statusCode, 200)
    t.equal(me.json().organization.role, 'owner', 'the union is serialized as before')
  } finally {
    counting = false
  }
  return compiles
}

t.test('built as the service builds: no validator is compiled while answering', async (t) => {
  t.equal(await compilesWhileAnswering(t, SERVICE_BUILD_OPTIONS.compileSerializersAtStart), 0)
})

t.test('the probe works: built without it, the first answers compile their validators', async (t) => {
  t.ok(await compilesWhileAnswering(t, false) > 0)
})
