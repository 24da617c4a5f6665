// Small request helpers shared by the tests.
import type { App } from '../../src/app.js'

export const STRONG_PASSWORD = 'violet-otter-grammar-47'

let counter = 0
export const uniqueEmail = (tag = 'user') => `${tag}.${process.pid}.${Date.now()}.${++counter}@example.com`

export async function register(app: App, overrides: Record<string, unknown> = {}) {
  const body = { email: uniqueEmail(), password: STRONG_PASSWORD, ...overrides }
  const res = await app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: body })
  if (res.statusCode !== 201) throw new Error(`register failed: ${res.statusCode} ${res.body}`)
  return { ...res.json(), email: body.email as string, password: body.password as string }
}

export async function login(app: App, email: string, password = STRONG_PASSWORD) {
  return app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password } })
}

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
