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

export async function currentHolder(db: Queryable, config: Config, auth: AuthContext, now: number): Promise<Holder> {
  if (auth.method === 'api_key') {
    const key = await findApiKeyById(db, auth.keyId)
    const expiresAt = key?.expiresAt?.getTime() ?? null
    if (!key || key.revokedAt || (expiresAt !== null && expiresAt <= now)) throw unauthorized('Invalid or missing API key')
    return { role: null, scopes: key.scopes, expiresAt }
  }
  const role = (await findMembership(db, auth.orgId, auth.userId))?.role
  if (!role) throw new AppError('FORBIDDEN', 'Not a member of this organization')
  return { role, scopes: scopesOfRole(config, role) }
}
