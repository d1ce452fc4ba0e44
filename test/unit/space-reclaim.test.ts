import t, { type Test } from 'tap'
import { createHash, randomFillSync } from 'node:crypto'
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Store, type BatchOp } from '../../src/store/store.js'
import type { ReclaimOptions } from '../../src/store/space-reclaim.js'
import { BLOCK_SIZE, blockBase, metaKey, withLayer } from '../../src/store/keys.js'

t.setTimeout(240_000)

const MiB = 1024 * 1024
const BLOCKS = 64 // blocks per file: 4 MiB
const FAST: ReclaimOptions = { idleMs: 200, thresholdBytes: 4 * MiB, lazyMs: 1000 }

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

function tempDir (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'replfs-reclaim-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Bytes the store's directory takes on disk (what du counts). */
function du (dir: string): number {
  let total = 0
  for (const name of readdirSync(dir)) total += statSync(join(dir, name)).blocks * 512
  return total
}

const blockKey = (ino: number, block: number): Buffer => withLayer(blockBase(ino, block), 1)

/** Deterministic block content: file `ino`, block, version. */
function content (ino: number, block: number, version: number): Buffer {
  const b = randomFillSync(Buffer.alloc(BLOCK_SIZE))
  b.writeUInt32BE(ino, 0); b.writeUInt32BE(block, 4); b.writeUInt32BE(version, 8)
  return b
}

/** Writes files [from, to) in batches of 16 blocks, as the volume does (with a metadata key), and keeps each block's digest. */
async function writeFiles (s: Store, from: number, to: number, version: number, digests: Map<string, string>): Promise<void> {
  for (let ino = from; ino < to; ino++) {
    for (let b = 0; b < BLOCKS; b += 16) {
      const ops: BatchOp[] = []
      for (let j = b; j < b + 16; j++) {
        const v = content(ino, j, version)
        ops.push({ type: 'put', key: blockKey(ino, j), value: v })
        digests.set(`${ino}/${j}`, createHash('sha256').update(v).digest('hex'))
      }
      ops.push({ type: 'put', key: metaKey('counters'), value: Buffer.from(`${ino}.${b}.${version}`) })
      await s.write(ops)
    }
  }
}

async function deleteFiles (s: Store, from: number, to: number, digests: Map<string, string>): Promise<void> {
  for (let ino = from; ino < to; ino++) {
    const ops: BatchOp[] = []
    for (let j = 0; j < BLOCKS; j++) { ops.push({ type: 'del', key: blockKey(ino, j) }); digests.delete(`${ino}/${j}`) }
    await s.write(ops)
  }
}

/** Every block the digests name reads back with that digest, and no other block of files [0, maxIno) exists. */
async function checkContents (t: Test, s: Store, digests: Map<string, string>, maxIno: number): Promise<void> {
  let wrong = 0
  let stray = 0
  for (let ino = 0; ino < maxIno; ino++) {
    const got = await s.getMany(Array.from({ length: BLOCKS }, (_v, j) => blockKey(ino, j)))
    for (let j = 0; j < BLOCKS; j++) {
      const want = digests.get(`${ino}/${j}`)
      const v = got[j]
      if (want === undefined) { if (v !== undefined) stray++; continue }
      if (v === undefined || createHash('sha256').update(v).digest('hex') !== want) wrong++
    }
  }
  t.equal(wrong, 0, `all ${digests.size} live blocks read back with their digests`)
  t.equal(stray, 0, 'no deleted block reads back')
}

t.test('deleting most of the data gives its space back once idle, and the rest reads back identical', async t => {
  const dir = tempDir(t)
  const s = await Store.open(dir, { create: true, reclaim: FAST })
  t.teardown(async () => { if (s.status === 'open') await s.close() })
  const digests = new Map<string, string>()
  await writeFiles(s, 10, 34, 1, digests) // 24 files, 96 MiB
  await writeFiles(s, 30, 34, 2, digests) // the 4 that stay, overwritten
  await deleteFiles(s, 10, 30, digests) // 20 of 24 deleted
  await s.settle()
  const live = digests.size * BLOCK_SIZE
  const before = du(dir)
  t.ok(before > 4 * live, `before the idle period the store holds the deleted data too (${(before / MiB).toFixed(1)} MiB for ${(live / MiB).toFixed(1)} MiB live)`)
  await s.reclaimed()
  const after = du(dir)
  const bound = 1.5 * live + 2 * MiB
  t.ok(after <= bound, `after it: ${(after / MiB).toFixed(1)} MiB <= 1.5 x ${(live / MiB).toFixed(1)} MiB live + 2 MiB`)
  t.ok(s.reclaimStats.steps > 0, 'reclaim took compaction steps')
  await checkContents(t, s, digests, 40)
  await s.close()
  const again = await Store.open(dir, { reclaim: FAST })
  t.teardown(async () => { if (again.status === 'open') await again.close() })
  await checkContents(t, again, digests, 40)
  await again.close()
})

t.test('an emptied store returns to near zero', async t => {
  const dir = tempDir(t)
  const s = await Store.open(dir, { create: true, reclaim: FAST })
  t.teardown(async () => { if (s.status === 'open') await s.close() })
  const digests = new Map<string, string>()
  await writeFiles(s, 1, 17, 1, digests)
  await deleteFiles(s, 1, 17, digests)
  await s.reclaimed()
  const after = du(dir)
  t.ok(after < MiB, `64 MiB written and deleted: ${(after / 1024).toFixed(0)} KiB left`)
  await checkContents(t, s, digests, 20)
  await s.close()
})

t.test('reclaim never runs while writes keep coming faster than the idle delay', async t => {
  const dir = tempDir(t)
  const s = await Store.open(dir, { create: true, reclaim: { ...FAST, idleMs: 400 } })
  t.teardown(async () => { if (s.status === 'open') await s.close() })
  const digests = new Map<string, string>()
  await writeFiles(s, 1, 9, 1, digests)
  await deleteFiles(s, 1, 9, digests)
  // A small write every 100 ms for 3 s: the store is never idle for 400 ms.
  const until = Date.now() + 3000
  let n = 0
  while (Date.now() < until) {
    await s.write([{ type: 'put', key: metaKey('counters'), value: Buffer.from(String(n++)) }])
    if (s.reclaimStats.running) break
    await sleep(100)
  }
  t.equal(s.reclaimStats.steps, 0, `no compaction step during ${n} writes 100 ms apart`)
  t.notOk(s.reclaimStats.running, 'and none running')
  t.ok(s.reclaimStats.debtBytes >= 32 * MiB, 'the debt is still counted')
  const held = du(dir)
  await s.reclaimed()
  t.ok(s.reclaimStats.steps > 0, 'once the writes stop, it runs')
  t.ok(du(dir) < held / 4, `and the space comes back (${(held / MiB).toFixed(1)} -> ${(du(dir) / MiB).toFixed(1)} MiB)`)
  await s.close()
})

t.test('data written while a compaction step runs is intact', async t => {
  const dir = tempDir(t)
  // One step covers the whole debt, so the step is long enough to write into.
  const s = await Store.open(dir, { create: true, reclaim: { ...FAST, stepBytes: 1024 * MiB } })
  t.teardown(async () => { if (s.status === 'open') await s.close() })
  const digests = new Map<string, string>()
  await writeFiles(s, 10, 30, 1, digests)
  await writeFiles(s, 10, 20, 2, digests) // overwrites: old versions below new ones
  await deleteFiles(s, 14, 26, digests)
  await s.settle()
  const t0 = Date.now()
  while (!s.reclaimStats.running && Date.now() - t0 < 20_000) await sleep(2)
  t.ok(s.reclaimStats.running, 'a compaction step is running')
  // Into the compacted range: new versions of kept files, files in deleted ranges made again, and deletes.
  await writeFiles(s, 12, 14, 3, digests)
  await writeFiles(s, 20, 22, 4, digests)
  await deleteFiles(s, 26, 27, digests)
  await s.reclaimed()
  await checkContents(t, s, digests, 32)
  await s.close()
  const again = await Store.open(dir, { reclaim: FAST })
  t.teardown(async () => { if (again.status === 'open') await again.close() })
  await checkContents(t, again, digests, 32)
  await again.close()
})

t.test('what is left to reclaim survives a restart', async t => {
  const dir = tempDir(t)
  const s = await Store.open(dir, { create: true, reclaim: { ...FAST, idleMs: 60_000 } })
  t.teardown(async () => { if (s.status === 'open') await s.close() })
  const digests = new Map<string, string>()
  await writeFiles(s, 1, 5, 1, digests)
  await writeFiles(s, 5, 13, 1, digests)
  await deleteFiles(s, 5, 13, digests)
  await s.close() // long before it would have been idle
  const held = du(dir)
  const again = await Store.open(dir, { reclaim: FAST })
  t.teardown(async () => { if (again.status === 'open') await again.close() })
  t.ok(again.reclaimStats.debtBytes >= 32 * MiB, `the reopened store knows the debt (${(again.reclaimStats.debtBytes / MiB).toFixed(0)} MiB)`)
  await again.reclaimed()
  const after = du(dir)
  t.ok(after <= 1.5 * digests.size * BLOCK_SIZE + 2 * MiB, `its space comes back after the restart (${(held / MiB).toFixed(1)} -> ${(after / MiB).toFixed(1)} MiB)`)
  await checkContents(t, again, digests, 16)
  await again.close()
})
