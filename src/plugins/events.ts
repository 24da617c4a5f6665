// The cluster's event channel: what one instance revokes or rotates, every
// instance hears within a second. PostgreSQL LISTEN/NOTIFY by default (PGlite
// delivers it in-process), Redis pub/sub when REDIS_URL is set.
//
// The channel is checked, not assumed: at start-up and every
// NOTIFY_PROBE_INTERVAL, the instance sends itself a NOTIFY and expects it back
// within a second. Behind a transaction pooler (PgBouncer, RDS Proxy,
// Supavisor) it never comes: the instance then logs an error naming the fix,
// reports it in /readyz and /metrics, and resyncs every second, so a
// revocation still reaches it within one (at the cost of a resync a second).
import fp from 'fastify-plugin'
import { randomUUID } from 'node:crypto'
import { Gauge } from 'prom-client'
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
  /** Whether this instance's own PostgreSQL NOTIFY came back at the last probe (undefined: not probed yet). */
  notificationsDelivered(): boolean | undefined
}

declare module 'fastify' {
  interface FastifyInstance {
    events: EventBus
  }
}

const CHANNEL = 'portcullis_events'
const PROBE_CHANNEL = 'portcullis_probe'
const PROBE_WAIT_MS = 1000
/** The resync interval while notifications are lost: the one-second promise, kept by polling. */
const LOST_RESYNC_MS = 1000
/**
 * How far each resync reads back before the previous one. A change is stamped when its request
 * runs and seen once it commits; between the two lie the statements of its transaction and its
 * COMMIT, each under the deadline (the server's statement_timeout ends anything longer): five
 * deadlines cover the longest revoking transaction (a refresh: four statements and COMMIT). Read
 * back less, and a change whose commit was held up (by a lock, say) landed before the window
 * and was never seen. At most five minutes, so a long deadline does not make every resync heavy.
 */
export const resyncLookBackMs = (config: { DATABASE_QUERY_TIMEOUT: number }) =>
  Math.min(300_000, Math.max(5000, 5 * config.DATABASE_QUERY_TIMEOUT))

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

  const resyncs: (() => Promise<void>)[] = []
  const resynced: (() => void)[] = []
  const resync = () => {
    const running = resyncs.map((fn) => fn().catch((err) => app.log.warn({ err }, 'resync failed')))
    // What is derived from several caches is dropped once they have all been refreshed: dropped
    // before, it could be rebuilt from a cache still stale and outlive this resync.
    void Promise.all(running).then(() => { for (const fn of resynced) fn() })
  }

  // PostgreSQL LISTEN/NOTIFY always; Redis pub/sub as well when configured. Events go out on
  // every transport (handlers are idempotent), so a Redis outage falls back to PostgreSQL.
  const transports: { name: string; send(payload: string): Promise<void> }[] = []
  /** Whether Redis pub/sub is up, so that events arrive without PostgreSQL's notifications. */
  let redisCarries = () => false
  let rescheduleResync = () => {}
  // Events sent while the listening connection was down never arrive: resync at once when it is back.
  const unlisten = await app.database.listen(CHANNEL, deliver, () => {
    app.log.warn('the PostgreSQL notification connection was re-established; resyncing every cache now')
    resync()
  })
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
    redisCarries = () => publisher.status === 'ready' && subscriber.status === 'ready'
    // Redis lost or back while PostgreSQL's notifications are lost: the resync interval changes now.
    for (const c of [publisher, subscriber]) for (const change of ['close', 'ready']) c.on(change, () => rescheduleResync())
    subscriber.on('message', (_channel: string, message: string) => deliver(message))
    const subscribed = subscriber.subscribe(CHANNEL).catch((err) => app.log.warn({ err: err.message }, 'redis subscribe failed'))
    await Promise.race([subscribed, new Promise((resolve) => setTimeout(resolve, 2000).unref())])
    transports.push({ name: 'redis', send: async (payload) => { await publisher.publish(CHANNEL, payload) } })
  }

  // The probe: our own NOTIFY, back within a second, or the channel is not delivering.
  let delivered: boolean | undefined
  const gauge = new Gauge({
    name: 'portcullis_notifications_delivered', registers: [app.metrics.registry],
    help: '1 when this instance receives its own PostgreSQL NOTIFY within a second; 0 when not (a transaction pooler in the way: set DATABASE_LISTEN_URL or REDIS_URL)',
  })
  const awaiting = new Map<string, () => void>()
  const unlistenProbe = await app.database.listen(PROBE_CHANNEL, (id) => awaiting.get(id)?.())
  app.addHook('preClose', async () => { await unlistenProbe().catch(() => {}) })
  const probe = async () => {
    const id = randomUUID()
    const back = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => { awaiting.delete(id); resolve(false) }, PROBE_WAIT_MS)
      awaiting.set(id, () => { clearTimeout(timer); awaiting.delete(id); resolve(true) })
    })
    try {
      await app.database.notify(PROBE_CHANNEL, id)
    } catch {
      awaiting.delete(id)
      return // the database is away: that says nothing about the channel
    }
    const now = await back
    if (now === delivered) return
    delivered = now
    gauge.set(now ? 1 : 0)
    rescheduleResync()
    if (now) app.log.info('PostgreSQL notifications arrive again: resync back to REVOCATION_RESYNC_INTERVAL')
    else if (app.config.REDIS_URL) app.log.warn('PostgreSQL NOTIFY does not come back (a transaction pooler in the way?); events still travel through Redis, and every cache is resynced every second while Redis is down')
    else {
      app.log.error('PostgreSQL NOTIFY does not come back within a second: a transaction pooler (PgBouncer, RDS Proxy, Supavisor) is probably between this instance and PostgreSQL. '
        + 'Set DATABASE_LISTEN_URL to the database directly (or set REDIS_URL). Until then every cache is resynced every second, so revocations still arrive within one.')
    }
  }
  const resyncEveryMs = () => (delivered === false && !redisCarries() ? LOST_RESYNC_MS : app.config.REVOCATION_RESYNC_INTERVAL * 1000)
  let resyncTimer: NodeJS.Timeout | undefined
  let interval = resyncEveryMs()
  let closing = false
  const scheduleResync = () => {
    if (closing) return
    interval = resyncEveryMs()
    resyncTimer = setTimeout(() => { resync(); scheduleResync() }, interval)
    resyncTimer.unref()
  }
  scheduleResync()
  // When the rhythm changes (the channel found lost or back, Redis gone or back), resync now and
  // start the new rhythm, rather than after the current wait. Only then: ioredis reports a
  // close on every failed reconnect, and rescheduling on each kept the 10 s resync from ever firing.
  rescheduleResync = () => {
    if (closing || resyncTimer === undefined || resyncEveryMs() === interval) return
    clearTimeout(resyncTimer)
    resync()
    scheduleResync()
  }
  const probeTimer = setInterval(() => void probe(), app.config.NOTIFY_PROBE_INTERVAL * 1000)
  probeTimer.unref()
  app.addHook('onReady', async () => {
    // In the background: a lost channel costs start-up nothing; once found, the one-second resync starts at once.
    void probe()
  })
  app.addHook('preClose', async () => {
    closing = true
    clearTimeout(resyncTimer)
    clearInterval(probeTimer)
  })

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
    notificationsDelivered: () => delivered,
  } satisfies EventBus)
}, { name: 'events', dependencies: ['db', 'metrics'] })
