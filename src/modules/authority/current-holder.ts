// What a caller holds at the moment a grant is written, read inside the grant's
// transaction: a session's role is re-read (a demotion committed a moment ago
// is not outrun by a request authenticated before it), a key's row is re-read
// (revoked or expired meanwhile: refused). The rule applied to it is
// assertWithinAuthority (src/lib/authority.ts).
import type { Config } from '../../config.js'
import type { Queryable } from '../../db/client.js'
import { AppError, unauthorized } from '../../errors.js'
import { scopesOfRole, type Holder } from '../../lib/authority.js'
import type { AuthContext } from '../../plugins/tenancy.js'
import { findApiKeyById } from '../api-keys/repository.js'
import { findMembership } from '../organizations/repository.js'

export function currentHolder(db: Queryable, config: Config, auth: AuthContext, now: number): Promise<Holder> {
  return holderNow(db, config, auth.method === 'api_key' ? { orgId: auth.orgId, keyId: auth.keyId } : { orgId: auth.orgId, userId: auth.userId }, now)
}

/**
 * What an API key, or a user in an organization, holds now: also for a grant made earlier and
 * taken up later (an invitation is accepted with the authority its inviter still has).
 */
export async function holderNow(db: Queryable, config: Config, who: { orgId: string; keyId?: string | null; userId?: string | null }, now: number): Promise<Holder> {
  if (who.keyId) {
    const key = await findApiKeyById(db, who.keyId)
    const expiresAt = key?.expiresAt?.getTime() ?? null
    if (!key || key.orgId !== who.orgId || key.revokedAt || (expiresAt !== null && expiresAt <= now)) throw unauthorized('Invalid or missing API key')
    return { role: null, scopes: key.scopes, expiresAt }
  }
  const role = who.userId ? (await findMembership(db, who.orgId, who.userId))?.role : undefined
  if (!role) throw new AppError('FORBIDDEN', 'Not a member of this organization')
  return { role, scopes: scopesOfRole(config, role) }
}
