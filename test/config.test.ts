// src/config.ts on its own: defaults, conversion, validation that names the
// variable, and how SECRET_KEY is resolved in each database mode (§2).
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigError, loadConfig, resolveSecretKey } from '../src/config.js'

/** Asserts that fn throws a ConfigError that names variable. */
function assertConfigError(t: Test, fn: () => unknown, variable: string, label: string) {
  let error: unknown
  try { fn() } catch (err) { error = err }
  t.ok(error instanceof ConfigError, `${label} throws a ConfigError`)
  t.equal((error as ConfigError).variable, variable, `names ${variable}`)
  t.match((error as ConfigError).message, variable, `message names ${variable}`)
}

/** Resolves the secret key, counting the warnings. */
function resolveCounting(env: Record<string, string>) {
  const warnings: string[] = []
  const config = resolveSecretKey(loadConfig(env), (msg) => warnings.push(msg))
  return { config, warnings }
}

const secret = (bytes: number) => randomBytes(bytes).toString('base64')

t.test('defaults', async (t) => {
  const config = loadConfig({})
  t.equal(config.PORT, 3000)
  t.equal(config.ACCESS_TOKEN_TTL, 900)
  t.equal(config.PASSWORD_MIN_LENGTH, 12)
  t.equal(config.ARGON2_MEMORY_KIB, 19456)
  t.equal(config.ARGON2_TIME_COST, 2)
  t.equal(config.ARGON2_PARALLELISM, 1)
  t.equal(config.WELCOME_CREDITS, 5000)
  t.equal(config.databaseMode, 'embedded')
  t.equal(config.secretKey, undefined, 'no secret until resolveSecretKey runs')
})

t.test('database mode follows DATABASE_URL', async (t) => {
  t.equal(loadConfig({ DATABASE_URL: 'memory://' }).databaseMode, 'memory')
  t.equal(loadConfig({ DATABASE_URL: 'postgres://u:p@db.example:5432/app' }).databaseMode, 'postgres')
  t.equal(loadConfig({ DATABASE_URL: 'postgresql://u@db.example/app' }).databaseMode, 'postgres')
})

t.test('numbers are converted from strings', async (t) => {
  const config = loadConfig({ PORT: '8080', ACCESS_TOKEN_TTL: '60', WELCOME_CREDITS: '0' })
  t.equal(config.PORT, 8080)
  t.equal(config.ACCESS_TOKEN_TTL, 60)
  t.equal(config.WELCOME_CREDITS, 0)
})

t.test('an invalid value throws a ConfigError naming the variable', async (t) => {
  const cases: [Record<string, string>, string][] = [
    [{ PORT: 'abc' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL'],
    [{ JWT_ALGORITHM: 'HS256' }, 'JWT_ALGORITHM'],
    [{ SECRET_KEY: secret(8) }, 'SECRET_KEY'],
    [{ SCOPES: 'a:read,b:read', MEMBER_SCOPES: 'a:read,c:write' }, 'MEMBER_SCOPES'],
    // Regressions: numbers that conversion used to truncate silently, and a non-address proxy.
    [{ PORT: '1.5' }, 'PORT'],
    [{ PORT: '0x50' }, 'PORT'],
    [{ ACCESS_TOKEN_TTL: '900.9' }, 'ACCESS_TOKEN_TTL'],
    [{ TRUST_PROXY: 'yes' }, 'TRUST_PROXY'],
    [{ TRUST_PROXY: '10.0.0.0/33' }, 'TRUST_PROXY'],
    [{ REDIS_URL: 'http://x' }, 'REDIS_URL'],
  ]
  for (const [env, variable] of cases) assertConfigError(t, () => loadConfig(env), variable, JSON.stringify(env))
})

t.test('TRUST_PROXY accepts booleans, hop counts and addresses/CIDRs', async (t) => {
  t.equal(loadConfig({}).TRUST_PROXY, false)
  t.equal(loadConfig({ TRUST_PROXY: 'true' }).TRUST_PROXY, true)
  t.equal(loadConfig({ TRUST_PROXY: '2' }).TRUST_PROXY, 2)
  t.same(loadConfig({ TRUST_PROXY: '10.0.0.1, 192.168.0.0/16,::1' }).TRUST_PROXY, ['10.0.0.1', '192.168.0.0/16', '::1'])
})

t.test('the config is frozen', async (t) => {
  const config = loadConfig({})
  t.ok(Object.isFrozen(config), 'config frozen')
  t.ok(Object.isFrozen(config.SCOPES), 'SCOPES frozen')
  t.ok(Object.isFrozen(config.MEMBER_SCOPES), 'MEMBER_SCOPES frozen')
  t.throws(() => { (config as { PORT: number }).PORT = 1 }, TypeError, 'assignment throws in strict mode')
})

t.test('resolveSecretKey', async (t) => {
  t.test('postgres mode without SECRET_KEY refuses to start', async (t) => {
    const config = loadConfig({ DATABASE_URL: 'postgres://u@db.example/app' })
    assertConfigError(t, () => resolveSecretKey(config), 'SECRET_KEY', 'postgres without SECRET_KEY')
  })

  t.test('embedded mode generates DATA_DIR/secret.key once', async (t) => {
    const dataDir = join(t.testdir(), 'data')
    const file = join(dataDir, 'secret.key')

    const first = resolveCounting({ DATA_DIR: dataDir })
    t.equal(first.warnings.length, 1, 'warned once')
    t.match(first.warnings[0], 'SECRET_KEY')
    t.equal(statSync(file).mode & 0o777, 0o600, 'secret.key has mode 0600')
    t.equal(Buffer.from(readFileSync(file, 'utf8').trim(), 'base64').length, 32, 'file holds 32 bytes, base64')
    t.equal(first.config.secretKey?.length, 32)
    t.ok(Object.isFrozen(first.config), 'resolved config frozen')

    const second = resolveCounting({ DATA_DIR: dataDir })
    t.equal(second.warnings.length, 0, 'no warning when the file exists')
    t.ok(second.config.secretKey?.equals(first.config.secretKey!), 'same key read back')
  })

  t.test('memory mode gets an ephemeral key', async (t) => {
    const { config, warnings } = resolveCounting({ DATABASE_URL: 'memory://' })
    t.equal(config.secretKey?.length, 32)
    t.equal(warnings.length, 0)
  })

  t.test('a given SECRET_KEY is kept', async (t) => {
    const given = secret(32)
    for (const DATABASE_URL of ['', 'memory://', 'postgres://u@db.example/app']) {
      const { config, warnings } = resolveCounting({ DATABASE_URL, SECRET_KEY: given, DATA_DIR: t.testdir() })
      t.equal(config.secretKey?.toString('base64'), given, `kept (${config.databaseMode})`)
      t.equal(warnings.length, 0)
    }
  })
})
