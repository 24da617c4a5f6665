// Who a credential was verified to be, and in which organization, remembered
// for the credential's exact text (and the organization asked for): a
// credential seen again is answered without re-parsing a token, re-hashing a
// key or re-reading a membership. Whatever could change the answer empties
// it (a membership, key or signing-key change, and every resync); what can
// end a credential on its own (expiry, a revoked session) is checked by the
// caller on every hit. A verification that raced an emptying is answered but
// not remembered.
import type { AuthContext } from '../plugins/tenancy.js'

export interface VerifiedCredential {
  /** How the credential was presented and verified: an access token and an API key are not interchangeable. */
  kind: 'session' | 'api_key'
  auth: AuthContext
  /** The signing-key generation it was verified under (a retired key's tokens stop at once). */
  ring: number
  /** An access token's expiry (system clock, ms, tolerance included); Infinity for an API key. */
  tokenExpiresAt: number
  /** The API key's expiry (service clock, ms) when the credential is or speaks for a key; null otherwise. */
  keyExpiresAt: number | null
}

/** A credential and the organization asked for, as the cache looks them up (VerifiedCredentials.keyOf). */
export interface CredentialKey {
  readonly credential: string
  readonly org: string | undefined
  /** The map key: the credential's tail and the organization (see keyOf). */
  readonly slot: string
}

/**
 * Characters of a credential's end that index it. Every credential this memo holds ends in at least
 * this many secret characters (an access token's signature, an API key's random part and checksum),
 * so only the holder of a credential can make another share its slot; a credential format with a
 * fixed or public ending would need a different index, or its slots would thrash.
 */
const TAIL = 40

interface Slot { readonly credential: string; readonly org: string | undefined; readonly entry: VerifiedCredential }

export class VerifiedCredentials {
  private readonly entries = new Map<string, Slot>()
  private stamp = 0

  constructor(private readonly maxEntries: number) {}

  /**
   * The cache key of a credential in an organization. The map is indexed by the credential's last
   * characters, not its whole text: a lookup hashes the string it is given, and an access token is
   * 600-700 characters, which perf put at 3 % of a remembered token's verification. An entry
   * answers only the exact credential and organization it was stored for.
   */
  static keyOf(credential: string, org: string | undefined): CredentialKey {
    const tail = credential.length > TAIL ? credential.slice(-TAIL) : credential
    return { credential, org, slot: org === undefined ? tail : `${tail}\n${org}` }
  }

  get(key: CredentialKey): VerifiedCredential | undefined {
    const found = this.entries.get(key.slot)
    return found && found.credential === key.credential && found.org === key.org ? found.entry : undefined
  }

  /** Taken before verifying; remember() stores only if nothing was emptied meanwhile. */
  get version(): number {
    return this.stamp
  }

  /** Stores the entry; another credential of the same tail and organization (never seen in practice) is replaced. */
  remember(key: CredentialKey, entry: VerifiedCredential, version: number): void {
    if (version !== this.stamp) return
    this.entries.delete(key.slot)
    this.entries.set(key.slot, { credential: key.credential, org: key.org, entry })
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string)
  }

  forget(key: CredentialKey): void {
    if (this.get(key)) this.entries.delete(key.slot)
  }

  clear(): void {
    this.stamp++
    this.entries.clear()
  }
}
