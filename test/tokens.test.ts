// Access tokens (RFC 9068) and the JWKS, checked from the outside with an
// independent JOSE library: what the service issues verifies with `jose`,
// and what an attacker can craft is refused.
import t, { type Test } from 'tap'
import * as jose from 'jose'
import { createHmac, createPublicKey, type JsonWebKey } from 'node:crypto'
import { buildTestApp, FAST_ARGON2 } from './helpers/app.js'
import { bearer, register } from './helpers/api.js'

const ISSUER = 'http://localhost:3000'
const AUDIENCE = 'portcullis'
const TTL = 900

const app = await buildTestApp(t, { env: FAST_ARGON2 })

type Claims = Record<string, unknown>
type Header = Record<string, unknown>

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')
const nowSeconds = () => Math.floor(Date.now() / 1000)

async function fetchJwks() {
  const res = await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })
  if (res.statusCode !== 200) throw new Error(`jwks: ${res.statusCode} ${res.body}`)
  return { res, jwks: res.json() as jose.JSONWebKeySet }
}

const kidsOf = (jwks: jose.JSONWebKeySet) => jwks.keys.map((k) => k.kid)

const me = (token: string) => app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(token) })

async function assertAccepted(t: Test, token: string, label: string) {
  const res = await me(token)
  t.equal(res.statusCode, 200, `${label}: 200`)
}

async function assertRejected(t: Test, token: string, label: string) {
  const res = await me(token)
  t.equal(res.statusCode, 401, `${label}: 401`)
  t.equal(res.json().error?.code, 'UNAUTHORIZED', `${label}: UNAUTHORIZED`)
}

/** An unsigned-by-us token: header.payload.signature assembled by hand. */
function handmade(header: Header, claims: Claims, sign: (input: string) => string) {
  const input = `${b64url(header)}.${b64url(claims)}`
  return `${input}.${sign(input)}`
}

const hs256 = (secret: string | Buffer) => (input: string) => createHmac('sha256', secret).update(input).digest('base64url')

/** ES256 with any private key; the header is exactly what is passed (plus alg). */
async function es256(key: jose.CryptoKey | CryptoKey | Uint8Array, header: Header, claims: Claims) {
  return new jose.SignJWT(claims).setProtectedHeader({ ...header, alg: 'ES256' }).sign(key as CryptoKey)
}

// A registered user, whose real claims are the base of every crafted token,
// so only the one thing each case changes can be the reason for a rejection.
const owner = await register(app)
const ownerToken: string = owner.access_token
const realKid = app.keyRing.current.kid
const realKey = await jose.importPKCS8(app.keyRing.current.privatePem, 'ES256')
const foreign = await jose.generateKeyPair('ES256')

function claims(overrides: Claims = {}): Claims {
  const iat = nowSeconds()
  return { ...jose.decodeJwt(ownerToken), jti: crypto.randomUUID(), iat, exp: iat + TTL, ...overrides }
}

const signedByUs = (overrides: Claims = {}, header: Header = {}) =>
  es256(realKey, { typ: 'at+jwt', kid: realKid, ...header }, claims(overrides))

t.test('a registration token verifies with jose against the served JWKS', async (t) => {
  const { jwks } = await fetchJwks()
  const { payload, protectedHeader } = await jose.jwtVerify(ownerToken, jose.createLocalJWKSet(jwks), {
    issuer: ISSUER, audience: AUDIENCE, typ: 'at+jwt', algorithms: ['ES256'],
  })

  t.equal(protectedHeader.alg, 'ES256')
  t.equal(protectedHeader.typ, 'at+jwt')
  t.type(protectedHeader.kid, 'string')
  t.ok(kidsOf(jwks).includes(protectedHeader.kid), 'kid is published in the JWKS')

  t.equal(payload.iss, ISSUER)
  t.equal(payload.aud, AUDIENCE)
  t.equal(payload.sub, owner.user.id)
  t.match(payload.sub, /^usr_/)
  t.equal(payload.org_id, owner.organization.id)
  t.match(payload.org_id, /^org_/)
  t.equal(payload.org_role, 'owner')
  t.type(payload.scope, 'string')
  t.ok((payload.scope as string).split(' ').includes('api_keys:write'), 'scope is space-separated and holds api_keys:write')
  t.match(payload.sid, /^ses_/)
  t.type(payload.jti, 'string')
  t.ok((payload.jti as string).length > 0, 'jti non-empty')
  t.type(payload.iat, 'number')
  t.type(payload.exp, 'number')
  t.equal(payload.exp! - payload.iat!, TTL, 'lifetime is ACCESS_TOKEN_TTL (15 min)')
  t.ok(Math.abs(payload.iat! - nowSeconds()) < 60, 'iat is now')
})

t.test('JWKS: cacheable, next and current, public halves only', async (t) => {
  const { res, jwks } = await fetchJwks()
  t.ok(res.headers['cache-control'], 'Cache-Control present')
  t.equal(jwks.keys.length, 2, 'next and current at start')
  t.ok(kidsOf(jwks).includes(realKid), 'current signing kid listed')
  t.equal(new Set(kidsOf(jwks)).size, 2, 'distinct kids')
  for (const key of jwks.keys) {
    t.match(key, { kty: 'EC', crv: 'P-256', use: 'sig', alg: 'ES256', kid: String }, `key ${key.kid}`)
    t.notOk('d' in key, `key ${key.kid} has no private member`)
  }
})

t.test('forged and mis-claimed tokens are 401 UNAUTHORIZED on /auth/me', async (t) => {
  const { jwks } = await fetchJwks()
  const realJwk = jwks.keys.find((k) => k.kid === realKid)!
  const publicPem = createPublicKey({ key: realJwk as JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString()
  const now = nowSeconds()

  t.test('positive controls', async (t) => {
    await assertAccepted(t, ownerToken, 'issued token')
    await assertAccepted(t, await signedByUs(), 'token crafted with the real key and real claims')
  })

  // Each forgery is first shown to be well-formed (a naive verifier trusting
  // the attacker's choice of algorithm or key accepts it), so its 401 comes
  // from the defence under test, not from a malformed token.
  t.test('alg: none with the real kid and an empty signature', async (t) => {
    const token = handmade({ alg: 'none', typ: 'at+jwt', kid: realKid }, claims(), () => '')
    t.doesNotThrow(() => jose.UnsecuredJWT.decode(token, { issuer: ISSUER, audience: AUDIENCE }), 'well-formed unsecured JWT')
    await assertRejected(t, token, 'alg none')
  })

  t.test('HS256 keyed with the public key (algorithm confusion)', async (t) => {
    const header = { alg: 'HS256', typ: 'at+jwt', kid: realKid }
    for (const [label, secret] of [['public PEM as HMAC secret', publicPem], ['whitespace-prefixed PEM', `\n  ${publicPem}`]] as const) {
      const token = handmade(header, claims(), hs256(secret))
      await t.resolves(jose.jwtVerify(token, new TextEncoder().encode(secret), { algorithms: ['HS256'] }), `${label}: valid HS256 under that secret`)
      await assertRejected(t, token, label)
    }
    await assertRejected(t, handmade(header, claims(), hs256(Buffer.alloc(0))), 'empty HMAC key')
  })

  t.test('signatures by a key that is not ours', async (t) => {
    for (const [label, kid] of [['foreign kid', 'kid_attacker'], ['foreign key, real kid', realKid]] as const) {
      const token = await es256(foreign.privateKey, { typ: 'at+jwt', kid }, claims())
      await t.resolves(jose.jwtVerify(token, foreign.publicKey), `${label}: valid under the foreign key`)
      await assertRejected(t, token, label)
    }
  })

  t.test('jku and jwk headers are never followed', async (t) => {
    const attackerJwk = await jose.exportJWK(foreign.publicKey)
    const header = { typ: 'at+jwt', jku: 'https://attacker.example/jwks.json', jwk: attackerJwk }
    for (const [label, extra] of [['jku+jwk with real kid', { kid: realKid }], ['jku+jwk without kid', {}]] as const) {
      const token = await es256(foreign.privateKey, { ...header, ...extra }, claims())
      await t.resolves(jose.jwtVerify(token, jose.EmbeddedJWK), `${label}: valid for a verifier that trusts the embedded jwk`)
      await assertRejected(t, token, label)
    }
  })

  t.test('one wrong claim or header at a time, signed with the real key', async (t) => {
    await assertRejected(t, await signedByUs({ iss: 'https://staging.example.com' }), 'wrong iss')
    await assertRejected(t, await signedByUs({ aud: 'someone-else' }), 'wrong aud')
    await assertRejected(t, await signedByUs({}, { typ: 'JWT' }), 'typ JWT')
    await assertRejected(t, await signedByUs({ iat: now - TTL - 45, exp: now - 45 }), 'expired 45 s ago (beyond the ≤ 30 s tolerance)')
    await assertRejected(t, await signedByUs({ nbf: now + 3600 }), 'nbf an hour ahead')
  })

  t.test('a tampered payload keeps a signature that no longer matches', async (t) => {
    const [header, , signature] = ownerToken.split('.')
    const tampered = `${header}.${b64url({ ...jose.decodeJwt(ownerToken), org_role: 'admin' })}.${signature}`
    await assertRejected(t, tampered, 'org_role changed')
  })
})

t.test('a token verified before is still refused once it expires (the verification shortcut re-checks exp)', async (t) => {
  const fresh = (await register(app)).access_token as string
  await assertAccepted(t, fresh, 'fresh token, first use')
  await assertAccepted(t, fresh, 'fresh token, second use (remembered)')
  // Expiry is checked against the system clock (as fast-jwt does): move it past exp + the 30 s tolerance.
  const { exp } = jose.decodeJwt(fresh)
  const realNow = Date.now
  Date.now = () => (exp! + 31) * 1000
  try {
    await assertRejected(t, fresh, 'the same token 31 s after exp')
  } finally {
    Date.now = realNow
  }
  // A token seen expired is remembered as expired (it never becomes valid again: regression test
  // expired-token-verified-every-time), even if the system clock steps back; nothing else changed.
  await assertRejected(t, fresh, 'still refused once the clock is back: remembered as expired')
  await assertAccepted(t, (await register(app)).access_token as string, 'while a token issued now is accepted')
})

t.test('key rotation: old tokens keep working, new tokens use the promoted key', async (t) => {
  const before = await fetchJwks()
  const oldCurrent = realKid
  const oldNext = kidsOf(before.jwks).find((kid) => kid !== oldCurrent)!
  t.ok(oldNext, 'a next key is published before rotation')

  const rotated = await app.keyRing.rotate()
  t.equal(rotated.current, oldNext, 'next was promoted to current')

  await assertAccepted(t, ownerToken, 'token issued before rotation')

  const fresh = await register(app)
  const header = jose.decodeProtectedHeader(fresh.access_token)
  t.equal(header.kid, oldNext, 'new token signed with the former next key')
  await assertAccepted(t, fresh.access_token, 'token issued after rotation')

  const after = await fetchJwks()
  t.equal(after.jwks.keys.length, 3, 'next, current and previous')
  t.ok(kidsOf(after.jwks).includes(oldCurrent), 'previous (old current) still published')
  t.ok(kidsOf(after.jwks).includes(oldNext), 'current (old next) published')
  t.ok(kidsOf(after.jwks).includes(rotated.next), 'fresh next published')

  // Both generations verify independently against the new JWKS.
  const keySet = jose.createLocalJWKSet(after.jwks)
  for (const token of [ownerToken, fresh.access_token]) {
    await t.resolves(jose.jwtVerify(token, keySet, { issuer: ISSUER, audience: AUDIENCE, typ: 'at+jwt' }))
  }
})
