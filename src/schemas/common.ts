// Small building blocks shared by every module's schemas.
import { STATUS_CODES } from 'node:http'
import { Type, type TSchema } from '@sinclair/typebox'
import { ERROR_CODES, type ErrorCode } from '../errors.js'
import { ID_PATTERN, type IdPrefix } from '../lib/ids.js'

export const ErrorSchema = Type.Object({
  error: Type.Object({
    code: Type.Unsafe<ErrorCode>({ type: 'string', enum: Object.keys(ERROR_CODES) }),
    message: Type.String(),
    details: Type.Optional(Type.Array(Type.Object({
      field: Type.Optional(Type.String()),
      message: Type.String(),
    }, { additionalProperties: true }))),
    request_id: Type.String(),
  }),
}, { $id: 'Error', description: 'The error shape of every operation' })

/** Response entries for the given error statuses, all with the shared Error schema. */
export function errorResponses(...statuses: number[]): Record<number, TSchema> {
  return Object.fromEntries(statuses.map((s) => [s, Type.Ref(ErrorSchema, { description: STATUS_CODES[s] ?? 'Error' })]))
}

export const PublicId = (prefix: IdPrefix, description?: string) =>
  Type.String({ pattern: ID_PATTERN(prefix), maxLength: prefix.length + 27, ...(description ? { description } : {}) })

export const Timestamp = Type.String({ format: 'date-time', description: 'RFC 3339, UTC' })

export const Email = Type.String({ format: 'email', minLength: 3, maxLength: 254 })

export const RoleSchema = Type.Union([Type.Literal('owner'), Type.Literal('admin'), Type.Literal('member')])

export const NoContent = Type.Null({ description: 'No content' })

export const DEFAULT_PAGE_SIZE = 20

/** ?limit= (1–100, default 20) and ?cursor= of every list. */
export const ListQueryFields = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: DEFAULT_PAGE_SIZE })),
  cursor: Type.Optional(Type.String({ maxLength: 200 })),
}
export const ListQuerySchema = Type.Object(ListQueryFields, { additionalProperties: false })

/**
 * A scope name. SCOPES is configuration, so the contract's enum is filled in from the running
 * configuration when the document is built (plugins/openapi); validation leaves it to the services,
 * which answer an unknown scope with a 422 naming it.
 */
export const ScopeSchema = Type.String({ minLength: 1, maxLength: 100, 'x-scope': true })
