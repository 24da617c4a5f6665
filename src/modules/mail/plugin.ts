// The mail module: the outbox every module queues mail in, and this instance's
// sender. With no SMTP_URL, mail is delivered to the log (with a warning at
// start-up), so the embedded `npm start` needs no mail server.
import fp from 'fastify-plugin'
import { Outbox } from './outbox.js'
import { MailSender } from './sender.js'
import { mailTransport } from './transport.js'

declare module 'fastify' {
  interface FastifyInstance {
    outbox: Outbox
    mailSender: MailSender
  }
}

export default fp(async (app) => {
  const { config } = app
  const transport = mailTransport(config, app.log)
  const outbox = new Outbox({ secretKey: config.secretKey!, clock: app.clock })
  const sender = new MailSender({ db: app.db, config, clock: app.clock, outbox, transport, log: app.log })
  outbox.onQueued = () => sender.wake()
  app.decorate('outbox', outbox)
  app.decorate('mailSender', sender)
  if (transport.name === 'log') {
    app.log.warn('SMTP_URL is not set: mail (password resets, address confirmations) is written to the log, not sent')
  }
  app.addHook('onReady', async () => { sender.start() })
  app.addHook('onClose', async () => {
    await sender.stop()
    transport.close()
  })
}, { name: 'mail', dependencies: ['db'] })
