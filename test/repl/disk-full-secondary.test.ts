import t from 'tap'
import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { tempDir } from '../helpers/mount.js'
import { assertIdentical, startPair, status, waitFor } from '../helpers/replicated.js'

t.setTimeout(300_000)

// A secondary whose disk fills stops taking records, keeps what it holds, says why in its own and
// the primary's status, and goes on by itself once there is space again.

const MiB = 1 << 20
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

t.test('a secondary whose disk fills keeps what it holds, both statuses say DISK_FULL, and it catches up once space returns', async t => {
  const disk = tempDir()
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', disk])
  t.teardown(() => { try { execFileSync('umount', ['-l', disk]) } catch {} fs.rmSync(disk, { recursive: true, force: true }) })
  const pair = await startPair(t, { mode: 'async', secondaryStore: join(disk, 'store-b') })
  const { primary, secondary } = pair
  const first = randomBytes(2 * MiB)
  fs.writeFileSync(join(primary.mnt, 'first'), first)
  await waitFor('the secondary to hold the first file', async () => await status(primary), s => s.replication.ackedSeq === s.seq, 30_000)
  // Random data: LevelDB compresses, so only incompressible bytes fill the 40 MiB disk.
  for (let i = 0; i < 16; i++) fs.writeFileSync(join(primary.mnt, `f${i}`), randomBytes(4 * MiB))

  const s = await waitFor('the secondary to report its disk full', async () => await status(secondary), x => x.replication.lastError?.code === 'DISK_FULL', 60_000)
  t.match(s.replication.lastError?.message, /disk is full/, `the secondary's status: ${s.replication.lastError?.message.slice(0, 80)}`)
  const p = await waitFor('the primary to report its peer\'s disk full', async () => await status(primary), x => x.replication.lastError?.code === 'DISK_FULL', 60_000)
  t.match(p.replication.lastError?.message, /secondary's disk is full/, `the primary's status: ${p.replication.lastError?.message.slice(0, 80)}`)
  t.equal(p.replication.connected, false, 'the primary is not streaming to it')
  t.ok((p.replication.ackedSeq ?? 0) < p.seq, `the secondary acknowledged ${String(p.replication.ackedSeq)} of ${p.seq} records`)

  const more = randomBytes(1 * MiB)
  fs.writeFileSync(join(primary.mnt, 'while-full'), more)
  t.equal(sha(fs.readFileSync(join(primary.mnt, 'while-full'))), sha(more), 'the primary keeps taking writes')
  t.equal(sha(fs.readFileSync(join(secondary.mnt, 'first'))), sha(first), 'the secondary still serves what it held')
  const held = (await status(secondary)).seq

  execFileSync('mount', ['-o', 'remount,size=256m', disk])
  await assertIdentical(t, pair, 90_000)
  const after = await status(secondary)
  t.ok(after.seq > held, `the secondary went on from seq ${held} to ${after.seq} by itself`)
  t.equal(sha(fs.readFileSync(join(secondary.mnt, 'while-full'))), sha(more), 'and holds what was written while it was full')
})
