// Liveness and readiness for orchestrators and load balancers.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { sql } from 'drizzle-orm'
import { readMigrationFiles } from 'drizzle-orm/migrator'
import { MIGRATIONS_FOLDER } from '../../db/client.js'
import { withinDeadline } from '../../db/deadline.js'
import { AppError } from '../../errors.js'
import { errorResponses } from '../../schemas/common.js'

const Status = Type.Object({ status: Type.Literal('ok') })
const Readiness = Type.Object({
  status: Type.Literal('ok'),
  notifications: Type.Union([Type.Literal('delivered'), Type.Literal('lost'), Type.Literal('unknown')], {
    description: 'Whether this instance receives its own PostgreSQL NOTIFY. lost: a transaction pooler is in the way; revocations then arrive by a resync every second (set DATABASE_LISTEN_URL or REDIS_URL)',
  }),
})

const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const expectedMigrations = readMigrationFiles({ migrationsFolder: MIGRATIONS_FOLDER }).length

  app.get('/healthz', {
    schema: { tags: ['operations'], operationId: 'healthz', summary: 'Liveness: the process answers', response: { 200: Status } },
  }, async () => ({ status: 'ok' as const }))

  app.get('/readyz', {
    schema: {
      tags: ['operations'], operationId: 'readyz', summary: 'Readiness: database reachable and migrations applied',
      response: { 200: Readiness, ...errorResponses(503) },
    },
  }, async () => {
    let applied = -1
    try {
      // A hung database is not ready either: give it one second.
      const result = await withinDeadline(app.db.execute(sql`select count(*)::int as n from drizzle.__drizzle_migrations`), 1000, 'the readiness check')
      const rows = (Array.isArray(result) ? result : (result as { rows: unknown[] }).rows) as { n: number }[]
      applied = Number(rows[0]?.n ?? -1)
    } catch {
      throw new AppError('SERVICE_UNAVAILABLE', 'Database unreachable', undefined, { 'retry-after': '5' })
    }
    if (applied < expectedMigrations) {
      throw new AppError('SERVICE_UNAVAILABLE', 'Migrations not applied', undefined, { 'retry-after': '5' })
    }
    const delivered = app.events.notificationsDelivered()
    return { status: 'ok' as const, notifications: delivered === undefined ? 'unknown' as const : delivered ? 'delivered' as const : 'lost' as const }
  })
}

export default healthRoutes
