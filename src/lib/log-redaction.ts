// Credentials that clients put in a URL must not reach the logs with it. Two
// nets: the value of any query parameter whose name looks like it carries a
// credential (api_key, X-Api-Key, client_secret, mfa_token, id_token, jwt, …,
// however it is spelled or encoded), and anything anywhere in the URL shaped
// like one of our credentials (an API key, a JWT, a refresh or mfa token).

/** Name fragments of parameters that carry credentials, compared without case, punctuation or encoding. */
const CREDENTIAL_NAME = /token|key|secret|passw|pwd|code|otp|pin|jwt|auth|bearer|session|credential|sig/
const CREDENTIAL_VALUE = /[a-z][a-z0-9]{1,9}_(?:live|test)_sk_[A-Za-z0-9]{8,}|eyJ[\w-]*\.[\w-]*(?:\.[\w-]*)?|\b(?:rt|mfa)_[\w-]{20,}/g

function decoded(raw: string): string {
  try {
    return decodeURIComponent(raw.replaceAll('+', ' '))
  } catch {
    return raw // kept as sent
  }
}

const normalizedName = (raw: string) => decoded(raw).toLowerCase().replace(/[^a-z0-9]/g, '')

/** A query value, masked whole when it is, or decodes to, something credential-shaped. */
function maskedValue(raw: string): string {
  CREDENTIAL_VALUE.lastIndex = 0
  const shaped = CREDENTIAL_VALUE.test(decoded(raw))
  CREDENTIAL_VALUE.lastIndex = 0
  return shaped ? '[redacted]' : raw
}

/** The URL with every credential-looking query value, and every credential-shaped string, replaced by [redacted]. */
export function maskCredentialsInUrl(url: string): string {
  const q = url.indexOf('?')
  const path = (q === -1 ? url : url.slice(0, q)).replace(CREDENTIAL_VALUE, '[redacted]')
  if (q === -1) return path
  const query = url.slice(q + 1).split(/([&;])/).map((part) => {
    const eq = part.indexOf('=')
    if (eq === -1) return maskedValue(part)
    const name = part.slice(0, eq)
    return CREDENTIAL_NAME.test(normalizedName(name)) ? `${name}=[redacted]` : `${name}=${maskedValue(part.slice(eq + 1))}`
  })
  return `${path}?${query.join('')}`
}
