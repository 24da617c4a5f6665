// Ending sessions (SPEC §4 "Access tokens" revocation, "Refresh tokens and
// sessions"): logout, logout-all, the session list and its DELETE, and a
// password change. A revoked session's access token is refused at once on the
// instance that revoked it, within 1 s on every other instance, and by an
// instance started afterwards; its refresh token is refused everywhere.
import t, { type Test } from 'tap'
import { decodeJwt } from 'jose'
import type { App } from '../../src/app.js'
import { buildTestApp, FAST_ARGON2, sharedDatabase, TEST_DATABASE_URL, TEST_REDIS_URL, within } from '../helpers/app.js'
import { bearer, login, register, STRONG_PASSWORD } from '../helpers/api.js'

const ENV: Record<string, string> = TEST_REDIS_URL ? { ...FAST_ARGON2, REDIS_URL: TEST_REDIS_URL } : FAST_ARGON2
const CHANNEL = TEST_REDIS_URL ? 'Redis pub/sub'
  : TEST_DATABASE_URL ? 'PostgreSQL LISTEN/NOTIFY' : 'PGlite in-process NOTIFY'

// Two instances on one database, as behind a load balancer; most subtests use only A.
const shared = await sharedDatabase(t)
const startInstance = (t: Test) => buildTestApp(t, { ...shared, env: ENV })
const A = await startInstance(t)
const B = await startInstance(t)

interface Session { access: string; refresh: string; sid: string }

/** A new session of an existing account (a login). */
async function signIn(app: App, email: string, userAgent?: string): Promise<Session> {
  const res = await app.inject({
    method: 'POST', url: '/api/v1/auth/login', payload: { email, password: STRONG_PASSWORD },
    headers: userAgent ? { 'user-agent': userAgent } : {},
  })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
  const { access_token: access, refresh_token: refresh } = res.json()
  return { access, refresh, sid: decodeJwt(access).sid as string }
}

/** A new account; its registration session is logged out so only explicit logins count. */
async function newUser(app: App = A) {
  const reg = await register(app)
  const res = await logout(app, reg.access_token as string)
  if (res.statusCode !== 204) throw new Error(`logout failed: ${res.statusCode} ${res.body}`)
  return { email: reg.email, signIn: (userAgent?: string) => signIn(app, reg.email, userAgent) }
}

const me = (app: App, access: string) => app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: bearer(access) })
const meStatus = async (app: App, access: string) => (await me(app, access)).statusCode
const refresh = (app: App, refreshToken: string) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: refreshToken } })
const logout = (app: App, access: string, body: { refresh_token?: string } = {}) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(access), payload: body })
const logoutAll = (app: App, access: string) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/logout-all', headers: bearer(access) })
const deleteSession = (app: App, access: string, id: string) =>
  app.inject({ method: 'DELETE', url: `/api/v1/auth/sessions/${id}`, headers: bearer(access) })
const listSessions = (app: App, access: string, query = '') =>
  app.inject({ method: 'GET', url: `/api/v1/auth/sessions${query}`, headers: bearer(access) })
const changePassword = (app: App, access: string, current_password: string, new_password: string) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/password', headers: bearer(access), payload: { current_password, new_password } })

/** Access token accepted, and the refresh token still rotates (the session keeps the new one). */
async function assertLive(t: Test, app: App, s: Session, label: string) {
  t.equal(await meStatus(app, s.access), 200, `${label}: access token accepted`)
  const res = await refresh(app, s.refresh)
  t.equal(res.statusCode, 200, `${label}: refresh token accepted`)
  if (res.statusCode === 200) s.refresh = res.json().refresh_token
}

/** Access token 401 on `app` at once, refresh token REFRESH_FAILED. */
async function assertRevoked(t: Test, app: App, s: Session, label: string) {
  const res = await me(app, s.access)
  t.equal(res.statusCode, 401, `${label}: access token refused`)
  t.equal(res.json().error?.code, 'UNAUTHORIZED', `${label}: UNAUTHORIZED`)
  const r = await refresh(app, s.refresh)
  t.equal(r.statusCode, 401, `${label}: refresh token refused`)
  t.equal(r.json().error?.code, 'REFRESH_FAILED', `${label}: REFRESH_FAILED`)
}

/** Instance B refuses every given access token within 1 s of the revocation on A. */
async function assertReachesB(t: Test, sessions: Session[], label: string) {
  const ms = await within(1000, async () => {
    for (const s of sessions) if (await meStatus(B, s.access) !== 401) return false
    return true
  })
  t.ok(ms >= 0, `${label}: instance B refuses ${sessions.length} token(s) after ${ms} ms (${CHANNEL})`)
}

t.test('logout revokes the current session at once on the same instance', async (t) => {
  const user = await newUser()
  const [s1, s2] = [await user.signIn(), await user.signIn()]
  await assertLive(t, A, s1, 'before logout')

  const res = await logout(A, s1.access)
  t.equal(res.statusCode, 204)
  t.equal(res.body, '', 'no body')
  await assertRevoked(t, A, s1, 'logged-out session')
  await assertLive(t, A, s2, 'second session of the same user')

  t.equal((await logout(A, s1.access)).statusCode, 401, 'logging out again with the dead token is 401')
  t.equal((await A.inject({ method: 'POST', url: '/api/v1/auth/logout', payload: {} })).statusCode, 401, 'logout without a token is 401')
})

t.test('logout without a request body (SPEC: the {refresh_token} body is optional)', async (t) => {
  const session = await (await newUser()).signIn()
  const res = await A.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(session.access) })
  t.equal(res.statusCode, 204, `204 (got ${res.statusCode} ${res.body})`)
  t.equal(await meStatus(A, session.access), 401, 'session revoked')
})

t.test('logout with the refresh_token of another own session revokes both', async (t) => {
  const user = await newUser()
  const [s1, s2, s3] = [await user.signIn(), await user.signIn(), await user.signIn()]
  t.equal((await logout(A, s1.access, { refresh_token: s2.refresh })).statusCode, 204)
  await assertRevoked(t, A, s1, 'calling session')
  await assertRevoked(t, A, s2, 'session named by the refresh_token')
  await assertLive(t, A, s3, 'third session')
})

t.test('a refresh_token of another user in the body does not revoke that user\'s session', async (t) => {
  const [alice, mallory] = [await newUser(), await newUser()]
  const victim = await alice.signIn()
  const attacker = await mallory.signIn()
  t.equal((await logout(A, attacker.access, { refresh_token: victim.refresh })).statusCode, 204)
  await assertRevoked(t, A, attacker, 'the caller\'s own session')
  await assertLive(t, A, victim, 'the other user\'s session')

  const caller = await mallory.signIn()
  t.equal((await logout(A, caller.access, { refresh_token: 'rt_not-a-real-token' })).statusCode, 204, 'an unknown refresh_token is ignored')
  await assertRevoked(t, A, caller, 'caller after an unknown refresh_token')
})

t.test(`revocations reach instance B within 1 s (${CHANNEL})`, async (t) => {
  t.test('logout', async (t) => {
    const session = await (await newUser()).signIn()
    t.equal(await meStatus(B, session.access), 200, 'token issued on A works on B')
    t.equal((await logout(A, session.access)).statusCode, 204)
    await assertReachesB(t, [session], 'logout')
    await assertRevoked(t, B, session, 'on B')
  })

  t.test('logout-all', async (t) => {
    const user = await newUser()
    const sessions = [await user.signIn(), await signIn(B, user.email)]
    for (const s of sessions) t.equal(await meStatus(B, s.access), 200, 'live on B before')
    t.equal((await logoutAll(A, sessions[0]!.access)).statusCode, 204)
    await assertReachesB(t, sessions, 'logout-all')
    for (const [i, s] of sessions.entries()) await assertRevoked(t, A, s, `session ${i + 1} on A`)
  })

  t.test('DELETE /auth/sessions/{id}', async (t) => {
    const user = await newUser()
    const [keeper, target] = [await user.signIn(), await user.signIn()]
    t.equal(await meStatus(B, target.access), 200, 'live on B before')
    t.equal((await deleteSession(A, keeper.access, target.sid)).statusCode, 204)
    await assertReachesB(t, [target], 'DELETE session')
    await assertRevoked(t, B, target, 'deleted session on B')
    t.equal(await meStatus(B, keeper.access), 200, 'the caller\'s session still works on B')
  })

  t.test('password change', async (t) => {
    const user = await newUser()
    const [keeper, other] = [await user.signIn(), await user.signIn()]
    t.equal(await meStatus(B, other.access), 200, 'live on B before')
    t.equal((await changePassword(A, keeper.access, STRONG_PASSWORD, 'granite-heron-lantern-82')).statusCode, 204)
    await assertReachesB(t, [other], 'password change')
    t.equal(await meStatus(B, keeper.access), 200, 'the caller\'s session still works on B')
  })
})

t.test('GET /auth/sessions lists live sessions; DELETE revokes one of the caller\'s', async (t) => {
  const user = await newUser()
  const laptop = await user.signIn('Portcullis-Test/1.0 (laptop)')
  const phone = await user.signIn('Portcullis-Test/1.0 (phone)')

  const res = await listSessions(A, laptop.access)
  t.equal(res.statusCode, 200)
  const { items, next_cursor } = res.json()
  t.equal(next_cursor, null, 'one page')
  t.same(items.map((s: { id: string }) => s.id).sort(), [laptop.sid, phone.sid].sort(), 'exactly the two live sessions')
  for (const [s, ua, current] of [[laptop, 'Portcullis-Test/1.0 (laptop)', true], [phone, 'Portcullis-Test/1.0 (phone)', false]] as const) {
    const item = items.find((i: { id: string }) => i.id === s.sid)
    t.match(item, { user_agent: ua, ip: '127.0.0.1', current }, `${ua}: user agent, ip, current=${current}`)
    for (const field of ['created_at', 'last_used_at'] as const) {
      t.ok(Math.abs(Date.parse(item[field]) - Date.now()) < 60_000, `${ua}: ${field} is a recent timestamp`)
    }
  }
  const asPhone = (await listSessions(A, phone.access)).json().items
  t.same(asPhone.filter((i: { current: boolean }) => i.current).map((i: { id: string }) => i.id), [phone.sid],
    'current is true only for the caller\'s session')

  t.test('pagination with ?limit=1', async (t) => {
    const first = (await listSessions(A, laptop.access, '?limit=1')).json()
    t.equal(first.items.length, 1)
    t.type(first.next_cursor, 'string', 'next_cursor on the first page')
    const second = (await listSessions(A, laptop.access, `?limit=1&cursor=${encodeURIComponent(first.next_cursor)}`)).json()
    t.equal(second.items.length, 1)
    t.equal(second.next_cursor, null, 'no further page')
    t.same([first.items[0].id, second.items[0].id].sort(), [laptop.sid, phone.sid].sort(), 'the second page has the other session')
  })

  t.test('DELETE: another user\'s session is 404 and stays live; a malformed id is 422', async (t) => {
    const stranger = await (await newUser()).signIn()
    const res = await deleteSession(A, laptop.access, stranger.sid)
    t.equal(res.statusCode, 404)
    t.equal(res.json().error.code, 'NOT_FOUND')
    await assertLive(t, A, stranger, 'the other user\'s session')

    for (const id of ['ses_nope', 'usr_01jd0000000000000000000000', '..%2Fsessions']) {
      const bad = await deleteSession(A, laptop.access, id)
      t.equal(bad.statusCode, 422, `malformed id ${id}: 422`)
      t.equal(bad.json().error?.code, 'VALIDATION_ERROR')
    }
  })

  t.test('a revoked session disappears from the list', async (t) => {
    t.equal((await deleteSession(A, laptop.access, phone.sid)).statusCode, 204)
    t.equal((await deleteSession(A, laptop.access, phone.sid)).statusCode, 404, 'deleting it again is 404')
    const after = (await listSessions(A, laptop.access)).json()
    t.same(after.items.map((i: { id: string }) => i.id), [laptop.sid])
    t.equal((await logout(A, laptop.access)).statusCode, 204)
    const fresh = await user.signIn()
    t.same((await listSessions(A, fresh.access)).json().items.map((i: { id: string }) => i.id), [fresh.sid], 'logged-out session gone too')
  })
})

t.test('GET /auth/sessions without ?limit uses the default page size', async (t) => {
  const session = await (await newUser()).signIn()
  const res = await A.inject({ method: 'GET', url: '/api/v1/auth/sessions', headers: bearer(session.access) })
  t.equal(res.statusCode, 200, `200 (got ${res.statusCode} ${res.body})`)
})

t.test('POST /auth/password', async (t) => {
  const user = await newUser()
  const [current, other] = [await user.signIn(), await user.signIn()]
  const NEW_PASSWORD = 'copper-walrus-sonnet-19'

  const wrong = await changePassword(A, current.access, 'not-my-password-at-all', NEW_PASSWORD)
  t.equal(wrong.statusCode, 401, 'wrong current password')
  t.equal(wrong.json().error.code, 'INVALID_CREDENTIALS')

  for (const [label, weak] of [['too short', 'short-1'], ['common', 'password1234'], ['equal to the email', user.email]]) {
    const res = await changePassword(A, current.access, STRONG_PASSWORD, weak)
    t.equal(res.statusCode, 422, `${label}: 422`)
    t.equal(res.json().error?.code, 'VALIDATION_ERROR')
    t.equal(res.json().error?.details?.[0]?.field, 'new_password', `${label}: field new_password`)
  }
  await assertLive(t, A, other, 'a refused change revokes nothing')

  const ok = await changePassword(A, current.access, STRONG_PASSWORD, NEW_PASSWORD)
  t.equal(ok.statusCode, 204)
  await assertLive(t, A, current, 'the session that changed the password')
  await assertRevoked(t, A, other, 'another session')

  const old = await login(A, user.email, STRONG_PASSWORD)
  t.equal(old.statusCode, 401, 'the old password no longer logs in')
  t.equal(old.json().error.code, 'INVALID_CREDENTIALS')
  t.equal((await login(A, user.email, NEW_PASSWORD)).statusCode, 200, 'the new password logs in')
})

t.test('an instance started after a revocation refuses the token at once (loaded at start-up)', async (t) => {
  const user = await newUser()
  const [revoked, live] = [await user.signIn(), await user.signIn()]
  t.equal((await logout(A, revoked.access)).statusCode, 204)
  const C = await startInstance(t)
  t.equal(await meStatus(C, revoked.access), 401, 'revoked session refused by the new instance')
  t.equal(await meStatus(C, live.access), 200, 'a live session works on the new instance')
})
