// Credentials that clients put in the query string must not reach the logs
// with the rest of the URL.

const CREDENTIAL_PARAMS = new Set(['access_token', 'api_key', 'key', 'token', 'refresh_token', 'code', 'password'])

function paramName(raw: string): string {
  try {
    return decodeURIComponent(raw.replaceAll('+', ' ')).toLowerCase()
  } catch {
    return raw.toLowerCase()
  }
}

/** The URL with the value of every credential-looking query parameter replaced by [redacted]. */
export function maskCredentialsInUrl(url: string): string {
  const q = url.indexOf('?')
  if (q === -1) return url
  const masked = url.slice(q + 1).split('&').map((pair) => {
    const eq = pair.indexOf('=')
    if (eq === -1 || !CREDENTIAL_PARAMS.has(paramName(pair.slice(0, eq)))) return pair
    return `${pair.slice(0, eq)}=[redacted]`
  })
  return `${url.slice(0, q)}?${masked.join('&')}`
}
