// API key format (SPEC §4 "API keys"): {prefix}_{live|test}_sk_{30 random
// base62}{6-char base62 CRC32}. The checksum is recomputed here independently,
// so a generator and a checker that agree with each other but not with the
// spec both fail.
import t from 'tap'
import { crc32 } from 'node:zlib'
import { generateApiKey, isWellFormedApiKey, KEY_DISPLAY_PREFIX_LENGTH, looksLikeApiKey } from '../../src/lib/api-key-format.js'

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
const SHAPE = /^pc_(live|test)_sk_[0-9A-Za-z]{36}$/

/** Big-endian base62 of the CRC32 of `body`, 6 characters: the spec's checksum. */
function checksum(body: string): string {
  let n = crc32(body)
  let out = ''
  for (let i = 0; i < 6; i++) {
    out = BASE62[n % 62] + out
    n = Math.floor(n / 62)
  }
  return out
}

const randomBase62 = (length: number) => Array.from({ length }, () => BASE62[Math.floor(Math.random() * 62)]).join('')
/** A key with a correct checksum for whatever body it is given. */
const sealed = (body: string) => body + checksum(body)

t.test('generated keys: shape, checksum, uniqueness; all 1000 accepted', async (t) => {
  const keys = Array.from({ length: 1000 }, (_, i) => generateApiKey('pc', i % 2 ? 'test' : 'live'))
  t.same(keys.filter((k) => !SHAPE.test(k)), [], 'every key matches pc_{live|test}_sk_ + 36 base62 characters')
  t.same(keys.filter((k, i) => !k.startsWith(i % 2 ? 'pc_test_sk_' : 'pc_live_sk_')), [], 'the environment is the requested one')
  t.same(keys.filter((k) => k.slice(-6) !== checksum(k.slice(0, -6))), [], 'the last 6 characters are the base62 CRC32 of the rest')
  t.equal(new Set(keys).size, keys.length, 'no duplicates')
  t.equal(new Set(keys.map((k) => k.slice(11, 41))).size, keys.length, 'the 30 random characters differ between keys')
  t.same(keys.filter((k) => !isWellFormedApiKey('pc', k)), [], 'isWellFormedApiKey accepts every generated key')

  // 30 000 random characters: each of the 62 symbols appears (a biased or narrowed alphabet would not).
  const used = new Set(keys.flatMap((k) => [...k.slice(11, 41)]))
  t.equal(used.size, 62, 'the random part uses the whole base62 alphabet')
})

t.test('any single-character change is refused', async (t) => {
  const key = generateApiKey('pc', 'live')
  const replacements = [...BASE62, '_', '-', ' ', '.', 'é']
  for (let i = 0; i < key.length; i++) {
    const accepted = replacements
      .filter((c) => c !== key[i])
      .map((c) => key.slice(0, i) + c + key.slice(i + 1))
      .filter((k) => isWellFormedApiKey('pc', k))
    t.same(accepted, [], `position ${i} (${key[i]}): no replacement accepted`)
  }
})

t.test('wrong prefix, environment, type, length or alphabet is refused, even with a valid checksum', async (t) => {
  const random = randomBase62(30)
  t.ok(isWellFormedApiKey('pc', sealed(`pc_live_sk_${random}`)), 'control: the same random part with the right shape is accepted')
  const cases: Record<string, string> = {
    'other prefix': generateApiKey('xx', 'live'),
    'longer prefix': generateApiKey('pcx', 'live'),
    'prefix upper-cased': sealed(`PC_live_sk_${random}`),
    'no prefix': sealed(`live_sk_${random}`),
    'environment prod': sealed(`pc_prod_sk_${random}`),
    'environment LIVE': sealed(`pc_LIVE_sk_${random}`),
    'pk instead of sk': sealed(`pc_live_pk_${random}`),
    '29 random characters': sealed(`pc_live_sk_${random.slice(1)}`),
    '31 random characters': sealed(`pc_live_sk_${random}A`),
    'non-base62 character': sealed(`pc_live_sk_${random.slice(1)}-`),
    'truncated': generateApiKey('pc', 'live').slice(0, -1),
    'one character appended': `${generateApiKey('pc', 'live')}A`,
    'surrounding whitespace': ` ${generateApiKey('pc', 'live')}`,
    'empty': '',
  }
  for (const [label, key] of Object.entries(cases)) t.notOk(isWellFormedApiKey('pc', key), `${label}: refused`)
  t.notOk(isWellFormedApiKey('xx', generateApiKey('pc', 'live')), 'a pc_ key is refused when the prefix is xx')
})

t.test('a configured prefix is used and checked', async (t) => {
  const key = generateApiKey('acme', 'test')
  t.match(key, /^acme_test_sk_[0-9A-Za-z]{36}$/)
  t.ok(isWellFormedApiKey('acme', key))
  t.ok(looksLikeApiKey('acme', key))
  t.notOk(looksLikeApiKey('pc', key), 'another prefix does not claim it')
  t.equal(KEY_DISPLAY_PREFIX_LENGTH, 16, 'display prefix is 16 characters')
})
