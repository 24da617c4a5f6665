// SPEC §4 "Authority": no operation produces a credential or a membership with
// more authority than its caller holds now. Built from the route table like the
// tenant-isolation matrix: every operation of the document is classified as
// ISSUING (it creates, rotates, grants or re-roles a credential of the
// organization: driven here), SELF (it issues the caller's own credential from
// its own password or membership), or OTHER, each with a reason; a new route
// fails the first test until it is classified. Each issuing operation is then
// tried by sessions of every role and by keys of several scope sets, for grants
// inside and outside the caller's authority. The expected answer comes from an
// oracle written here (not from src/lib/authority.ts): allowed exactly when the
// route admits the caller and the grant is within the caller's scopes (owner
// only from an owner). Every allowed grant's result is read back and checked.
import t from 'tap'
import { buildTestApp } from '../helpers/app.js'
import { bearer } from '../helpers/api.js'
import {
  acceptInvitation, addMember, createKey, expectStatus, invite, newPerson, newTenant, TENANCY_ENV, verifyEmail, type Headers, type Role,
} from '../helpers/orgs.js'

const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const

const app = await buildTestApp(t, { env: TENANCY_ENV })
const ALL = [...app.config.SCOPES]
const MEMBER = [...app.config.MEMBER_SCOPES]
/** The oracle's own table of role scopes (SPEC §5: owners and admins hold every scope). */
const ROLE_SCOPES: Record<Role, string[]> = { owner: ALL, admin: ALL, member: MEMBER }

type Grant = { scopes: string[] } | { role: Role } | { from: Role; to: Role }

interface Caller { label: string; headers: Headers; role: Role | null; scopes: string[]; keyId?: string }

interface IssuingOperation {
  /** The scope the route demands (sessions also need the owner or admin role); null: any API key, no session. */
  routeScope: string | null
  /** How a refusal is answered (default 403). */
  refused?: number[]
  grants: Grant[]
  /** Tries the grant as `caller`; returns the response and, on success, the authority produced. */
  attempt(caller: Caller, grant: Grant): Promise<{ status: number; body: string; produced?: () => Promise<string[]> }>
}

const org = await newTenant(app, 'Authority Matrix Inc')
const owner = bearer(org.owner.token)

const keyScopes = (key: string) => async () =>
  expectStatus(await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { 'x-api-key': key } }), 200, 'me of the new key').auth.scopes as string[]
const roleInOrg = (userId: string) => async () => {
  const page = expectStatus(await app.inject({ method: 'GET', url: `/api/v1/organizations/${org.id}/members?limit=100`, headers: owner }), 200, 'members')
  const role = (page.items as { user_id: string; role: Role }[]).find((m) => m.user_id === userId)?.role
  if (!role) throw new Error(`${userId} is not a member`)
  return ROLE_SCOPES[role]
}

const SCOPE_GRANTS: Grant[] = [{ scopes: ['agents:read'] }, { scopes: ['audit:read'] }, { scopes: ['api_keys:write'] }, { scopes: MEMBER }, { scopes: ALL }]

const ISSUING: Record<string, IssuingOperation> = {
  'POST /api/v1/api-keys': {
    routeScope: 'api_keys:write',
    grants: SCOPE_GRANTS,
    async attempt(caller, grant) {
      const res = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: caller.headers, payload: { name: 'granted', scopes: (grant as { scopes: string[] }).scopes } })
      return { status: res.statusCode, body: res.body, produced: res.statusCode === 201 ? keyScopes(res.json().key) : undefined }
    },
  },
  'POST /api/v1/api-keys/{id}/rotate': {
    routeScope: 'api_keys:write',
    grants: SCOPE_GRANTS,
    async attempt(caller, grant) {
      const target = await createKey(app, owner, (grant as { scopes: string[] }).scopes, 'rotation target')
      const res = await app.inject({ method: 'POST', url: `/api/v1/api-keys/${target.id}/rotate`, headers: caller.headers })
      return { status: res.statusCode, body: res.body, produced: res.statusCode === 201 ? keyScopes(res.json().key) : undefined }
    },
  },
  'POST /api/v1/organizations/{org_id}/invitations': {
    // The grant is the invitation; it is read back once the invited account has accepted it.
    routeScope: 'members:write',
    grants: [{ role: 'member' }, { role: 'admin' }, { role: 'owner' }],
    async attempt(caller, grant) {
      const person = await newPerson(app)
      const res = await addMember(app, caller.headers, org.id, person, (grant as { role: Role }).role)
      return { status: res.statusCode, body: res.body, produced: res.statusCode === 200 ? roleInOrg(person.id) : undefined }
    },
  },
  'POST /api/v1/organizations/{org_id}/invitations/{invitation_id}/resend': {
    // A resend issues a new link for the invitation's role: capped by whoever resends it.
    routeScope: 'members:write',
    grants: [{ role: 'member' }, { role: 'admin' }, { role: 'owner' }],
    async attempt(caller, grant) {
      const person = await newPerson(app)
      const invitation = expectStatus(await invite(app, owner, org.id, person.email, (grant as { role: Role }).role), 201, 'the owner invites')
      const res = await app.inject({ method: 'POST', url: `/api/v1/organizations/${org.id}/invitations/${invitation.id}/resend`, headers: caller.headers })
      if (res.statusCode !== 200) return { status: res.statusCode, body: res.body }
      await verifyEmail(app, person.email)
      expectStatus(await acceptInvitation(app, person.email, person.token), 200, 'accept the resent invitation')
      return { status: res.statusCode, body: res.body, produced: roleInOrg(person.id) }
    },
  },
  'PATCH /api/v1/organizations/{org_id}/members/{user_id}': {
    routeScope: 'members:write',
    grants: [{ from: 'member', to: 'admin' }, { from: 'member', to: 'owner' }, { from: 'admin', to: 'member' }, { from: 'owner', to: 'admin' }],
    async attempt(caller, grant) {
      const { from, to } = grant as { from: Role; to: Role }
      const person = await newPerson(app)
      expectStatus(await addMember(app, owner, org.id, person, from), 200, `add ${from}`)
      const res = await app.inject({ method: 'PATCH', url: `/api/v1/organizations/${org.id}/members/${person.id}`, headers: caller.headers, payload: { role: to } })
      return { status: res.statusCode, body: res.body, produced: res.statusCode === 200 ? roleInOrg(person.id) : undefined }
    },
  },
}

ISSUING['POST /api/v1/oauth/token'] = {
  // client_credentials: an access token for the key's organization and the scopes asked for.
  routeScope: null,
  refused: [400, 401],
  grants: SCOPE_GRANTS,
  async attempt(caller, grant) {
    const scope = (grant as { scopes: string[] }).scopes.join(' ')
    const res = await app.inject({
      method: 'POST', url: '/api/v1/oauth/token', headers: { ...caller.headers, 'content-type': 'application/x-www-form-urlencoded' },
      payload: new URLSearchParams({ grant_type: 'client_credentials', scope, ...clientOf(caller) }).toString(),
    })
    const produced = res.statusCode === 200
      ? async () => expectStatus(await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(res.json().access_token) }), 200, 'me of the token').auth.scopes as string[]
      : undefined
    return { status: res.statusCode, body: res.body, produced }
  },
}

/** client_secret_post fields for a key caller (its id and the key); nothing for a session, which is no OAuth client. */
function clientOf(caller: Caller): Record<string, string> {
  return caller.keyId ? { client_id: caller.keyId, client_secret: caller.headers['x-api-key']! } : {}
}

/** Operations that issue the caller's own credential, from its own password, session or membership. */
const SELF: Record<string, string> = {
  'POST /api/v1/auth/register': 'a new account owns the new organization it creates, or takes the role an invitation granted (re-checked against its inviter: test/invitations)',
  'POST /api/v1/invitations/accept': "the caller takes the role an invitation granted, its inviter's authority re-checked at acceptance (test/invitations)",
  'POST /api/v1/auth/login': "tokens for the caller's own memberships, with its role's scopes (test/auth)",
  'POST /api/v1/auth/verify-2fa': 'the second step of a login',
  'POST /api/v1/auth/refresh': "rotates the caller's own refresh token; the role is re-read from the membership (test/sessions)",
  'POST /api/v1/organizations': 'the caller owns the new, empty organization it creates',
}

/** Everything else, with the reason it issues no authority. */
const OTHER: Record<string, string> = {
  'GET /healthz': 'public', 'GET /readyz': 'public', 'GET /.well-known/jwks.json': 'public keys',
  'GET /.well-known/openid-configuration': 'public discovery', 'GET /.well-known/oauth-authorization-server': 'public discovery',
  'GET /api/v1/auth/me': 'reads', 'GET /api/v1/auth/verify': 'reads (forward-auth)', 'GET /api/v1/auth/sessions': 'reads',
  'POST /api/v1/auth/logout': 'revokes', 'POST /api/v1/auth/logout-all': 'revokes', 'DELETE /api/v1/auth/sessions/{id}': 'revokes',
  'POST /api/v1/auth/password': "changes the caller's own password (recent authentication)",
  'POST /api/v1/auth/password/forgot': 'queues a mail; grants nothing', 'POST /api/v1/auth/email/verify/resend': 'queues a mail; grants nothing',
  'POST /api/v1/auth/password/reset': 'sets the password of the account the mailed token belongs to; revokes, issues nothing (test/mailbox)',
  'POST /api/v1/auth/email/verify': "marks the mailed address verified; no role or scope depends on it",
  'POST /api/v1/auth/email': "mails a link to move the caller's own account (recent authentication)",
  'POST /api/v1/auth/email/confirm': 'moves the account the mailed token belongs to; issues nothing',
  'POST /api/v1/auth/2fa/setup': 'a pending secret; grants nothing until enabled',
  'POST /api/v1/auth/2fa/enable': "the caller's own second factor (recent authentication)",
  'POST /api/v1/auth/2fa/disable': "the caller's own second factor (password and code)",
  'POST /api/v1/auth/2fa/recovery-codes': "the caller's own recovery codes (recent authentication)",
  'GET /api/v1/organizations': 'reads', 'GET /api/v1/organizations/{org_id}': 'reads', 'PATCH /api/v1/organizations/{org_id}': 'renames',
  'GET /api/v1/organizations/{org_id}/members': 'reads',
  'DELETE /api/v1/organizations/{org_id}/members/me': "gives up the caller's own membership",
  'GET /api/v1/organizations/{org_id}/invitations': 'reads',
  'DELETE /api/v1/organizations/{org_id}/invitations/{invitation_id}': 'revokes (an owner invitation needs the owner role: test/invitations)',
  'DELETE /api/v1/organizations/{org_id}/members/{user_id}': 'takes authority away (removing an owner needs the owner role: test/organizations)',
  'GET /api/v1/organizations/{org_id}/audit-events': 'reads',
  'GET /api/v1/api-keys': 'reads', 'GET /api/v1/api-keys/{id}': 'reads', 'DELETE /api/v1/api-keys/{id}': 'revokes',
  'POST /api/v1/auth/introspect': 'reads', 'POST /api/v1/auth/revoke': 'revokes',
  'DELETE /api/v1/auth/me': "erases the caller's own account (its password always)",
  'GET /api/v1/admin/users': 'reads (superadmins)', 'GET /api/v1/admin/users/{user_id}': 'reads (superadmins)',
  'GET /api/v1/admin/organizations': 'reads (superadmins)', 'GET /api/v1/admin/audit-events': 'reads (superadmins)',
  'POST /api/v1/admin/users/{user_id}/disable': 'revokes every session of the account (superadmins)',
  'POST /api/v1/admin/users/{user_id}/erase': 'revokes and erases (superadmins)',
  'POST /api/v1/admin/users/{user_id}/enable': 'lets a disabled account log in again with its own memberships: nothing it did not hold (superadmins)',
  'POST /api/v1/admin/users/{user_id}/password-reset': 'queues the account\'s own reset mail (superadmins)',
}

const doc = app.swagger() as unknown as { paths: Record<string, Partial<Record<string, unknown>>> }
const operations = Object.entries(doc.paths).flatMap(([path, item]) =>
  HTTP_METHODS.filter((m) => item[m]).map((m) => `${m.toUpperCase()} ${path}`))

const callers: Caller[] = [
  ...(['owner', 'admin', 'member'] as const).map((role) => ({ label: `${role} session`, headers: bearer(org[role].token), role, scopes: ROLE_SCOPES[role] })),
]
for (const [label, scopes] of Object.entries({
  'every scope': ALL,
  'api_keys:read+write': ['api_keys:read', 'api_keys:write'],
  'api_keys:write+agents:read': ['api_keys:write', 'agents:read'],
  'members:read+write': ['members:read', 'members:write'],
  'member scopes+members:write': [...MEMBER, 'members:write'],
  'keys, members and audit': ['api_keys:read', 'api_keys:write', 'members:read', 'members:write', 'audit:read'],
})) {
  const key = await createKey(app, owner, scopes, label)
  callers.push({ label: `key [${label}]`, headers: { 'x-api-key': key.key }, role: null, scopes, keyId: key.id })
}

t.test('every operation of the route table is classified exactly once', async (t) => {
  const lists = [ISSUING, SELF, OTHER].map((l) => Object.keys(l))
  t.same(operations.filter((o) => lists.filter((l) => l.includes(o)).length !== 1), [],
    'each operation is in exactly one of ISSUING, SELF and OTHER (a new route must be classified)')
  t.same(lists.flat().filter((o) => !operations.includes(o)), [], 'no stale entries')
})

/** The oracle: the route admits the caller, and the grant is within its authority. */
function allowed(op: IssuingOperation, caller: Caller, grant: Grant): boolean {
  const within = (scopes: string[]) => scopes.every((s) => caller.scopes.includes(s))
  const mayGrantRole = (role: Role) => (role !== 'owner' || caller.role === 'owner') && within(ROLE_SCOPES[role])
  const admitted = op.routeScope === null
    ? caller.role === null
    : caller.scopes.includes(op.routeScope) && (caller.role === null || caller.role !== 'member')
  if (!admitted) return false
  if ('scopes' in grant) return within(grant.scopes)
  if ('role' in grant) return mayGrantRole(grant.role)
  return mayGrantRole(grant.from) && mayGrantRole(grant.to)
}

for (const [key, op] of Object.entries(ISSUING)) {
  t.test(key, async (t) => {
    let granted = 0
    let refused = 0
    for (const caller of callers) {
      for (const grant of op.grants) {
        const label = `${caller.label} grants ${JSON.stringify(grant)}`
        const result = await op.attempt(caller, grant)
        if (allowed(op, caller, grant)) {
          granted++
          t.ok(result.status >= 200 && result.status < 300, `${label}: allowed`, { got: result.status, body: result.body })
          const produced = await result.produced!()
          t.same(produced.filter((s) => !caller.scopes.includes(s)), [], `${label}: the result holds nothing beyond the caller's scopes`)
        } else {
          refused++
          t.ok((op.refused ?? [403]).includes(result.status), `${label}: refused (${(op.refused ?? [403]).join(' or ')})`, { got: result.status, body: result.body })
        }
      }
    }
    t.ok(granted > 0 && refused > 0, `both outcomes occur (${granted} granted, ${refused} refused)`)
  })
}
