// Operator commands: npm run cli -- <command>
//   migrate             apply database migrations
//   keys rotate         next → current → previous; every instance follows
//   openapi export      write openapi/openapi.yaml from the route table
//   openapi check       fail when openapi/openapi.yaml differs from the code
//   env example         print .env.example (every variable with its default)
//   create-user --email E [--name N] [--company C]   create an account (password from PORTCULLIS_PASSWORD or stdin)
//   users grant-superadmin EMAIL | users revoke-superadmin EMAIL   the only way to make or unmake a platform administrator
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigError, ConfigSchema, loadConfig, loadDotEnv, resolveSecretKey, type Config } from './config.js'
import { buildApp } from './app.js'
import { openDatabase } from './db/client.js'
import { listRecentMail } from './modules/mail/repository.js'

export const OPENAPI_FILE = join(import.meta.dirname, '..', 'openapi', 'openapi.yaml')

/** The contract as the code defines it; built from defaults so the environment cannot change it. */
export async function renderOpenApi(): Promise<string> {
  const app = await buildApp(resolveSecretKey(loadConfig({ DATABASE_URL: 'memory://', LOG_LEVEL: 'silent' })))
  try {
    await app.ready()
    return app.openapiYaml()
  } finally {
    await app.close()
  }
}

function envConfig(): Config {
  loadDotEnv()
  return resolveSecretKey(loadConfig(), (msg) => console.warn(msg))
}

/** --flag value pairs after the command words. */
function flags(args: string[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!
    if (a.startsWith('--') && args[i + 1] !== undefined) out[a.slice(2)] = args[++i]!
  }
  return out
}

async function readPassword(): Promise<string> {
  if (process.env.PORTCULLIS_PASSWORD) return process.env.PORTCULLIS_PASSWORD
  let input = ''
  for await (const chunk of process.stdin) input += chunk
  return input.replace(/\r?\n$/, '')
}

async function createUser(args: string[]): Promise<number> {
  const f = flags(args)
  if (!f.email) {
    console.error('usage: npm run cli -- create-user --email E [--name N] [--company C]  (password on stdin or PORTCULLIS_PASSWORD)')
    return 2
  }
  const password = await readPassword()
  const app = await buildApp(envConfig(), { logger: false })
  try {
    const result = await app.authService.register(
      { email: f.email, password, ...(f.name ? { name: f.name } : {}), ...(f.company ? { company_name: f.company } : {}) },
      { userAgent: 'portcullis-cli' },
    )
    console.log(`created ${result.user.id} (${result.user.email}) owner of ${result.organization.id} (${result.organization.name})`)
    return 0
  } catch (err) {
    const e = err as { code?: string; message: string; details?: { field?: string; message: string }[] }
    console.error(`${e.code ?? 'error'}: ${e.message}${e.details?.map((d) => ` — ${d.field}: ${d.message}`).join('') ?? ''}`)
    return 1
  } finally {
    await app.close()
  }
}

/** Superadmins are made here only: no HTTP route grants the flag. */
async function superadmin(on: boolean, email: string | undefined): Promise<number> {
  if (!email) {
    console.error(`usage: npm run cli -- users ${on ? 'grant' : 'revoke'}-superadmin EMAIL`)
    return 2
  }
  const app = await buildApp(envConfig(), { logger: false })
  try {
    await app.ready()
    const id = await app.admin.setSuperadmin(email, on)
    console.log(`${id} (${email}) is ${on ? 'now' : 'no longer'} a superadmin`)
    return 0
  } catch (err) {
    console.error((err as Error).message)
    return 1
  } finally {
    await app.close()
  }
}

async function run(args: string[]): Promise<number> {
  if (args[0] === 'create-user') return createUser(args.slice(1))
  if (args[0] === 'users' && (args[1] === 'grant-superadmin' || args[1] === 'revoke-superadmin')) return superadmin(args[1] === 'grant-superadmin', args[2])
  const command = args.join(' ')
  switch (command) {
    case 'migrate': {
      const handle = await openDatabase(envConfig())
      try { await handle.migrate() } finally { await handle.close() }
      console.log('migrations applied')
      return 0
    }
    case 'keys rotate': {
      const app = await buildApp(envConfig(), { logger: false })
      try {
        const { current, next } = await app.rotateSigningKeys()
        console.log(`signing with ${current}; next key ${next}`)
      } finally { await app.close() }
      return 0
    }
    case 'openapi export':
      writeFileSync(OPENAPI_FILE, await renderOpenApi())
      console.log(`wrote ${join('openapi', 'openapi.yaml')}`)
      return 0
    case 'openapi check': {
      let committed = ''
      try { committed = readFileSync(OPENAPI_FILE, 'utf8') } catch { /* missing counts as drift */ }
      if (committed === await renderOpenApi()) {
        console.log('openapi/openapi.yaml matches the code')
        return 0
      }
      console.error('openapi/openapi.yaml differs from the code: run `npm run openapi` and commit the result')
      return 1
    }
    case 'mail list': {
      // Recent outbox rows and their state; never their content (it is sealed, and erased once sent).
      const handle = await openDatabase(envConfig())
      try {
        await handle.migrate()
        const rows = await listRecentMail(handle.db, 50)
        if (!rows.length) console.log('no mail in the outbox')
        for (const r of rows) {
          console.log([r.createdAt.toISOString(), r.state.padEnd(7), r.kind.padEnd(20), r.recipient, `attempts=${r.attempts}`,
            r.sentAt ? `sent=${r.sentAt.toISOString()}` : '', r.lastError ? `error=${JSON.stringify(r.lastError)}` : ''].filter(Boolean).join('  '))
        }
      } finally { await handle.close() }
      return 0
    }
    case 'env example': {
      const lines = ['# Portcullis configuration: every variable with its default. Copy to .env and edit.', '']
      for (const [name, schema] of Object.entries(ConfigSchema.properties)) {
        lines.push(`# ${schema.description}`, `${name}=${schema.default ?? ''}`, '')
      }
      process.stdout.write(lines.join('\n'))
      return 0
    }
    default:
      console.error('usage: npm run cli -- migrate | keys rotate | mail list | openapi export | openapi check | env example | create-user --email E | users grant-superadmin EMAIL | users revoke-superadmin EMAIL')
      return 2
  }
}

run(process.argv.slice(2)).then((code) => process.exit(code), (err) => {
  console.error(err instanceof ConfigError ? err.message : err)
  process.exit(1)
})
