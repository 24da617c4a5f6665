// Organizations for the tenancy tests: an owner (registered with the
// organization), an admin and a member (registered on their own, then added),
// each signed in with the organization as the context of their access token.
import { decodeJwt } from 'jose'
import type { LightMyRequestResponse as InjectResponse } from 'fastify'
import type { App } from '../../src/app.js'
import { FAST_ARGON2, TEST_REDIS_URL } from './app.js'
import { bearer, register, STRONG_PASSWORD } from './api.js'

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

export const addMember = (app: App, headers: Headers, orgId: string, email: string, role: Role) =>
  app.inject({ method: 'POST', url: `/api/v1/organizations/${orgId}/members`, headers, payload: { email, role } })

/** A new account (with its own workspace); `org` adds it there with `role` and signs it in to that organization. */
export async function newPerson(app: App, org?: { id: string; owner: Person; role: Role }): Promise<Person> {
  const reg = await register(app)
  if (!org) return { id: reg.user.id, email: reg.email, token: reg.access_token, sid: decodeJwt(reg.access_token).sid as string }
  expectStatus(await addMember(app, bearer(org.owner.token), org.id, reg.email, org.role), 201, `add ${org.role}`)
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
