// HTTP shape of API keys. The organization is the request's context (X-Org-ID, or the credential's own).
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { DEFAULT_PAGE_SIZE, errorResponses, ListQuerySchema, NoContent } from '../../schemas/common.js'
import {
  ApiKeyPageSchema, ApiKeyParamsSchema, ApiKeySchema, CreateApiKeyBodySchema, CreatedApiKeySchema, RotateApiKeyBodySchema,
} from './schemas.js'
import { ApiKeyService } from './service.js'

const TAGS = ['api-keys']
const EITHER = ['session', 'api_key'] as ('session' | 'api_key')[]
const ADMINS = ['owner', 'admin'] as ('owner' | 'admin')[]
const READ = { methods: EITHER, roles: ADMINS, scopes: ['api_keys:read'] }
const WRITE = { methods: EITHER, roles: ADMINS, scopes: ['api_keys:write'] }

const apiKeyRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const service = new ApiKeyService({ db: app.db, config: app.config, clock: app.clock, audit: app.audit, events: app.events })
  const Created = Type.Ref(CreatedApiKeySchema)

  app.post('/api-keys', {
    config: { auth: WRITE },
    schema: {
      tags: TAGS, operationId: 'createApiKey', summary: 'Create an API key (the key is in this response only)',
      body: CreateApiKeyBodySchema, response: { 201: Created },
    },
  }, async (request, reply) => reply.code(201).send(await service.create(request.auth!, request.body)))

  app.get('/api-keys', {
    config: { auth: READ },
    schema: {
      tags: TAGS, operationId: 'listApiKeys', summary: "The organization's live API keys (never the keys themselves)",
      querystring: ListQuerySchema, response: { 200: ApiKeyPageSchema },
    },
  }, async (request) => service.list(request.auth!, request.query.limit ?? DEFAULT_PAGE_SIZE, request.query.cursor))

  app.get('/api-keys/:id', {
    config: { auth: READ },
    schema: {
      tags: TAGS, operationId: 'getApiKey', summary: 'One API key',
      params: ApiKeyParamsSchema, response: { 200: Type.Ref(ApiKeySchema), ...errorResponses(404) },
    },
  }, async (request) => service.get(request.auth!, request.params.id))

  app.delete('/api-keys/:id', {
    config: { auth: WRITE },
    schema: {
      tags: TAGS, operationId: 'revokeApiKey', summary: 'Revoke an API key, on every instance within a second',
      params: ApiKeyParamsSchema, response: { 204: NoContent, ...errorResponses(404) },
    },
  }, async (request, reply) => {
    await service.revoke(request.auth!, request.params.id)
    return reply.code(204).send(null)
  })

  app.post('/api-keys/:id/rotate', {
    config: { auth: WRITE },
    schema: {
      tags: TAGS, operationId: 'rotateApiKey', summary: 'Issue a new key; the old one works for grace_seconds more',
      params: ApiKeyParamsSchema, body: Type.Optional(RotateApiKeyBodySchema),
      response: { 201: Created, ...errorResponses(404, 409) },
    },
  }, async (request, reply) =>
    reply.code(201).send(await service.rotate(request.auth!, request.params.id, request.body?.grace_seconds ?? 0)))
}

export default apiKeyRoutes
