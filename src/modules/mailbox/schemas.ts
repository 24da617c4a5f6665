import { Type } from '@sinclair/typebox'
import { PASSWORD_MAX_LENGTH } from '../../lib/password-policy.js'

const EmailInput = Type.String({ minLength: 3, maxLength: 320, description: 'Email address (case-insensitive)' })
const MailedToken = Type.String({ minLength: 1, maxLength: 200, description: 'The `token` of the mailed link' })

export const ForgotPasswordBodySchema = Type.Object({ email: EmailInput }, { additionalProperties: false, description: 'An email address' })

export const AcceptedSchema = Type.Object({
  message: Type.String(),
}, { description: 'Accepted; any mail leaves from the outbox' })

export const ResetPasswordBodySchema = Type.Object({
  token: MailedToken,
  new_password: Type.String({
    minLength: 1, maxLength: 2 * PASSWORD_MAX_LENGTH, 'x-new-password': true,
    description: 'At least PASSWORD_MIN_LENGTH and at most 256 characters; not a common password, nor the email or name',
  }),
}, { additionalProperties: false })

export const MailedTokenBodySchema = Type.Object({ token: MailedToken }, { additionalProperties: false })

export const ChangeEmailBodySchema = Type.Object({
  new_email: EmailInput,
  password: Type.Optional(Type.String({ minLength: 1, maxLength: 2 * PASSWORD_MAX_LENGTH, description: 'The current password: always needed (moving the address moves the account); without it, 403 REAUTHENTICATION_REQUIRED' })),
  code: Type.Optional(Type.String({ minLength: 6, maxLength: 32, description: 'With 2FA on: a TOTP or recovery code, unless the session logged in within REAUTH_WINDOW' })),
}, { additionalProperties: false })
