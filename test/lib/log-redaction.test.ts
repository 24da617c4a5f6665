// maskCredentialsInUrl: what the request log line shows of a URL.
import t from 'tap'
import { maskCredentialsInUrl } from '../../src/lib/log-redaction.js'

t.test('masks the value of every credential-looking parameter, whatever its case', async (t) => {
  for (const name of ['access_token', 'api_key', 'key', 'token', 'refresh_token', 'code', 'password', 'API_KEY', 'Access_Token']) {
    t.equal(maskCredentialsInUrl(`/p?${name}=s3cret`), `/p?${name}=[redacted]`, name)
  }
})

t.test('keeps the path, other parameters and their order', async (t) => {
  t.equal(maskCredentialsInUrl('/a/b?page=2&token=x&limit=5&code=y'), '/a/b?page=2&token=[redacted]&limit=5&code=[redacted]')
  t.equal(maskCredentialsInUrl('/a?cursor=key_01abc&limit=3&scope=agents:read'), '/a?cursor=key_01abc&limit=3&scope=agents:read', 'ordinary parameters are kept')
  t.equal(maskCredentialsInUrl('/a?token'), '/a?token', 'a name without a value')
  t.equal(maskCredentialsInUrl('/a?token=a=b&x=1'), '/a?token=[redacted]&x=1', 'an = inside the value')
  t.equal(maskCredentialsInUrl('/a?token=x&token=y'), '/a?token=[redacted]&token=[redacted]', 'repeated')
})

t.test('URL-encoded names are recognised; malformed encoding does not throw', async (t) => {
  t.equal(maskCredentialsInUrl('/a?api%5Fkey=x'), '/a?api%5Fkey=[redacted]')
  t.equal(maskCredentialsInUrl('/a?%E0%A4%A=1&code=x'), '/a?%E0%A4%A=1&code=[redacted]')
})

t.test('URLs without a query are returned as they are', async (t) => {
  t.equal(maskCredentialsInUrl('/api/v1/auth/me'), '/api/v1/auth/me')
  t.equal(maskCredentialsInUrl(''), '')
  t.equal(maskCredentialsInUrl('/a?'), '/a?')
})

t.test('any spelling of a credential-carrying name (found by the issue 10 review)', async (t) => {
  for (const name of ['client_secret', 'mfa_token', 'apikey', 'api-key', 'x-api-key', 'X-API-KEY', 'id_token', 'secret', 'jwt', 'Authorization',
    'api_key[]', 'api_key%00', '%20api_key', 'api_key%20', 'session_id', 'pwd', 'otp', 'pin', 'bearer', 'sig']) {
    t.equal(maskCredentialsInUrl(`/p?${name}=s3cret&limit=5`), `/p?${name}=[redacted]&limit=5`, name)
  }
  t.equal(maskCredentialsInUrl('/p?limit=5;token=s3cret'), '/p?limit=5;token=[redacted]', 'after a ; separator')
})

t.test('credential-shaped values are masked under any name and in the path', async (t) => {
  const key = 'pc_live_sk_AbCdEfGhIjKlMnOpQrStUvWxYz0123aBcDeF'
  const jwt = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c3IifQ.c2lnbmF0dXJl'
  const refresh = `rt_${'A'.repeat(43)}`
  t.equal(maskCredentialsInUrl(`/p?q=${key}`), '/p?q=[redacted]')
  t.equal(maskCredentialsInUrl(`/p?q=${jwt}&limit=2`), '/p?q=[redacted]&limit=2')
  t.equal(maskCredentialsInUrl(`/p?${refresh}`), '/p?[redacted]')
  t.equal(maskCredentialsInUrl(`/api/v1/auth/verify/${key}/x`), '/api/v1/auth/verify/[redacted]/x', 'in the path')
  t.equal(maskCredentialsInUrl(`/p?q=mfa_${'b'.repeat(43)}`), '/p?q=[redacted]')
  t.equal(maskCredentialsInUrl(`/p?q=${key.replaceAll('_', '%5F')}`), '/p?q=[redacted]', 'percent-encoded')
})
