// Public halves of the signing keys, for anyone verifying access tokens locally.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'

const JwkSchema = Type.Object({
  kty: Type.String(), kid: Type.String(), alg: Type.String(), use: Type.Literal('sig'),
  crv: Type.Optional(Type.String()), x: Type.Optional(Type.String()), y: Type.Optional(Type.String()),
  n: Type.Optional(Type.String()), e: Type.Optional(Type.String()),
})

const keysRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/.well-known/jwks.json', {
    schema: {
      tags: ['keys'], operationId: 'getJwks', summary: 'JSON Web Key Set of the access-token signing keys',
      description: 'Lists the next, current and previous keys. Cache it for a few minutes; refetch on an unknown kid.',
      response: { 200: Type.Object({ keys: Type.Array(JwkSchema) }) },
    },
  }, async (_request, reply) => {
    reply.header('cache-control', 'public, max-age=300, stale-while-revalidate=60')
    return { keys: app.keyRing.publishedKeys().map((k) => k.jwk as never) }
  })
}

export default keysRoutes
