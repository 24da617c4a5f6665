// NIST SP 800-63B / ASVS 6.2 password rules: length in code points, no
// composition rules, no truncation, no common or context-derived passwords.
import { dictionary } from '@zxcvbn-ts/language-common'

export const PASSWORD_MAX_LENGTH = 256

// ~49,000 common passwords maintained by the zxcvbn-ts project.
const COMMON = new Set<string>((dictionary['passwords-common'] as string[]).map((p) => p.toLowerCase()))

export interface PasswordContext {
  email?: string
  name?: string | null
  companyName?: string | null
}

/** Returns why the password is refused, or null when it is acceptable. */
export function checkPasswordPolicy(password: string, minLength: number, context: PasswordContext = {}): string | null {
  const length = [...password].length
  if (length < minLength) return `must be at least ${minLength} characters`
  if (length > PASSWORD_MAX_LENGTH) return `must be at most ${PASSWORD_MAX_LENGTH} characters`
  const folded = password.trim().toLowerCase()
  if (COMMON.has(folded)) return 'is too common; choose a less predictable password'
  for (const [label, value] of [['email', context.email], ['name', context.name], ['company name', context.companyName]] as const) {
    if (value && folded === value.trim().toLowerCase()) return `must not be the same as your ${label}`
  }
  return null
}
