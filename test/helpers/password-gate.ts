// A gate on the password hasher: makes a race window certain in regression tests.
import type { Test } from 'tap'
import type { App } from '../../src/app.js'
import { within } from './app.js'

/** Holds the next password check, once argon2 has answered it, until released (later checks pass through). */
export function holdNextPasswordCheck(t: Test, app: App) {
  const hasher = app.passwordHasher
  const verify = hasher.verify.bind(hasher)
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  let held = false
  hasher.verify = async (hash, password) => {
    hasher.verify = verify
    const ok = await verify(hash, password)
    held = true
    await gate
    return ok
  }
  t.teardown(() => { hasher.verify = verify; release() })
  return {
    async checked() { t.ok(await within(5_000, () => held) >= 0, 'the password was checked (right) and is held') },
    release,
  }
}
