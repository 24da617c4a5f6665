import t from 'tap'
import argon2 from 'argon2'
import { sql } from 'drizzle-orm'
import { buildTestApp } from '../helpers/app.js'
import { STRONG_PASSWORD, uniqueEmail } from '../helpers/api.js'

const app = await buildTestApp(t) // default OWASP argon2 parameters on purpose

const post = (payload: unknown) => app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: payload as object })

async function storedUsers(email: string) {
  const result = await app.db.execute(sql`select id, email, password_hash from users where lower(email) = ${email.toLowerCase()}`)
  return (Array.isArray(result) ? result : (result as { rows: unknown[] }).rows) as { id: string; email: string; password_hash: string }[]
}

t.test('register creates the user, an organization with the user as owner and welcome credits, and tokens', async (t) => {
  const email = uniqueEmail('Reg')
  const res = await post({ email: `  ${email.toUpperCase()} `, password: STRONG_PASSWORD, name: 'Ada', company_name: 'Acme Robotics' })
  t.equal(res.statusCode, 201)
  const body = res.json()
  t.match(body.user, { email: email.toLowerCase(), name: 'Ada', is_superadmin: false, mfa_enabled: false })
  t.match(body.user.id, /^usr_[0-9a-z]{26}$/)
  t.match(body.organization, { name: 'Acme Robotics', role: 'owner', credits: 5000 })
  t.match(body.organization.id, /^org_/)
  t.equal(body.token_type, 'Bearer')
  t.equal(body.expires_in, 900)
  t.equal(body.access_token.split('.').length, 3)
  t.notOk('password' in body.user || 'password_hash' in body.user, 'no password material in the response')

  const me = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { authorization: `Bearer ${body.access_token}` } })
  t.equal(me.statusCode, 200)
  t.same(me.json().memberships, [{ id: body.organization.id, name: 'Acme Robotics', role: 'owner' }])
})

t.test('without a company name the organization is "<name>\'s workspace"', async (t) => {
  const res = await post({ email: uniqueEmail(), password: STRONG_PASSWORD, name: 'Grace' })
  t.equal(res.json().organization.name, "Grace's workspace")
})

t.test('two concurrent registrations of one email: one 201, one 409, one row', async (t) => {
  const email = uniqueEmail('race')
  const results = await Promise.all([
    post({ email, password: STRONG_PASSWORD }),
    post({ email: email.toUpperCase(), password: STRONG_PASSWORD }),
    post({ email: ` ${email}`, password: STRONG_PASSWORD }),
  ])
  const statuses = results.map((r) => r.statusCode).sort()
  t.same(statuses, [201, 409, 409])
  for (const r of results.filter((r) => r.statusCode === 409)) t.equal(r.json().error.code, 'EMAIL_TAKEN')
  t.equal((await storedUsers(email)).length, 1)
})

t.test('password policy', async (t) => {
  let hashes = 0
  const original = app.passwordHasher.hash.bind(app.passwordHasher)
  app.passwordHasher.hash = async (p: string) => { hashes++; return original(p) }
  t.teardown(() => { app.passwordHasher.hash = original })

  const cases: [string, string, RegExp, Record<string, string>?][] = [
    ['too short', 'short-pass1', /at least 12/],
    ['too long (257 code points)', 'a'.repeat(257), /256/],
    ['common', 'password1234', /common/],
    ['common, any case', 'PASSWORD1234', /common/],
    ['equal to the email', '', /email/],
    ['equal to the name', 'Marie Sklodowska', /name/, { name: 'Marie Sklodowska' }],
    ['equal to the company name', 'Curie Industries', /company/, { company_name: 'Curie Industries' }],
  ]
  for (const [label, password, message, extra] of cases) {
    const email = uniqueEmail('policy')
    const res = await post({ email, password: password || email, ...extra })
    t.equal(res.statusCode, 422, label)
    const detail = res.json().error.details?.[0]
    t.equal(detail?.field, 'password', `${label}: names the field`)
    t.match(detail?.message, message, `${label}: says why`)
    t.equal((await storedUsers(email)).length, 0, `${label}: nothing stored`)
  }
  t.equal(hashes, 0, 'no refused password was ever hashed')

  // Code points, not UTF-16 units: 12 emoji are 24 units but 12 characters.
  const emoji = '🦊🐙🦉🐢🦀🐝🦋🐬🦩🐌🦔🐳'
  t.equal((await post({ email: uniqueEmail(), password: emoji })).statusCode, 201, '12 astral code points accepted')
  t.equal((await post({ email: uniqueEmail(), password: '🦊'.repeat(256) })).statusCode, 201, '256 astral code points accepted')
})

t.test('stored hashes are argon2id with the configured parameters and unique salts', async (t) => {
  const a = uniqueEmail('hash')
  const b = uniqueEmail('hash')
  await post({ email: a, password: STRONG_PASSWORD })
  await post({ email: b, password: STRONG_PASSWORD })
  const [ha] = await storedUsers(a)
  const [hb] = await storedUsers(b)
  for (const h of [ha!.password_hash, hb!.password_hash]) {
    t.match(h, /^\$argon2id\$v=19\$m=19456,p=1,t=2\$/)
    t.ok(await argon2.verify(h, STRONG_PASSWORD))
  }
  const salt = (h: string) => h.split('$')[4]
  t.not(salt(ha!.password_hash), salt(hb!.password_hash), 'salts differ')
  t.not(ha!.password_hash, hb!.password_hash)
})

t.test('an invalid email is a 422 naming the field', async (t) => {
  for (const email of ['not-an-email', 'a@b', '   ', 'x'.repeat(400) + '@example.com']) {
    const res = await post({ email, password: STRONG_PASSWORD })
    t.equal(res.statusCode, 422, JSON.stringify(email).slice(0, 30))
    t.equal(res.json().error.details[0].field, 'email')
  }
})
