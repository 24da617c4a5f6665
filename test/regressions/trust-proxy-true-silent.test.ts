// TRUST_PROXY=true believes X-Forwarded-For from anyone (any client can pick its
// rate-limit key and its logged IP), yet start-up said nothing. It now warns once.
import t, { type Test } from 'tap'
import { Writable } from 'node:stream'
import { buildTestApp } from '../helpers/app.js'

async function startUpLog(t: Test, env: Record<string, string>) {
  let log = ''
  const stream = new Writable({ write(chunk, _enc, done) { log += chunk; done() } })
  await buildTestApp(t, { env, logger: { level: 'info', stream } })
  return log.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: number; msg: string })
}

const WARN = 40
const mentionsTrustProxy = (line: { msg: string }) => /TRUST_PROXY/.test(line.msg)

t.test('TRUST_PROXY=true: one warn-level line naming TRUST_PROXY and the safer settings', async (t) => {
  const warnings = (await startUpLog(t, { TRUST_PROXY: 'true' })).filter(mentionsTrustProxy)
  t.equal(warnings.length, 1, 'logged once')
  t.equal(warnings[0]?.level, WARN, 'at warn level')
  t.match(warnings[0]?.msg, /X-Forwarded-For/)
  t.match(warnings[0]?.msg, /hops/, 'suggests a hop count')
  t.match(warnings[0]?.msg, /CIDR/, 'suggests the proxies\' addresses')
})

t.test('TRUST_PROXY false (the default), a hop count or a CIDR: no such line', async (t) => {
  const envs: Record<string, string>[] = [{}, { TRUST_PROXY: '1' }, { TRUST_PROXY: '10.0.0.0/8,127.0.0.1' }]
  for (const env of envs) {
    t.same((await startUpLog(t, env)).filter(mentionsTrustProxy), [], `no warning with ${JSON.stringify(env)}`)
  }
})
