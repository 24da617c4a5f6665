// Migration 0008's backfill of organizations.named_after_user_id, run on a
// database as 0007 left it. Regression (found in review):
// backfill-credits-another-member-of-the-same-name: the backfill credited a
// default name ("Sam's workspace") to any member whose name or local part
// matched, so with two Sams (or two 'alice' local parts) the one who joined
// later could be credited, and the founder's erasure left the name behind.
import t, { type Test } from 'tap'
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MIGRATIONS_FOLDER, openDatabase } from '../../src/db/client.js'
import { freshDatabaseUrl, testConfig, TEST_DATABASE_URL } from '../helpers/app.js'

const BACKFILLED = '0008_organization_named_after'

/** A copy of the migrations folder. */
function migrationsCopy(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'migrations-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  cpSync(MIGRATIONS_FOLDER, dir, { recursive: true })
  return dir
}

/** The migrations folder as it was before `tag`: the journal and files before it. */
function migrationsBefore(t: Test, tag: string): string {
  const dir = migrationsCopy(t)
  const journal = JSON.parse(readFileSync(join(dir, 'meta', '_journal.json'), 'utf8')) as { entries: { idx: number; tag: string }[] }
  const idx = journal.entries.find((e) => e.tag === tag)!.idx
  journal.entries = journal.entries.filter((e) => e.idx < idx)
  writeFileSync(join(dir, 'meta', '_journal.json'), JSON.stringify(journal))
  return dir
}

/** An in-memory PGlite, migrated by Drizzle from the folder given. */
async function inMemory(t: Test) {
  const { PGlite } = await import('@electric-sql/pglite')
  const { drizzle } = await import('drizzle-orm/pglite')
  const { migrate } = await import('drizzle-orm/pglite/migrator')
  const client = new PGlite()
  t.teardown(() => client.close())
  const db = drizzle(client)
  return { client, migrateFrom: (migrationsFolder: string) => migrate(db, { migrationsFolder }) }
}

const hour = (n: number) => new Date(Date.UTC(2026, 0, 1, n)).toISOString()
const user = (id: string, email: string, name: string | null, erased = false) =>
  `('${id}', '${email}', ${name === null ? 'null' : `'${name}'`}, '!', '${hour(0)}', '${hour(0)}', ${erased ? `'${hour(5)}'` : 'null'})`

// Memberships are inserted latecomer first, so a backfill that takes whichever row it meets first takes the wrong one.
const BEFORE_0008 = `
  insert into users (id, email, name, password_hash, created_at, updated_at, erased_at) values
    ${user('usr_a_sam_later', 'sam.later@example.com', 'Sam')}, ${user('usr_b_sam_founder', 'sam.founder@example.com', 'Sam')},
    ${user('usr_a_alice_later', 'alice@two.example', null)}, ${user('usr_b_alice_founder', 'alice@one.example', null)},
    ${user('usr_kim_member', 'kim.member@example.com', 'Kim')}, ${user('usr_kim_owner', 'kim.owner@example.com', 'Kim')},
    ${user('usr_kim_gone', 'kim.gone@example.com', 'Kim')}, ${user('usr_erased', 'erased+usr_erased@invalid', null, true)},
    ${user('usr_acme', 'founder@acme.example', 'Ada')};
  insert into organizations (id, name, credits, created_at, updated_at) values
    ('org_sams', 'Sam''s workspace', 0, '${hour(1)}', '${hour(1)}'),
    ('org_alices', 'alice''s workspace', 0, '${hour(1)}', '${hour(1)}'),
    ('org_kims', 'Kim''s workspace', 0, '${hour(1)}', '${hour(1)}'),
    ('org_erased', 'Pat''s workspace', 0, '${hour(1)}', '${hour(1)}'),
    ('org_acme', 'Acme', 0, '${hour(1)}', '${hour(1)}');
  insert into memberships (org_id, user_id, role, created_at) values
    ('org_sams', 'usr_a_sam_later', 'owner', '${hour(3)}'), ('org_sams', 'usr_b_sam_founder', 'owner', '${hour(1)}'),
    ('org_alices', 'usr_a_alice_later', 'owner', '${hour(2)}'), ('org_alices', 'usr_b_alice_founder', 'owner', '${hour(1)}'),
    ('org_kims', 'usr_kim_member', 'member', '${hour(2)}'), ('org_kims', 'usr_kim_owner', 'owner', '${hour(3)}'),
    ('org_erased', 'usr_erased', 'member', '${hour(2)}'), ('org_erased', 'usr_kim_gone', 'owner', '${hour(3)}'),
    ('org_acme', 'usr_acme', 'owner', '${hour(1)}');`

const EXPECTED = {
  org_sams: 'usr_b_sam_founder', // two Sams: the founder (the membership made with the organization)
  org_alices: 'usr_b_alice_founder', // two 'alice' local parts: the founder
  org_kims: 'usr_kim_owner', // the founder gone, two Kims: the owner before the member who joined earlier
  org_erased: null, // the one it was named after is erased (and nobody else is a Pat)
  org_acme: null, // a chosen name
}

async function check(t: Test, read: () => Promise<{ id: string; named_after_user_id: string | null }[]>) {
  const rows = await read()
  t.same(Object.fromEntries(rows.map((r) => [r.id, r.named_after_user_id])), EXPECTED, 'each default name credited to its founder, else its earliest owner')
}

t.test('backfill-credits-another-member-of-the-same-name (PGlite)', async (t) => {
  const { client, migrateFrom } = await inMemory(t)
  await migrateFrom(migrationsBefore(t, BACKFILLED))
  await client.exec(BEFORE_0008)
  await migrateFrom(MIGRATIONS_FOLDER)
  await check(t, async () => (await client.query<{ id: string; named_after_user_id: string | null }>('select id, named_after_user_id from organizations order by id')).rows)
})

t.test('backfill-credits-another-member-of-the-same-name (PostgreSQL, migrated as an instance starts)', { skip: TEST_DATABASE_URL ? false : 'needs PostgreSQL (TEST_DATABASE_URL)' }, async (t) => {
  const url = await freshDatabaseUrl(t)
  const { default: postgres } = await import('postgres')
  const { drizzle } = await import('drizzle-orm/postgres-js')
  const { migrate } = await import('drizzle-orm/postgres-js/migrator')
  const direct = postgres(url, { max: 1, onnotice: () => {} })
  t.teardown(() => direct.end({ timeout: 1 }))
  await migrate(drizzle(direct), { migrationsFolder: migrationsBefore(t, BACKFILLED) })
  await direct.unsafe(BEFORE_0008)
  const handle = await openDatabase(testConfig({ DATABASE_URL: url }))
  t.teardown(() => handle.close())
  await handle.migrate()
  await check(t, () => direct<{ id: string; named_after_user_id: string | null }[]>`select id, named_after_user_id from organizations order by id`)
})

// 0008 was edited before any release; a database that ran it as first written is not broken:
// Drizzle applies what its journal dates after the last applied migration and never re-reads the hash of one applied.
t.test('a database migrated with 0008 as first written migrates again without error, and runs nothing twice', async (t) => {
  const { client, migrateFrom } = await inMemory(t)
  const earlier = migrationsCopy(t)
  const file = join(earlier, `${BACKFILLED}.sql`)
  const written = readFileSync(file, 'utf8')
  writeFileSync(file, written.replace(/^UPDATE [^;]*;/m, 'SELECT 1;'))
  t.not(readFileSync(file, 'utf8'), written, 'another 0008 (another hash) was applied')
  await migrateFrom(earlier)
  await migrateFrom(MIGRATIONS_FOLDER)
  const journal = JSON.parse(readFileSync(join(MIGRATIONS_FOLDER, 'meta', '_journal.json'), 'utf8')) as { entries: unknown[] }
  const [applied] = (await client.query<{ n: number }>('select count(*)::int as n from drizzle.__drizzle_migrations')).rows
  t.equal(applied!.n, journal.entries.length, 'each migration applied once')
})
