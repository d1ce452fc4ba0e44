import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fsck } from '../../src/store/fsck.js'
import { GARBAGE_START, collectGarbageStep } from '../../src/store/snapshots.js'
import type { LogRecord } from '../../src/log/records.js'
import { readFile } from '../helpers/replica.js'
import { putFile, stateDump, tempVolume, type TestVolume } from '../helpers/volume.js'

const KiB = 1024
const BIG = { maxKeys: 1e9, maxBlocks: 1e9 }

/** The versioned state (blocks, entries, inodes, xattrs), without the counters and tables that record counts differ in. */
async function versionedDump (v: TestVolume): Promise<Array<[string, string]>> {
  return (await stateDump(v)).filter(([k]) => ['62', '64', '69', '78'].includes(k.slice(0, 2)))
}

/** Versions no view can see, as one unbounded step would find them now. */
async function garbageLeft (v: TestVolume): Promise<number> {
  return (await collectGarbageStep(v.state.store, v.state.layers, GARBAGE_START, BIG)).keys
}

/** Files, a snapshot, then the live files overwritten and renamed: deleting the snapshot leaves `files` files' old blocks as garbage. */
async function volumeWithGarbage (files: number, size: number): Promise<TestVolume> {
  const v = await tempVolume()
  for (let i = 0; i < files; i++) await putFile(v.vol, `/f${i}`, Buffer.alloc(size, i))
  await v.vol.setxattr('/f0', 'user.k', Buffer.from('old'), 0)
  await v.vol.createSnapshot('s')
  for (let i = 0; i < files; i++) await putFile(v.vol, `/g${i}`, Buffer.alloc(size, 100 + i))
  for (let i = 0; i < files; i++) await v.vol.rename(`/g${i}`, `/f${i}`)
  await v.vol.setxattr('/f1', 'user.k', Buffer.from('new'), 0)
  return v
}

t.test('a collection spread over many small steps, with writes between them, frees exactly what one step frees', async t => {
  const a = await volumeWithGarbage(12, 150 * KiB)
  const b = await volumeWithGarbage(12, 150 * KiB)
  t.teardown(async () => { await a.close(); await b.close() })
  const usedBefore = a.state.counters.usedBytes
  t.equal(b.state.counters.usedBytes, usedBefore)
  for (const v of [a, b]) await v.log.apply({ type: 'snapshot-delete', name: 's' })
  t.ok(a.state.counters.garbageFrom !== undefined, 'the delete leaves a collection pending')
  t.equal(a.state.counters.usedBytes, usedBefore, 'and frees nothing by itself')
  t.ok(await garbageLeft(a) > 0, 'garbage is there before the steps')

  let steps = 0
  while (a.state.counters.garbageFrom !== undefined) {
    await a.log.apply({ type: 'collect-garbage', maxKeys: 5, maxBlocks: 2 })
    await putFile(a.vol, `/between${steps}`, `written after step ${steps}`)
    steps++
  }
  await b.log.apply({ type: 'collect-garbage', ...BIG })
  for (let i = 0; i < steps; i++) await putFile(b.vol, `/between${i}`, `written after step ${i}`)
  t.equal(b.state.counters.garbageFrom, undefined, 'one unbounded step finishes the collection')
  t.ok(steps >= 10, `the small limits made ${steps} steps`)

  // Inode values hold the times of writes made at other moments in a and b: compare their keys only.
  const keysAndData = async (v: TestVolume): Promise<string[]> => (await versionedDump(v)).map(([k, val]) => k.startsWith('62') ? `${k}=${val}` : k)
  t.same(await keysAndData(a), await keysAndData(b), 'both stores hold the same versions and data')
  t.equal(a.state.counters.usedBytes, b.state.counters.usedBytes, 'and count the same bytes')
  let written = 0
  for (let i = 0; i < steps; i++) written += `written after step ${i}`.length
  t.equal(usedBefore + written - a.state.counters.usedBytes, 12 * 150 * KiB, 'the overwritten data (12 x 150 KiB) was freed')
  t.equal(await garbageLeft(a), 0, 'no garbage is left')
  t.equal((await readFile(a.vol, '/between3')).toString(), 'written after step 3', 'a write made between steps is there')
  t.same(await readFile(a.vol, '/f7'), Buffer.alloc(150 * KiB, 107), 'live files are intact')
  await t.rejects(a.vol.getxattr('/f0', null, 'user.k'), { code: 'ENODATA' }, 'the replaced f0 (and its xattr) went with the snapshot')
  t.same(await a.vol.getxattr('/f1', null, 'user.k'), Buffer.from('new'))
  for (const v of [a, b]) {
    const r = await fsck(v.state)
    t.same(r.problems, [], 'fsck is clean')
    t.equal(r.dataBytes, v.state.counters.usedBytes)
  }
})

t.test('writes queued while a collection runs are applied between its steps, not after all of it', async t => {
  // The volume's own step limits apply: 30 MiB of garbage is 480 blocks, more than one step reads.
  const a = await volumeWithGarbage(30, 1024 * KiB)
  t.teardown(a.close)
  const order: string[] = []
  let queued: Promise<void> | null = null
  a.log.onRecord((_seq, rec: LogRecord) => {
    order.push(rec.type === 'collect-garbage' ? 'gc' : rec.type)
    // A writer arrives while the first step is being applied.
    if (rec.type === 'collect-garbage' && queued === null) queued = putFile(a.vol, '/late', 'late writer')
  })
  const { freedBytes } = await a.vol.deleteSnapshot('s')
  await queued
  const gcSteps = order.filter(x => x === 'gc').length
  const firstWrite = order.indexOf('mknod')
  t.ok(gcSteps >= 2, `the collection took ${gcSteps} steps`)
  t.ok(firstWrite > 0 && firstWrite < order.lastIndexOf('gc'), `the late writer's records came between steps: ${order.join(' ')}`)
  t.equal(freedBytes, 30 * 1024 * KiB, 'the delete reports every byte the collection freed')
  t.equal((await readFile(a.vol, '/late')).toString(), 'late writer')
  t.equal(await garbageLeft(a), 0)
  t.same((await fsck(a.state)).problems, [])
})

t.test('a collection cut off by a stop resumes from the cursor in the store', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'replfs-gc-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const a = await tempVolume({ dir })
  for (let i = 0; i < 6; i++) await putFile(a.vol, `/f${i}`, Buffer.alloc(200 * KiB, i))
  await a.vol.createSnapshot('s')
  for (let i = 0; i < 6; i++) await putFile(a.vol, `/n${i}`, Buffer.alloc(10, i))
  for (let i = 0; i < 6; i++) await a.vol.unlink(`/f${i}`)
  const used = a.state.counters.usedBytes
  await a.log.apply({ type: 'snapshot-delete', name: 's' })
  await a.log.apply({ type: 'collect-garbage', maxKeys: 4, maxBlocks: 1 })
  const cursor = a.state.counters.garbageFrom
  t.ok(cursor !== undefined && cursor !== GARBAGE_START.toString('hex'), 'the first step moved the cursor')
  await a.close()

  const b = await tempVolume({ dir })
  t.teardown(b.close)
  t.equal(b.state.counters.garbageFrom, cursor, 'the cursor survived the restart')
  const freed = await b.vol.collectGarbage()
  t.equal(b.state.counters.garbageFrom, undefined, 'and the collection finished')
  t.equal(used - b.state.counters.usedBytes, 6 * 200 * KiB, 'all the unlinked files\' bytes are freed in the end')
  t.ok(freed > 0 && freed < 6 * 200 * KiB, `the resumed run freed the rest (${freed} bytes)`)
  t.equal(await garbageLeft(b), 0)
  t.same((await fsck(b.state)).problems, [])
})

t.test('a collect-garbage record with bad limits is refused and changes nothing; one with nothing pending is a no-op', async t => {
  const a = await volumeWithGarbage(2, 70 * KiB)
  t.teardown(a.close)
  const before = await stateDump(a)
  for (const bad of [{ maxKeys: 0, maxBlocks: 1 }, { maxKeys: 1, maxBlocks: -1 }, { maxKeys: 1.5, maxBlocks: 1 }, { maxKeys: '9', maxBlocks: 1 }]) {
    await t.rejects(a.log.apply({ type: 'collect-garbage', ...bad } as unknown as LogRecord), { code: 'RECORD_INVALID' }, JSON.stringify(bad))
  }
  t.same(await stateDump(a), before, 'nothing changed')
  const seq = a.state.counters.seq
  await a.log.apply({ type: 'collect-garbage', maxKeys: 1, maxBlocks: 1 })
  t.equal(a.state.counters.seq, seq + 1)
  t.equal(a.state.counters.garbageFrom, undefined)
  t.same(await versionedDump(a), before.filter(([k]) => ['62', '64', '69', '78'].includes(k.slice(0, 2))), 'an idle step deletes nothing')
})
