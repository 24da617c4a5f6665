// A real PgBouncer in transaction mode (the Debian package), on a free loopback
// port in front of the machine's PostgreSQL, for the tests of running behind a
// pooler. PgBouncer refuses to run as root: under root it drops to `postgres`.
import type { Test } from 'tap'
import { spawn } from 'node:child_process'
import { chmodSync, existsSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { freePort } from './server.js'

export const PGBOUNCER = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => existsSync(p))

/** Starts PgBouncer in front of `postgresUrl`'s server; returns `postgresUrl` rewritten to go through it. */
export async function startPgBouncer(t: Test, postgresUrl: string): Promise<string> {
  if (!PGBOUNCER) throw new Error('pgbouncer is not installed (apt-get install -y pgbouncer; .ci/run installs it)')
  const target = new URL(postgresUrl)
  const dir = t.testdir()
  chmodSync(dir, 0o777)
  const port = await freePort()
  writeFileSync(join(dir, 'userlist.txt'), `"${decodeURIComponent(target.username || 'postgres')}" ""\n`)
  writeFileSync(join(dir, 'pgbouncer.ini'), [
    '[databases]', `* = host=${target.hostname} port=${target.port || 5432}`,
    '[pgbouncer]', 'listen_addr = 127.0.0.1', `listen_port = ${port}`, 'unix_socket_dir =',
    'auth_type = trust', `auth_file = ${join(dir, 'userlist.txt')}`, 'pool_mode = transaction',
    `stats_users = ${decodeURIComponent(target.username || 'postgres')}`,
    'max_client_conn = 500', 'default_pool_size = 20', 'ignore_startup_parameters = extra_float_digits,application_name',
    `logfile = ${join(dir, 'pgbouncer.log')}`, `pidfile = ${join(dir, 'pgbouncer.pid')}`,
  ].join('\n') + '\n')
  const asRoot = process.getuid?.() === 0
  const child = spawn(PGBOUNCER, [...(asRoot ? ['-u', 'postgres'] : []), join(dir, 'pgbouncer.ini')], { stdio: 'ignore' })
  t.teardown(() => { child.kill('SIGTERM') })
  for (let i = 0; i < 50; i++) {
    if (await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => { socket.end(); resolve(true) })
      socket.on('error', () => resolve(false))
    })) {
      const through = new URL(postgresUrl)
      through.hostname = '127.0.0.1'
      through.port = String(port)
      return through.toString()
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error('pgbouncer did not start')
}
