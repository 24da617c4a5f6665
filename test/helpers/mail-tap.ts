// The mail an app sends, as the tests that don't run an SMTP server see it: the
// sender's transport (the log, or SMTP) still delivers every mail; the tap only
// keeps a copy, so a test can follow the link a user would follow.
import type { App } from '../../src/app.js'
import type { OutgoingMail } from '../../src/modules/mail/transport.js'
import { within } from './app.js'

const taps = new WeakMap<App, OutgoingMail[]>()
/** The order mails were delivered in, across apps: the last delivered holds the live token (tokens are made as a mail is prepared, spending older ones). */
const delivered = new WeakMap<OutgoingMail, number>()
let deliveries = 0

/** Starts keeping a copy of every mail the app sends from now on (idempotent). */
export function tapMail(app: App): OutgoingMail[] {
  let sent = taps.get(app)
  if (sent) return sent
  const transport = app.mailSender.transport
  const send = transport.send.bind(transport)
  sent = []
  const kept = sent
  transport.send = async (mail) => {
    await send(mail)
    delivered.set(mail, ++deliveries)
    kept.push(mail)
  }
  taps.set(app, sent)
  return sent
}

/** Mails of `kind` to `to` sent so far by any of `apps`, in the order they were delivered. */
export function mailsTo(apps: App | App[], to: string, kind: string): OutgoingMail[] {
  return [apps].flat().flatMap((app) => tapMail(app).filter((m) => m.to === to && m.kind === kind)).sort((a, b) => delivered.get(a)! - delivered.get(b)!)
}

/**
 * The token of the latest mail of `kind` to `to`, waiting until more than `after` such mails have
 * been sent (tapMail first). With several instances on one outbox, any may send it: pass them all.
 */
export async function mailedToken(apps: App | App[], to: string, kind: string, after = 0, ms = 5000): Promise<string> {
  if (await within(ms, () => mailsTo(apps, to, kind).length > after) < 0) throw new Error(`no ${kind} mail to ${to} within ${ms} ms`)
  const token = new URL(mailsTo(apps, to, kind).at(-1)!.link!).searchParams.get('token')
  if (!token) throw new Error(`the ${kind} mail to ${to} has no token`)
  return token
}
