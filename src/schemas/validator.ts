// Request validation with TypeBox: bodies are checked strictly (no coercion),
// query strings, params and headers are converted and given their defaults;
// a body schema marked Type.Optional accepts a request without a body.
import { TypeBoxValidatorCompiler } from '@fastify/type-provider-typebox'
import { TypeGuard, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { FastifySchemaCompiler } from 'fastify'

export const isOptionalBody = (schema: unknown) => TypeGuard.IsOptional(schema as TSchema)

export const validatorCompiler: FastifySchemaCompiler<TSchema> = (route) => {
  const validate = TypeBoxValidatorCompiler(route)
  if (route.httpPart === 'body') {
    // Fastify hands a request without a body to the validator as null.
    return isOptionalBody(route.schema) ? (value) => (value == null ? { value: undefined } : validate(value)) : validate
  }
  return (value) => validate(Value.Default(route.schema, Value.Clone(value)))
}
