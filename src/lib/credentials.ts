// The one credential parser: authentication, forward-auth, introspection,
// revocation and the token endpoint all read a request's credential here.
// Precedence, when a client sends more than one:
//   1. X-API-Key, when it holds an API key;
//   2. Authorization: Bearer <access token or API key>;
//   3. Authorization: Basic <client_id:client_secret> (RFC 6749 §2.3.1: an API key as an OAuth client);
//   4. client_id + client_secret in a form body, where the route allows it (client_secret_post);
//   5. X-API-Key with anything else (so that the answer says the key is invalid).
// So a session token sent in both headers (as generated clients do) authenticates,
// and a valid credential is never refused for being sent twice.
import { looksLikeApiKey } from './api-key-format.js'

export type Credential =
  | { kind: 'api_key'; value: string; clientId?: string }
  | { kind: 'session'; value: string }

export interface CredentialSource {
  authorization?: string
  apiKeyHeader?: string | string[]
  /** A parsed form body, for routes that accept client_secret_post. */
  body?: unknown
}

const BEARER = /^Bearer[ \t]+([^\s]+)[ \t]*$/i
const BASIC = /^Basic[ \t]+([A-Za-z0-9+/=]+)[ \t]*$/i

/** application/x-www-form-urlencoded decoding (RFC 6749 §2.3.1); undefined when malformed. */
function formDecode(value: string): string | undefined {
  try {
    return decodeURIComponent(value.replaceAll('+', ' '))
  } catch {
    return undefined
  }
}

/** client_id and client_secret of an HTTP Basic header, or undefined. */
export function basicClient(authorization: string | undefined): { clientId: string; secret: string } | undefined {
  const match = authorization ? BASIC.exec(authorization) : null
  if (!match) return undefined
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 1) return undefined
  const clientId = formDecode(decoded.slice(0, colon))
  const secret = formDecode(decoded.slice(colon + 1))
  return clientId && secret ? { clientId, secret } : undefined
}

/** client_id and client_secret of a form body (client_secret_post), or undefined. */
export function postedClient(body: unknown): { clientId: string; secret: string } | undefined {
  const b = body as { client_id?: unknown; client_secret?: unknown } | null | undefined
  return typeof b?.client_id === 'string' && typeof b.client_secret === 'string' && b.client_secret
    ? { clientId: b.client_id, secret: b.client_secret }
    : undefined
}

/** The request's credential, or null when it carries none. */
export function credentialOf(prefix: string, source: CredentialSource): Credential | null {
  const apiKeyHeader = typeof source.apiKeyHeader === 'string' ? source.apiKeyHeader.trim() : undefined
  if (apiKeyHeader && looksLikeApiKey(prefix, apiKeyHeader)) return { kind: 'api_key', value: apiKeyHeader }
  const bearer = source.authorization ? BEARER.exec(source.authorization) : null
  if (bearer) {
    const value = bearer[1]!
    return looksLikeApiKey(prefix, value) ? { kind: 'api_key', value } : { kind: 'session', value }
  }
  const client = basicClient(source.authorization) ?? postedClient(source.body)
  if (client) return { kind: 'api_key', value: client.secret, clientId: client.clientId }
  if (apiKeyHeader !== undefined) return { kind: 'api_key', value: apiKeyHeader }
  return null
}
