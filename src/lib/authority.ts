// The one rule for everything that issues authority (SPEC §4 "Authority"): no
// operation produces a credential or a membership with more authority than its
// caller holds now. API-key scopes, rotations, member grants and role changes
// all call assertWithinAuthority; test/authority/issuing-operations.test.ts
// fails when a route that issues authority does not.
import type { Config, Role } from '../config.js'
import { AppError, insufficientScope } from '../errors.js'

/** What a caller holds: its role in the organization (null for an API key), its scopes there, and until when (a key's expiry, ms). */
export interface Holder {
  role: Role | null
  scopes: readonly string[]
  expiresAt?: number | null
}

/** What an operation would hand out: a set of scopes until a moment (a key or token), or a role (a membership). */
export type Grant = { scopes: readonly string[]; expiresAt?: number | null } | { role: Role }

const roleScopes = new WeakMap<Config, Record<Role, readonly string[]>>()

/** The scopes a role carries (owners and admins: every scope; members: MEMBER_SCOPES). Frozen, computed once per config. */
export function scopesOfRole(config: Config, role: Role): readonly string[] {
  let byRole = roleScopes.get(config)
  if (!byRole) {
    const all = Object.freeze([...config.SCOPES])
    byRole = { owner: all, admin: all, member: Object.freeze([...config.MEMBER_SCOPES]) }
    roleScopes.set(config, byRole)
  }
  return byRole[role]
}

/** The scopes of a grant that its caller does not hold (empty: within authority), owner aside. */
export function scopesBeyond(config: Config, caller: Holder, grant: Grant): string[] {
  const granted = 'scopes' in grant ? grant.scopes : scopesOfRole(config, grant.role)
  return granted.filter((scope) => !caller.scopes.includes(scope))
}

/**
 * Throws unless `grant` is within what `caller` holds: every scope the caller's, the owner role
 * only from an owner (an API key has no role, so it never grants owner), and nothing that
 * outlives a caller that expires (so an expiring key grants no role at all).
 */
export function assertWithinAuthority(config: Config, caller: Holder, grant: Grant): void {
  if ('role' in grant && grant.role === 'owner' && caller.role !== 'owner') {
    throw new AppError('FORBIDDEN', 'Only an owner can grant, change or remove the owner role')
  }
  // A membership does not expire: a caller that does (a key with expires_at) can grant none.
  if ('role' in grant && caller.expiresAt != null) {
    throw new AppError('FORBIDDEN', `A key that expires cannot grant a role: the membership would outlive it (expires ${new Date(caller.expiresAt).toISOString()})`)
  }
  if ('scopes' in grant && caller.expiresAt != null && (grant.expiresAt == null || grant.expiresAt > caller.expiresAt)) {
    throw new AppError('FORBIDDEN', `A key cannot outlive the credential that grants it (expires ${new Date(caller.expiresAt).toISOString()})`)
  }
  const beyond = scopesBeyond(config, caller, grant)
  if (beyond.length) {
    const what = 'scopes' in grant ? 'A key cannot have' : `The ${grant.role} role carries`
    const error = insufficientScope(beyond)
    throw new AppError('INSUFFICIENT_SCOPE', `${what} scopes the caller does not hold: ${beyond.join(' ')}`, error.details)
  }
}
