// The audit log of an organization, for its admins and keys with audit:read.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { DEFAULT_PAGE_SIZE, ListQueryFields, PublicId, Timestamp } from '../../schemas/common.js'
import { OrgParamsSchema } from '../organizations/schemas.js'
import { AUDIT_ACTIONS } from './service.js'
import { keysetPage } from '../../lib/pagination.js'

const AuditEventSchema = Type.Object({
  id: PublicId('evt'),
  action: Type.Unsafe<string>({ type: 'string', enum: [...AUDIT_ACTIONS] }),
  actor_user_id: Type.Union([Type.String(), Type.Null()]),
  actor_key_id: Type.Union([Type.String(), Type.Null()]),
  target_type: Type.Union([Type.String(), Type.Null()]),
  target_id: Type.Union([Type.String(), Type.Null()]),
  ip: Type.Union([Type.String(), Type.Null()]),
  metadata: Type.Record(Type.String(), Type.Unknown()),
  created_at: Timestamp,
}, { $id: 'AuditEvent' })

const AuditQuerySchema = Type.Object({
  ...ListQueryFields,
  action: Type.Optional(Type.Union(AUDIT_ACTIONS.map((a) => Type.Literal(a)))),
}, { additionalProperties: false })

export const AUDIT_SHARED_SCHEMAS = [AuditEventSchema]

const auditRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/organizations/:org_id/audit-events', {
    config: { auth: { methods: ['session', 'api_key'], roles: ['owner', 'admin'], scopes: ['audit:read'] } },
    schema: {
      tags: ['organizations'], operationId: 'listAuditEvents', summary: 'What happened in the organization, newest first',
      params: OrgParamsSchema, querystring: AuditQuerySchema,
      response: {
        200: Type.Object({ items: Type.Array(Type.Ref(AuditEventSchema)), next_cursor: Type.Union([Type.String(), Type.Null()]) }),
      },
    },
  }, async (request) => {
    const { limit = DEFAULT_PAGE_SIZE, cursor, action } = request.query
    const rows = await app.audit.list(request.auth!.orgId, limit + 1, cursor, action)
    return keysetPage(rows, limit, (e) => e.id, (e) => ({
      id: e.id, action: e.action, actor_user_id: e.actorUserId, actor_key_id: e.actorKeyId,
      target_type: e.targetType, target_id: e.targetId, ip: e.ip, metadata: e.metadata, created_at: e.createdAt.toISOString(),
    }))
  })
}

export default auditRoutes
