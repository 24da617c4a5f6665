import t from 'tap'
import argon2 from 'argon2'
import { eq } from 'drizzle-orm'
import { users } from '../../src/db/schema.js'
import { buildTestApp, FAST_ARGON2 } from '../helpers/app.js'
import { bearer, login, register, STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'

const app = await buildTestApp(t, { env: FAST_ARGON2 })

t.test('JSON login returns an access token and the user', async (t) => {
  const reg = await register(app, { email: uniqueEmail('Json') })
  const res = await login(app, reg.email.toUpperCase())
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.equal(body.token_type, 'Bearer')
  t.equal(body.user.id, reg.user.id)
  const me = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(body.access_token) })
  t.equal(me.statusCode, 200)
  t.equal(me.json().auth.method, 'session')
  t.match(me.json().auth.session_id, /^ses_/)
  t.equal(me.json().organization.id, reg.organization.id)
})

t.test('form login (OAuth2 password grant style)', async (t) => {
  const reg = await register(app)
  const form = new URLSearchParams({ grant_type: 'password', username: reg.email, password: STRONG_PASSWORD })
  const res = await app.inject({
    method: 'POST', url: '/api/v1/auth/login',
    headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form.toString(),
  })
  t.equal(res.statusCode, 200)
  t.equal(res.json().user.email, reg.email)

  const missing = await app.inject({
    method: 'POST', url: '/api/v1/auth/login',
    headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'username=x',
  })
  t.equal(missing.statusCode, 422)
  t.equal(missing.json().error.details[0].field, 'password')
})

t.test('unknown email and wrong password get identical answers', async (t) => {
  const reg = await register(app)
  const wrong = await login(app, reg.email, 'definitely-not-it-42')
  const unknown = await login(app, uniqueEmail('ghost'), 'definitely-not-it-42')
  t.equal(wrong.statusCode, 401)
  t.equal(unknown.statusCode, wrong.statusCode)
  const strip = (b: { error: Record<string, unknown> }) => ({ ...b.error, request_id: undefined })
  t.same(strip(unknown.json()), strip(wrong.json()))
  t.equal(wrong.json().error.code, 'INVALID_CREDENTIALS')
  t.same(Object.keys(unknown.headers).sort(), Object.keys(wrong.headers).sort(), 'same headers')

  // Equal work: the unknown-email path runs argon2 too (counted, not timed).
  let verifies = 0
  const original = argon2.verify
  ;(argon2 as { verify: typeof argon2.verify }).verify = async (...args) => { verifies++; return original(...args) }
  t.teardown(() => { (argon2 as { verify: typeof argon2.verify }).verify = original })
  await login(app, uniqueEmail('ghost2'), 'definitely-not-it-42')
  t.equal(verifies, 1, 'one argon2 verification for an unknown email')
  await login(app, reg.email, 'definitely-not-it-42')
  t.equal(verifies, 2, 'one for a wrong password')
})

t.test('a hash with old parameters is upgraded on the next successful login', async (t) => {
  const reg = await register(app)
  const weak = await argon2.hash(STRONG_PASSWORD, { type: argon2.argon2i, memoryCost: 2048, timeCost: 1, parallelism: 1 })
  await app.db.update(users).set({ passwordHash: weak }).where(eq(users.id, reg.user.id))

  t.equal((await login(app, reg.email, 'wrong-password-here')).statusCode, 401)
  let [row] = await app.db.select().from(users).where(eq(users.id, reg.user.id))
  t.equal(row!.passwordHash, weak, 'a failed login does not rehash')

  t.equal((await login(app, reg.email)).statusCode, 200)
  ;[row] = await app.db.select().from(users).where(eq(users.id, reg.user.id))
  t.match(row!.passwordHash, /^\$argon2id\$v=19\$m=4096,p=1,t=1\$/, 'rehashed with the configured parameters')
  t.ok(await argon2.verify(row!.passwordHash, STRONG_PASSWORD))
  t.equal((await login(app, reg.email)).statusCode, 200, 'still logs in afterwards')
})

t.test('disabled users cannot log in', async (t) => {
  const reg = await register(app)
  await app.db.update(users).set({ disabledAt: new Date() }).where(eq(users.id, reg.user.id))
  const res = await login(app, reg.email)
  t.equal(res.statusCode, 401)
  t.equal(res.json().error.code, 'INVALID_CREDENTIALS')
})

t.test('login with org_id picks that organization', async (t) => {
  const reg = await register(app)
  const res = await app.inject({
    method: 'POST', url: '/api/v1/auth/login', payload: { email: reg.email, password: STRONG_PASSWORD, org_id: reg.organization.id },
  })
  t.equal(res.statusCode, 200)
  const me = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(res.json().access_token) })
  t.equal(me.json().organization.id, reg.organization.id)
})
