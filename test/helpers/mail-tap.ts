// The mail apps send, as the tests that don't run an SMTP server see it: the
// sender's transport (the log, or SMTP) still delivers every mail; the tap only
// keeps a copy, so a test can follow the link a user would follow. Every app
// buildTestApp makes is tapped, into one list: instances sharing a database
// share an outbox, and any of them may send a given mail.
import type { App } from '../../src/app.js'
import type { OutgoingMail } from '../../src/modules/mail/transport.js'
import { within } from './app.js'

const tapped = new WeakSet<App>()
/** Every mail delivered by a tapped app, in the order delivered (the last holds the live token: tokens are made as a mail is prepared, spending older ones). */
const delivered: OutgoingMail[] = []

/** Starts keeping a copy of every mail the app sends from now on (idempotent). */
export function tapMail(app: App): void {
  if (tapped.has(app)) return
  tapped.add(app)
  const transport = app.mailSender.transport
  const send = transport.send.bind(transport)
  transport.send = async (mail) => {
    await send(mail)
    delivered.push(mail)
  }
}

/** Mails of `kind` to `to` delivered so far by tapped apps (`apps` are tapped if they were not), in the order delivered. */
export function mailsTo(apps: App | App[], to: string, kind: string): OutgoingMail[] {
  for (const app of [apps].flat()) tapMail(app)
  return delivered.filter((m) => m.to === to && m.kind === kind)
}

/** The token of the latest mail of `kind` to `to`, waiting until more than `after` such mails have been delivered. */
export async function mailedToken(apps: App | App[], to: string, kind: string, after = 0, ms = 5000): Promise<string> {
  if (await within(ms, () => mailsTo(apps, to, kind).length > after) < 0) throw new Error(`no ${kind} mail to ${to} within ${ms} ms`)
  const token = new URL(mailsTo(apps, to, kind).at(-1)!.link!).searchParams.get('token')
  if (!token) throw new Error(`the ${kind} mail to ${to} has no token`)
  return token
}
