import t from 'tap'
t.setTimeout(180_000)
import fc from 'fast-check'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fsck } from '../../src/store/fsck.js'
import { nowNs } from '../../src/fs/clock.js'
import { GARBAGE_START, collectGarbageStep } from '../../src/store/snapshots.js'
import type { LogRecord } from '../../src/log/records.js'
import { type TreeEntry, readFile, treeDump } from '../helpers/replica.js'
import { pattern } from '../helpers/workload.js'
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

t.test('rotating snapshots (take one, delete the oldest) keeps every chain short: deleted snapshots\' layers merge', async t => {
  const a = await tempVolume()
  t.teardown(a.close)
  const KEEP = 3
  const expected = new Map<string, Record<string, TreeEntry>>()
  for (let i = 0; i < 24; i++) {
    await putFile(a.vol, `/day${i}`, pattern(70 * KiB + i, i))
    if (i > 0) await a.vol.unlink('/log')
    await putFile(a.vol, '/log', pattern(130 * KiB, 1000 + i)) // rewritten every round
    if (i % 3 === 0 && i > 0) await a.vol.unlink(`/day${i - 1}`)
    await a.vol.createSnapshot(`s${i}`)
    expected.set(`s${i}`, await treeDump(a.vol, `/.snapshots/s${i}`))
    if (i >= KEEP) {
      await a.vol.deleteSnapshot(`s${i - KEEP}`)
      expected.delete(`s${i - KEEP}`)
    }
    t.ok(a.state.layers.live.length <= a.state.snapshots.length + 2, `round ${i}: live chain ${a.state.layers.live.length} layers for ${a.state.snapshots.length} snapshots`)
  }
  t.equal(a.state.layers.merging, undefined, 'no merge is left pending')
  t.ok(a.state.layers.live.length <= KEEP + 2, `the live chain has ${a.state.layers.live.length} layers after 24 creates (without merging: 25)`)
  for (const s of a.state.snapshots) t.ok(s.chain.length <= KEEP + 1, `${s.name}: ${s.chain.length} layers`)
  for (const [name, tree] of expected) t.same(await treeDump(a.vol, `/.snapshots/${name}`), tree, `${name} reads as when it was taken`)
  t.same(await readFile(a.vol, '/log'), pattern(130 * KiB, 1023), 'the live volume is intact')
  t.equal(await garbageLeft(a), 0, 'nothing unreachable is stored')
  t.same((await fsck(a.state)).problems, [], 'fsck is clean')
})

t.test('while a merge runs in small steps, with writes between them, every view reads the same at every step', async t => {
  const a = await tempVolume()
  t.teardown(a.close)
  for (let i = 0; i < 8; i++) await putFile(a.vol, `/f${i}`, pattern(100 * KiB, i))
  await a.vol.createSnapshot('old')
  for (let i = 0; i < 8; i += 2) await putFile(a.vol, `/g${i}`, pattern(90 * KiB, 50 + i))
  await a.vol.rename('/g0', '/f0')
  await a.vol.setxattr('/f1', 'user.k', Buffer.from('v1'), 0)
  await a.vol.createSnapshot('mid')
  await putFile(a.vol, '/h', 'after mid')
  await a.vol.createSnapshot('new')
  const views = async (): Promise<unknown> => ({ mid: await treeDump(a.vol, '/.snapshots/mid'), new: await treeDump(a.vol, '/.snapshots/new') })
  const before = await views()
  const midChain = a.state.snapshot('mid')!.chain.length

  // Deleting 'old' leaves its layer held by exactly the chains that hold the one above it.
  await a.log.apply({ type: 'snapshot-delete', name: 'old' })
  t.ok((a.state.layers.merging ?? []).length > 0, `merges pending: ${JSON.stringify(a.state.layers.merging)}`)
  let steps = 0
  while (a.state.counters.garbageFrom !== undefined) {
    await a.log.apply({ type: 'collect-garbage', maxKeys: 3, maxBlocks: 1 })
    t.same(await views(), before, `after step ${steps} the snapshots read the same`)
    await putFile(a.vol, `/w${steps}`, `write ${steps}`)
    steps++
  }
  t.ok(steps >= 10, `${steps} steps`)
  t.equal(a.state.layers.merging, undefined, 'the pass ended the merge')
  t.ok(a.state.snapshot('mid')!.chain.length < midChain, `mid's chain went from ${midChain} to ${a.state.snapshot('mid')!.chain.length} layers`)
  t.same(await views(), before)
  t.equal((await readFile(a.vol, '/w4')).toString(), 'write 4')
  t.equal(await garbageLeft(a), 0)
  t.same((await fsck(a.state)).problems, [])
})

t.test('property: snapshot commands arriving in the middle of a collection (merges pending) never change what any view reads, and the end state holds no garbage', async t => {
  type Op = { k: 'write', f: number, seed: number, len: number } | { k: 'create' | 'delete' | 'refresh' | 'restore', s: number } | { k: 'step', keys: number, blocks: number }
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 3, arbitrary: fc.record({ k: fc.constant('write' as const), f: fc.nat(3), seed: fc.nat(255), len: fc.integer({ min: 1, max: 200 * KiB }) }) },
    { weight: 3, arbitrary: fc.record({ k: fc.constant('create' as const), s: fc.nat(2) }) },
    { weight: 3, arbitrary: fc.record({ k: fc.constantFrom('delete' as const, 'refresh' as const, 'restore' as const), s: fc.nat(2) }) },
    { weight: 4, arbitrary: fc.record({ k: fc.constant('step' as const), keys: fc.integer({ min: 1, max: 6 }), blocks: fc.integer({ min: 1, max: 3 }) }) }
  )
  const seen = { stepsWithMerges: 0, commandsMidCollection: 0 }
  await t.resolves(fc.assert(fc.asyncProperty(fc.array(op, { minLength: 10, maxLength: 60 }), async ops => {
    const a = await tempVolume()
    try {
      const dumps = async (): Promise<Record<string, unknown>> => {
        const out: Record<string, unknown> = { live: await treeDump(a.vol, '/') }
        for (const s of a.state.snapshots) out[s.name] = await treeDump(a.vol, `/.snapshots/${s.name}`)
        return out
      }
      for (const o of ops) {
        const name = 's' + ('s' in o ? o.s : '')
        const exists = a.state.snapshot(name) !== undefined
        if (o.k === 'write') {
          const p = `/f${o.f}`
          if (await a.vol.getattr(p).then(() => true, () => false)) await a.vol.unlink(p)
          await putFile(a.vol, p, pattern(o.len, o.seed))
        } else if (o.k === 'step') {
          if (a.state.counters.garbageFrom === undefined) continue
          const before = await dumps()
          if ((a.state.layers.merging ?? []).length > 0) seen.stepsWithMerges++
          await a.log.apply({ type: 'collect-garbage', maxKeys: o.keys, maxBlocks: o.blocks })
          assert.deepStrictEqual(await dumps(), before, 'a collection step changed what a view reads')
        } else if (o.k === 'create') {
          if (a.state.counters.garbageFrom !== undefined) seen.commandsMidCollection++
          if (!exists) await a.log.apply({ type: 'snapshot-create', name, time: nowNs() })
        } else if (exists) {
          if (a.state.counters.garbageFrom !== undefined) seen.commandsMidCollection++
          await a.log.apply(o.k === 'delete' ? { type: 'snapshot-delete', name } : { type: `snapshot-${o.k}`, name, time: nowNs() })
          // Nothing open here: orphans a restore brings back are freed as the volume would.
          if (o.k === 'restore') await a.vol.purgeOrphans()
        }
      }
      const before = await dumps()
      while (a.state.counters.garbageFrom !== undefined) await a.log.apply({ type: 'collect-garbage', maxKeys: 7, maxBlocks: 2 })
      assert.deepStrictEqual(await dumps(), before, 'finishing the collection changed what a view reads')
      assert.equal(a.state.layers.merging, undefined)
      // A write that replaces data in a layer only the live view still holds leaves the old
      // version stored (and counted) until the next command's collection (docs/snapshots.md):
      // one more command after the last write, then nothing unreachable may be left.
      await a.log.apply({ type: 'snapshot-create', name: 'last', time: nowNs() })
      await a.log.apply({ type: 'snapshot-delete', name: 'last' })
      while (a.state.counters.garbageFrom !== undefined) await a.log.apply({ type: 'collect-garbage', maxKeys: 7, maxBlocks: 2 })
      assert.deepStrictEqual(await dumps(), before, 'a create and delete changed what a view reads')
      assert.equal(await garbageLeft(a), 0, 'garbage left after a collection that followed every write')
      assert.deepStrictEqual((await fsck(a.state)).problems, [])
      // Each chain is at most: its own top (if it takes writes), one layer per snapshot boundary in it, the bottom.
      for (const c of [a.state.layers.live, ...a.state.snapshots.map(s => s.chain)]) assert.ok(c.length <= a.state.snapshots.length + 2, `chain ${JSON.stringify(c)}`)
    } finally {
      await a.close()
    }
  }), { numRuns: 40, seed: Number(process.env.FC_SEED ?? Date.now() % 100000) }), 'held for 40 random command sequences')
  t.ok(seen.stepsWithMerges > 10 && seen.commandsMidCollection > 10, `the runs took ${seen.stepsWithMerges} steps with merges pending and ${seen.commandsMidCollection} commands in the middle of a collection`)
})
