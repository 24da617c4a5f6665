// Ceilings that are not HTTP servers, run as their own process so they get a
// core like the service does. Prints one JSON line: { opsPerSec, ... }.
//   argon2 <concurrency> <seconds>              argon2.verify with the service's parameters and hashing bound
//   argon2-compare <concurrency> <seconds>      argon2 vs @node-rs/argon2 at identical parameters
//   refresh <databaseUrl> <concurrency> <seconds>  the refresh's statement through postgres.js
import argon2 from 'argon2'
import { randomBytes, createHash } from 'node:crypto'
import { availableParallelism } from 'node:os'
import postgres from 'postgres'
import { drizzle } from 'drizzle-orm/postgres-js'
import type { Placeholder } from 'drizzle-orm'
import type { Database } from '../../src/db/client.js'
import { newId } from '../../src/lib/ids.js'
import { unusedTokenRotation, unusedTokenRotationParams } from '../../src/modules/sessions/repository.js'
import { PasswordHasher } from '../../src/lib/password-hasher.js'

const PARAMS = { memoryCost: 19456, timeCost: 2, parallelism: 1 }
const PASSWORD = 'violet-otter-grammar-47'

/** Runs `op` with `concurrency` callers for `seconds`; returns completed operations per second. */
async function drive(concurrency: number, seconds: number, op: (worker: number) => Promise<unknown>): Promise<number> {
  const end = Date.now() + seconds * 1000
  let done = 0
  await Promise.all(Array.from({ length: concurrency }, async (_, worker) => {
    while (Date.now() < end) { await op(worker); done++ }
  }))
  return done / seconds
}

async function argon2Ceiling(concurrency: number, seconds: number) {
  // The service's PasswordHasher: same library, parameters, thread pool and in-flight bound.
  const hasher = new PasswordHasher(PARAMS, Math.max(1, availableParallelism() - 1))
  const hash = await hasher.hash(PASSWORD)
  return { opsPerSec: await drive(concurrency, seconds, () => hasher.verify(hash, PASSWORD)) }
}

async function argon2Compare(concurrency: number, seconds: number) {
  const rs = await import('@node-rs/argon2')
  const nodeHash = await argon2.hash(PASSWORD, { type: argon2.argon2id, ...PARAMS })
  const rsHash = await rs.hash(PASSWORD, { algorithm: 2 /* Argon2id */, memoryCost: PARAMS.memoryCost, timeCost: PARAMS.timeCost, parallelism: PARAMS.parallelism })
  const argon2Ops = await drive(concurrency, seconds, () => argon2.verify(nodeHash, PASSWORD))
  const nodeRsOps = await drive(concurrency, seconds, () => rs.verify(rsHash, PASSWORD))
  return { argon2: argon2Ops, nodeRsArgon2: nodeRsOps, ratio: nodeRsOps / argon2Ops }
}

/**
 * The statement of one refresh (SessionService.refresh: an unused token rotated in one statement),
 * its SQL text taken from the repository and run through postgres.js alone: no HTTP, JWT signing or
 * Drizzle. Prepared like the service's (postgres.js's `prepare`, the service's default).
 */
async function refreshCeiling(url: string, concurrency: number, seconds: number) {
  const sql = postgres(url, { max: 10, onnotice: () => {} })
  // The SQL text only: Drizzle on the client itself would change its date serializers.
  const statement = unusedTokenRotation(drizzle.mock() as unknown as Database).toSQL()
  const names = (statement.params as Placeholder[]).map((p) => p.name as keyof ReturnType<typeof unusedTokenRotationParams>)
  const [user] = await sql`select u.id as user_id, m.org_id from users u join memberships m on m.user_id = u.id limit 1`
  const sha = (s: string) => createHash('sha256').update(s).digest('hex')
  const now = () => new Date()
  // One token chain per caller, like one client per connection.
  const chains = await Promise.all(Array.from({ length: concurrency }, async (_, i) => {
    const sessionId = `ses_bench${i}${randomBytes(8).toString('hex')}`
    const token = randomBytes(32).toString('base64url')
    await sql`insert into sessions (id, user_id, org_id, created_at, last_used_at, expires_at)
      values (${sessionId}, ${user!.user_id}, ${user!.org_id}, ${now()}, ${now()}, ${new Date(Date.now() + 86_400_000)})`
    await sql`insert into refresh_tokens (id, session_id, token_hash, created_at, expires_at)
      values (${'rtk_' + randomBytes(12).toString('hex')}, ${sessionId}, ${sha(token)}, ${now()}, ${new Date(Date.now() + 86_400_000)})`
    return { token }
  }))
  // Each caller owns one chain, as each client owns its session.
  const rotate = async (worker: number) => {
    const chain = chains[worker]!
    const child = randomBytes(32).toString('base64url')
    const at = now()
    const values = unusedTokenRotationParams({
      tokenHash: sha(chain.token), orgId: null, now: at,
      child: { id: newId('rtk', at.getTime()), tokenHash: sha(child), expiresAt: new Date(at.getTime() + 86_400_000) },
    })
    const rows = await sql.unsafe(statement.sql, names.map((name) => values[name]), { prepare: true })
    if (rows.length !== 1) throw new Error('the ceiling rotated nothing')
    chain.token = child
  }
  // Measured warm, as the service's refresh is (see run.ts): a first run compiles the path.
  await drive(concurrency, seconds, rotate)
  const opsPerSec = await drive(concurrency, seconds, rotate)
  await sql.end()
  return { opsPerSec }
}

const [mode, ...args] = process.argv.slice(2)
const result = mode === 'argon2' ? await argon2Ceiling(Number(args[0]), Number(args[1]))
  : mode === 'argon2-compare' ? await argon2Compare(Number(args[0]), Number(args[1]))
    : mode === 'refresh' ? await refreshCeiling(args[0]!, Number(args[1]), Number(args[2]))
      : (() => { throw new Error(`unknown mode ${mode}`) })()
console.log(JSON.stringify(result))
process.exit(0)
