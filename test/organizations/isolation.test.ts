// Tenant isolation (SPEC §5 "Organization context", "No response ever contains
// another organization's data; an id from another organization is 404"), driven
// from the OpenAPI document so that a new route is covered, or fails, at once.
// Every operation that acts on an organization or names an object in its path is
// called with every credential of organization B (owner, admin and member
// sessions; keys with several scope sets, as Bearer and as X-API-Key) aimed at
// organization A: A's ids in the path, and X-Org-ID: A where the path names no
// organization. Each answer is 403 or 404 and carries nothing of A, and A is
// unchanged afterwards. Operations on the caller only are listed with a reason;
// A's own owner reaching every GET of the matrix shows the matrix is not vacuous.
import t from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import { buildTestApp } from '../helpers/app.js'
import { bearer } from '../helpers/api.js'
import {
  createKey, expectStatus, invite, newPerson, newTenant, READ_ONLY_SCOPES, TENANCY_ENV, type CreatedKey, type Headers, type Person,
} from '../helpers/orgs.js'
import { sampleOf, type JsonSchema } from '../helpers/schema-sample.js'

const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'] as const

/** Operations that act on the caller only, never on an organization named by the request. */
const CALLER_ONLY: Record<string, string> = {
  'GET /healthz': 'public, no tenant data',
  'GET /readyz': 'public, no tenant data',
  'GET /.well-known/jwks.json': 'public signing keys, the same for every tenant',
  'POST /api/v1/auth/register': 'creates a new account and its own organization',
  'POST /api/v1/auth/password/forgot': 'an address; the same answer for every tenant',
  'POST /api/v1/auth/email/verify/resend': 'an address; the same answer for every tenant',
  'POST /api/v1/auth/password/reset': "a mailed token of one account; acts on that account only (test/mailbox)",
  'POST /api/v1/auth/email/verify': 'a mailed token of one account; acts on that account only',
  'POST /api/v1/auth/email': "the caller's own account",
  'POST /api/v1/auth/email/confirm': 'a mailed token of one account; acts on that account only',
  'POST /api/v1/auth/login': "the caller's own password; org_id must be one of its memberships (test/auth)",
  'POST /api/v1/auth/refresh': "the caller's own refresh token; org_id must be one of its memberships (test/sessions/refresh)",
  'POST /api/v1/auth/verify-2fa': "completes the caller's own login with its mfa_token",
  'POST /api/v1/auth/password': "the caller's own password",
  'POST /api/v1/auth/2fa/setup': "the caller's own second factor",
  'POST /api/v1/auth/2fa/enable': "the caller's own second factor",
  'POST /api/v1/auth/2fa/disable': "the caller's own second factor",
  'POST /api/v1/auth/2fa/recovery-codes': "the caller's own second factor",
  'POST /api/v1/auth/logout': "the caller's own session; another user's refresh_token is ignored (test/sessions/logout)",
  'POST /api/v1/auth/logout-all': "the caller's own sessions",
  'GET /api/v1/auth/sessions': "the caller's own sessions",
  'GET /api/v1/organizations': "the caller's own memberships",
  'POST /api/v1/organizations': 'creates a new organization owned by the caller',
  'GET /.well-known/openid-configuration': 'public discovery document, the same for every tenant',
  'GET /.well-known/oauth-authorization-server': 'public discovery document, the same for every tenant',
  'POST /api/v1/oauth/token': "the caller's own password or refresh token (org_id must be a membership), or a key's token for the key's own organization (test/e2e/openid-client)",
  'POST /api/v1/auth/introspect': "RFC 7662: another tenant's token is exactly {active:false} (test/gateway/introspection)",
  'POST /api/v1/auth/revoke': "RFC 7009: another tenant's token is left alone, still 200 (test/gateway/introspection)",
  'POST /api/v1/invitations/accept': "a mailed token of one invitation, taken only by the invited, verified address (test/invitations)",
  'DELETE /api/v1/auth/me': "the caller's own account",
  // Platform administration spans tenants by design: superadmins only, every tenant credential 403 (test/admin).
  'GET /api/v1/admin/users': 'platform administration (superadmins only: test/admin)',
  'GET /api/v1/admin/users/{user_id}': 'platform administration (superadmins only: test/admin)',
  'POST /api/v1/admin/users/{user_id}/disable': 'platform administration (superadmins only: test/admin)',
  'POST /api/v1/admin/users/{user_id}/enable': 'platform administration (superadmins only: test/admin)',
  'POST /api/v1/admin/users/{user_id}/password-reset': 'platform administration (superadmins only: test/admin)',
  'POST /api/v1/admin/users/{user_id}/erase': 'platform administration (superadmins only: test/admin)',
  'GET /api/v1/admin/organizations': 'platform administration (superadmins only: test/admin)',
  'GET /api/v1/admin/audit-events': 'platform administration (superadmins only: test/admin)',
}

/** Operations with no id in the path that act in the request's organization context (X-Org-ID). */
const ORG_CONTEXT: Record<string, string> = {
  'GET /api/v1/auth/me': "its organization is the request's organization context",
  'GET /api/v1/auth/verify': "forward-auth answers for the request's organization context",
}

/** Paths that act on an organization even without a path parameter. */
const ORG_PATH = /\/(organizations\/\{org_id\}|api-keys|audit-events|members)(\/|$)/

interface Operation {
  operationId?: string
  parameters?: { name: string; in: string; schema?: JsonSchema }[]
  requestBody?: { content?: Record<string, { schema?: JsonSchema }> }
  security?: Record<string, unknown>[]
}
interface Op { key: string; method: string; path: string; op: Operation }

const app = await buildTestApp(t, { env: TENANCY_ENV })

// ---- Two organizations, keys with several scope sets, objects of A to aim at.

const A = await newTenant(app, 'Alpha Isolation Corp')
const B = await newTenant(app, 'Bravo Isolation Corp')
const outsider = await newPerson(app) // an account in neither organization: generated bodies name it
const keySets = { all: [...app.config.SCOPES], 'read-only': READ_ONLY_SCOPES, 'agents:read': ['agents:read'] }
const keysOf = async (owner: Person) => Object.fromEntries(await Promise.all(Object.entries(keySets).map(
  async ([label, scopes]) => [label, await createKey(app, bearer(owner.token), scopes, `${label} key`)] as const))) as Record<keyof typeof keySets, CreatedKey>
const keysA = await keysOf(A.owner)
const keysB = await keysOf(B.owner)
const targetKeyA = await createKey(app, bearer(A.owner.token), ['agents:read'], 'target key')
const invitationOfA = expectStatus(await invite(app, bearer(A.owner.token), A.id, 'invited.to.alpha@example.com', 'member'), 201, 'an invitation of A')

await app.audit.flush()
const auditOfA = (await app.inject({ method: 'GET', url: `/api/v1/organizations/${A.id}/audit-events?limit=100`, headers: bearer(A.owner.token) })).json().items as { id: string }[]
t.ok(auditOfA.length >= 4, `org A has audit events to aim at (${auditOfA.length})`)

/** Values for path parameters, matched by the parameter's pattern: the first of A's ids that fits. */
const TARGETS_IN_A = [A.id, A.member.id, targetKeyA.id, A.member.sid, auditOfA[0]!.id, invitationOfA.id]

/** Everything of A that must not appear in an answer to B. */
const SECRETS_OF_A = [
  A.id, A.name, // the owner's name contains A's name
  ...[A.owner, A.admin, A.member].flatMap((p) => [p.id, p.email, p.sid]),
  ...[...Object.values(keysA), targetKeyA].flatMap((k) => [k.id, k.key_prefix, k.key]),
  ...auditOfA.map((e) => e.id),
  invitationOfA.id, invitationOfA.email,
]

/** Generated request bodies name an existing account, a role change and the narrowest scope. */
const HINTS = { email: outsider.email, role: 'admin', scopes: ['agents:read'], name: 'x' }

const credentialsOfB: { label: string; headers: Headers }[] = [
  ...(['owner', 'admin', 'member'] as const).map((role) => ({ label: `B ${role} session`, headers: bearer(B[role].token) })),
  ...Object.entries(keysB).flatMap(([label, k]) => [
    { label: `B key [${label}] as Bearer`, headers: bearer(k.key) },
    { label: `B key [${label}] as X-API-Key`, headers: { 'x-api-key': k.key } },
  ]),
]

// ---- The route table.

const doc = app.swagger() as unknown as { paths: Record<string, Partial<Record<string, Operation>>>; components?: { schemas?: Record<string, JsonSchema> } }
const resolve = (ref: string): JsonSchema => {
  const schema = doc.components?.schemas?.[ref.replace('#/components/schemas/', '')]
  if (!schema) throw new Error(`unresolved ${ref}`)
  return schema
}
const operations: Op[] = Object.entries(doc.paths).flatMap(([path, item]) => HTTP_METHODS.filter((m) => item[m])
  .map((m) => ({ key: `${m.toUpperCase()} ${path}`, method: m.toUpperCase(), path, op: item[m]! })))
const pathParams = (o: Op) => (o.op.parameters ?? []).filter((p) => p.in === 'path')
const actsOnOrganization = (o: Op) => pathParams(o).length > 0 || ORG_PATH.test(o.path) || o.key in ORG_CONTEXT
const matrix = operations.filter((o) => !(o.key in CALLER_ONLY) && actsOnOrganization(o))

function targetFor(o: Op, name: string): string {
  const pattern = pathParams(o).find((p) => p.name === name)?.schema?.pattern
  const value = pattern ? TARGETS_IN_A.find((id) => new RegExp(pattern).test(id)) : undefined
  if (!value) throw new Error(`${o.key}: no object of org A fits path parameter ${name} (${pattern}); add one to TARGETS_IN_A`)
  return value
}

/** A's ids in the path; and X-Org-ID: A where the path names no organization. */
function variants(o: Op) {
  const url = o.path.replace(/\{(\w+)\}/g, (_, name: string) => targetFor(o, name))
  return [
    ...(pathParams(o).length ? [{ label: "A's ids in the path", url, headers: {} as Headers }] : []),
    ...(o.path.includes('{org_id}') ? [] : [{ label: 'X-Org-ID: A', url, headers: { 'x-org-id': A.id } as Headers }]),
  ]
}

function bodyOf(o: Op): unknown {
  const schema = o.op.requestBody?.content?.['application/json']?.schema
  return schema ? sampleOf(schema, { hints: HINTS, resolve }) : undefined
}

const call = (o: Op, url: string, headers: Headers) => {
  const body = bodyOf(o)
  return app.inject({ method: o.method as 'GET', url, headers, ...(body === undefined ? {} : { payload: body as object }) })
}

/** Which of A's secrets appear in the response (headers or body). */
const leaks = (res: LightMyRequestResponse) => {
  const text = JSON.stringify(res.headers) + res.body
  return SECRETS_OF_A.filter((s) => text.includes(s))
}

/** A as its owner sees it: name, members and roles, keys, audit log, and the member's session. */
async function stateOfA() {
  await app.audit.flush()
  const get = async (url: string) => expectStatus(await app.inject({ method: 'GET', url, headers: bearer(A.owner.token) }), 200, url)
  const org = await get(`/api/v1/organizations/${A.id}`)
  const members = (await get(`/api/v1/organizations/${A.id}/members?limit=100`)).items
  const keys = (await get('/api/v1/api-keys?limit=100')).items
  const audit = (await get(`/api/v1/organizations/${A.id}/audit-events?limit=100`)).items
  const invitations = (await get(`/api/v1/organizations/${A.id}/invitations?limit=100`)).items
  const me = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(A.member.token) })
  return {
    name: org.name, credits: org.credits,
    members: members.map((m: { user_id: string; role: string }) => `${m.user_id}:${m.role}`),
    keys: keys.map((k: { id: string; revoked_at: unknown; expires_at: unknown }) => ({ id: k.id, revoked_at: k.revoked_at, expires_at: k.expires_at })),
    audit: audit.map((e: { id: string }) => e.id),
    invitations: invitations.map((i: { id: string; state: string; expires_at: string }) => `${i.id}:${i.state}:${i.expires_at}`),
    memberSession: me.statusCode,
  }
}

// ---- Tests.

t.test('every operation of the document is classified', async (t) => {
  const unclassified = operations.filter((o) => !(o.key in CALLER_ONLY) && !actsOnOrganization(o)).map((o) => o.key)
  t.same(unclassified, [], 'each operation is in the matrix or in CALLER_ONLY (with a reason)')
  const known = new Set(operations.map((o) => o.key))
  t.same(Object.keys({ ...CALLER_ONLY, ...ORG_CONTEXT }).filter((k) => !known.has(k)), [], 'no stale entries in the lists')
  t.same(Object.keys(CALLER_ONLY).filter((k) => matrix.some((o) => o.key === k)), [], 'CALLER_ONLY and the matrix are disjoint')
  t.same([...matrix.map((o) => o.key), ...Object.keys(CALLER_ONLY)].sort(), [...known].sort(), 'together they cover the document')
  t.ok(matrix.length >= 10, `the matrix has ${matrix.length} operations`)
})

t.test("every credential of B aimed at A: 403 or 404, nothing of A in the answer, A unchanged", async (t) => {
  const before = await stateOfA()
  t.equal(before.memberSession, 200, "A's member session is live before")
  for (const o of matrix) {
    t.test(o.key, async (t) => {
      for (const v of variants(o)) {
        for (const c of credentialsOfB) {
          const res = await call(o, v.url, { ...c.headers, ...v.headers })
          const label = `${c.label}, ${v.label}`
          t.ok(res.statusCode === 403 || res.statusCode === 404, `${label}: 403 or 404`, { got: res.statusCode, body: res.body })
          t.same(leaks(res), [], `${label}: nothing of A in the answer`)
        }
      }
    })
  }
  t.test("A's name, members, keys, audit log and sessions are unchanged", async (t) => {
    t.same(await stateOfA(), before)
  })
})

t.test("positive controls: A's owner reaches every GET of the matrix in A", async (t) => {
  const ownersOfA = [
    { label: 'A owner session', headers: bearer(A.owner.token), kind: 'bearerAuth' },
    { label: 'A key [all] as X-API-Key', headers: { 'x-api-key': keysA.all.key } as Headers, kind: 'apiKeyHeader' },
  ]
  const gets = matrix.filter((o) => o.method === 'GET')
  t.ok(gets.length >= 5, `${gets.length} GET operations`)
  for (const o of gets) {
    for (const v of variants(o)) {
      for (const c of ownersOfA.filter((c) => o.op.security?.some((s) => c.kind in s))) {
        const res = await call(o, v.url, { ...c.headers, ...v.headers })
        t.equal(res.statusCode, 200, `${o.key}, ${c.label}, ${v.label}`, { body: res.body })
      }
    }
  }
})

t.test("caller-only GET operations ignore another organization's X-Org-ID and show nothing of it", async (t) => {
  for (const o of operations.filter((o) => o.key in CALLER_ONLY && o.method === 'GET' && o.op.security?.length)) {
    const res = await call(o, o.path, { ...bearer(B.owner.token), 'x-org-id': A.id })
    t.ok(res.statusCode < 500, `${o.key}: answered`, { got: res.statusCode, body: res.body })
    t.same(leaks(res), [], `${o.key}: nothing of A in the answer`)
  }
})
