// Organizations for the tenancy tests: an owner (registered with the
// organization), an admin and a member (registered on their own, then invited
// and accepting, as people join), each signed in with the organization as the
// context of their access token.
import { decodeJwt } from 'jose'
import type { LightMyRequestResponse as InjectResponse } from 'fastify'
import type { App } from '../../src/app.js'
import { and, eq } from 'drizzle-orm'
import { mailOutbox } from '../../src/db/schema.js'
import { FAST_ARGON2, TEST_REDIS_URL, within } from './app.js'
import { bearer, register, STRONG_PASSWORD } from './api.js'
import { mailedToken, mailsTo, tapMail } from './mail-tap.js'

/** Fast hashing, and Redis when given (buildTestApp already relaxes the per-IP limits). */
export const TENANCY_ENV: Record<string, string> = { ...FAST_ARGON2, ...(TEST_REDIS_URL ? { REDIS_URL: TEST_REDIS_URL } : {}) }

export type Role = 'owner' | 'admin' | 'member'
export type Headers = Record<string, string>

export interface Person {
  id: string
  email: string
  /** Access token whose organization is the one the person was signed in to. */
  token: string
  sid: string
}

export interface Tenant { id: string; name: string; owner: Person; admin: Person; member: Person }

export interface CreatedKey { id: string; key: string; key_prefix: string; scopes: string[] }

/** The JSON of a response, or an error naming what failed when the status is not the expected one. */
export function expectStatus<T = any>(res: InjectResponse, status: number, what: string): T {
  if (res.statusCode !== status) throw new Error(`${what}: expected ${status}, got ${res.statusCode} ${res.body}`)
  return (res.body ? res.json() : undefined) as T
}

/** A new session of an existing account, in `orgId` (default: its first organization). */
export async function signIn(app: App, email: string, orgId?: string): Promise<Person> {
  const res = await app.inject({
    method: 'POST', url: '/api/v1/auth/login', payload: { email, password: STRONG_PASSWORD, ...(orgId ? { org_id: orgId } : {}) },
  })
  const body = expectStatus(res, 200, `login ${email}`)
  return { id: body.user.id, email, token: body.access_token, sid: decodeJwt(body.access_token).sid as string }
}

/** Invites `email` to `orgId` with `role`, as the caller of `headers`; the answer, whatever it is. */
export const invite = (app: App, headers: Headers, orgId: string, email: string, role: Role) => {
  tapMail(app)
  return app.inject({ method: 'POST', url: `/api/v1/organizations/${orgId}/invitations`, headers, payload: { email, role } })
}

/**
 * Asks for a verification link and follows it. The live link is the one prepared last, so this
 * waits until the outbox holds nothing unsent for the address (a registration's mail may still be
 * queued) and takes the latest mail.
 */
export async function verifyEmail(app: App, email: string): Promise<void> {
  const before = mailsTo(app, email, 'email_verification').length
  expectStatus(await app.inject({ method: 'POST', url: '/api/v1/auth/email/verify/resend', payload: { email } }), 202, `ask to verify ${email}`)
  const unsent = async () => (await app.db.select({ id: mailOutbox.id }).from(mailOutbox)
    .where(and(eq(mailOutbox.recipient, email), eq(mailOutbox.state, 'pending')))).length
  if (await within(5000, async () => await unsent() === 0) < 0) throw new Error(`mail to ${email} still unsent`)
  const token = await mailedToken(app, email, 'email_verification', before)
  expectStatus(await app.inject({ method: 'POST', url: '/api/v1/auth/email/verify', payload: { token } }), 204, `verify ${email}`)
}

/** The invitation mailed to `email` accepted by its session `token` (the account's address must be verified). */
export async function acceptInvitation(app: App, email: string, token: string, after = 0) {
  const invitation = await mailedToken(app, email, 'invitation', after)
  return app.inject({ method: 'POST', url: '/api/v1/invitations/accept', headers: bearer(token), payload: { token: invitation } })
}

/**
 * Makes an existing account a member as people become one: invited by the caller of `headers`,
 * its address verified, the invitation accepted. Returns the invitation's answer when it fails.
 */
export async function addMember(app: App, headers: Headers, orgId: string, person: { email: string; token: string }, role: Role) {
  const earlier = mailsTo(app, person.email, 'invitation').length
  const invited = await invite(app, headers, orgId, person.email, role)
  if (invited.statusCode !== 201) return invited
  const me = expectStatus(await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(person.token) }), 200, `me of ${person.email}`)
  if (!me.user.email_verified) await verifyEmail(app, person.email)
  return acceptInvitation(app, person.email, person.token, earlier)
}

/** A new account (with its own workspace); `org` makes it a member there with `role` and signs it in to that organization. */
export async function newPerson(app: App, org?: { id: string; owner: Person; role: Role }): Promise<Person> {
  const reg = await register(app)
  if (!org) return { id: reg.user.id, email: reg.email, token: reg.access_token, sid: decodeJwt(reg.access_token).sid as string }
  expectStatus(await addMember(app, bearer(org.owner.token), org.id, { email: reg.email, token: reg.access_token }, org.role), 200, `add ${org.role}`)
  return signIn(app, reg.email, org.id)
}

/** An organization named `name` with an owner, an admin and a member. */
export async function newTenant(app: App, name = 'Tenant'): Promise<Tenant> {
  const reg = await register(app, { company_name: name, name: `${name} Owner` })
  const owner: Person = { id: reg.user.id, email: reg.email, token: reg.access_token, sid: decodeJwt(reg.access_token).sid as string }
  const id = reg.organization.id as string
  return {
    id, name, owner,
    admin: await newPerson(app, { id, owner, role: 'admin' }),
    member: await newPerson(app, { id, owner, role: 'member' }),
  }
}

export async function createKey(app: App, headers: Headers, scopes: string[], name = 'test key'): Promise<CreatedKey> {
  const res = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers, payload: { name, scopes } })
  return expectStatus(res, 201, `create key [${scopes.join(' ')}]`)
}

export const READ_ONLY_SCOPES = ['api_keys:read', 'members:read', 'audit:read']
