// What each mail says, in plain text and HTML. Links are built from APP_URL
// alone, never from the request's Host or X-Forwarded-Host: a forged header
// must not be able to point a reset link at an attacker's site (the class of
// Supabase's GHSA-3529-5m8x-rpv3).
import type { Config } from '../../config.js'

export interface MailContent {
  subject: string
  text: string
  html: string
  /** The mail's single-use link, when it has one (the log transport shows it). */
  link?: string
}

/** Where each link lands in the front end (APP_URL), with `?token=`. */
export const LINK_PATHS = {
  password_reset: '/reset-password',
  email_verification: '/verify-email',
  email_change: '/confirm-email',
  invitation: '/accept-invitation',
} as const

export type LinkPurpose = keyof typeof LINK_PATHS

export function mailLink(config: Pick<Config, 'APP_URL'>, purpose: LinkPurpose, token: string): string {
  const url = new URL(config.APP_URL)
  url.pathname = `${url.pathname.replace(/\/$/, '')}${LINK_PATHS[purpose]}`
  url.search = ''
  url.searchParams.set('token', token)
  return url.toString()
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

/** One mail: paragraphs of text, and an optional call to action with its link. */
function compose(config: Pick<Config, 'APP_NAME'>, subject: string, paragraphs: string[], action?: { label: string; link: string }): MailContent {
  const app = config.APP_NAME
  const text = [...paragraphs, ...(action ? [`${action.label}: ${action.link}`] : []), `— ${app}`].join('\n\n') + '\n'
  const html = '<!doctype html><html><body style="font-family:sans-serif;line-height:1.5">'
    + paragraphs.map((p) => `<p>${escapeHtml(p)}</p>`).join('')
    + (action ? `<p><a href="${escapeHtml(action.link)}">${escapeHtml(action.label)}</a></p>` : '')
    + `<p>— ${escapeHtml(app)}</p></body></html>`
  return { subject: `${app}: ${subject}`, text, html, ...(action ? { link: action.link } : {}) }
}

type MailConfig = Pick<Config, 'APP_NAME' | 'APP_URL' | 'PASSWORD_RESET_TTL' | 'EMAIL_VERIFICATION_TTL' | 'INVITATION_TTL'>

const unit = (n: number, name: string) => `${n} ${name}${n === 1 ? '' : 's'}`
const minutes = (seconds: number) => (seconds % 86_400 === 0 ? unit(seconds / 86_400, 'day')
  : seconds % 3600 === 0 ? unit(seconds / 3600, 'hour') : unit(Math.round(seconds / 60), 'minute'))

/**
 * Words this service did not choose (an organization's name, an address someone typed), quoted in a
 * mail from its address: one line, defanged (`https[:]//evil[.]example`), so no mail client makes a
 * link of them. NFKC first, so fullwidth and compatibility forms (`ｈｔｔｐｓ：／／`, `．`, U+2024) become
 * the ASCII they stand for, and bidi controls (U+202E and the rest of Bidi_Control) go, before anything
 * is matched; other format characters stay, since words need them (ZWNJ in Persian 'شرکت‌ها', ZWJ in
 * emoji sequences). The ideographic full stop, which NFKC keeps but hostnames read as a dot (UTS #46),
 * is a dot.
 */
export function defang(words: string): string {
  return words.normalize('NFKC').replace(/\p{Bidi_Control}+/gu, '').replace(/[\p{Cc}\p{Zl}\p{Zp}]+/gu, ' ').trim()
    .replace(/\u3002/g, '.').replace(/:\/\//g, '[:]//').replace(/\./g, '[.]').replace(/@/g, '[@]')
}

/**
 * The organization's name is its admins' words: it stays out of the subject, and in the body it is
 * defanged. The only link is the accept link.
 */
function invitationMail(config: MailConfig, token: string, name: string, role: string) {
  const organization = defang(name)
  return compose(config, 'you are invited to join an organization', [
    `You are invited to join the organization named "${organization}" as ${role === 'admin' ? 'an' : 'a'} ${role}.`,
    `Accept with the link below, signed in with this address or by creating an account with it. The link works once, for ${minutes(config.INVITATION_TTL)}. If you do not know this organization, ignore this mail.`,
  ], { label: 'Accept the invitation', link: mailLink(config, 'invitation', token) })
}

export const templates = {
  passwordReset: (config: MailConfig, token: string) => compose(config, 'reset your password', [
    'Someone asked to reset the password of your account. If it was you, choose a new password with the link below.',
    `The link works once, for ${minutes(config.PASSWORD_RESET_TTL)}. If you did not ask, ignore this mail: your password stays as it is.`,
  ], { label: 'Reset your password', link: mailLink(config, 'password_reset', token) }),

  passwordChanged: (config: MailConfig) => compose(config, 'your password was changed', [
    'The password of your account was just changed, and every session was signed out.',
    'If you did not do this, reset your password at once and contact your administrator.',
  ]),

  emailVerification: (config: MailConfig, token: string) => compose(config, 'confirm your email address', [
    'Confirm that this address is yours with the link below.',
    `The link works once, for ${minutes(config.EMAIL_VERIFICATION_TTL)}.`,
  ], { label: 'Confirm your email address', link: mailLink(config, 'email_verification', token) }),

  emailChange: (config: MailConfig, token: string) => compose(config, 'confirm your new email address', [
    'Someone asked to move an account to this address. If it was you, confirm with the link below; until then, nothing changes.',
    `The link works once, for ${minutes(config.EMAIL_VERIFICATION_TTL)}.`,
  ], { label: 'Confirm your new address', link: mailLink(config, 'email_change', token) }),

  invitation: invitationMail,

  // The new address is whatever the requester typed (`https://evil.example/x?token=a@evil.example`
  // has an address's shape): quoted defanged, never as a link.
  emailChangeNotice: (config: MailConfig, newEmail: string) => compose(config, 'a change of email address was requested', [
    `Someone signed in to your account asked to change its email address to ${defang(newEmail)}. It changes only once the new address is confirmed.`,
    // The request needed the password, so only a new password locks the requester out (signing out alone would not).
    'If this was not you, reset your password now (with "forgot password", from this address), or change it: that cancels the change. Whoever asked knows your password.',
  ]),

  emailChanged: (config: MailConfig, newEmail: string) => compose(config, 'your email address was changed', [
    `The email address of your account was changed to ${defang(newEmail)}. Mail about the account now goes there, not here.`,
    'If this was not you, contact your administrator at once: the account can no longer be recovered from this address.',
  ]),
}
