// Access tokens (RFC 9068 JWTs) signed by the key ring's current key and
// verified against its published keys, through @fastify/jwt / fast-jwt.
import fp from 'fastify-plugin'
import fastifyJwt from '@fastify/jwt'
import type { FastifyRequest } from 'fastify'
import { randomUUID } from 'node:crypto'
import { createSigner } from 'fast-jwt'
import { KeyRing, type SigningKey } from '../modules/keys/service.js'
import { unauthorized } from '../errors.js'

/**
 * RFC 9068 claims. A session's token has sid, org_role and auth_time; a client-credentials
 * token (an API key acting as an OAuth client) has neither: its sub and client_id are the key id.
 */
export interface AccessTokenClaims {
  iss: string
  aud: string
  sub: string
  client_id: string
  org_id: string
  org_role?: string
  scope: string
  sid?: string
  /** When the user proved a password (and second factor) for this session, epoch seconds (OIDC Core §2). */
  auth_time?: number
  /** Whether the user's current address was proven by a mailed link when the token was issued (OIDC Core §5.1). */
  email_verified?: boolean
  jti: string
  iat: number
  exp: number
}

export interface AccessTokenInput {
  userId: string
  orgId: string
  role: string
  scopes: readonly string[]
  sessionId: string
  authTime: number
  emailVerified: boolean
}

export interface ClientTokenInput {
  keyId: string
  orgId: string
  scopes: readonly string[]
  /** The key's expiry (ms): the token never outlives it. */
  notAfter: number | null
}

export interface TokenService {
  signAccessToken(input: AccessTokenInput): { token: string; expiresIn: number }
  /** client_credentials: a short-lived token (CLIENT_TOKEN_TTL) for an API key acting as an OAuth client. */
  signClientToken(input: ClientTokenInput): { token: string; expiresIn: number }
  /** Verifies signature, alg, typ, iss, aud, exp, nbf and kid; throws 401 otherwise. */
  verifyAccessToken(request: FastifyRequest, token: string): Promise<AccessTokenClaims>
  /** Until when (system clock, ms) verified claims stay acceptable: exp plus the clock tolerance. */
  usableUntil(claims: AccessTokenClaims): number
}

declare module 'fastify' {
  interface FastifyInstance {
    keyRing: KeyRing
    tokens: TokenService
    /** Rotates the signing keys and tells every instance to reload them. */
    rotateSigningKeys(): Promise<{ current: string; next: string }>
  }
  interface FastifyRequest {
    /** The raw JWT handed to @fastify/jwt's extractToken. */
    accessTokenCandidate?: string
  }
}

declare module '@fastify/jwt' {
  interface FastifyJWT {
    payload: AccessTokenClaims
    user: AccessTokenClaims
  }
}

const TOKEN_TYPE = 'at+jwt'
const CLOCK_TOLERANCE_MS = 30_000
const VERIFIED_TOKENS_MAX = 10_000
/** @fastify/jwt's code for a token whose exp has passed (fast-jwt checks it after the signature). */
const JWT_EXPIRED = 'FST_JWT_AUTHORIZATION_TOKEN_EXPIRED'
/** What the memo of verified tokens holds for a token found expired. */
const EXPIRED = Symbol('expired')

export default fp(async (app) => {
  const { config, clock } = app
  const keyRing = new KeyRing({
    db: app.db,
    clock,
    secretKey: config.secretKey!,
    algorithm: config.JWT_ALGORITHM,
    accessTokenTtlSeconds: config.ACCESS_TOKEN_TTL,
  })
  await keyRing.ensureKeys()

  await app.register(fastifyJwt, {
    secret: {
      // Signing goes through signerFor() below; @fastify/jwt verifies.
      private: (_request: unknown, _payload: unknown, cb: (e: Error | null, k?: string) => void) => cb(null, keyRing.current.privatePem),
      // Only a kid of the key ring resolves; jku, jwk and x5u headers are never followed.
      // The token's alg must be the one its key was made for (keys made before a JWT_ALGORITHM change keep verifying).
      public: (_request: unknown, token: { header?: { kid?: unknown; alg?: unknown } }, cb: (e: Error | null, k?: string) => void) => {
        const key = keyRing.publicKey(token.header?.kid)
        if (key && token.header?.alg === key.alg) cb(null, key.publicPem)
        else cb(unauthorized('Invalid or expired token'))
      },
    },
    decode: { complete: true },
    verify: {
      // Asymmetric only: never none or HMAC, whatever a token's header says.
      algorithms: ['ES256', 'EdDSA', 'RS256'],
      allowedIss: config.JWT_ISSUER,
      allowedAud: config.JWT_AUDIENCE,
      checkTyp: TOKEN_TYPE,
      clockTolerance: CLOCK_TOLERANCE_MS,
      requiredClaims: ['sub', 'org_id', 'jti', 'exp', 'iat', 'iss', 'aud'],
      extractToken: (request: FastifyRequest) => request.accessTokenCandidate,
    },
  } as never)

  // One fast-jwt signer per signing key, built once (key parsing is the costly part).
  const signers = new Map<string, (claims: AccessTokenClaims) => string>()
  const signerFor = (key: SigningKey) => {
    let signer = signers.get(key.kid)
    if (!signer) {
      signers.clear()
      // `typ` is a signer option of fast-jwt 6 that its type definitions do not list yet.
      signer = createSigner({ key: key.privatePem, algorithm: key.alg, kid: key.kid, typ: TOKEN_TYPE } as { key: string }) as (claims: AccessTokenClaims) => string
      signers.set(key.kid, signer)
    }
    return signer
  }

  // Tokens that passed the full check, by their exact text: a token seen again skips
  // @fastify/jwt's two decodes and the ECDSA check (fast-jwt's own cache would hash
  // every token to find it). Expiry is re-checked on each hit, revocation is checked
  // apart, and any key-ring reload empties it so retired keys stop verifying at once.
  // A token found expired stays as EXPIRED: it never becomes valid again, whatever its signature or
  // keys or the clock, and a client that kept sending it paid a full ECDSA check (about 350 µs) on
  // every request (regression test expired-token-verified-every-time).
  const verified = new Map<string, AccessTokenClaims | typeof EXPIRED>()
  let verifiedUnder = keyRing.generation
  const remember = (token: string, outcome: AccessTokenClaims | typeof EXPIRED) => {
    verified.delete(token)
    verified.set(token, outcome)
    if (verified.size > VERIFIED_TOKENS_MAX) verified.delete(verified.keys().next().value as string)
  }
  const refuseExpired = (token: string): never => {
    remember(token, EXPIRED)
    throw unauthorized('Invalid or expired token')
  }

  const tokens: TokenService = {
    signAccessToken(input) {
      const key = keyRing.current
      const iat = Math.floor(clock.now() / 1000)
      const claims: AccessTokenClaims = {
        iss: config.JWT_ISSUER,
        aud: config.JWT_AUDIENCE,
        sub: input.userId,
        client_id: config.OAUTH_CLIENT_ID,
        org_id: input.orgId,
        org_role: input.role,
        scope: input.scopes.join(' '),
        sid: input.sessionId,
        auth_time: input.authTime,
        email_verified: input.emailVerified,
        jti: randomUUID(),
        iat,
        exp: iat + config.ACCESS_TOKEN_TTL,
      }
      return { token: signerFor(key)(claims), expiresIn: config.ACCESS_TOKEN_TTL }
    },
    signClientToken(input) {
      const iat = Math.floor(clock.now() / 1000)
      const exp = Math.min(iat + config.CLIENT_TOKEN_TTL, input.notAfter === null ? Infinity : Math.floor(input.notAfter / 1000))
      const claims: AccessTokenClaims = {
        iss: config.JWT_ISSUER, aud: config.JWT_AUDIENCE, sub: input.keyId, client_id: input.keyId, org_id: input.orgId,
        scope: input.scopes.join(' '), jti: randomUUID(), iat, exp,
      }
      return { token: signerFor(keyRing.current)(claims), expiresIn: exp - iat }
    },
    async verifyAccessToken(request, token) {
      if (verifiedUnder !== keyRing.generation) {
        verified.clear()
        verifiedUnder = keyRing.generation
      }
      const seen = verified.get(token)
      if (seen === EXPIRED) throw unauthorized('Invalid or expired token')
      // fast-jwt checks exp against the system clock; so does this shortcut.
      if (seen) return tokens.usableUntil(seen) > Date.now() ? seen : refuseExpired(token)
      const generation = verifiedUnder
      request.accessTokenCandidate = token
      let claims: AccessTokenClaims
      try {
        claims = Object.freeze(await request.jwtVerify<AccessTokenClaims>())
      } catch (err) {
        if ((err as { code?: string }).code === JWT_EXPIRED) refuseExpired(token)
        // Every failure (bad signature, alg, typ, kid, claim, expiry) looks the same to the caller.
        throw unauthorized('Invalid or expired token')
      }
      // A reload that landed while this token was checked may have retired its key: answer, but do not remember.
      if (generation !== keyRing.generation) return claims
      remember(token, claims)
      return claims
    },
    usableUntil: (claims) => claims.exp * 1000 + CLOCK_TOLERANCE_MS,
  }

  app.events.subscribe((event) => {
    if (event.type === 'keys.rotated') keyRing.reload().catch((err) => app.log.error({ err }, 'key ring reload failed'))
  })
  app.events.onResync(() => keyRing.reload())

  app.decorate('keyRing', keyRing)
  app.decorate('tokens', tokens)
  app.decorate('rotateSigningKeys', async () => {
    const result = await keyRing.rotate()
    await app.events.publish({ type: 'keys.rotated' })
    return result
  })
}, { name: 'tokens', dependencies: ['db', 'events'] })
