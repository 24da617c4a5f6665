// Credentials that clients put in a URL must not reach the logs with it. Two
// nets: the value of any query parameter whose name looks like it carries a
// credential (api_key, X-Api-Key, client_secret, mfa_token, id_token, jwt, …,
// however it is spelled or encoded), and anything anywhere in the URL shaped
// like one of our credentials (an API key, a JWT, a refresh or mfa token).

/** Name fragments of parameters that carry credentials, compared without case, punctuation or encoding. */
const CREDENTIAL_NAME = /token|key|secret|passw|code|jwt|auth|session|credential|signature/
const CREDENTIAL_VALUE = /[a-z][a-z0-9]{1,9}_(?:live|test)_sk_[A-Za-z0-9]{8,}|eyJ[\w-]*\.[\w-]*(?:\.[\w-]*)?|\b(?:rt|mfa)_[\w-]{20,}/g

function normalizedName(raw: string): string {
  let name = raw
  try {
    name = decodeURIComponent(raw.replaceAll('+', ' '))
  } catch { /* keep it as sent */ }
  return name.toLowerCase().replace(/[^a-z0-9]/g, '')
}

/** The URL with every credential-looking query value, and every credential-shaped string, replaced by [redacted]. */
export function maskCredentialsInUrl(url: string): string {
  const q = url.indexOf('?')
  const path = (q === -1 ? url : url.slice(0, q)).replace(CREDENTIAL_VALUE, '[redacted]')
  if (q === -1) return path
  const query = url.slice(q + 1).split(/([&;])/).map((part) => {
    const eq = part.indexOf('=')
    if (eq === -1) return part.replace(CREDENTIAL_VALUE, '[redacted]')
    const name = part.slice(0, eq)
    return CREDENTIAL_NAME.test(normalizedName(name)) ? `${name}=[redacted]` : `${name}=${part.slice(eq + 1).replace(CREDENTIAL_VALUE, '[redacted]')}`
  })
  return `${path}?${query.join('')}`
}
