// API key format: {prefix}_{live|test}_sk_{30 random base62}{6-char base62 CRC32}.
// The checksum lets a mistyped or made-up key be refused without a lookup, and
// lets secret scanners recognise a leaked key.
import { randomInt } from 'node:crypto'
import { crc32 } from 'node:zlib'

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
const BASE62_TAIL = /^[0-9A-Za-z]+$/
const RANDOM_LENGTH = 30
const CHECKSUM_LENGTH = 6
export const KEY_DISPLAY_PREFIX_LENGTH = 16

export type KeyEnvironment = 'live' | 'test'

function base62(n: number, width: number): string {
  let out = ''
  for (let i = 0; i < width; i++) {
    out = BASE62[n % 62] + out
    n = Math.floor(n / 62)
  }
  return out
}

const checksum = (body: string) => base62(crc32(body), CHECKSUM_LENGTH)

export function generateApiKey(prefix: string, environment: KeyEnvironment): string {
  let random = ''
  for (let i = 0; i < RANDOM_LENGTH; i++) random += BASE62[randomInt(62)]
  const body = `${prefix}_${environment}_sk_${random}`
  return body + checksum(body)
}

/** True when the string has the shape and a valid checksum of a key with this prefix. */
export function isWellFormedApiKey(prefix: string, key: string): boolean {
  const expectedLength = prefix.length + '_live_sk_'.length + RANDOM_LENGTH + CHECKSUM_LENGTH
  if (key.length !== expectedLength || !key.startsWith(`${prefix}_`)) return false
  const env = key.slice(prefix.length + 1, prefix.length + 5)
  if ((env !== 'live' && env !== 'test') || key.slice(prefix.length + 5, prefix.length + 9) !== '_sk_') return false
  if (!BASE62_TAIL.test(key.slice(prefix.length + 9))) return false
  return checksum(key.slice(0, -CHECKSUM_LENGTH)) === key.slice(-CHECKSUM_LENGTH)
}

/** A credential that claims to be an API key (by prefix), well-formed or not. */
export const looksLikeApiKey = (prefix: string, value: string) => value.startsWith(`${prefix}_`)
