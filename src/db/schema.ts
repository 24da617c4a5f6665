// Drizzle tables. drizzle-kit generates drizzle/*.sql from this file
// (`npm run db:generate`); the same SQL serves PGlite and PostgreSQL.
import { sql } from 'drizzle-orm'
import {
  bigint, boolean, check, index, integer, jsonb, pgTable, primaryKey, text, timestamp, uniqueIndex,
} from 'drizzle-orm/pg-core'

const createdAt = () => timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull()

export const users = pgTable('users', {
  id: text('id').primaryKey(),
  // Stored trimmed and lower-cased; the unique index on lower() is the backstop.
  email: text('email').notNull(),
  name: text('name'),
  passwordHash: text('password_hash').notNull(),
  isSuperadmin: boolean('is_superadmin').notNull().default(false),
  mfaEnabled: boolean('mfa_enabled').notNull().default(false),
  /** TOTP secret, sealed with a key derived from SECRET_KEY; pending until 2FA is enabled. */
  totpSecretSealed: text('totp_secret_sealed'),
  totpPendingSecretSealed: text('totp_pending_secret_sealed'),
  /** The last accepted TOTP time step: a code is never accepted twice. */
  totpLastStep: bigint('totp_last_step', { mode: 'number' }),
  disabledAt: timestamp('disabled_at', { withTimezone: true, mode: 'date' }),
  /** When the current address was proven by a mailed link; cleared by nothing but an address change. */
  emailVerifiedAt: timestamp('email_verified_at', { withTimezone: true, mode: 'date' }),
  /** Set when the account's personal data was erased: the row stays as a tombstone (ids elsewhere still resolve). */
  erasedAt: timestamp('erased_at', { withTimezone: true, mode: 'date' }),
  createdAt: createdAt(),
  updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull(),
}, (t) => [uniqueIndex('users_email_lower_key').on(sql`lower(${t.email})`)])

export const organizations = pgTable('organizations', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  credits: bigint('credits', { mode: 'number' }).notNull().default(0),
  /**
   * The account whose name or address made the default name ("<name>'s workspace") at sign-up: its
   * erasure renames the organization, whatever its name or address has become since. Null once renamed.
   */
  namedAfterUserId: text('named_after_user_id').references(() => users.id, { onDelete: 'set null' }),
  createdAt: createdAt(),
  updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull(),
})

export const memberships = pgTable('memberships', {
  orgId: text('org_id').notNull().references(() => organizations.id, { onDelete: 'cascade' }),
  userId: text('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  role: text('role', { enum: ['owner', 'admin', 'member'] }).notNull(),
  createdAt: createdAt(),
}, (t) => [
  primaryKey({ columns: [t.orgId, t.userId] }),
  index('memberships_user_idx').on(t.userId, t.createdAt),
  check('memberships_role_check', sql`${t.role} in ('owner', 'admin', 'member')`),
])

/** A login: the unit that logout revokes. Refresh-token families hang off it. */
export const sessions = pgTable('sessions', {
  id: text('id').primaryKey(),
  userId: text('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  orgId: text('org_id').notNull(),
  userAgent: text('user_agent'),
  ip: text('ip'),
  createdAt: createdAt(),
  lastUsedAt: timestamp('last_used_at', { withTimezone: true, mode: 'date' }).notNull(),
  expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
  revokedAt: timestamp('revoked_at', { withTimezone: true, mode: 'date' }),
}, (t) => [
  index('sessions_user_idx').on(t.userId),
  // Start-up and periodic resync read the recently revoked sessions.
  index('sessions_revoked_idx').on(t.revokedAt),
])

/**
 * One row per refresh token of a session (its family). Only the SHA-256 of a
 * token is stored; a child token is derived from its parent with an HMAC, so a
 * retried refresh can be answered with the same child without storing it.
 */
export const refreshTokens = pgTable('refresh_tokens', {
  id: text('id').primaryKey(),
  sessionId: text('session_id').notNull().references(() => sessions.id, { onDelete: 'cascade' }),
  parentId: text('parent_id'),
  tokenHash: text('token_hash').notNull(),
  createdAt: createdAt(),
  expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
  usedAt: timestamp('used_at', { withTimezone: true, mode: 'date' }),
}, (t) => [
  uniqueIndex('refresh_tokens_hash_key').on(t.tokenHash),
  // A token has at most one child: the family never forks.
  uniqueIndex('refresh_tokens_parent_key').on(t.parentId),
  index('refresh_tokens_session_idx').on(t.sessionId),
])

/** JWT signing keys; the private half is sealed with a key derived from SECRET_KEY. */
export const signingKeys = pgTable('signing_keys', {
  kid: text('kid').primaryKey(),
  algorithm: text('algorithm', { enum: ['ES256', 'EdDSA', 'RS256'] }).notNull(),
  state: text('state', { enum: ['next', 'current', 'previous', 'retired'] }).notNull(),
  publicJwk: jsonb('public_jwk').$type<Record<string, string>>().notNull(),
  privateKeySealed: text('private_key_sealed').notNull(),
  createdAt: createdAt(),
  stateChangedAt: timestamp('state_changed_at', { withTimezone: true, mode: 'date' }).notNull(),
}, (t) => [
  // At most one key signs at a time.
  uniqueIndex('signing_keys_one_current').on(t.state).where(sql`${t.state} = 'current'`),
  check('signing_keys_state_check', sql`${t.state} in ('next', 'current', 'previous', 'retired')`),
])

/** Organization API keys: only the SHA-256 of a key is stored, plus a display prefix. */
export const apiKeys = pgTable('api_keys', {
  id: text('id').primaryKey(),
  orgId: text('org_id').notNull().references(() => organizations.id, { onDelete: 'cascade' }),
  name: text('name').notNull(),
  keyPrefix: text('key_prefix').notNull(),
  keyHash: text('key_hash').notNull(),
  environment: text('environment', { enum: ['live', 'test'] }).notNull(),
  scopes: jsonb('scopes').$type<string[]>().notNull(),
  createdByUserId: text('created_by_user_id').notNull(),
  createdByKeyId: text('created_by_key_id'),
  rotatedFromId: text('rotated_from_id'),
  createdAt: createdAt(),
  expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }),
  lastUsedAt: timestamp('last_used_at', { withTimezone: true, mode: 'date' }),
  revokedAt: timestamp('revoked_at', { withTimezone: true, mode: 'date' }),
  /** Set by every revocation or expiry change: the periodic resync evicts what changed since it last looked. */
  updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
}, (t) => [
  uniqueIndex('api_keys_hash_key').on(t.keyHash),
  index('api_keys_org_idx').on(t.orgId, t.id),
  index('api_keys_updated_idx').on(t.updatedAt),
])

/** What happened in an organization, for its admins. Append-only. */
export const auditEvents = pgTable('audit_events', {
  id: text('id').primaryKey(),
  orgId: text('org_id').notNull().references(() => organizations.id, { onDelete: 'cascade' }),
  action: text('action').notNull(),
  actorUserId: text('actor_user_id'),
  actorKeyId: text('actor_key_id'),
  targetType: text('target_type'),
  targetId: text('target_id'),
  ip: text('ip'),
  metadata: jsonb('metadata').$type<Record<string, unknown>>().notNull().default({}),
  createdAt: createdAt(),
}, (t) => [index('audit_events_org_idx').on(t.orgId, t.id)])

/** Single-use 2FA recovery codes, stored as SHA-256. */
export const recoveryCodes = pgTable('recovery_codes', {
  id: text('id').primaryKey(),
  userId: text('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  codeHash: text('code_hash').notNull(),
  createdAt: createdAt(),
  usedAt: timestamp('used_at', { withTimezone: true, mode: 'date' }),
}, (t) => [uniqueIndex('recovery_codes_user_hash_key').on(t.userId, t.codeHash)])

/** The second step of a 2FA login: a short-lived, single-use token, stored as SHA-256. */
export const mfaChallenges = pgTable('mfa_challenges', {
  tokenHash: text('token_hash').primaryKey(),
  userId: text('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  orgId: text('org_id'),
  userAgent: text('user_agent'),
  ip: text('ip'),
  // A SHA-256 of the password hash the login checked: the session is only started if it is still
  // the account's (a reset or change committed meanwhile refuses the second step).
  passwordFingerprint: text('password_fingerprint').notNull(),
  createdAt: createdAt(),
  expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
  usedAt: timestamp('used_at', { withTimezone: true, mode: 'date' }),
})

/**
 * Failed logins per normalized email, whether or not an account exists, so a
 * lockout reveals nothing. Updated by single atomic statements. Keyed by an
 * HMAC of the address, not the address: anyone can type any address into a
 * login form, and an erased account's address must not come back that way.
 */
export const loginFailures = pgTable('login_failures', {
  emailKey: text('email').primaryKey(),
  failures: integer('failures').notNull(),
  windowStartedAt: timestamp('window_started_at', { withTimezone: true, mode: 'date' }).notNull(),
  lockedUntil: timestamp('locked_until', { withTimezone: true, mode: 'date' }),
})

/**
 * The transactional outbox: a mail is a row written in the transaction that
 * caused it and delivered by a sender in every instance (claimed with
 * FOR UPDATE SKIP LOCKED). The content carries single-use links, so it is
 * sealed with a key derived from SECRET_KEY and erased once sent. A
 * forgot-password row is queued without content; the sender prepares it (or
 * skips it when no account has the address), so that the request does the
 * same work whether the account exists or not.
 */
export const mailOutbox = pgTable('mail_outbox', {
  id: text('id').primaryKey(),
  kind: text('kind').notNull(),
  recipient: text('recipient').notNull(),
  userId: text('user_id'),
  subject: text('subject'),
  contentSealed: text('content_sealed'),
  state: text('state', { enum: ['pending', 'sent', 'failed', 'skipped'] }).notNull(),
  attempts: integer('attempts').notNull().default(0),
  nextAttemptAt: timestamp('next_attempt_at', { withTimezone: true, mode: 'date' }).notNull(),
  /** A sender's claim: another sender takes the row only once this has passed. */
  lockedUntil: timestamp('locked_until', { withTimezone: true, mode: 'date' }),
  lastError: text('last_error'),
  createdAt: createdAt(),
  sentAt: timestamp('sent_at', { withTimezone: true, mode: 'date' }),
}, (t) => [
  index('mail_outbox_due_idx').on(t.nextAttemptAt).where(sql`${t.state} = 'pending'`),
  index('mail_outbox_created_idx').on(t.createdAt),
  check('mail_outbox_state_check', sql`${t.state} in ('pending', 'sent', 'failed', 'skipped')`),
])

/**
 * Single-use tokens sent by mail, one purpose each; only the SHA-256 is
 * stored. `email` is the address the link was mailed to: a token proves that
 * address and no other (an address change makes older tokens useless).
 */
export const mailTokens = pgTable('mail_tokens', {
  id: text('id').primaryKey(),
  purpose: text('purpose', { enum: ['password_reset', 'email_verification', 'email_change'] }).notNull(),
  userId: text('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  email: text('email').notNull(),
  tokenHash: text('token_hash').notNull(),
  createdAt: createdAt(),
  expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
  usedAt: timestamp('used_at', { withTimezone: true, mode: 'date' }),
}, (t) => [
  uniqueIndex('mail_tokens_hash_key').on(t.tokenHash),
  index('mail_tokens_user_idx').on(t.userId, t.purpose),
  check('mail_tokens_purpose_check', sql`${t.purpose} in ('password_reset', 'email_verification', 'email_change')`),
])

/**
 * An invitation to join an organization with a role, by email. The token (256 bits) is stored
 * as SHA-256; a resend replaces it, so the old link dies. A pending invitation past
 * `expires_at` reads as expired; it is stored as `expired` once a new invitation replaces it.
 */
export const invitations = pgTable('invitations', {
  id: text('id').primaryKey(),
  orgId: text('org_id').notNull().references(() => organizations.id, { onDelete: 'cascade' }),
  /** Trimmed and lower-cased, as accounts' are. */
  email: text('email').notNull(),
  role: text('role', { enum: ['owner', 'admin', 'member'] }).notNull(),
  state: text('state', { enum: ['pending', 'accepted', 'revoked', 'expired'] }).notNull(),
  tokenHash: text('token_hash').notNull(),
  /** The user or API key that invited (a key acts as nobody). */
  invitedByUserId: text('invited_by_user_id'),
  invitedByKeyId: text('invited_by_key_id'),
  createdAt: createdAt(),
  expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
  acceptedAt: timestamp('accepted_at', { withTimezone: true, mode: 'date' }),
  acceptedByUserId: text('accepted_by_user_id'),
  revokedAt: timestamp('revoked_at', { withTimezone: true, mode: 'date' }),
}, (t) => [
  uniqueIndex('invitations_token_hash_key').on(t.tokenHash),
  // One live invitation per address and organization: a second is a resend.
  uniqueIndex('invitations_pending_email_key').on(t.orgId, t.email).where(sql`${t.state} = 'pending'`),
  index('invitations_org_idx').on(t.orgId, t.id),
  check('invitations_role_check', sql`${t.role} in ('owner', 'admin', 'member')`),
  check('invitations_state_check', sql`${t.state} in ('pending', 'accepted', 'revoked', 'expired')`),
])

/** What operators did to accounts: the platform's own audit log, apart from organizations' logs. */
export const platformAuditEvents = pgTable('platform_audit_events', {
  id: text('id').primaryKey(),
  action: text('action').notNull(),
  actorUserId: text('actor_user_id'),
  targetType: text('target_type'),
  targetId: text('target_id'),
  ip: text('ip'),
  metadata: jsonb('metadata').$type<Record<string, unknown>>().notNull().default({}),
  createdAt: createdAt(),
}, (t) => [index('platform_audit_events_target_idx').on(t.targetId)])
