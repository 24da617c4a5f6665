// RFC 6238 TOTP through otplib: 6 digits, 30-second steps, ±1 step of drift.
import { generate, generateSecret, generateURI, verify } from 'otplib'

export const TOTP_PERIOD_SECONDS = 30

export const newTotpSecret = (): string => generateSecret()

export const totpUri = (issuer: string, account: string, secret: string): string =>
  generateURI({ issuer, label: account, secret })

/** The code for a moment (tests and tools). */
export const totpAt = (secret: string, nowMs: number): Promise<string> =>
  generate({ secret, epoch: Math.floor(nowMs / 1000) })

/** The time step the code belongs to (previous, current or next), or null when it matches none. */
export async function matchTotp(secret: string, code: string, nowMs: number): Promise<number | null> {
  if (!/^\d{6}$/.test(code)) return null
  const epoch = Math.floor(nowMs / 1000)
  const result = await verify({ secret, token: code, epoch, epochTolerance: TOTP_PERIOD_SECONDS })
  return result.valid ? Math.floor(epoch / TOTP_PERIOD_SECONDS) + result.delta : null
}
