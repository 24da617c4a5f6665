// PasswordHasher's wait line is bounded: past ARGON2_QUEUE_MAX waiting hashes it
// refuses with 503 + Retry-After instead of queueing without limit, and that
// refusal is never mistaken for a wrong password.
import t from 'tap'
import { AppError } from '../../src/errors.js'
import { PasswordHasher } from '../../src/lib/password-hasher.js'

const PARAMS = { memoryCost: 4096, timeCost: 1, parallelism: 1 }

function isBusy(err: unknown): boolean {
  return err instanceof AppError && err.code === 'SERVICE_UNAVAILABLE' && err.statusCode === 503
    && err.headers?.['retry-after'] === '1'
}

t.test('concurrency 1, queue 2: of 10 hashes at once, 1 runs, 2 wait, 7 are refused with 503', async (t) => {
  const hasher = new PasswordHasher(PARAMS, 1, 2)
  const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => hasher.hash(`password-${i}`)))
  const resolved = results.filter((r) => r.status === 'fulfilled')
  const rejected = results.filter((r) => r.status === 'rejected')
  t.equal(resolved.length, 3, 'exactly 3 resolve')
  t.equal(rejected.length, 7, 'exactly 7 reject')
  t.ok(rejected.every((r) => isBusy(r.reason)), 'every refusal is the 503 AppError with Retry-After: 1')
  t.ok(resolved.every((r) => r.value.startsWith('$argon2id$')), 'the admitted ones are real hashes')
  t.ok((await hasher.hash('after the burst')).startsWith('$argon2id$'), 'slots are released afterwards')
})

t.test('verify: a full queue rejects (503), it does not answer false; a corrupt hash still answers false', async (t) => {
  const hasher = new PasswordHasher(PARAMS, 1, 1)
  const hash = await hasher.hash('correct horse')
  const results = await Promise.allSettled(Array.from({ length: 5 }, () => hasher.verify(hash, 'correct horse')))
  t.same(results.filter((r) => r.status === 'fulfilled').map((r) => r.value), [true, true], 'running + waiting: verified')
  t.ok(results.filter((r) => r.status === 'rejected').every((r) => isBusy(r.reason)), 'the rest: 503')
  t.equal(results.filter((r) => r.status === 'rejected').length, 3)
  t.equal(await hasher.verify('$argon2id$corrupt', 'correct horse'), false, 'a corrupt stored hash is a failed check')
  t.equal(await hasher.verify(hash, 'wrong'), false)
})

t.test('verifyAgainstNothing: a refusal while making the dummy hash does not stick', async (t) => {
  const hasher = new PasswordHasher(PARAMS, 1, 1)
  const busy = [hasher.hash('running'), hasher.hash('waiting')]
  await t.rejects(hasher.verifyAgainstNothing('x'), { code: 'SERVICE_UNAVAILABLE' }, 'refused while the line is full')
  await Promise.all(busy)
  t.equal(await hasher.verifyAgainstNothing('x'), false, 'the next call makes its dummy hash and fails as it should')
})
