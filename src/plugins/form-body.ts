// Operations that also speak OAuth2's form encoding (login, refresh, and the
// RFC 7662/7009 endpoints) are registered inside a scope with the form parser;
// everywhere else a form body is a 415.
import formBody from '@fastify/formbody'
import type { FastifyInstance } from 'fastify'

export async function withFormBodies<T extends FastifyInstance>(app: T, routes: (scope: T) => void | Promise<void>) {
  await app.register(async (scope) => {
    await scope.register(formBody, { bodyLimit: app.config.BODY_LIMIT })
    await routes(scope as T)
  })
}
