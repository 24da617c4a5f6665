// Issue 10 reproduction 7: fifteen logins from fifteen addresses of one IPv6 /64
// (through a trusted proxy) gave fifteen 401s and no 429: one host holds a whole
// /64. Every per-client limit now counts an IPv6 client by its /64, and an
// IPv4-mapped IPv6 address as the IPv4 address.
import t from 'tap'
import { clientAddressKey } from '../../src/lib/client-address.js'
import { buildTestApp, FAST_ARGON2 } from '../helpers/app.js'

t.test('clientAddressKey', async (t) => {
  t.equal(clientAddressKey('2001:db8:a:b:1:2:3:4'), '2001:db8:a:b::/64')
  t.equal(clientAddressKey('2001:db8:a:b::ffff'), '2001:db8:a:b::/64', 'compressed')
  t.equal(clientAddressKey('2001:0db8:000a:000b:0:0:0:1'), '2001:db8:a:b::/64', 'leading zeros')
  t.equal(clientAddressKey('2001:DB8:A:B::1'), '2001:db8:a:b::/64', 'case')
  t.equal(clientAddressKey('2001:db8::1'), '2001:db8:0:0::/64', ':: inside the /64')
  t.equal(clientAddressKey('fe80::1%eth0'), 'fe80:0:0:0::/64', 'zone id dropped')
  t.equal(clientAddressKey('::1'), '0:0:0:0::/64')
  t.equal(clientAddressKey('::ffff:203.0.113.5'), '203.0.113.5', 'IPv4-mapped is IPv4')
  t.equal(clientAddressKey('::FFFF:203.0.113.5'), '203.0.113.5')
  for (const spelling of ['0:0:0:0:0:ffff:203.0.113.5', '::ffff:cb00:7105', '0::ffff:203.0.113.5', '0:0:0:0:0:FFFF:CB00:7105']) {
    t.equal(clientAddressKey(spelling), '203.0.113.5', `IPv4-mapped written as ${spelling}`)
  }
  t.equal(clientAddressKey('203.0.113.5'), '203.0.113.5')
  t.not(clientAddressKey('2001:db8:a:c::1'), clientAddressKey('2001:db8:a:b::1'), 'another /64 is another client')
})

const app = await buildTestApp(t, { env: { ...FAST_ARGON2, TRUST_PROXY: '127.0.0.1', RATE_LIMIT_LOGIN: '10' } })
let attempt = 0
// A new email each time, so that the per-email lockout (423) stays out of the way.
const login = (forwardedFor: string) => app.inject({
  method: 'POST', url: '/api/v1/auth/login', headers: { 'x-forwarded-for': forwardedFor },
  payload: { email: `nobody${++attempt}@example.com`, password: 'not-the-password-1' },
})

t.test('fifteen addresses of one /64 share one login limit', async (t) => {
  const statuses = []
  for (let i = 1; i <= 15; i++) statuses.push((await login(`2001:db8:1:2::${i.toString(16)}`)).statusCode)
  t.same(statuses.slice(0, 10), Array(10).fill(401), 'the first ten are counted and answered')
  t.same(statuses.slice(10), Array(5).fill(429), `the rest are 429 (got ${statuses.join(' ')})`)
  t.equal((await login('2001:db8:1:3::1')).statusCode, 401, 'the next /64 is another client')
})

t.test('an IPv4-mapped address counts as its IPv4 address', async (t) => {
  const statuses = []
  const spellings = ['198.51.100.7', '::ffff:198.51.100.7', '::ffff:c633:6407', '0:0:0:0:0:ffff:198.51.100.7']
  for (let i = 0; i < 12; i++) statuses.push((await login(spellings[i % spellings.length]!)).statusCode)
  t.same(statuses.slice(10), [429, 429], `one limit for both spellings (got ${statuses.join(' ')})`)
})

t.test('every per-client limiter counts the /64: register and the failed-credential throttle too', async (t) => {
  const limited = await buildTestApp(t, {
    env: { ...FAST_ARGON2, TRUST_PROXY: '127.0.0.1', RATE_LIMIT_REGISTER: '3', RATE_LIMIT_AUTH_FAILURES: '4' },
  })
  const registrations = []
  for (let i = 1; i <= 5; i++) {
    registrations.push((await limited.inject({
      method: 'POST', url: '/api/v1/auth/register', headers: { 'x-forwarded-for': `2001:db8:7:7::${i}` },
      payload: { email: `v6.${i}.${Date.now()}@example.com`, password: 'violet-otter-grammar-47' },
    })).statusCode)
  }
  t.same(registrations, [201, 201, 201, 429, 429], 'register: one limit for the /64')
  const failures = []
  for (let i = 1; i <= 6; i++) {
    failures.push((await limited.inject({
      method: 'GET', url: '/api/v1/auth/verify', headers: { 'x-forwarded-for': `2001:db8:8:8:${i}::1`, authorization: 'Bearer not-a-token' },
    })).statusCode)
  }
  t.same(failures, [401, 401, 401, 401, 429, 429], 'failed credentials: one throttle for the /64')
})
