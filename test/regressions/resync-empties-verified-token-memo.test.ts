// Every periodic resync reloaded the key ring and bumped its generation, so
// the memo of verified tokens (and every remembered credential) was emptied
// every few seconds even though no key had changed: each busy token paid a
// full ECDSA check again. Only a real change of the keys moves it now.
import t from 'tap'
import { buildTestApp } from '../helpers/app.js'

t.test('a reload that finds the same keys keeps the generation; a rotation moves it', async (t) => {
  const app = await buildTestApp(t)
  const before = app.keyRing.generation
  await app.keyRing.reload()
  await app.keyRing.reload()
  t.equal(app.keyRing.generation, before, 'the same keys: remembered verifications stay')
  await app.rotateSigningKeys()
  t.not(app.keyRing.generation, before, 'a rotation changes the keys: everything remembered is dropped')
  const rotated = app.keyRing.generation
  await app.keyRing.reload()
  t.equal(app.keyRing.generation, rotated, 'and stays put again afterwards')
})
