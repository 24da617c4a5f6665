// The OAuth 2.0 token endpoint's rules (RFC 6749): the password grant is a
// login, refresh_token a refresh (same lockout, rotation, grace and reuse rules
// as /auth/login and /auth/refresh), and client_credentials turns an API key
// (client_id = key id, client_secret = the key) into a short-lived access token
// for its organization and scopes, narrowed by `scope`, never widened.
import type { Config } from '../../config.js'
import { assertWithinAuthority } from '../../lib/authority.js'
import type { ApiKeyVerifier } from '../api-keys/verifier.js'
import type { AuthService } from '../auth/service.js'
import type { ClientMeta, SessionService } from '../sessions/service.js'
import type { TokenService } from '../../plugins/tokens.js'
import type { TokenRequest } from './schemas.js'

export type OAuthErrorCode = 'invalid_request' | 'invalid_client' | 'invalid_grant' | 'unsupported_grant_type' | 'invalid_scope'
  | 'temporarily_unavailable' | 'server_error'

/** An RFC 6749 §5.2 error answer. */
export class OAuthError extends Error {
  constructor(readonly status: number, readonly error: OAuthErrorCode, readonly description: string, readonly headers: Record<string, string> = {}) {
    super(description)
  }
}

export const invalidClient = (description = 'Client authentication failed') =>
  new OAuthError(401, 'invalid_client', description, { 'www-authenticate': 'Basic realm="portcullis", charset="UTF-8"' })

export interface OAuthClient { clientId?: string; secret?: string }

export class OAuthTokenService {
  constructor(private readonly deps: {
    config: Config; auth: AuthService; sessions: SessionService; apiKeys: ApiKeyVerifier; tokens: TokenService
  }) {}

  /** The token response for a grant, or an OAuthError (AppErrors of the login and refresh rules pass through). */
  async token(body: TokenRequest, client: OAuthClient, meta: ClientMeta) {
    switch (body.grant_type) {
      case 'password':
        this.assertPublicClient(client)
        return this.deps.auth.login({ email: required(body.username, 'username'), password: required(body.password, 'password'), orgId: body.org_id }, meta)
      case 'refresh_token':
        this.assertPublicClient(client)
        return this.deps.sessions.refresh(required(body.refresh_token, 'refresh_token'), body.org_id)
      case 'client_credentials':
        return this.clientCredentials(client, body.scope)
      default:
        throw new OAuthError(400, 'unsupported_grant_type', 'grant_type must be password, refresh_token or client_credentials')
    }
  }

  /** The password and refresh_token grants are for the first-party public client (auth method none). */
  private assertPublicClient(client: OAuthClient) {
    if (client.secret !== undefined) throw invalidClient('This grant is for the public client; API keys use client_credentials')
    if (client.clientId !== undefined && client.clientId !== this.deps.config.OAUTH_CLIENT_ID) throw invalidClient('Unknown client_id')
  }

  private async clientCredentials(client: OAuthClient, scope: string | undefined) {
    if (client.secret === undefined || client.clientId === undefined) throw invalidClient('client_credentials needs client_id and client_secret')
    const key = await this.deps.apiKeys.verify(client.secret)
    if (!key || key.id !== client.clientId) throw invalidClient()
    const requested = scope?.split(' ').filter(Boolean)
    const scopes = requested?.length ? [...new Set(requested)] : key.scopes
    // A token is a grant like any other: within what the key holds (the one rule), else invalid_scope.
    try {
      assertWithinAuthority(this.deps.config, { role: null, scopes: key.scopes }, { scopes }) // expiry: the token's exp is capped at the key's
    } catch (err) {
      throw new OAuthError(400, 'invalid_scope', err instanceof Error ? err.message : 'Scope beyond the client\'s')
    }
    const { token, expiresIn } = this.deps.tokens.signClientToken({ keyId: key.id, orgId: key.orgId, scopes, notAfter: key.expiresAt })
    return { access_token: token, token_type: 'Bearer' as const, expires_in: expiresIn, scope: scopes.join(' ') }
  }
}

function required(value: string | undefined, name: string): string {
  if (!value) throw new OAuthError(400, 'invalid_request', `${name} is required for this grant`)
  return value
}
