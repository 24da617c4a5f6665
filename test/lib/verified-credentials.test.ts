// The memo of verified credentials is indexed by a credential's last
// characters (src/lib/verified-credentials.ts); it must still answer only the
// exact credential and organization an entry was stored for. Two credentials
// made to share their tail stand for the collision an attacker would try: a
// forged token ending like a victim's must never be answered as the victim.
import t from 'tap'
import { VerifiedCredentials, type VerifiedCredential } from '../../src/lib/verified-credentials.js'

const entry = (userId: string): VerifiedCredential => ({
  kind: 'session', ring: 1, tokenExpiresAt: Infinity, keyExpiresAt: null,
  auth: { method: 'session', userId, orgId: 'org_1', role: 'owner', scopes: [], sessionId: `ses_${userId}` } as never,
})
const TAIL = 'x'.repeat(64) // longer than the indexed tail, so both share it whole

t.test('a credential sharing another\'s tail is not answered as it', async (t) => {
  const memo = new VerifiedCredentials(10)
  const victim = VerifiedCredentials.keyOf(`victim.${TAIL}`, undefined)
  const forged = VerifiedCredentials.keyOf(`forged.${TAIL}`, undefined)
  t.equal(victim.slot, forged.slot, 'the two share a slot (the case under test)')
  memo.remember(victim, entry('usr_victim'), memo.version)
  t.equal(memo.get(forged), undefined, 'the forged credential finds nothing')
  t.equal(memo.get(VerifiedCredentials.keyOf(`victim.${TAIL}`, undefined))?.auth.userId, 'usr_victim', 'the victim\'s own credential is answered')
  memo.forget(forged)
  t.ok(memo.get(victim), 'forgetting the forged credential leaves the victim\'s entry')
  memo.remember(forged, entry('usr_forged'), memo.version)
  t.equal(memo.get(victim), undefined, 'storing the other replaces it: the victim is verified again, never answered as the other')
  t.equal(memo.get(forged)?.auth.userId, 'usr_forged')
})

t.test('the organization asked for is part of the key', async (t) => {
  const memo = new VerifiedCredentials(10)
  const credential = `token.${TAIL}`
  memo.remember(VerifiedCredentials.keyOf(credential, 'org_a'), entry('usr_a'), memo.version)
  t.equal(memo.get(VerifiedCredentials.keyOf(credential, 'org_b')), undefined)
  t.equal(memo.get(VerifiedCredentials.keyOf(credential, undefined)), undefined)
  t.equal(memo.get(VerifiedCredentials.keyOf(credential, 'org_a'))?.auth.userId, 'usr_a')
  // An organization that would end the credential's text does not stand in for the separator.
  memo.remember(VerifiedCredentials.keyOf('short', undefined), entry('usr_short'), memo.version)
  t.equal(memo.get(VerifiedCredentials.keyOf('shor', 't')), undefined)
})

t.test('short credentials, a bound on entries, and emptying', async (t) => {
  const memo = new VerifiedCredentials(2)
  for (const c of ['a', 'b', 'c']) memo.remember(VerifiedCredentials.keyOf(c, undefined), entry(c), memo.version)
  t.equal(memo.get(VerifiedCredentials.keyOf('a', undefined)), undefined, 'the oldest went past the bound')
  t.ok(memo.get(VerifiedCredentials.keyOf('c', undefined)))
  const version = memo.version
  memo.clear()
  memo.remember(VerifiedCredentials.keyOf('d', undefined), entry('d'), version)
  t.equal(memo.get(VerifiedCredentials.keyOf('d', undefined)), undefined, 'a verification that raced an emptying is not stored')
})
