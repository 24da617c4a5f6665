// The only module that reads process.env. Every variable is declared once in
// ConfigSchema, converted, validated and frozen; a bad value stops start-up
// with a message that names the variable.
import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { join } from 'node:path'
import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

const Int = (def: number, min: number, max: number, description: string) =>
  Type.Integer({ default: def, minimum: min, maximum: max, description })

export const ROLES = ['owner', 'admin', 'member'] as const
export type Role = (typeof ROLES)[number]

export const DEFAULT_SCOPES = [
  'agents:read', 'agents:write', 'workflows:read', 'workflows:execute', 'costs:read',
  'api_keys:read', 'api_keys:write', 'members:read', 'members:write', 'audit:read',
  'auth:introspect',
]

const DEFAULT_MEMBER_SCOPES = [
  'agents:read', 'agents:write', 'workflows:read', 'workflows:execute', 'costs:read', 'members:read',
]

const CsvList = (def: string[], description: string) =>
  Type.String({ default: def.join(','), pattern: '^[A-Za-z0-9:_.,-]*$', description })

export const ConfigSchema = Type.Object({
  HOST: Type.String({ default: '127.0.0.1', minLength: 1, description: 'Interface to listen on' }),
  PORT: Int(3000, 0, 65535, 'TCP port'),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
    { default: 'info', description: 'pino log level' },
  ),
  DATABASE_URL: Type.String({
    default: '',
    pattern: '^(|memory://|postgres(ql)?://.+)$',
    description: 'empty: embedded PGlite in DATA_DIR; memory://: PGlite in memory; postgres://…: PostgreSQL',
  }),
  DATABASE_POOL_SIZE: Int(10, 1, 200, 'PostgreSQL connections per instance'),
  DATABASE_LISTEN_URL: Type.String({ default: '', description: 'PostgreSQL: where LISTEN runs (one direct connection); empty: DATABASE_URL. Behind a transaction pooler (PgBouncer, RDS Proxy), point it at the database itself' }),
  DATABASE_PREPARED_STATEMENTS: Type.Boolean({ default: true, description: 'PostgreSQL: prepare each statement once per connection (parsed and planned once; faster refresh). Turn off behind a transaction pooler without prepared-statement support (PgBouncer before 1.21, or max_prepared_statements = 0)' }),
  DATABASE_SERVER_TIMEOUT: Type.Boolean({ default: true, description: 'PostgreSQL: send DATABASE_QUERY_TIMEOUT as each connection\'s statement_timeout, so the server ends a long statement itself; turn off behind PgBouncer (it refuses the parameter) and set it on the role instead (ALTER ROLE … SET statement_timeout)' }),
  DATABASE_QUERY_TIMEOUT: Int(5000, 100, 600_000, 'PostgreSQL: ms a statement, BEGIN or COMMIT may take before the request gets 503 (a hung database)'),
  DATA_DIR: Type.String({ default: './data', minLength: 1, description: 'Embedded mode: database and generated secret' }),
  SECRET_KEY: Type.String({
    default: '',
    description: '32+ random bytes, base64: encrypts signing keys and TOTP secrets, keys refresh-token derivation',
  }),
  JWT_ISSUER: Type.String({ default: 'http://localhost:3000', minLength: 1, description: 'iss of access tokens (one per environment)' }),
  JWT_AUDIENCE: Type.String({ default: 'portcullis', minLength: 1, description: 'aud of access tokens' }),
  JWT_ALGORITHM: Type.Union([Type.Literal('ES256'), Type.Literal('EdDSA'), Type.Literal('RS256')], {
    default: 'ES256', description: 'Signing algorithm of new signing keys',
  }),
  ACCESS_TOKEN_TTL: Int(900, 30, 86400, 'Access-token lifetime, seconds'),
  CLIENT_TOKEN_TTL: Int(300, 30, 3600, 'Lifetime of client_credentials access tokens (an API key as an OAuth client), seconds'),
  OAUTH_CLIENT_ID: Type.String({
    default: 'portcullis', pattern: '^[A-Za-z0-9._:-]{1,100}$',
    description: 'client_id of the first-party public client (password and refresh_token grants, and the client_id claim of session tokens)',
  }),
  REFRESH_TOKEN_TTL: Int(604800, 60, 31_536_000, 'Refresh-token idle lifetime, seconds'),
  SESSION_MAX_AGE: Int(2_592_000, 60, 31_536_000, 'Absolute session lifetime, seconds'),
  REFRESH_REUSE_GRACE: Int(10, 0, 300, 'Seconds in which a retried refresh gets the same child token back'),
  REDIS_URL: Type.String({
    default: '', pattern: '^(|rediss?://.+)$',
    description: 'Redis for rate-limit counters and revocation fan-out across instances; empty: PostgreSQL LISTEN/NOTIFY and in-process counters',
  }),
  NOTIFY_PROBE_INTERVAL: Int(30, 1, 3600, 'Seconds between checks that this instance receives its own PostgreSQL NOTIFY (a transaction pooler drops them)'),
  REVOCATION_RESYNC_INTERVAL: Int(10, 1, 3600, 'Seconds between safety re-reads of revocations and signing keys (in case a notification was missed)'),
  REVOCATION_CACHE_MAX: Int(1_000_000, 1000, 100_000_000, 'Most revoked sessions/keys kept in memory per instance'),
  LOCKOUT_MAX_ATTEMPTS: Int(5, 1, 1000, 'Failed passwords or 2FA codes per email before the lockout'),
  LOCKOUT_WINDOW: Int(900, 10, 86400, 'Seconds in which failures are counted'),
  LOCKOUT_DURATION: Int(1800, 10, 86400, 'Seconds an email stays locked'),
  RATE_LIMIT_LOGIN: Int(10, 1, 100_000, 'Logins per minute per client IP'),
  RATE_LIMIT_REGISTER: Int(5, 1, 100_000, 'Registrations per minute per client IP'),
  RATE_LIMIT_REFRESH: Int(60, 1, 100_000, 'Refreshes per minute per client IP'),
  RATE_LIMIT_VERIFY_2FA: Int(10, 1, 100_000, '2FA verifications per minute per client IP'),
  RATE_LIMIT_AUTH_FAILURES: Int(100, 0, 100_000_000, 'Failed credentials per minute per client (IPv4 address or IPv6 /64) before 429; valid credentials are never refused by it; 0 turns it off'),
  RATE_LIMIT_GLOBAL: Int(6000, 0, 100_000_000, 'Requests per minute per credential (or per IP without one); 0 turns it off'),
  REAUTH_WINDOW: Int(300, 0, 86400, 'Seconds after a login in which sensitive changes (2FA, password) need no password again'),
  MFA_TOKEN_TTL: Int(300, 30, 3600, 'Seconds an mfa_token from a 2FA login stays valid'),
  TOTP_ISSUER: Type.String({ default: 'Portcullis', minLength: 1, maxLength: 100, description: 'Issuer shown by authenticator apps' }),
  PASSWORD_MIN_LENGTH: Int(12, 8, 256, 'Minimum password length, Unicode code points'),
  ARGON2_MEMORY_KIB: Int(19456, 1024, 4194304, 'argon2id memory cost, KiB'),
  ARGON2_TIME_COST: Int(2, 1, 20, 'argon2id iterations'),
  ARGON2_PARALLELISM: Int(1, 1, 16, 'argon2id lanes'),
  ARGON2_CONCURRENCY: Int(0, 0, 256, 'Hashes computed at once; 0: cores - 1 (at least 1), leaving a core to the event loop'),
  WELCOME_CREDITS: Int(5000, 0, 2_000_000_000, 'Credits granted to a new organization'),
  BODY_LIMIT: Int(65536, 1024, 10_485_760, 'Largest request body, bytes'),
  REQUEST_TIMEOUT: Int(30000, 0, 600_000, 'Milliseconds a client may take to send a whole request (then 408 and the connection closed); 0: no limit'),
  ARGON2_QUEUE_MAX: Int(64, 1, 100_000, 'Password hashes that may wait for a free argon2 slot; beyond that the request gets 503 with Retry-After'),
  TRUST_PROXY: Type.String({
    default: 'false',
    description: 'false, true, a hop count, or comma-separated proxy addresses/CIDRs whose X-Forwarded-For is believed',
  }),
  API_KEY_PREFIX: Type.String({ default: 'pc', pattern: '^[a-z][a-z0-9]{1,9}$', description: 'First part of every API key (pc_live_sk_…), for secret scanners' }),
  API_KEY_CACHE_MAX: Int(100_000, 100, 10_000_000, 'Most verified API keys kept in memory per instance'),
  MEMBERSHIP_CACHE_TTL: Int(60, 0, 3600, 'Seconds a membership lookup is cached (changes are pushed to every instance at once)'),
  PUBLIC_URL: Type.String({ default: '', pattern: '^(|https?://[^\\s]+)$', description: 'Public base URL for discovery documents; empty: JWT_ISSUER' }),
  METRICS_TOKEN: Type.String({ default: '', description: 'Bearer token that GET /metrics requires; empty: open' }),
  CORS_ORIGINS: Type.String({ default: '', description: 'Comma-separated origins allowed by CORS (e.g. https://app.example.com); empty: CORS off' }),
  APP_NAME: Type.String({ default: 'Portcullis', minLength: 1, maxLength: 100, description: 'Product name in mail' }),
  APP_URL: Type.String({
    default: 'http://localhost:3000', pattern: '^https?://[^\\s?#]+$',
    description: 'The front end that receives mailed links (/reset-password, /verify-email, /confirm-email ?token=); links are built from this only, never from Host headers',
  }),
  SMTP_URL: Type.String({
    default: '', pattern: '^(|smtps?://[^\\s]+)$',
    description: 'smtp://user:pass@host:587 (STARTTLS when offered) or smtps://…:465; empty: mail is kept in the outbox and written to the log',
  }),
  MAIL_FROM: Type.String({ default: 'Portcullis <no-reply@localhost>', minLength: 3, maxLength: 320, description: 'From address of every mail' }),
  MAIL_MAX_ATTEMPTS: Int(8, 1, 100, 'Deliveries tried per message before it is marked failed'),
  MAIL_RETRY_BASE: Int(5000, 10, 3_600_000, 'Milliseconds before the first retry of a failed delivery; doubles each attempt (at most an hour)'),
  MAIL_RETENTION_DAYS: Int(30, 1, 3650, 'Days a delivered (or failed) mail stays in the outbox before the janitor deletes it'),
  AUDIT_RETENTION_DAYS: Int(365, 1, 36500, 'Days audit events (of organizations and of the platform) are kept'),
  JANITOR_INTERVAL: Int(3600, 0, 86400, 'Seconds between janitor runs, which delete what has expired (0: never)'),
  MAIL_CONCURRENCY: Int(4, 1, 64, 'Mails one instance delivers at once, over as many reused SMTP connections'),
  MAIL_SEND_TIMEOUT: Int(30_000, 100, 600_000, 'Milliseconds one SMTP delivery may take before it is abandoned and retried; a sender holds a message for twice this, so no other instance sends it meanwhile'),
  MAIL_POLL_INTERVAL: Int(1000, 10, 60_000, 'Milliseconds between looks at the outbox for due mail (mail queued on this instance leaves at once)'),
  PASSWORD_RESET_TTL: Int(1800, 60, 86400, 'Seconds a password-reset link stays valid'),
  INVITATION_TTL: Int(604_800, 60, 2_592_000, 'Seconds an invitation link stays valid (7 days)'),
  EMAIL_VERIFICATION_TTL: Int(86400, 60, 2_592_000, 'Seconds an email-verification or email-change link stays valid'),
  EMAIL_VERIFICATION: Type.Union([Type.Literal('off'), Type.Literal('optional'), Type.Literal('required')], {
    default: 'optional', description: 'off: no verification mail at registration (one can still be asked for: accepting an invitation needs a verified address); optional: mailed, login allowed; required: login refused (403 EMAIL_NOT_VERIFIED) until verified',
  }),
  RATE_LIMIT_PASSWORD_RESET: Int(5, 1, 100_000, 'Forgot-password and reset requests per minute per client IP'),
  RATE_LIMIT_MAIL_PER_EMAIL: Int(3, 1, 100_000, 'Reset, verification, email-change and invitation mails per email address per hour'),
  RATE_LIMIT_INVITATIONS: Int(50, 1, 100_000, 'Invitations (new or resent) an organization may mail per hour'),
  SCOPES: CsvList(DEFAULT_SCOPES, 'Scopes that tokens and API keys can carry'),
  MEMBER_SCOPES: CsvList(DEFAULT_MEMBER_SCOPES, 'Scopes of the member role (owners and admins hold every scope)'),
})

type RawConfig = Static<typeof ConfigSchema>

export type DatabaseMode = 'embedded' | 'memory' | 'postgres'

export interface Config extends Omit<RawConfig, 'SCOPES' | 'MEMBER_SCOPES' | 'TRUST_PROXY'> {
  readonly databaseMode: DatabaseMode
  readonly SCOPES: readonly string[]
  readonly MEMBER_SCOPES: readonly string[]
  readonly TRUST_PROXY: boolean | number | string[]
  /** Decoded SECRET_KEY, or undefined until resolveSecretKey() has run. */
  readonly secretKey: Buffer | undefined
}

export class ConfigError extends Error {
  constructor(public readonly variable: string, message: string) {
    super(`Invalid configuration: ${variable} ${message}`)
  }
}

const csv = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean)

function parseTrustProxy(value: string): boolean | number | string[] {
  if (value === 'false' || value === '') return false
  if (value === 'true') return true
  if (/^\d+$/.test(value)) return Number(value)
  const entries = csv(value)
  for (const entry of entries) {
    const [address, bits, ...rest] = entry.split('/')
    const family = isIP(address ?? '')
    const maxBits = family === 4 ? 32 : 128
    const badBits = bits !== undefined && (!/^\d+$/.test(bits) || Number(bits) > maxBits)
    if (!family || badBits || rest.length) {
      throw new ConfigError('TRUST_PROXY', `must be true, false, a hop count or IP addresses/CIDRs (got ${JSON.stringify(entry)})`)
    }
  }
  return entries
}

function decodeSecret(value: string): Buffer {
  const buf = Buffer.from(value, 'base64')
  if (buf.length < 32) throw new ConfigError('SECRET_KEY', 'must be at least 32 random bytes, base64-encoded')
  return buf
}

/** Parses the environment into a frozen Config; throws ConfigError naming the variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const input: Record<string, unknown> = {}
  for (const key of Object.keys(ConfigSchema.properties)) {
    const v = env[key]
    if (v !== undefined && v !== '') input[key] = v
  }
  // Integers must be written as plain digits: Value.Convert would turn 1.5 or 0x50 into numbers silently.
  for (const [key, schema] of Object.entries(ConfigSchema.properties)) {
    const v = input[key]
    if (schema.type === 'integer' && typeof v === 'string' && !/^\d+$/.test(v.trim())) {
      throw new ConfigError(key, `must be a whole number (got ${JSON.stringify(v)})`)
    }
  }
  const withDefaults = Value.Default(ConfigSchema, input)
  const converted = Value.Convert(ConfigSchema, withDefaults)
  const first = Value.Errors(ConfigSchema, converted).First()
  if (first) {
    const variable = first.path.replace(/^\//, '') || 'configuration'
    const given = env[variable]
    const allowed = (first.schema as { anyOf?: { const?: unknown }[] }).anyOf?.map((s) => s.const).filter((c) => c !== undefined)
    const message = allowed?.length ? `must be one of ${allowed.join(', ')}` : first.message
    throw new ConfigError(variable, `${message}${given !== undefined ? ` (got ${JSON.stringify(given)})` : ''}`)
  }
  const raw = converted as RawConfig

  const scopes = csv(raw.SCOPES)
  for (const s of csv(raw.MEMBER_SCOPES)) {
    if (!scopes.includes(s)) throw new ConfigError('MEMBER_SCOPES', `names ${s}, which is not in SCOPES`)
  }
  const databaseMode: DatabaseMode = raw.DATABASE_URL === '' ? 'embedded'
    : raw.DATABASE_URL === 'memory://' ? 'memory' : 'postgres'

  return Object.freeze({
    ...raw,
    databaseMode,
    SCOPES: Object.freeze(scopes),
    MEMBER_SCOPES: Object.freeze(csv(raw.MEMBER_SCOPES)),
    TRUST_PROXY: parseTrustProxy(raw.TRUST_PROXY),
    secretKey: raw.SECRET_KEY ? decodeSecret(raw.SECRET_KEY) : undefined,
  })
}

/**
 * SECRET_KEY is mandatory against PostgreSQL (instances must share it). In
 * embedded mode one is generated once into DATA_DIR/secret.key; in memory mode
 * an ephemeral one is enough because nothing outlives the process.
 */
export function resolveSecretKey(config: Config, warn: (msg: string) => void = () => {}): Config {
  if (config.secretKey) return config
  if (config.databaseMode === 'postgres') {
    throw new ConfigError('SECRET_KEY', 'is required when DATABASE_URL points at PostgreSQL (generate one with: openssl rand -base64 32)')
  }
  if (config.databaseMode === 'memory') return Object.freeze({ ...config, secretKey: randomBytes(32) })

  const file = join(config.DATA_DIR, 'secret.key')
  if (!existsSync(file)) {
    mkdirSync(config.DATA_DIR, { recursive: true })
    writeFileSync(file, randomBytes(32).toString('base64') + '\n', { mode: 0o600, flag: 'wx' })
    chmodSync(file, 0o600)
    warn(`SECRET_KEY is not set: generated one into ${file}. Set SECRET_KEY before running more than one instance.`)
  }
  return Object.freeze({ ...config, secretKey: decodeSecret(readFileSync(file, 'utf8').trim()) })
}

/** Reads .env (when present) into process.env without overriding what is set. */
export function loadDotEnv(path = '.env'): void {
  if (existsSync(path)) process.loadEnvFile(path)
}
