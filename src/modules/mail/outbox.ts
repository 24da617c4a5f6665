// Queuing mail: a row in the caller's transaction, so a mail exists exactly
// when the change that caused it committed. Content is sealed (it carries
// single-use links); the row id is the seal's associated data, so content
// cannot be moved from one row to another.
import type { Clock } from '../../lib/clock.js'
import { decrypt, deriveKey, encrypt } from '../../lib/crypto.js'
import { newId } from '../../lib/ids.js'
import type { Queryable } from '../../db/client.js'
import * as repo from './repository.js'
import type { MailContent } from './templates.js'

export type MailKind = 'password_reset' | 'password_changed' | 'email_verification' | 'email_change' | 'email_change_notice' | 'email_changed' | 'invitation'

export interface QueuedMail {
  kind: MailKind
  to: string
  userId?: string
  /** Omitted: the sender prepares the content when it takes the row (see Outbox.prepareWith). */
  content?: MailContent
}

/** Makes the content of a row queued without it; null when there is nothing to send. */
export type MailPreparer = (db: Queryable, row: { id: string; recipient: string }) => Promise<MailContent | null>

export class Outbox {
  private readonly key: Buffer
  private readonly preparers = new Map<string, MailPreparer>()
  /** Called after the caller's transaction commits, so the sender in this instance looks at once. */
  onQueued: () => void = () => {}

  constructor(private readonly deps: { secretKey: Buffer; clock: Clock }) {
    this.key = deriveKey(deps.secretKey, 'mail-outbox')
  }

  /** Writes the mail in `db` (the caller's transaction). Call `queued()` once it has committed. */
  async queue(db: Queryable, mail: QueuedMail): Promise<void> {
    const now = new Date(this.deps.clock.now())
    const id = newId('mail', now.getTime())
    await repo.insertMail(db, {
      id, kind: mail.kind, recipient: mail.to, userId: mail.userId ?? null, state: 'pending',
      subject: mail.content?.subject ?? null, contentSealed: mail.content ? this.seal(id, mail.content) : null,
      nextAttemptAt: now, createdAt: now,
    })
  }

  /** The transaction that queued mail has committed: deliver without waiting for the next poll. */
  queued(): void {
    this.onQueued()
  }

  prepareWith(kind: MailKind, preparer: MailPreparer): void {
    this.preparers.set(kind, preparer)
  }

  preparerOf(kind: string): MailPreparer | undefined {
    return this.preparers.get(kind)
  }

  seal(id: string, content: MailContent): string {
    return encrypt(this.key, JSON.stringify(content), `mail:${id}`)
  }

  open(id: string, sealed: string): MailContent {
    return JSON.parse(decrypt(this.key, sealed, `mail:${id}`)) as MailContent
  }
}
