import { Type } from '@sinclair/typebox'

const CODE = { minLength: 6, maxLength: 32, description: 'A 6-digit TOTP code, or a recovery code (xxxxx-xxxxx)' }
const Code = Type.String(CODE)
const PASSWORD = { minLength: 1, maxLength: 512, description: 'The account password' }

export const VerifyTwoFactorBodySchema = Type.Object({
  mfa_token: Type.String({ minLength: 1, maxLength: 200 }),
  code: Code,
}, { additionalProperties: false })

export const SetupResponseSchema = Type.Object({
  secret: Type.String({ description: 'Base32 TOTP secret, for manual entry' }),
  otpauth_url: Type.String({ description: 'otpauth:// URI, for a QR code' }),
})

export const EnableBodySchema = Type.Object({
  code: Type.String({ pattern: '^\\s*\\d{6}\\s*$', maxLength: 32, description: 'A current code from the authenticator app' }),
  password: Type.Optional(Type.String({ ...PASSWORD, description: 'The account password; not needed within REAUTH_WINDOW of a login' })),
}, { additionalProperties: false })

export const EnableResponseSchema = Type.Object({
  recovery_codes: Type.Array(Type.String(), { description: 'Ten single-use codes, shown once' }),
})

export const DisableBodySchema = Type.Object({
  password: Type.String(PASSWORD),
  code: Code,
}, { additionalProperties: false })

export const RegenerateRecoveryCodesBodySchema = Type.Object({
  password: Type.Optional(Type.String({ ...PASSWORD, description: 'Not needed within REAUTH_WINDOW of a login' })),
  code: Type.Optional(Type.String({ ...CODE, description: 'A TOTP or recovery code; not needed within REAUTH_WINDOW of a login' })),
}, { additionalProperties: false })
