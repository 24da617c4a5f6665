// The cluster's event channel: what one instance revokes or rotates, every
// instance hears within a second. PostgreSQL LISTEN/NOTIFY by default (PGlite
// delivers it in-process), Redis pub/sub when REDIS_URL is set.
import fp from 'fastify-plugin'
import { Redis } from 'ioredis'

export type ClusterEvent =
  | { type: 'sessions.revoked'; ids: string[]; at: number }
  | { type: 'keys.rotated' }
  /** API keys revoked, rotated or otherwise changed: drop them from every cache. */
  | { type: 'api_keys.changed'; ids: string[] }
  | { type: 'memberships.changed'; orgId: string; userId: string }
  /** A user's profile (2FA state, disabled) or an organization (name, credits) changed. */
  | { type: 'users.changed'; ids: string[] }
  | { type: 'organizations.changed'; ids: string[] }

export type ClusterEventHandler = (event: ClusterEvent) => void

export interface EventBus {
  /** Delivers to this instance at once, then to every other instance. */
  publish(event: ClusterEvent): Promise<void>
  subscribe(handler: ClusterEventHandler): void
  /** Runs `fn` every REVOCATION_RESYNC_INTERVAL: the safety net for a missed notification. */
  onResync(fn: () => Promise<void>): void
  /** Runs after every onResync handler of a round has finished (or failed). */
  onResynced(fn: () => void): void
}

declare module 'fastify' {
  interface FastifyInstance {
    events: EventBus
  }
}

const CHANNEL = 'portcullis_events'
// NOTIFY payloads are limited to 8000 bytes; id lists are sent in chunks.
const IDS_PER_MESSAGE = 100

function* chunks(event: ClusterEvent): Generator<ClusterEvent> {
  if (!('ids' in event) || event.ids.length <= IDS_PER_MESSAGE) {
    yield event
    return
  }
  for (let i = 0; i < event.ids.length; i += IDS_PER_MESSAGE) {
    yield { ...event, ids: event.ids.slice(i, i + IDS_PER_MESSAGE) }
  }
}

export default fp(async (app) => {
  const handlers: ClusterEventHandler[] = []
  const deliver = (raw: string) => {
    let event: ClusterEvent
    try {
      event = JSON.parse(raw) as ClusterEvent
    } catch {
      app.log.warn('ignored a malformed cluster event')
      return
    }
    for (const handler of handlers) {
      try { handler(event) } catch (err) { app.log.error({ err }, 'cluster event handler failed') }
    }
  }

  // PostgreSQL LISTEN/NOTIFY always; Redis pub/sub as well when configured. Events go out on
  // every transport (handlers are idempotent), so a Redis outage falls back to PostgreSQL.
  const transports: { name: string; send(payload: string): Promise<void> }[] = []
  const unlisten = await app.database.listen(CHANNEL, deliver)
  app.addHook('preClose', async () => { await unlisten().catch(() => {}) })
  transports.push({ name: 'postgres', send: (payload) => app.database.notify(CHANNEL, payload) })

  if (app.config.REDIS_URL) {
    // Never blocks start-up: an unreachable Redis is logged and retried in the background.
    // A hung Redis must not hold up a logout: publishing gives up after 500 ms (PostgreSQL carries it anyway).
    const publisher = new Redis(app.config.REDIS_URL, { maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 2000, commandTimeout: 500 })
    const subscriber = new Redis(app.config.REDIS_URL, { connectTimeout: 2000 })
    app.addHook('onClose', async () => {
      publisher.disconnect()
      subscriber.disconnect()
    })
    for (const c of [publisher, subscriber]) c.on('error', (err) => app.log.warn({ err: err.message }, 'redis events connection error'))
    subscriber.on('message', (_channel: string, message: string) => deliver(message))
    const subscribed = subscriber.subscribe(CHANNEL).catch((err) => app.log.warn({ err: err.message }, 'redis subscribe failed'))
    await Promise.race([subscribed, new Promise((resolve) => setTimeout(resolve, 2000).unref())])
    transports.push({ name: 'redis', send: async (payload) => { await publisher.publish(CHANNEL, payload) } })
  }

  const resyncs: (() => Promise<void>)[] = []
  const resynced: (() => void)[] = []
  const timer = setInterval(() => {
    const running = resyncs.map((fn) => fn().catch((err) => app.log.warn({ err }, 'resync failed')))
    // What is derived from several caches is dropped once they have all been refreshed: dropped
    // before, it could be rebuilt from a cache still stale and outlive this resync.
    void Promise.all(running).then(() => { for (const fn of resynced) fn() })
  }, app.config.REVOCATION_RESYNC_INTERVAL * 1000)
  timer.unref()
  app.addHook('preClose', async () => clearInterval(timer))

  app.decorate('events', {
    async publish(event) {
      for (const part of chunks(event)) {
        const payload = JSON.stringify(part)
        deliver(payload)
        await Promise.all(transports.map((t) => t.send(payload).catch((err) => {
          // The other transport, or at worst the periodic resync, still gets it to every instance.
          app.log.warn({ err, transport: t.name }, 'could not publish a cluster event')
        })))
      }
    },
    subscribe(handler) {
      handlers.push(handler)
    },
    onResync(fn) {
      resyncs.push(fn)
    },
    onResynced(fn) {
      resynced.push(fn)
    },
  } satisfies EventBus)
}, { name: 'events', dependencies: ['db'] })
