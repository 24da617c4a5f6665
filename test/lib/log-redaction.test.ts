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
  t.equal(maskCredentialsInUrl('/a?tokens=1&monkey=2&key_id=3'), '/a?tokens=1&monkey=2&key_id=3', 'only exact names')
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
