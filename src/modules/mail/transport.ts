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

/** nodemailer over SMTP_URL (smtp:// upgrades with STARTTLS when offered; smtps:// is TLS from the start), pooled. */
function smtpTransport(config: Config): MailTransport {
  const limit = config.MAIL_SEND_TIMEOUT
  const transporter = createTransport({
    url: config.SMTP_URL,
    // Connections are reused, one per concurrent delivery (sender.ts): a TCP and TLS handshake and
    // a greeting per mail capped a sender at a few dozen mails a second.
    pool: true, maxConnections: config.MAIL_CONCURRENCY, maxMessages: 100,
    connectionTimeout: Math.min(10_000, limit), greetingTimeout: Math.min(10_000, limit), socketTimeout: Math.min(20_000, limit),
  }, { from: config.MAIL_FROM })
  return {
    name: 'smtp',
    async send(mail) {
      await transporter.sendMail({
        to: mail.to, subject: mail.subject, text: mail.text, html: mail.html,
        // One Message-ID per outbox row: a retry after an unknown outcome is recognisably the same mail.
        messageId: `<${mail.id}@portcullis>`,
        headers: { 'X-Portcullis-Kind': mail.kind },
        // The whole delivery is bounded, not only each wait: a server that answers a byte at a time
        // would otherwise hold the send past its claim (sender.ts). Abandoning it closes the connection.
        signal: AbortSignal.timeout(limit),
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
