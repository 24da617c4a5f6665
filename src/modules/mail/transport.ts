// How a mail leaves: SMTP through nodemailer when SMTP_URL is set, else the
// log (the embedded default: `npm start` works with no mail server, and the
// developer reads the link there).
import { createTransport } from 'nodemailer'
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../../config.js'
import type { MailContent } from './templates.js'

export interface OutgoingMail extends MailContent {
  id: string
  kind: string
  to: string
}

export interface MailTransport {
  readonly name: 'smtp' | 'log'
  send(mail: OutgoingMail): Promise<void>
  close(): void
}

/** nodemailer over SMTP_URL (smtp:// upgrades with STARTTLS when offered; smtps:// is TLS from the start). */
function smtpTransport(config: Config): MailTransport {
  const transporter = createTransport({
    url: config.SMTP_URL,
    // Bounded, so a server that accepts and then stalls frees the sender well within its claim (sender.ts).
    connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 20_000,
  }, { from: config.MAIL_FROM })
  return {
    name: 'smtp',
    async send(mail) {
      await transporter.sendMail({
        to: mail.to, subject: mail.subject, text: mail.text, html: mail.html,
        // One Message-ID per outbox row: a retry after an unknown outcome is recognisably the same mail.
        messageId: `<${mail.id}@portcullis>`,
        headers: { 'X-Portcullis-Kind': mail.kind },
      })
    },
    close: () => transporter.close(),
  }
}

/** Mail written to the log: recipient, subject and the link; the mail's only destination. */
function logTransport(log: FastifyBaseLogger): MailTransport {
  return {
    name: 'log',
    async send(mail) {
      // The link is logged on purpose: with no SMTP_URL, the log is where mail is delivered.
      log.info({ mail: { id: mail.id, kind: mail.kind, to: mail.to, subject: mail.subject, link: mail.link ?? null } }, 'mail delivered to the log (SMTP_URL is not set)')
    },
    close: () => {},
  }
}

export function mailTransport(config: Config, log: FastifyBaseLogger): MailTransport {
  return config.SMTP_URL ? smtpTransport(config) : logTransport(log)
}
