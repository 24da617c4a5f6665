// API key rules: scopes never beyond the caller's (creation and rotation alike,
// through the one authority rule), the key shown once, revocation and rotation
// effective on every instance within a second.
import type { Config } from '../../config.js'
import type { Database } from '../../db/client.js'
import { AppError, notFound, validationError } from '../../errors.js'
import { assertWithinAuthority } from '../../lib/authority.js'
import { currentHolder } from '../authority/current-holder.js'
import { generateApiKey, KEY_DISPLAY_PREFIX_LENGTH } from '../../lib/api-key-format.js'
import type { Clock } from '../../lib/clock.js'
import { sha256 } from '../../lib/crypto.js'
import { newId } from '../../lib/ids.js'
import { keysetPage } from '../../lib/pagination.js'
import type { EventBus } from '../../plugins/events.js'
import type { AuthContext } from '../../plugins/tenancy.js'
import { actor, type AuditLog } from '../audit/service.js'
import * as repo from './repository.js'
import type { CreateApiKeyBody } from './schemas.js'

export interface ApiKeyServiceDeps {
  db: Database
  config: Config
  clock: Clock
  audit: AuditLog
  events: EventBus
}

const iso = (d: Date | null) => d?.toISOString() ?? null

export function apiKeyView(row: repo.ApiKeyRow) {
  return {
    id: row.id, name: row.name, key_prefix: row.keyPrefix, environment: row.environment, scopes: row.scopes,
    organization_id: row.orgId, created_by: row.createdByUserId, created_at: row.createdAt.toISOString(),
    expires_at: iso(row.expiresAt), last_used_at: iso(row.lastUsedAt), revoked_at: iso(row.revokedAt),
  }
}

export class ApiKeyService {
  constructor(private readonly deps: ApiKeyServiceDeps) {}

  async create(auth: AuthContext, body: CreateApiKeyBody) {
    const { config, clock } = this.deps
    const unknown = body.scopes.filter((s) => !config.SCOPES.includes(s))
    if (unknown.length) throw validationError('scopes', `unknown scopes: ${unknown.join(' ')}`)
    const now = clock.now()
    // A key made by an expiring key expires with it at the latest (when no expiry is asked for, then).
    const given = body.expires_at ? new Date(body.expires_at) : null
    const expiresAt = given ?? (auth.method === 'api_key' && auth.expiresAt !== null ? new Date(auth.expiresAt) : null)
    if (given && given.getTime() <= now) throw validationError('expires_at', 'must be in the future')
    assertWithinAuthority(config, auth, { scopes: body.scopes, expiresAt: expiresAt?.getTime() ?? null })
    return this.insert(auth, {
      name: body.name.trim(), environment: body.environment ?? 'live', scopes: body.scopes, expiresAt, rotatedFromId: null,
    }, 'api_key.created')
  }

  async list(auth: AuthContext, limit: number, cursor?: string) {
    return keysetPage(await repo.listApiKeys(this.deps.db, auth.orgId, limit + 1, cursor), limit, (k) => k.id, apiKeyView)
  }

  async get(auth: AuthContext, id: string) {
    const row = await repo.findApiKey(this.deps.db, auth.orgId, id)
    if (!row) throw notFound('API key')
    return apiKeyView(row)
  }

  async revoke(auth: AuthContext, id: string) {
    if (!(await repo.revokeApiKey(this.deps.db, auth.orgId, id, new Date(this.deps.clock.now())))) throw notFound('API key')
    await this.deps.events.publish({ type: 'api_keys.changed', ids: [id] })
    this.deps.audit.record({ orgId: auth.orgId, action: 'api_key.revoked', ...actor(auth), targetType: 'api_key', targetId: id })
  }

  /**
   * A new key with the same name, scopes and expiry; the old one lives `graceSeconds` more.
   * The new key is a grant like any other: its scopes must be within the caller's.
   * A key is rotated once: the check runs under a row lock, so of concurrent rotations one
   * wins and the others get 409 (rotate the successor instead).
   */
  async rotate(auth: AuthContext, id: string, graceSeconds: number) {
    const old = await repo.findApiKey(this.deps.db, auth.orgId, id)
    if (!old) throw notFound('API key')
    assertWithinAuthority(this.deps.config, auth, { scopes: old.scopes, expiresAt: old.expiresAt?.getTime() ?? null })
    const now = this.deps.clock.now()
    const created = await this.insert(auth, {
      name: old.name, environment: old.environment, scopes: old.scopes, expiresAt: old.expiresAt, rotatedFromId: old.id,
    }, 'api_key.rotated', async (tx) => {
      const current = await repo.lockApiKey(tx, auth.orgId, id)
      if (!current || current.revokedAt || (current.expiresAt && current.expiresAt.getTime() <= now) || await repo.hasSuccessor(tx, id)) {
        throw new AppError('CONFLICT', 'A revoked, expired or already rotated key cannot be rotated')
      }
      const graceEnd = now + graceSeconds * 1000
      if (graceSeconds === 0) await repo.revokeApiKey(tx, auth.orgId, id, new Date(now))
      else await repo.setApiKeyExpiry(tx, auth.orgId, id, new Date(Math.min(graceEnd, current.expiresAt?.getTime() ?? graceEnd)), new Date(now))
    })
    await this.deps.events.publish({ type: 'api_keys.changed', ids: [old.id] })
    return created
  }

  private async insert(
    auth: AuthContext,
    fields: Pick<repo.ApiKeyRow, 'name' | 'environment' | 'scopes' | 'expiresAt' | 'rotatedFromId'>,
    action: 'api_key.created' | 'api_key.rotated',
    alsoInTransaction?: (tx: Parameters<Parameters<Database['transaction']>[0]>[0]) => Promise<void>,
  ) {
    const now = new Date(this.deps.clock.now())
    const key = generateApiKey(this.deps.config.API_KEY_PREFIX, fields.environment)
    const row: repo.ApiKeyRow = {
      id: newId('key', now.getTime()), orgId: auth.orgId, keyPrefix: key.slice(0, KEY_DISPLAY_PREFIX_LENGTH),
      keyHash: sha256(key), createdByUserId: auth.userId ?? auth.createdByUserId, createdByKeyId: auth.keyId ?? null,
      createdAt: now, updatedAt: now, lastUsedAt: null, revokedAt: null, ...fields,
    }
    await this.deps.db.transaction(async (tx) => {
      // The grant is checked again against what the caller holds as the key is written.
      const holder = await currentHolder(tx, this.deps.config, auth, now.getTime())
      assertWithinAuthority(this.deps.config, holder, { scopes: row.scopes, expiresAt: row.expiresAt?.getTime() ?? null })
      await alsoInTransaction?.(tx)
      await repo.insertApiKey(tx, row)
    })
    this.deps.audit.record({
      orgId: auth.orgId, action, ...actor(auth), targetType: 'api_key', targetId: row.id,
      metadata: { name: row.name, scopes: row.scopes, ...(fields.rotatedFromId ? { rotated_from: fields.rotatedFromId } : {}) },
    })
    return { ...apiKeyView(row), key }
  }
}
