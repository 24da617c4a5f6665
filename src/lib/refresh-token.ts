// Opaque refresh tokens: 256 random bits for the first of a session; every
// later one is HMAC(key, parent), so a retry can be answered with the same
// child although only hashes are stored.
import { createHmac, randomBytes } from 'node:crypto'
import { sha256 } from './crypto.js'

const PREFIX = 'rt_'
const SHAPE = /^rt_[A-Za-z0-9_-]{43}$/

export const newRefreshToken = () => PREFIX + randomBytes(32).toString('base64url')

export const childRefreshToken = (key: Buffer, parent: string) =>
  PREFIX + createHmac('sha256', key).update(parent).digest('base64url')

export const hashRefreshToken = (token: string) => sha256(token)

/** Cheap shape check: anything else is not one of ours and needs no lookup. */
export const looksLikeRefreshToken = (token: string) => SHAPE.test(token)
