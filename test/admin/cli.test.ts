// Superadmins are made from the CLI only: `users grant-superadmin` and
// `users revoke-superadmin`, run as an operator would, against the embedded
// database on disk; the account's next request sees the flag.
import t from 'tap'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { buildTestApp, FAST_ARGON2 } from '../helpers/app.js'
import { bearer, login, STRONG_PASSWORD } from '../helpers/api.js'
import { ROOT } from '../helpers/server.js'

const dataDir = t.testdir()
const EMAIL = 'operator@example.com'
const SECRET_KEY = randomBytes(32).toString('base64') // the CLI and the app open one database with one secret

function cli(...args: string[]) {
  const env = { ...process.env, ...FAST_ARGON2, DATABASE_URL: '', DATA_DIR: dataDir, SECRET_KEY, LOG_LEVEL: 'silent', PORTCULLIS_PASSWORD: STRONG_PASSWORD }
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile('npx', ['tsx', 'src/cli.ts', ...args], { cwd: ROOT, env, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
  })
}

async function isSuperadmin(): Promise<boolean> {
  // One process at a time on the directory (PGlite is single-process): the app is closed before the next CLI run.
  const app = await buildTestApp(t, { databaseUrl: '', secretKey: SECRET_KEY, env: { ...FAST_ARGON2, DATA_DIR: dataDir } })
  try {
    const session = (await login(app, EMAIL)).json()
    return (await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(session.access_token) })).json().user.is_superadmin
  } finally {
    await app.close()
  }
}

t.test('grant, then revoke, from the CLI', async (t) => {
  t.equal((await cli('create-user', '--email', EMAIL)).code, 0, 'an account')
  t.equal(await isSuperadmin(), false, 'not a superadmin to begin with')
  const granted = await cli('users', 'grant-superadmin', EMAIL)
  t.equal(granted.code, 0, `exit 0 (${granted.stderr})`)
  t.match(granted.stdout, /usr_\w+ \(operator@example\.com\) is now a superadmin/)
  t.equal(await isSuperadmin(), true, 'the flag is set')
  t.equal((await cli('users', 'revoke-superadmin', EMAIL)).code, 0)
  t.equal(await isSuperadmin(), false, 'and cleared')
  const unknown = await cli('users', 'grant-superadmin', 'nobody@example.com')
  t.not(unknown.code, 0, 'an unknown address: non-zero exit')
  t.match(unknown.stderr, /not found/i)
})
