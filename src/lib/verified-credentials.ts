// Who a credential was verified to be, and in which organization, remembered
// by the credential's exact text (and the organization asked for): a
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

export class VerifiedCredentials {
  private readonly entries = new Map<string, VerifiedCredential>()
  private stamp = 0

  constructor(private readonly maxEntries: number) {}

  /** The cache key: the credential, and the organization asked for when one is. */
  static keyOf(credential: string, org: string | undefined): string {
    return org === undefined ? credential : `${credential}\n${org}`
  }

  get(key: string): VerifiedCredential | undefined {
    return this.entries.get(key)
  }

  /** Taken before verifying; remember() stores only if nothing was emptied meanwhile. */
  get version(): number {
    return this.stamp
  }

  remember(key: string, entry: VerifiedCredential, version: number): void {
    if (version !== this.stamp) return
    this.entries.delete(key)
    this.entries.set(key, entry)
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string)
  }

  forget(key: string): void {
    this.entries.delete(key)
  }

  clear(): void {
    this.stamp++
    this.entries.clear()
  }
}
