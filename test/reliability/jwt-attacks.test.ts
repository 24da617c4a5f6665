// JWT attacks beyond test/tokens.test.ts (which has alg none with an empty
// signature, HS256 keyed with the public PEM, the empty HMAC key, a foreign
// key, jku+jwk, wrong iss/aud, typ JWT, expired, nbf an hour ahead and a
// tampered org_role): each forged token is sent to the three places that
// verify access tokens — a session route (/auth/me), forward-auth
// (/auth/verify) and RFC 7662 introspection — and must be 401 there (inactive
// for introspection), except the cases RFC 9068 / the ≤ 30 s clock tolerance
// say to accept. While the attacks run, no outbound request or connection may
// be made: jku/x5u/kid point at a trap server in this process that counts
// hits, and undici, net, tls, http and https are watched.
import t, { type Test } from 'tap'
import * as jose from 'jose'
import diagnostics from 'node:diagnostics_channel'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import tls from 'node:tls'
import { syncBuiltinESMExports } from 'node:module'
import { createHmac, createPrivateKey, createPublicKey, sign as cryptoSign, type KeyObject } from 'node:crypto'
import { buildTestApp, FAST_ARGON2, TEST_DATABASE_URL, TEST_REDIS_URL } from '../helpers/app.js'
import { bearer, register } from '../helpers/api.js'

const ISSUER = 'http://localhost:3000'
const TTL = 900
const ENV = { ...FAST_ARGON2, ...(TEST_REDIS_URL ? { REDIS_URL: TEST_REDIS_URL } : {}) }

const app = await buildTestApp(t, { env: ENV })

// ---------------------------------------------------------------- keys and claims

// A throwaway attacker key pair and its self-signed certificate (CN=attacker.example), for x5c/x5u.
const ATTACKER_KEY_PEM = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJhyToevvyMxuZPlu
6Q7Fmg5BuSZ4vOP0Pz5MqNMRbIyhRANCAARN0D4R+N0AuzOpUBWTaPGjj9Rj4+9L
fVgh6ClNgkmq2MObCpoNDEPOpqt4YQS/NYR8MvdPr3mcisDWMgvNFuMJ
-----END PRIVATE KEY-----`
const ATTACKER_CERT_PEM = `-----BEGIN CERTIFICATE-----
MIIBjjCCATOgAwIBAgIUM3UVuRd2cYu+8xJHyRW17zTiGcwwCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQYXR0YWNrZXIuZXhhbXBsZTAgFw0yNjExMjQwMDU2NTZaGA8y
MTI2MTAzMTAwNTY1NlowGzEZMBcGA1UEAwwQYXR0YWNrZXIuZXhhbXBsZTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABE3QPhH43QC7M6lQFZNo8aOP1GPj70t9WCHo
KU2CSarYw5sKmg0MQ86mq3hhBL81hHwy90+veZyKwNYyC80W4wmjUzBRMB0GA1Ud
DgQWBBRb6TAxlhlr0vBMd8yIrbKLi3B82TAfBgNVHSMEGDAWgBRb6TAxlhlr0vBM
d8yIrbKLi3B82TAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQC0
28LriKTjuN2WNlZ//z9KZa7nQywtAO2BF1+uLWaJIQIhAO6xgihGRbPkpAUi8pWs
76OxcjmIIYSGR02kip6ApQ2s
-----END CERTIFICATE-----`
const attackerKey = createPrivateKey(ATTACKER_KEY_PEM)
const attackerJwk = { ...createPublicKey(attackerKey).export({ format: 'jwk' }), kid: 'kid_attacker', alg: 'ES256', use: 'sig' }
const attackerCertDer = ATTACKER_CERT_PEM.replace(/-----[^-]+-----|\s/g, '')

const owner = await register(app)
const ownerToken: string = owner.access_token
const realKid = app.keyRing.current.kid
const realKey = createPrivateKey(app.keyRing.current.privatePem)
const jwks = (await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json() as jose.JSONWebKeySet
const realJwk = jwks.keys.find((k) => k.kid === realKid)!
const otherPublishedKid = jwks.keys.find((k) => k.kid !== realKid)!.kid!
const publicPem = createPublicKey({ key: realJwk as never, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString()
const publicDer = createPublicKey({ key: realJwk as never, format: 'jwk' }).export({ type: 'spki', format: 'der' })

// An introspection client of the owner's organization.
const introspector = (await app.inject({
  method: 'POST', url: '/api/v1/api-keys', headers: bearer(ownerToken), payload: { name: 'introspection', scopes: ['auth:introspect'] },
})).json().key as string

type Claims = Record<string, unknown>
const now = () => Math.floor(Date.now() / 1000)

/** The owner's real claims with a fresh jti, iat now and exp in TTL; `overrides` change one thing (undefined deletes). */
function claims(overrides: Claims = {}): Claims {
  const iat = now()
  const c: Claims = { ...jose.decodeJwt(ownerToken), jti: crypto.randomUUID(), iat, exp: iat + TTL, ...overrides }
  for (const k of Object.keys(c)) if (c[k] === undefined) delete c[k]
  return c
}

const REAL_HEADER = { alg: 'ES256', typ: 'at+jwt', kid: realKid }

// ---------------------------------------------------------------- token assembly

type Signer = (input: string) => string
const seg = (part: unknown) => Buffer.from(typeof part === 'string' ? part : JSON.stringify(part)).toString('base64url')

/** header.payload.signature by hand; a string header or payload is used verbatim (duplicate keys, arrays, …). */
function jws(header: unknown, payload: unknown, sign: Signer): string {
  const input = `${seg(header)}.${seg(payload)}`
  return `${input}.${sign(input)}`
}

const es256 = (key: KeyObject, dsaEncoding: 'ieee-p1363' | 'der' = 'ieee-p1363'): Signer => (input) =>
  cryptoSign('sha256', Buffer.from(input), { key, dsaEncoding }).toString('base64url')
const hmac = (bits: 256 | 384 | 512, secret: string | Buffer): Signer => (input) =>
  createHmac(`sha${bits}`, secret).update(input).digest('base64url')
const unsigned: Signer = () => ''

/** Signed with the real key: only what the case changes can make it fail. */
const ours = (header: Claims = {}, payload: unknown = claims()) => jws({ ...REAL_HEADER, ...header }, payload, es256(realKey))
const attackers = (header: Claims = {}, payload: unknown = claims()) =>
  jws({ ...REAL_HEADER, kid: 'kid_attacker', ...header }, payload, es256(attackerKey))

// ---------------------------------------------------------------- the three verifiers

interface Verdicts { me: number; meCode?: string; verify: number; introspection: unknown }

async function verdicts(token: string): Promise<Verdicts> {
  const me = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(token) })
  const verify = await app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: bearer(token) })
  const intro = await app.inject({ method: 'POST', url: '/api/v1/auth/introspect', headers: bearer(introspector), payload: { token } })
  return {
    me: me.statusCode, meCode: me.json().error?.code, verify: verify.statusCode,
    introspection: intro.statusCode === 200 ? intro.json() : intro.statusCode,
  }
}

async function rejected(t: Test, label: string, token: string) {
  const v = await verdicts(token)
  t.equal(v.me, 401, `${label}: /auth/me 401`)
  t.equal(v.meCode, 'UNAUTHORIZED', `${label}: UNAUTHORIZED`)
  t.equal(v.verify, 401, `${label}: /auth/verify 401`)
  // Introspection takes tokens of up to 4096 characters: a longer one is a 422 (413 over the 64 KiB body limit), never active.
  if (token.length <= 4096) t.same(v.introspection, { active: false }, `${label}: introspection inactive`)
  else t.equal(v.introspection, token.length > 65_000 ? 413 : 422, `${label}: introspection refuses the size`)
}

async function accepted(t: Test, label: string, token: string) {
  const v = await verdicts(token)
  t.equal(v.me, 200, `${label}: /auth/me 200`)
  t.equal(v.verify, 200, `${label}: /auth/verify 200`)
  t.match(v.introspection, { active: true, token_type: 'access_token' }, `${label}: introspection active`)
}

// ---------------------------------------------------------------- outbound traffic

/** A loopback HTTP server that serves the attacker's JWKS and certificate, and counts every connection and request. */
const trap = { connections: 0, requests: [] as string[] }
const trapServer = http.createServer((req, res) => {
  trap.requests.push(`${req.method} ${req.url}`)
  if (req.url?.startsWith('/jwks.json')) res.setHeader('content-type', 'application/json').end(JSON.stringify({ keys: [attackerJwk] }))
  else if (req.url?.startsWith('/cert.pem')) res.end(ATTACKER_CERT_PEM)
  else res.end('attacker')
})
trapServer.on('connection', () => { trap.connections++ })
await new Promise<void>((resolve) => trapServer.listen(0, '127.0.0.1', resolve))
t.teardown(() => new Promise<void>((resolve) => trapServer.close(() => resolve())))
const TRAP = `http://127.0.0.1:${(trapServer.address() as net.AddressInfo).port}`

// Connections the service may legitimately open meanwhile: its own database and Redis.
const ALLOWED_PORTS = new Set([TEST_DATABASE_URL, TEST_REDIS_URL].filter(Boolean)
  .map((u) => new URL(u!).port || (u!.startsWith('redis') ? '6379' : '5432')))

/** Every outbound request or connection attempt: diagnostics channels plus patched http/https/net/tls. */
class OutboundWatch {
  readonly seen: { via: string; target: string }[] = []
  private readonly undo: (() => void)[] = []

  private record(via: string, target: string) { this.seen.push({ via, target }) }

  start() {
    const onUndici = (m: unknown) => {
      const r = (m as { request: { origin?: string; path?: string } }).request
      this.record('undici:request:create', `${r.origin}${r.path}`)
    }
    const onSocket = (m: unknown) => {
      // Published before the socket connects: its target is filled in once it does.
      const s = (m as { socket: net.Socket }).socket
      const entry = { via: 'net.client.socket', target: '?:?' }
      this.seen.push(entry)
      s.once('connect', () => { entry.target = `${s.remoteAddress}:${s.remotePort}` })
    }
    diagnostics.subscribe('undici:request:create', onUndici)
    diagnostics.subscribe('net.client.socket', onSocket)
    this.undo.push(() => diagnostics.unsubscribe('undici:request:create', onUndici), () => diagnostics.unsubscribe('net.client.socket', onSocket))

    const target = (args: unknown[]): string => {
      const [a, b] = args
      if (Array.isArray(a)) return target(a) // net.connect() hands Socket#connect its normalized [options, callback]
      if (a instanceof URL) return a.href
      if (typeof a === 'string') return typeof b === 'string' ? `${b}:${a}` : a
      if (typeof a === 'number') return `${typeof b === 'string' ? b : 'localhost'}:${a}`
      if (a && typeof a === 'object') {
        const o = a as { host?: string; hostname?: string; port?: number | string; path?: string }
        return o.port !== undefined ? `${o.hostname ?? o.host ?? 'localhost'}:${o.port}` : `${o.path ?? '?'}`
      }
      return '?'
    }
    const patch = <T extends object>(obj: T, name: keyof T & string, via: string) => {
      const original = obj[name] as unknown as (...args: unknown[]) => unknown
      const watch = this
      ;(obj as Record<string, unknown>)[name] = function (this: unknown, ...args: unknown[]) {
        watch.record(via, target(args))
        return original.apply(this, args)
      }
      this.undo.push(() => { (obj as Record<string, unknown>)[name] = original })
    }
    patch(http, 'request', 'http.request')
    patch(http, 'get', 'http.get')
    patch(https, 'request', 'https.request')
    patch(https, 'get', 'https.get')
    patch(net, 'connect', 'net.connect')
    patch(net, 'createConnection', 'net.createConnection')
    patch(tls, 'connect', 'tls.connect')
    patch(net.Socket.prototype, 'connect', 'net.Socket#connect')
    syncBuiltinESMExports()
  }

  stop() {
    for (const undo of this.undo.splice(0).reverse()) undo()
    syncBuiltinESMExports()
  }

  /** What is not the service's own database or Redis. */
  unexpected() {
    return this.seen.filter((s) => ![...ALLOWED_PORTS].some((p) => s.target.endsWith(`:${p}`)))
  }
}

t.test('control: the trap serves a valid attacker JWKS and certificate, and the watch sees outbound traffic', async (t) => {
  const watch = new OutboundWatch()
  watch.start()
  try {
    const token = attackers({ jku: `${TRAP}/jwks.json` })
    await t.resolves(jose.jwtVerify(token, jose.createRemoteJWKSet(new URL(`${TRAP}/jwks.json`))), 'a verifier that follows jku accepts the forgery')
    const x5c = attackers({ x5c: [attackerCertDer] })
    await t.resolves(jose.jwtVerify(x5c, await jose.importX509(ATTACKER_CERT_PEM, 'ES256')), 'a verifier that trusts x5c accepts the forgery')
  } finally {
    watch.stop()
  }
  t.ok(trap.requests.includes('GET /jwks.json'), 'the trap counted the JWKS fetch')
  t.ok(watch.seen.some((s) => s.via === 'undici:request:create' && s.target.startsWith(TRAP)), 'undici:request:create saw it')
  t.ok(watch.seen.some((s) => s.via === 'net.client.socket'), 'net.client.socket saw it')
  t.ok(watch.seen.some((s) => s.via === 'net.Socket#connect'), 'the patched socket connect saw it')
  trap.connections = 0
  trap.requests.length = 0
})

// ---------------------------------------------------------------- the attacks

const watch = new OutboundWatch()

t.test('attacks (no outbound traffic while they run)', async (t) => {
  watch.start()
  t.teardown(() => watch.stop())

  t.test('positive controls', async (t) => {
    await accepted(t, 'issued token', ownerToken)
    await accepted(t, 'crafted with the real key and claims', ours())
  })

  t.test('alg none, every spelling, with and without the trailing dot', async (t) => {
    for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
      const withDot = jws({ ...REAL_HEADER, alg }, claims(), unsigned)
      t.ok(withDot.endsWith('.'), 'three segments, the last one empty')
      await rejected(t, `alg ${alg}, trailing dot`, withDot)
      await rejected(t, `alg ${alg}, no trailing dot`, withDot.slice(0, -1))
      await rejected(t, `alg ${alg}, no kid`, jws({ alg, typ: 'at+jwt' }, claims(), unsigned))
    }
    t.doesNotThrow(() => jose.UnsecuredJWT.decode(jws({ alg: 'none' }, claims(), unsigned)), 'well-formed unsecured JWT')
    await rejected(t, 'alg none with the real signature kept', `${jws({ ...REAL_HEADER, alg: 'none' }, claims(), unsigned)}${ours().split('.')[2]}`)
  })

  t.test('HMAC keyed with public material (algorithm confusion)', async (t) => {
    const jwkString = JSON.stringify(realJwk)
    const secrets: [string, string | Buffer][] = [
      ['the JWK JSON string', jwkString],
      ['the JWK JSON string, members reordered', JSON.stringify(Object.fromEntries(Object.entries(realJwk).sort()))],
      ['the JWKS document', JSON.stringify(jwks)],
      ['the PEM with CRLF line ends', publicPem.replace(/\n/g, '\r\n')],
      ['the PEM without its final newline', publicPem.trimEnd()],
      ['the SPKI DER bytes', publicDer],
      ['the x coordinate', String(realJwk.x)],
    ]
    for (const [what, secret] of secrets) {
      const token = jws({ ...REAL_HEADER, alg: 'HS256' }, claims(), hmac(256, secret))
      await t.resolves(jose.jwtVerify(token, typeof secret === 'string' ? new TextEncoder().encode(secret) : secret), `${what}: valid HS256 under that secret`)
      await rejected(t, `HS256 keyed with ${what}`, token)
    }
    for (const bits of [384, 512] as const) {
      await rejected(t, `HS${bits} keyed with the public PEM`, jws({ ...REAL_HEADER, alg: `HS${bits}` }, claims(), hmac(bits, publicPem)))
      await rejected(t, `HS${bits} with an empty key`, jws({ ...REAL_HEADER, alg: `HS${bits}` }, claims(), hmac(bits, Buffer.alloc(0))))
    }
    await rejected(t, 'HS256 with an empty key and an empty kid', jws({ alg: 'HS256', typ: 'at+jwt', kid: '' }, claims(), hmac(256, '')))
  })

  t.test('other asymmetric algorithms and malformed signatures under the real kid', async (t) => {
    for (const alg of ['RS256', 'PS256', 'ES384', 'ES512', 'EdDSA', 'ES256K']) {
      await rejected(t, `alg ${alg} with an ES256 signature`, jws({ ...REAL_HEADER, alg }, claims(), es256(realKey)))
    }
    const good = ours()
    const [h, p] = good.split('.')
    await rejected(t, 'DER-encoded ECDSA signature by the real key', jws(REAL_HEADER, claims(), es256(realKey, 'der')))
    await rejected(t, 'all-zero signature (r = s = 0, CVE-2022-21449)', `${h}.${p}.${Buffer.alloc(64).toString('base64url')}`)
    await rejected(t, 'signature truncated by one byte', `${h}.${p}.${Buffer.from(good.split('.')[2]!, 'base64url').subarray(0, 63).toString('base64url')}`)
    await rejected(t, 'signature of another valid token', `${h}.${p}.${ours().split('.')[2]}`)
    await rejected(t, 'base64 padding on the header', `${h}==.${p}.${good.split('.')[2]}`)
    await rejected(t, 'standard base64 alphabet in the signature', `${h}.${p}.${Buffer.from(good.split('.')[2]!, 'base64url').toString('base64')}`)
  })

  t.test('kid: unknown, missing, wrong type, traversal and injection', async (t) => {
    await rejected(t, 'real key, unknown kid', ours({ kid: 'kid_01jd0000000000000000000000' }))
    await rejected(t, 'real key, no kid', jws({ alg: 'ES256', typ: 'at+jwt' }, claims(), es256(realKey)))
    await rejected(t, 'real key, the other published kid', ours({ kid: otherPublishedKid }))
    for (const kid of [null, 42, [realKid], { kid: realKid }, true, ` ${realKid}`, realKid.toUpperCase(), `${realKid}\u0000`]) {
      await rejected(t, `real key, kid ${JSON.stringify(kid)}`, ours({ kid }))
    }
    const injections: [string, string | Buffer][] = [
      ['../../../../../../dev/null', Buffer.alloc(0)],
      ['/dev/null', ''],
      ['../../../../../../../proc/self/environ', ''],
      ['file:///etc/passwd', ''],
      [`${TRAP}/key`, 'attacker'],
      ["' OR '1'='1", '1'],
      ["x' UNION SELECT 'secret' --", 'secret'],
      ['1; DROP TABLE signing_keys; --', ''],
      ['__proto__', ''], ['constructor', ''], ['toString', ''],
      [`${realKid}' --`, publicPem],
      ['k'.repeat(10_000), ''],
    ]
    for (const [kid, secret] of injections) {
      const label = kid.length > 60 ? `${kid.slice(0, 20)}…(${kid.length})` : kid
      await rejected(t, `kid ${label}, HS256`, jws({ alg: 'HS256', typ: 'at+jwt', kid }, claims(), hmac(256, secret)))
      await rejected(t, `kid ${label}, attacker ES256`, attackers({ kid }))
    }
  })

  t.test('jku, jwk, x5u and x5c headers signed by the attacker are never followed', async (t) => {
    const keyHeaders: [string, Claims][] = [
      ['jku to the trap', { jku: `${TRAP}/jwks.json` }],
      ['jwk embedded', { jwk: attackerJwk }],
      ['x5u to the trap', { x5u: `${TRAP}/cert.pem` }],
      ['x5c self-signed', { x5c: [attackerCertDer] }],
      ['all four', { jku: `${TRAP}/jwks.json`, jwk: attackerJwk, x5u: `${TRAP}/cert.pem`, x5c: [attackerCertDer] }],
      ['jku to the real JWKS path on another host', { jku: `${TRAP}/.well-known/jwks.json` }],
    ]
    for (const [what, header] of keyHeaders) {
      for (const [kidWhat, kid] of [['attacker kid', 'kid_attacker'], ['real kid', realKid], ['no kid', undefined]] as const) {
        const h = { ...REAL_HEADER, ...header, kid }
        if (kid === undefined) delete h.kid
        await rejected(t, `${what}, ${kidWhat}`, jws(h, claims(), es256(attackerKey)))
      }
    }
    // With the real key's signature the key-source headers are inert, never needed: fine either way, but never fetched.
    await rejected(t, 'jku to the trap, HS256 keyed with the attacker JWKS', jws({ ...REAL_HEADER, alg: 'HS256', jku: `${TRAP}/jwks.json` }, claims(), hmac(256, JSON.stringify({ keys: [attackerJwk] }))))
  })

  t.test('payloads that are not a JSON object, signed with the real key', async (t) => {
    for (const payload of ['[1,2]', `[${JSON.stringify(claims())}]`, '"a string"', JSON.stringify(JSON.stringify(claims())), 'null', '123', 'true', '{}', '', 'not json', '{"sub":']) {
      await rejected(t, `payload ${payload.length > 40 ? `${payload.slice(0, 40)}…` : payload || '(empty)'}`, ours({}, payload))
    }
  })

  t.test('tampering after signing', async (t) => {
    const [h, p, s] = ours().split('.')
    const payload = JSON.parse(Buffer.from(p!, 'base64url').toString())
    await rejected(t, 'sub swapped', `${h}.${seg({ ...payload, sub: 'usr_01jd0000000000000000000000' })}.${s}`)
    await rejected(t, 'exp extended', `${h}.${seg({ ...payload, exp: payload.exp + 86_400 })}.${s}`)
    await rejected(t, 'scope widened', `${h}.${seg({ ...payload, scope: `${payload.scope} admin:all` })}.${s}`)
    await rejected(t, 'header typ changed', `${seg({ ...REAL_HEADER, typ: 'application/at+jwt' })}.${p}.${s}`)
    await rejected(t, 'header kid swapped to the other published key', `${seg({ ...REAL_HEADER, kid: otherPublishedKid })}.${p}.${s}`)
    await rejected(t, 'payload re-serialised with other whitespace', `${h}.${seg(JSON.stringify(payload, null, 1))}.${s}`)
  })

  t.test('a token of another environment (its own issuer and keys, sharing nothing)', async (t) => {
    const staging = await buildTestApp(t, { env: { ...ENV, JWT_ISSUER: 'https://staging.example.com' } })
    const stagingToken: string = (await register(staging)).access_token
    t.equal(jose.decodeJwt(stagingToken).iss, 'https://staging.example.com')
    const onStaging = await staging.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(stagingToken) })
    t.equal(onStaging.statusCode, 200, 'valid where it was issued')
    await rejected(t, 'staging token here', stagingToken)
  })

  t.test('time claims: beyond the 30 s tolerance refused, within it accepted', async (t) => {
    const n = now()
    await rejected(t, 'expired a day ago', ours({}, claims({ iat: n - 86_400 - TTL, exp: n - 86_400 })))
    await rejected(t, 'expired 31 s ago', ours({}, claims({ iat: n - TTL - 31, exp: n - 31 })))
    await rejected(t, 'exp 0', ours({}, claims({ exp: 0 })))
    await rejected(t, 'exp negative', ours({}, claims({ exp: -1 })))
    await rejected(t, 'exp missing', ours({}, claims({ exp: undefined })))
    await rejected(t, 'exp a string', ours({}, claims({ exp: String(n + TTL) })))
    await rejected(t, 'exp an array', ours({}, claims({ exp: [n + TTL] })))
    await rejected(t, 'nbf 60 s ahead', ours({}, claims({ nbf: n + 60 })))
    await rejected(t, 'nbf a string', ours({}, claims({ nbf: String(n + 3600) })))
    await accepted(t, 'nbf 10 s ahead (within tolerance)', ours({}, claims({ nbf: n + 10 })))
    await accepted(t, 'expired 10 s ago (within tolerance)', ours({}, claims({ iat: n - TTL - 10, exp: n - 10 })))
  })

  t.test('typ: RFC 9068 at+jwt in any spelling accepted, anything else refused', async (t) => {
    // RFC 9068 §4: "at+jwt" or "application/at+jwt"; RFC 7515 §4.1.9: a media type, so case-insensitive.
    await accepted(t, 'typ application/at+jwt', ours({ typ: 'application/at+jwt' }))
    await accepted(t, 'typ AT+JWT', ours({ typ: 'AT+JWT' }))
    await accepted(t, 'typ Application/AT+JWT', ours({ typ: 'Application/AT+JWT' }))
    await rejected(t, 'typ missing', ours({ typ: undefined }))
    for (const typ of ['jwt', 'application/jwt', 'at+jwt; charset=utf-8', 'at+jwt ', 'application/at+jwt+x', 'x/at+jwt', '', 123, ['at+jwt'], null]) {
      await rejected(t, `typ ${JSON.stringify(typ)}`, ours({ typ }))
    }
  })

  t.test('crit: an extension the service does not understand is refused (RFC 7515 §4.1.11)', async (t) => {
    await rejected(t, 'crit with an unknown extension', ours({ crit: ['urn:example:must-understand'], 'urn:example:must-understand': true }))
    await rejected(t, 'crit b64=false', ours({ crit: ['b64'], b64: false }))
    await rejected(t, 'crit naming a missing extension', ours({ crit: ['exp'] }))
    await rejected(t, 'crit empty', ours({ crit: [] }))
    await rejected(t, 'crit a string', ours({ crit: 'urn:example:x', 'urn:example:x': 1 }))
  })

  t.test('duplicate header members (RFC 7515 §4: reject, or the last one wins)', async (t) => {
    const claimsJson = claims()
    const text = (members: [string, unknown][]) => `{${members.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`
    const base: [string, unknown][] = [['alg', 'ES256'], ['typ', 'at+jwt'], ['kid', realKid]]
    await rejected(t, 'alg ES256 then none, real signature', jws(text([...base, ['alg', 'none']]), claimsJson, es256(realKey)))
    await rejected(t, 'alg ES256 then none, no signature', jws(text([...base, ['alg', 'none']]), claimsJson, unsigned))
    await rejected(t, 'alg none then HS256, keyed with the public PEM', jws(text([['alg', 'none'], ...base.slice(1), ['alg', 'HS256']]), claimsJson, hmac(256, publicPem)))
    await rejected(t, 'kid real then unknown, real signature', jws(text([...base, ['kid', 'kid_attacker']]), claimsJson, es256(realKey)))
    await rejected(t, 'kid real then attacker, attacker signature', jws(text([...base, ['kid', 'kid_attacker']]), claimsJson, es256(attackerKey)))
    await rejected(t, 'kid attacker then real, attacker signature', jws(text([['kid', 'kid_attacker'], ...base]), claimsJson, es256(attackerKey)))
    await rejected(t, 'typ at+jwt then JWT', jws(text([...base, ['typ', 'JWT']]), claimsJson, es256(realKey)))
    await rejected(t, '__proto__ member carrying alg none', jws(`{"__proto__":{"alg":"none"},"typ":"at+jwt","kid":${JSON.stringify(realKid)}}`, claimsJson, unsigned))
  })

  t.test('sizes and segment counts', async (t) => {
    const big = 100 * 1024
    await rejected(t, '100 KB of base64url', 'A'.repeat(big))
    await rejected(t, '100 KB forged token (huge claim)', attackers({}, claims({ pad: 'x'.repeat(big) })))
    await rejected(t, '100 KB forged token (huge header)', attackers({ pad: 'x'.repeat(big) }))
    await rejected(t, '100 KB alg none token', jws({ alg: 'none' }, claims({ pad: 'x'.repeat(big) }), unsigned))
    await rejected(t, '100 KB of dots', '.'.repeat(big))
    const good = ours()
    await rejected(t, '4 segments: a valid token plus one', `${good}.${good.split('.')[2]}`)
    await rejected(t, '4 segments: a valid token and a trailing dot', `${good}.`)
    await rejected(t, '4 segments: a.b.c.d', 'a.b.c.d')
    await rejected(t, '5 segments (JWE compact form)', `${seg({ alg: 'RSA-OAEP', enc: 'A256GCM', kid: realKid })}.AAAA.AAAA.AAAA.AAAA`)
    await rejected(t, '2 segments', good.split('.').slice(0, 2).join('.'))
    await rejected(t, '1 segment', good.split('.')[0]!)
    await rejected(t, 'empty segments', '..')
  })

  t.test('not one outbound request or connection', async (t) => {
    t.comment(`${watch.seen.length} connection events seen, ${watch.seen.length - watch.unexpected().length} of them to the service's own database or Redis (ports ${[...ALLOWED_PORTS].join(', ') || 'none'})`)
    t.same(watch.unexpected(), [], 'no outbound request or connection attempt (undici, net, tls, http, https)')
    t.equal(trap.connections, 0, 'the trap server saw no connection')
    t.same(trap.requests, [], 'the trap server saw no request (jku, x5u, kid URL)')
  })
})
