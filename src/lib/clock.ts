/** Time source for every rule that depends on time (expiry, lockout, TOTP), so tests can fake it. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number
}

export const systemClock: Clock = { now: () => Date.now() }
