import { randomFillSync } from 'node:crypto'

// Crockford base32, lower-cased: ids sort by creation time as plain strings.
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz'

export type IdPrefix = 'usr' | 'org' | 'key' | 'ses' | 'evt' | 'req' | 'kid' | 'rtk' | 'rcv' | 'mail' | 'mtk' | 'inv'

// Entropy drawn 4 KiB at a time: one randomBytes call per request id was a measurable cost.
const pool = Buffer.alloc(4096)
let offset = pool.length

function randomChars(n: number): string {
  if (offset + n > pool.length) {
    randomFillSync(pool)
    offset = 0
  }
  let out = ''
  for (let i = 0; i < n; i++) out += ALPHABET[pool[offset++]! & 31]
  return out
}

/** A ULID-shaped id: 48-bit millisecond time + 80 random bits, e.g. `usr_01jd…`. */
export function newId(prefix: IdPrefix, now = Date.now()): string {
  let time = ''
  let t = now
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time
    t = Math.floor(t / 32)
  }
  return `${prefix}_${time}${randomChars(16)}`
}

export const ID_PATTERN = (prefix: IdPrefix) => `^${prefix}_[0-9a-hjkmnp-tv-z]{26}$`
