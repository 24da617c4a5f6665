// Signing-key rotation across instances (SPEC §4 "Signing keys"): a rotation
// anywhere (an instance or the CLI) is followed by every instance within 1 s
// without a restart, tokens signed by earlier keys keep verifying while they
// can live, a previous key is retired after ACCESS_TOKEN_TTL + 60 s, and a
// JWT_ALGORITHM change takes effect at the next rotation without breaking
// tokens signed with the old algorithm.
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { eq } from 'drizzle-orm'
import { decodeProtectedHeader, type JSONWebKeySet } from 'jose'
import type { App } from '../../src/app.js'
import { signingKeys } from '../../src/db/schema.js'
import {
  buildTestApp, FakeClock, FAST_ARGON2, sharedDatabase, TEST_DATABASE_URL, TEST_REDIS_URL, within,
} from '../helpers/app.js'
import { bearer, register } from '../helpers/api.js'

const ENV: Record<string, string> = TEST_REDIS_URL ? { ...FAST_ARGON2, REDIS_URL: TEST_REDIS_URL } : FAST_ARGON2
const CHANNEL = TEST_REDIS_URL ? 'Redis pub/sub'
  : TEST_DATABASE_URL ? 'PostgreSQL LISTEN/NOTIFY' : 'PGlite in-process NOTIFY'
const ACCESS_TOKEN_TTL = 900

/** Two (or more) instances on one fresh database; `start(env)` adds one with extra settings. */
async function cluster(t: Test) {
  const shared = await sharedDatabase(t)
  const start = (env: Record<string, string> = {}) => buildTestApp(t, { ...shared, env: { ...ENV, ...env } })
  return { shared, start, A: await start(), B: await start() }
}

const issue = async (app: App) => (await register(app)).access_token as string
const headerOf = (token: string) => decodeProtectedHeader(token)
const meStatus = async (app: App, token: string) =>
  (await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(token) })).statusCode

async function jwks(app: App): Promise<JSONWebKeySet> {
  const res = await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })
  if (res.statusCode !== 200) throw new Error(`jwks: ${res.statusCode} ${res.body}`)
  return res.json()
}
const jwksKids = async (app: App) => (await jwks(app)).keys.map((k) => k.kid!).sort()
const stateOf = (app: App, state: string) => app.keyRing.publishedKeys().find((k) => k.state === state)!

/** `check` holds within 1 s; the time it took is part of the assertion message. */
async function assertWithin(t: Test, label: string, check: () => Promise<boolean> | boolean) {
  const ms = await within(1000, check)
  t.ok(ms >= 0, `${label} after ${ms} ms (${CHANNEL})`)
}

async function assertTokensWork(t: Test, apps: Record<string, App>, tokens: Record<string, string>) {
  for (const [appName, app] of Object.entries(apps)) {
    for (const [label, token] of Object.entries(tokens)) t.equal(await meStatus(app, token), 200, `${label} works on ${appName}`)
  }
}

t.test(`a rotation on A reaches B within 1 s (${CHANNEL})`, async (t) => {
  const { A, B } = await cluster(t)
  const t1 = await issue(A)
  const first = A.keyRing.current.kid
  t.equal(B.keyRing.current.kid, first, 'both instances sign with the same key at first')

  const rotated = await A.rotateSigningKeys()
  t.equal(A.keyRing.current.kid, rotated.current, 'A signs with the promoted key at once')
  t.not(rotated.current, first)

  await assertWithin(t, 'B signs with A\'s new kid and publishes the new next key', async () =>
    headerOf(await issue(B)).kid === A.keyRing.current.kid && (await jwksKids(B)).includes(rotated.next))
  await assertTokensWork(t, { A, B }, { 'T1 (signed before the rotation)': t1 })

  for (const [name, app] of Object.entries({ A, B })) {
    t.same(await jwksKids(app), [first, rotated.current, rotated.next].sort(), `${name}: JWKS lists previous, current and next`)
    t.same(app.keyRing.publishedKeys().map((k) => k.state).sort(), ['current', 'next', 'previous'], `${name}: key states`)
  }
})

t.test('rotating twice quickly keeps both previous keys published', async (t) => {
  const { A, B } = await cluster(t)
  const t1 = await issue(A)
  await A.rotateSigningKeys()
  const t2 = await issue(A)
  // The second rotation runs on B before it necessarily heard of the first: the database decides.
  const second = await B.rotateSigningKeys()
  const t3 = await issue(B)
  t.same(new Set([t1, t2, t3].map((tok) => headerOf(tok).kid)).size, 3, 'three tokens signed by three different keys')
  t.equal(headerOf(t3).kid, second.current)

  await assertWithin(t, 'A and B agree on the current key and publish the same 4 keys', async () =>
    A.keyRing.current.kid === second.current && (await jwksKids(A)).join() === (await jwksKids(B)).join())
  const kids = await jwksKids(A)
  t.equal(kids.length, 4, 'two previous keys, current and next')
  for (const tok of [t1, t2, t3]) t.ok(kids.includes(headerOf(tok).kid!), `kid ${headerOf(tok).kid} published`)
  await assertTokensWork(t, { A, B }, { 'T1 (two rotations ago)': t1, 'T2 (one rotation ago)': t2, T3: t3 })
})

t.test('a previous key is retired ACCESS_TOKEN_TTL + 60 s after it stopped signing', async (t) => {
  const clock = new FakeClock()
  const app = await buildTestApp(t, { env: FAST_ARGON2, clock })
  const first = app.keyRing.current.kid
  // Verified (and so remembered by the verification shortcut) while its key signs.
  const token = await issue(app)
  t.equal(headerOf(token).kid, first)
  t.equal(await meStatus(app, token), 200, 'a token of the first key verifies')
  await app.rotateSigningKeys()
  t.ok((await jwksKids(app)).includes(first), 'published as previous right after the rotation')
  t.equal(await meStatus(app, token), 200, 'its token still verifies after the rotation')

  clock.advance((ACCESS_TOKEN_TTL + 59) * 1000)
  await app.keyRing.reload()
  t.ok((await jwksKids(app)).includes(first), 'still published at TTL + 59 s: a token it signed may still be valid')

  clock.advance(2 * 1000)
  await app.keyRing.reload()
  t.notOk((await jwksKids(app)).includes(first), 'gone from the JWKS at TTL + 61 s')
  t.equal(app.keyRing.publicKey(first), undefined, 'and no longer verifies anything')
  // The token itself has not expired (its exp is checked against the system clock), only its key is gone.
  t.equal(await meStatus(app, token), 401, 'a token verified before is refused once its key is retired')

  const second = app.keyRing.current.kid
  await app.rotateSigningKeys()
  const [row] = await app.db.select().from(signingKeys).where(eq(signingKeys.kid, first))
  t.equal(row!.state, 'retired', 'the next rotation records it as retired')
  t.same(await jwksKids(app), [second, app.keyRing.current.kid, stateOf(app, 'next').kid].sort(),
    'JWKS: the key that just stopped signing, current and next')
})

t.test('a JWT_ALGORITHM change: old tokens keep verifying, the next rotation signs with the new algorithm', async (t) => {
  const { start, A } = await cluster(t)
  const es256Token = await issue(A)
  t.equal(headerOf(es256Token).alg, 'ES256')

  const B = await start({ JWT_ALGORITHM: 'EdDSA' })
  t.equal(await meStatus(B, es256Token), 200, 'the ES256 token verifies on the EdDSA-configured instance')
  const next = stateOf(B, 'next')
  t.equal(next.alg, 'EdDSA', 'B replaced the next key with an EdDSA one')
  const published = (await jwks(B)).keys.find((k) => k.kid === next.kid)
  t.match(published, { kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig' }, 'B\'s JWKS lists the EdDSA next key')
  t.notOk(published && 'd' in published, 'public half only')

  const rotated = await B.rotateSigningKeys()
  t.equal(rotated.current, next.kid, 'the EdDSA key is promoted')
  const eddsaToken = await issue(B)
  t.match(headerOf(eddsaToken), { alg: 'EdDSA', kid: next.kid, typ: 'at+jwt' }, 'B signs EdDSA tokens')
  t.equal(await meStatus(B, eddsaToken), 200, 'the EdDSA token works on B')
  await assertWithin(t, 'A accepts the EdDSA token', async () => await meStatus(A, eddsaToken) === 200)
  await assertTokensWork(t, { A, B }, { 'the ES256 token': es256Token })
  t.same(await jwksKids(A), await jwksKids(B), 'A and B publish the same keys')
})

const CLI_SKIP = TEST_DATABASE_URL ? false
  : 'needs TEST_DATABASE_URL: the CLI runs in another process, which cannot open this process\'s in-memory PGlite database'

/** `npx tsx src/cli.ts ...args` from the repository root; never rejects. */
function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const root = join(import.meta.dirname, '..', '..')
  return new Promise((resolve) => {
    execFile('npx', ['tsx', 'src/cli.ts', ...args], { cwd: root, env, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr })
    })
  })
}

t.test('`keys rotate` from the CLI is followed by running instances within 1 s', { skip: CLI_SKIP }, async (t) => {
  const { shared, A, B } = await cluster(t)
  const before = A.keyRing.current.kid
  // The operator's configuration: the service's database, SECRET_KEY and (when used) Redis.
  const { code, stdout, stderr } = await runCli(['keys', 'rotate'], {
    ...process.env, DATABASE_URL: shared.databaseUrl!, SECRET_KEY: shared.secretKey!, LOG_LEVEL: 'silent',
    ...(TEST_REDIS_URL ? { REDIS_URL: TEST_REDIS_URL } : {}),
  })
  t.equal(code, 0, code === 0 ? 'exit 0' : `exit 0 (stderr: ${stderr.trim()})`)
  const printed = /signing with (kid_\w+); next key (kid_\w+)/.exec(stdout)
  t.ok(printed, `prints the new kids: ${stdout.trim()}`)
  const [, current, next] = printed ?? []
  t.not(current, before, 'a new key signs')
  for (const [name, app] of Object.entries({ A, B })) {
    await assertWithin(t, `${name} signs with the printed kid and publishes the printed next key`, async () =>
      app.keyRing.current.kid === current && headerOf(await issue(app)).kid === current && (await jwksKids(app)).includes(next!))
  }
})
