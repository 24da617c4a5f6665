// Property (issue 10): random sequences of grant operations by random callers
// never produce a credential whose scopes exceed what its caller held. Callers
// are the owner, the members it (or anyone) added, signed in, and every key
// created so far; operations are create key, rotate key, add member and change
// role, with random scopes and roles. Before each operation the caller's
// authority is read from the service itself (/auth/me: the scopes it holds now,
// after earlier role changes); after a success, the produced credential's
// scopes are read back. Replay a run with GRANT_SEED=<the seed printed below>.
import t, { type Test } from 'tap'
import fc from 'fast-check'
import type { LightMyRequestResponse } from 'fastify'
import { buildTestApp } from '../helpers/app.js'
import { bearer, register } from '../helpers/api.js'
import { addMember, expectStatus, signIn, TENANCY_ENV, type Headers, type Role } from '../helpers/orgs.js'

const SEED = Number(process.env.GRANT_SEED ?? Date.now() % 2 ** 31)
const RUNS = Number(process.env.GRANT_RUNS ?? 25)
t.comment(`GRANT_SEED=${SEED}`)

const app = await buildTestApp(t, { env: TENANCY_ENV })
const SCOPES = [...app.config.SCOPES]
const ROLES: Role[] = ['member', 'admin', 'owner']
// Accounts to add to organizations, registered once (each run has its own organization).
const people = await Promise.all(Array.from({ length: 5 }, () => register(app)))

type Op =
  | { kind: 'createKey'; caller: number; scopes: string[] }
  | { kind: 'rotateKey'; caller: number; target: number }
  | { kind: 'addMember'; caller: number; person: number; role: Role }
  | { kind: 'changeRole'; caller: number; person: number; role: Role }

const index = fc.nat({ max: 50 })
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('createKey' as const), caller: index, scopes: fc.subarray(SCOPES, { minLength: 1 }) }),
  fc.record({ kind: fc.constant('rotateKey' as const), caller: index, target: index }),
  fc.record({ kind: fc.constant('addMember' as const), caller: index, person: index, role: fc.constantFrom(...ROLES) }),
  fc.record({ kind: fc.constant('changeRole' as const), caller: index, person: index, role: fc.constantFrom(...ROLES) }),
)

interface Credential { label: string; headers: Headers }

/** What the credential holds now in its organization, as the service resolves it; null when it no longer authenticates. */
async function heldNow(orgId: string, c: Credential): Promise<string[] | null> {
  const res = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { ...c.headers, 'x-org-id': orgId } })
  return res.statusCode === 200 ? res.json().auth.scopes : null
}

const ok = (res: LightMyRequestResponse) => res.statusCode >= 200 && res.statusCode < 300

let granted = 0
let refused = 0

async function run(t: Test, ops: Op[]) {
  const reg = await register(app)
  const orgId = reg.organization.id as string
  const credentials: Credential[] = [{ label: 'owner', headers: bearer(reg.access_token) }]
  const keyIds: string[] = []
  const roleScopes = async (userId: string) => {
    const page = expectStatus(await app.inject({ method: 'GET', url: `/api/v1/organizations/${orgId}/members?limit=100`, headers: bearer(reg.access_token) }), 200, 'members')
    const role = (page.items as { user_id: string; role: Role }[]).find((m) => m.user_id === userId)!.role
    return role === 'member' ? [...app.config.MEMBER_SCOPES] : SCOPES
  }
  for (const op of ops) {
    const caller = credentials[op.caller % credentials.length]!
    const held = await heldNow(orgId, caller)
    if (!held) continue
    let res: LightMyRequestResponse
    let produced: (() => Promise<string[]>) | undefined
    if (op.kind === 'createKey' || op.kind === 'rotateKey') {
      res = op.kind === 'createKey'
        ? await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { ...caller.headers, 'x-org-id': orgId }, payload: { name: 'p', scopes: op.scopes } })
        : await app.inject({ method: 'POST', url: `/api/v1/api-keys/${keyIds[op.target % Math.max(1, keyIds.length)] ?? 'key_none'}/rotate`, headers: { ...caller.headers, 'x-org-id': orgId } })
      if (res.statusCode === 201) {
        const { key, id } = res.json()
        keyIds.push(id)
        const credential = { label: `key ${id}`, headers: { 'x-api-key': key } }
        credentials.push(credential)
        produced = async () => (await heldNow(orgId, credential))!
      }
    } else {
      const person = people[op.person % people.length]!
      res = op.kind === 'addMember'
        ? await addMember(app, caller.headers, orgId, { email: person.email, token: person.access_token }, op.role)
        : await app.inject({ method: 'PATCH', url: `/api/v1/organizations/${orgId}/members/${person.user.id}`, headers: caller.headers, payload: { role: op.role } })
      if (ok(res)) {
        produced = () => roleScopes(person.user.id)
        if (op.kind === 'addMember') credentials.push({ label: `member ${person.email}`, headers: bearer((await signIn(app, person.email, orgId)).token) })
      }
    }
    if (res.statusCode >= 500) t.fail(`${op.kind} by ${caller.label}: ${res.statusCode}`, { body: res.body })
    if (!produced) { refused++; continue }
    granted++
    const beyond = (await produced()).filter((s) => !held.includes(s))
    if (beyond.length) throw new Error(`${op.kind} by ${caller.label} produced ${beyond.join(' ')} beyond what it held (${held.join(' ')})`)
  }
}

t.test('random grant sequences never exceed the caller\'s authority', async (t) => {
  await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 3, maxLength: 10 }), async (ops) => { await run(t, ops) }), { seed: SEED, numRuns: RUNS })
  t.ok(granted > 20 && refused > 20, `both outcomes occur often (${granted} granted, ${refused} refused)`)
})
