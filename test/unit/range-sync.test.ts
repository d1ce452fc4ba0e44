import t, { type Test } from 'tap'
import { createCipheriv, createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Store, type BatchOp, type StoreSnapshot } from '../../src/store/store.js'
import { STAGE_RANGE, blockBase, localKey, direntBase, inodeBase, metaKey, withLayer, xattrBase } from '../../src/store/keys.js'
import { digestAt, type StateDigest } from '../../src/store/state-transfer.js'
import {
  StagedResync, differingRanges, rangeBounds, rangeDelta, stateEntriesIn, stateWithStaged, summarizeRanges,
  type CommitOptions, type RangeKeys, type RangeSummary, type ResyncStats
} from '../../src/store/range-sync.js'
import {
  appendSummaries, decodeRangeDelta, decodeRangeKeys, decodeSummaries, encodeRangeDelta, encodeRangeKeys, encodeSummaries
} from '../../src/store/range-sync-codec.js'

t.setTimeout(300_000)

const KiB = 1024
const MiB = 1 << 20
const LAYER = 1
/** Written by the commit's last batch: stands for the wiring's own bookkeeping (seq, last record). */
const FINAL_KEY = localKey('resync-test-final')

async function tempStore (t: Test, dir = mkdtempSync(join(tmpdir(), 'replfs-rsync-'))): Promise<Store> {
  const store = await Store.open(dir, { create: true })
  t.teardown(async () => {
    if (store.status === 'open') await store.close()
    rmSync(dir, { recursive: true, force: true })
  })
  return store
}

async function reopen (store: Store): Promise<Store> {
  await store.close()
  return await Store.open(store.dir)
}

/** Deterministic content: the same (seed, n) gives the same bytes on both stores. */
function pattern (n: number, seed: string): Buffer {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16)
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(n))
}

const block = (ino: number, b: number): Buffer => withLayer(blockBase(ino, b), LAYER)
const inode = (ino: number): Buffer => withLayer(inodeBase(ino), LAYER)
const dirent = (name: string): Buffer => withLayer(direntBase(1, Buffer.from(name)), LAYER)

/** A volume-shaped state: `files` files of `blocks` 64 KiB blocks, their inodes and dirents, a meta key. */
function volumeOps (files: number, blocks: number, seed = 'v'): BatchOp[] {
  const ops: BatchOp[] = [
    { type: 'put', key: metaKey('counters'), value: Buffer.from(JSON.stringify({ seq: 7, files })) },
    { type: 'put', key: inode(1), value: pattern(120, 'root') }
  ]
  for (let f = 0; f < files; f++) {
    const ino = f + 2
    ops.push({ type: 'put', key: inode(ino), value: pattern(120, `inode${ino}`) })
    ops.push({ type: 'put', key: dirent(`file-${f}`), value: pattern(9, `dirent${ino}`) })
    for (let b = 0; b < blocks; b++) ops.push({ type: 'put', key: block(ino, b), value: pattern(64 * KiB, `${seed}/${ino}/${b}`) })
  }
  return ops
}

async function write (store: Store, ops: BatchOp[]): Promise<void> {
  for (let i = 0; i < ops.length; i += 64) await store.write(ops.slice(i, i + 64))
  await store.sync()
}

async function digestOf (store: Store): Promise<StateDigest> {
  const snap = await store.snapshot()
  try { return await digestAt(store, snap) } finally { await snap.close() }
}

async function count (it: AsyncIterable<unknown>): Promise<number> {
  let n = 0
  for await (const _ of it) n++
  return n
}

interface Outcome { wire: { summaries: number, keys: number, deltas: number, total: number }, differing: number, stats: ResyncStats, expected: StateDigest, resumed: boolean, cut: boolean }

/**
 * The whole protocol between two stores, every message through its encoder and decoder as the
 * wiring would send it. `commit` lets a test break in before or during the commit.
 */
async function resync (source: Store, target: Store, opts: {
  direct?: boolean, rangeBytes?: number, maxBody?: number, commit?: CommitOptions, wrongDigest?: boolean
  /** The link is cut after this many ranges' deltas went in: no commit, the target keeps what it staged. */
  cutAfter?: number
} = {}): Promise<Outcome> {
  const wire = { summaries: 0, keys: 0, deltas: 0, total: 0 }
  const snap = await source.snapshot()
  const view = { snap: null as StoreSnapshot | null }
  try {
    const { ranges, total } = await summarizeRanges(stateEntriesIn(source, null, null, snap), opts.rangeBytes)
    const received: RangeSummary[] = []
    for (const body of encodeSummaries(ranges, opts.maxBody)) {
      wire.summaries += body.length
      appendSummaries(received, decodeSummaries(body))
    }
    const staged = await StagedResync.begin(target, { seq: 7, direct: opts.direct })
    view.snap = await target.snapshot()
    const asked: RangeKeys[] = []
    for await (const rk of differingRanges(stateWithStaged(target, view.snap), received)) {
      const got: RangeKeys = { index: -1, keys: [] }
      for (const body of encodeRangeKeys(rk, opts.maxBody)) {
        wire.keys += body.length
        const part = decodeRangeKeys(body)
        got.index = part.index
        got.keys.push(...part.keys)
      }
      asked.push(got)
    }
    let applied = 0
    for (const { index, keys } of asked) {
      if (applied++ === opts.cutAfter) return { wire: { ...wire, total: wire.summaries + wire.keys + wire.deltas }, differing: asked.length, stats: { puts: 0, dels: 0, bytes: 0 }, expected: total, resumed: staged.resumed, cut: true }
      const [start, end] = rangeBounds(ranges, index)
      const delta = await rangeDelta(stateEntriesIn(source, start, end, snap), keys)
      for (const body of encodeRangeDelta(index, delta, opts.maxBody)) {
        wire.deltas += body.length
        const part = decodeRangeDelta(body)
        await staged.add(part, view.snap)
      }
    }
    wire.total = wire.summaries + wire.keys + wire.deltas
    const expected = opts.wrongDigest === true ? { ...total, digest: createHash('sha256').update('wrong').digest('hex') } : total
    const stats = await staged.commit(expected, [{ type: 'put', key: FINAL_KEY, value: Buffer.from('7') }], opts.commit)
    return { wire, differing: asked.length, stats, expected: total, resumed: staged.resumed, cut: false }
  } finally {
    await snap.close()
    await view.snap?.close()
  }
}

async function stagedCount (store: Store): Promise<number> {
  return await count(store.iterate(STAGE_RANGE[0], STAGE_RANGE[1]))
}

t.test('identical stores: no range differs, nothing but the summaries crosses', async t => {
  const [a, b] = [await tempStore(t), await tempStore(t)]
  await write(a, volumeOps(4, 40))
  await write(b, volumeOps(4, 40))
  const r = await resync(a, b)
  t.equal(r.differing, 0, 'no differing range')
  t.equal(r.wire.keys + r.wire.deltas, 0, 'no key list, no delta')
  t.same(r.stats, { puts: 0, dels: 0, bytes: 0 }, 'nothing applied')
  t.ok(r.wire.summaries < 2 * KiB, `summaries of a 10 MiB state take ${r.wire.summaries} bytes`)
  t.same(await digestOf(b), await digestOf(a), 'digests equal')
})

t.test('empty target, direct mode: the whole state arrives and matches', async t => {
  const [a, b] = [await tempStore(t), await tempStore(t)]
  await write(a, volumeOps(3, 50))
  const before = await digestOf(a)
  const r = await resync(a, b, { direct: true })
  t.same(await digestOf(b), before, 'target digest equals the source digest')
  t.equal(r.stats.bytes, before.bytes, 'bytes of puts equal the source state bytes')
  t.equal(r.stats.puts, before.entries, 'one put per source entry')
  t.equal(r.stats.dels, 0, 'no dels')
  t.ok(r.wire.total < before.bytes * 1.01, `wire ${r.wire.total} bytes for ${before.bytes} bytes of state`)
  t.equal(await stagedCount(b), 0, 'direct mode stages nothing')
  t.equal(await StagedResync.recover(b), 'none', 'no marker left')
})

/** 32 MiB source; the target has 2 MiB of changed blocks, a few keys it lacks and a few it has extra. */
async function divergedPair (t: Test): Promise<{ a: Store, b: Store, changed: number, oldTarget: StateDigest, lacking: number, extra: number }> {
  const [a, b] = [await tempStore(t), await tempStore(t)]
  const base = volumeOps(8, 64) // 512 blocks: 32 MiB
  await write(a, base)
  const lackingKeys = [block(3, 10), inode(5), dirent('file-6')]
  const extraOps: BatchOp[] = [
    { type: 'put', key: block(4, 64), value: pattern(64 * KiB, 'extra-block') },
    { type: 'put', key: withLayer(xattrBase(2, Buffer.from('user.extra')), LAYER), value: Buffer.from('\x01v') },
    { type: 'put', key: dirent('zz-extra'), value: pattern(9, 'x') }
  ]
  const changedOps: BatchOp[] = []
  for (let i = 0; i < 32; i++) {
    const ino = 2 + (i % 8)
    const blk = (i * 7) % 64
    changedOps.push({ type: 'put', key: block(ino, blk), value: pattern(64 * KiB, `changed/${i}`) })
  }
  const lack = new Set(lackingKeys.map(k => k.toString('hex')))
  await write(b, [...base.filter(op => !lack.has(op.key.toString('hex'))), ...changedOps, ...extraOps])
  let changed = 0
  for (const op of changedOps) changed += op.key.length + 64 * KiB
  for (const op of base) if (lack.has(op.key.toString('hex')) && op.type === 'put') changed += op.key.length + op.value.length
  for (const op of extraOps) changed += op.key.length
  return { a, b, changed, oldTarget: await digestOf(b), lacking: lackingKeys.length, extra: extraOps.length }
}

t.test('32 MiB state, 2 MiB changed: only about the difference crosses', async t => {
  const { a, b, changed, lacking, extra } = await divergedPair(t)
  const src = await digestOf(a)
  t.ok(src.bytes >= 32 * MiB, `source holds ${src.bytes} bytes`)
  const started = performance.now()
  const r = await resync(a, b)
  t.comment(`protocol took ${Math.round(performance.now() - started)} ms`)
  t.same(await digestOf(b), src, 'target digest equals the source digest')
  t.equal(r.stats.puts, 32 + lacking, 'changed blocks and lacking keys put')
  t.equal(r.stats.dels, extra, 'extra keys deleted')
  const limit = 1.1 * changed + MiB
  t.ok(r.wire.total <= limit, `wire ${r.wire.total} bytes (summaries ${r.wire.summaries}, keys ${r.wire.keys}, deltas ${r.wire.deltas}) for ${changed} changed bytes; limit ${Math.floor(limit)}`)
  t.comment(`wire bytes: total ${r.wire.total}, summaries ${r.wire.summaries}, range keys ${r.wire.keys}, deltas ${r.wire.deltas}; changed ${changed}; differing ranges ${r.differing}`)
  t.equal(await stagedCount(b), 0, 'staging area empty after commit')
  t.equal(String(await b.get(FINAL_KEY)), '7', 'final ops written')
  t.equal(await StagedResync.recover(b), 'none', 'no marker left')
})

t.test('small frames: every message split in parts still gives the same state', async t => {
  const { a, b } = await divergedPair(t)
  const r = await resync(a, b, { maxBody: 100 * KiB, rangeBytes: 4 * MiB })
  t.same(await digestOf(b), await digestOf(a), 'digests equal with 100 KiB bodies and 4 MiB ranges')
  t.ok(r.differing > 0, `${r.differing} ranges differed`)
})

t.test('keys the source lacks are deleted, before, inside and after its ranges', async t => {
  const [a, b] = [await tempStore(t), await tempStore(t)]
  await write(a, volumeOps(3, 20))
  const extras = [block(0, 0), block(3, 5000), dirent('m-extra'), inode(999), metaKey('zzz'), withLayer(xattrBase(99, Buffer.from('user.z')), LAYER)]
  await write(b, [...volumeOps(3, 20), ...extras.map((key): BatchOp => ({ type: 'put', key, value: Buffer.from('extra') }))])
  const r = await resync(a, b, { rangeBytes: 256 * KiB })
  t.equal(r.stats.dels, extras.length, 'every extra key deleted')
  t.equal(r.stats.puts, 0, 'nothing put')
  t.same(await digestOf(b), await digestOf(a), 'digests equal')
  for (const k of extras) t.equal(await b.get(k), undefined, `extra key ${k.toString('hex').slice(0, 12)}… gone`)
})

t.test('a source emptier than its target: everything goes', async t => {
  const [a, b] = [await tempStore(t), await tempStore(t)]
  await write(b, volumeOps(2, 10))
  const old = await digestOf(b)
  const r = await resync(a, b)
  t.equal(r.stats.dels, old.entries, `every target key (${old.entries}) deleted`)
  t.same(await digestOf(b), await digestOf(a), 'target empty like the source')
  t.equal((await digestOf(b)).entries, 0, 'no entries left')
})

t.test('commit against a wrong digest: RECORD_INVALID, state and staging as before', async t => {
  const { a, b, oldTarget } = await divergedPair(t)
  const err = await resync(a, b, { wrongDigest: true }).then(() => null, (e: { code?: string }) => e)
  t.equal(err?.code, 'RECORD_INVALID', 'RECORD_INVALID')
  t.same(await digestOf(b), oldTarget, 'target digest unchanged')
  t.equal(await stagedCount(b), 0, 'staging dropped')
  t.equal(await StagedResync.recover(b), 'none', 'marker removed')
  const again = await resync(a, b)
  t.same(await digestOf(b), again.expected, 'a later resync still succeeds')
})

t.test('crash while applying: recover() finishes the apply', async t => {
  const { a, b: b0 } = await divergedPair(t)
  const src = await digestOf(a)
  const crash = new Error('simulated crash')
  let batches = 0
  const err = await resync(a, b0, { commit: { batchBytes: 256 * KiB, afterBatch: n => { batches = n; if (n === 2) throw crash } } }).then(() => null, e => e)
  t.equal(err, crash, 'commit stopped after the second batch')
  t.equal(batches, 2, 'two batches applied')
  const half = await digestOf(b0)
  t.not(half.digest, src.digest, 'state half-applied at the crash')
  const left = await stagedCount(b0)
  t.ok(left > 0, `${left} staged ops left`)
  t.equal(await b0.get(FINAL_KEY), undefined, 'final ops not yet written')
  const b = await reopen(b0)
  t.teardown(() => b.close())
  t.equal(await StagedResync.recover(b), 'applied', 'recover() returns applied')
  t.same(await digestOf(b), src, 'target digest equals the source digest')
  t.equal(String(await b.get(FINAL_KEY)), '7', 'final ops written by the recovery')
  t.equal(await stagedCount(b), 0, 'staging empty')
  t.equal(await StagedResync.recover(b), 'none', 'marker gone')
})

t.test('a resync cut off while staging resumes: the old state is served meanwhile and only the rest crosses again', async t => {
  const { a, b: b0, oldTarget, changed } = await divergedPair(t)
  const src = await digestOf(a)
  const first = await resync(a, b0, { rangeBytes: 256 * KiB, cutAfter: 20 })
  t.ok(first.cut && first.differing > 25, `cut after 20 of ${first.differing} differing ranges`)
  t.ok(await stagedCount(b0) > 0, 'ops staged at the cut')
  t.same(await digestOf(b0), oldTarget, 'staging leaves the real keys alone')
  const b = await reopen(b0)
  t.teardown(() => b.close())
  t.equal(await StagedResync.recover(b), 'kept', 'recover() keeps the staging')
  t.same(await digestOf(b), oldTarget, 'after a restart the store still serves its old state')
  const second = await resync(a, b, { rangeBytes: 256 * KiB })
  t.ok(second.resumed, 'the second resync says it resumed')
  t.equal(second.differing, first.differing - 20, 'only the ranges the first one did not finish differ')
  t.ok(first.wire.deltas + second.wire.deltas <= 1.1 * changed + MiB, `deltas of both attempts ${first.wire.deltas + second.wire.deltas} bytes for ${changed} changed`)
  t.same(await digestOf(b), src, 'target digest equals the source digest')
  t.equal(await stagedCount(b), 0, 'staging empty')
  t.equal(await StagedResync.recover(b), 'none', 'marker gone')
})

t.test('a source that changed between two cut-off attempts: the third still ends equal to it', async t => {
  const { a, b } = await divergedPair(t)
  await resync(a, b, { rangeBytes: 256 * KiB, cutAfter: 10 })
  // The source rewrites blocks the first attempt staged, and deletes one, before the next attempt.
  await write(a, [
    { type: 'put', key: block(2, 0), value: pattern(64 * KiB, 'later-0') },
    { type: 'put', key: block(2, 7), value: pattern(64 * KiB, 'later-7') },
    { type: 'del', key: block(3, 14) }
  ])
  const second = await resync(a, b, { rangeBytes: 256 * KiB, cutAfter: 5 })
  t.ok(second.resumed && second.cut, 'second attempt resumed and was cut too')
  await write(a, [{ type: 'put', key: block(9, 63), value: pattern(64 * KiB, 'later-9') }])
  const third = await resync(a, b, { rangeBytes: 256 * KiB })
  t.ok(third.resumed && !third.cut, 'third attempt resumed and committed')
  t.same(await digestOf(b), await digestOf(a), 'target digest equals the source digest')
})

t.test('a node that becomes primary drops what an interrupted resync staged', async t => {
  const { a, b, oldTarget } = await divergedPair(t)
  await resync(a, b, { cutAfter: 2 })
  t.ok(await stagedCount(b) > 0, 'ops staged')
  t.equal(await StagedResync.abandon(b), true, 'abandon() dropped a staging')
  t.equal(await stagedCount(b), 0, 'staging empty')
  t.same(await digestOf(b), oldTarget, 'its own state untouched')
  t.equal(await StagedResync.recover(b), 'none', 'marker gone')
  t.equal(await StagedResync.abandon(b), false, 'nothing to drop the second time')
})

t.test('a first copy cut off part-way holds no volume, and the next copy sends only what is missing', async t => {
  const [a, b0] = [await tempStore(t), await tempStore(t)]
  await write(a, volumeOps(4, 40))
  const src = await digestOf(a)
  const first = await resync(a, b0, { direct: true, rangeBytes: 256 * KiB, cutAfter: 5 })
  t.ok(first.cut, `cut after 5 of ${first.differing} ranges`)
  t.equal(await b0.get(metaKey('counters')), undefined, 'no volume metadata among the real keys')
  t.ok((await digestOf(b0)).entries > 0, 'the blocks copied so far are kept')
  const b = await reopen(b0)
  t.teardown(() => b.close())
  t.equal(await StagedResync.recover(b), 'kept', 'recover() keeps the partial copy')
  const second = await resync(a, b, { direct: true, rangeBytes: 256 * KiB })
  t.ok(second.resumed, 'the second copy resumed')
  t.equal(second.differing, first.differing - 5, 'only the ranges not yet copied differ')
  t.ok(first.wire.deltas + second.wire.deltas < src.bytes * 1.01, `deltas of both copies ${first.wire.deltas + second.wire.deltas} bytes for ${src.bytes} bytes of state`)
  t.same(await digestOf(b), src, 'target digest equals the source digest')
  t.equal(await stagedCount(b), 0, 'staging empty')
})

t.test('a direct copy that wrote its metadata straight away (older replfs) is emptied at recovery', async t => {
  const b0 = await tempStore(t)
  await b0.write([
    { type: 'put', key: localKey('resync-in-progress'), value: Buffer.from(JSON.stringify({ phase: 'direct', seq: 3, ops: [] })) },
    { type: 'put', key: metaKey('format'), value: Buffer.from('{"formatVersion":1}') },
    ...volumeOps(1, 2)
  ], { sync: true })
  const b = await reopen(b0)
  t.teardown(() => b.close())
  t.equal(await StagedResync.recover(b), 'emptied', 'recover() empties it')
  t.equal((await digestOf(b)).entries, 0, 'state empty again')
  const a = await tempStore(t)
  await write(a, volumeOps(1, 2))
  const err = await StagedResync.begin(a, { seq: 1, direct: true }).then(() => null, (e: { code?: string }) => e)
  t.equal(err?.code, 'BAD_ARGUMENT', 'direct mode refuses a store that holds state')
})

t.test('a value the target holds under another key goes as a copy: a diverged snapshot beside the live layer crosses once', async t => {
  const [a, b] = [await tempStore(t), await tempStore(t)]
  // B (the side that yields) wrote 4 MiB of its own; A kept those values in a snapshot layer (2)
  // beside its live layer, whose blocks there A rewrote itself.
  const mine: BatchOp[] = []
  const theirs: BatchOp[] = []
  for (let i = 0; i < 64; i++) {
    const base = blockBase(2 + (i % 4), i)
    mine.push({ type: 'put', key: withLayer(base, LAYER), value: pattern(64 * KiB, `victim/${i}`) })
    theirs.push({ type: 'put', key: withLayer(base, LAYER), value: pattern(64 * KiB, `survivor/${i}`) })
    theirs.push({ type: 'put', key: withLayer(base, 2), value: pattern(64 * KiB, `victim/${i}`) })
  }
  await write(b, [...volumeOps(2, 8), ...mine])
  await write(a, [...volumeOps(2, 8), ...theirs])
  const r = await resync(a, b)
  t.same(await digestOf(b), await digestOf(a), 'target digest equals the source digest')
  t.equal(r.stats.puts, 128, 'both layers\' blocks put')
  t.ok(r.wire.deltas < 4.5 * MiB, `deltas ${r.wire.deltas} bytes: the survivor's 4 MiB in full, the snapshot's 4 MiB as copies`)
})

t.test('a copy from a key the target does not hold is refused, and nothing is applied', async t => {
  const { a, b, oldTarget } = await divergedPair(t)
  const staged = await StagedResync.begin(b, { seq: 7 })
  const view = await b.snapshot()
  const err = await staged.add({ puts: [], dels: [], copies: [[block(2, 1), block(77, 77)]] }, view).then(() => null, (e: { code?: string }) => e)
  await view.close()
  t.equal(err?.code, 'RECORD_INVALID', 'RECORD_INVALID')
  t.equal(await stagedCount(b), 0, 'nothing staged')
  t.same(await digestOf(b), oldTarget, 'state unchanged')
  const again = await resync(a, b)
  t.same(await digestOf(b), again.expected, 'a later resync still succeeds')
})

t.test('decoders reject truncated, garbage and malformed bodies with FRAME_INVALID', async t => {
  const ranges: RangeSummary[] = [
    { end: Buffer.from('b\x00\x01'), digest: Buffer.alloc(16, 1), entries: 3, bytes: 1234 },
    { end: null, digest: Buffer.alloc(16, 2), entries: 300, bytes: 5_000_000 }
  ]
  const keys: RangeKeys = { index: 5, keys: [{ key: Buffer.from('b1'), hash: Buffer.alloc(8, 3) }, { key: Buffer.from('b2'), hash: Buffer.alloc(8, 4) }] }
  const delta = { puts: [[Buffer.from('b1'), Buffer.from('value')]] as Array<[Buffer, Buffer]>, dels: [Buffer.from('d9')], copies: [[Buffer.from('b3'), Buffer.from('b2')]] as Array<[Buffer, Buffer]> }
  const cases: Array<[string, Buffer, (b: Buffer) => unknown]> = [
    ['summaries', encodeSummaries(ranges)[0], decodeSummaries],
    ['range keys', encodeRangeKeys(keys)[0], decodeRangeKeys],
    ['range delta', encodeRangeDelta(7, delta)[0], decodeRangeDelta]
  ]
  const rejects = (fn: () => unknown): string => { try { fn(); return 'accepted' } catch (e) { return (e as { code?: string }).code ?? String(e) } }
  t.same(decodeSummaries(cases[0][1]), { start: 0, ranges, last: true }, 'summaries round-trip')
  t.same(decodeRangeKeys(cases[1][1]), { ...keys, last: true }, 'range keys round-trip')
  t.same(decodeRangeDelta(cases[2][1]), { index: 7, ...delta, last: true }, 'range delta round-trip')
  for (const [what, body, decode] of cases) {
    const bad: string[] = []
    for (let n = 0; n < body.length; n++) if (rejects(() => decode(body.subarray(0, n))) !== 'FRAME_INVALID') bad.push(`truncated to ${n}`)
    if (rejects(() => decode(Buffer.concat([body, Buffer.of(0)]))) !== 'FRAME_INVALID') bad.push('trailing byte')
    const wrongKind = Buffer.from(body); wrongKind[0] ^= 0x07
    if (rejects(() => decode(wrongKind)) !== 'FRAME_INVALID') bad.push('wrong kind')
    const flags = Buffer.from(body); flags[1] = 0x80
    if (rejects(() => decode(flags)) !== 'FRAME_INVALID') bad.push('unknown flag')
    const huge = Buffer.from(body); huge.fill(0xff, 6)
    if (rejects(() => decode(huge)) !== 'FRAME_INVALID') bad.push('0xff counts')
    for (let i = 0; i < 200; i++) {
      const g = pattern(1 + (i * 37) % 300, `garbage/${what}/${i}`)
      g[0] = body[0] // the right kind byte, so the rest of the decoder is exercised
      if (i % 2 === 0) g[1] = 1
      const code = rejects(() => decode(g))
      if (code !== 'FRAME_INVALID') bad.push(`garbage ${i}: ${code}`)
    }
    t.same(bad, [], `${what}: every truncation and garbage body rejected with FRAME_INVALID`)
  }
  const openFirst = encodeSummaries([{ ...ranges[1] }, { ...ranges[1] }])[0]
  t.equal(rejects(() => decodeSummaries(openFirst)), 'FRAME_INVALID', 'an open range before the last is rejected')
  const unsorted = encodeRangeKeys({ index: 0, keys: [keys.keys[1], keys.keys[0]] })[0]
  t.equal(rejects(() => decodeRangeKeys(unsorted)), 'FRAME_INVALID', 'keys out of order rejected')
  const notLast = encodeSummaries(ranges, 16 + 30)
  t.ok(notLast.length >= 2, `summaries split in ${notLast.length} chunks`)
  t.equal(rejects(() => appendSummaries([], decodeSummaries(notLast[1]))), 'FRAME_INVALID', 'a chunk out of sequence is rejected')
  const varint = Buffer.from(cases[1][1]); varint.fill(0x80, 6, 12)
  t.equal(rejects(() => decodeRangeKeys(varint)), 'FRAME_INVALID', 'an endless varint is rejected')
  const oversize = rejects(() => encodeRangeDelta(0, { puts: [[Buffer.from('b'), Buffer.alloc(200)]], dels: [], copies: [] }, 100))
  t.equal(oversize, 'BAD_ARGUMENT', 'an op bigger than a body cannot be encoded')
})

t.test('summaries cut the state in ranges of about targetBytes, ending open', async t => {
  const a = await tempStore(t)
  await write(a, volumeOps(2, 64))
  const snap = await a.snapshot()
  const { ranges, total } = await summarizeRanges(stateEntriesIn(a, null, null, snap), MiB)
  const whole = await digestAt(a, snap)
  await snap.close()
  t.same(total, whole, 'total equals digestAt')
  t.equal(ranges.length, Math.ceil(whole.bytes / MiB), `${ranges.length} ranges of about 1 MiB`)
  t.equal(ranges.reduce((n, r) => n + r.entries, 0), whole.entries, 'ranges hold every entry once')
  t.equal(ranges[ranges.length - 1].end, null, 'last range open-ended')
  const empty = await summarizeRanges(stateEntriesIn(await tempStore(t), null, null))
  t.equal(empty.ranges.length, 1, 'an empty state is one open range')
  t.equal(empty.ranges[0].entries, 0, 'holding nothing')
  const extra = await tempStore(t)
  await extra.write([{ type: 'put', key: inode(5), value: Buffer.from('x') }])
  const diff: RangeKeys[] = []
  for await (const rk of differingRanges(stateEntriesIn(extra, null, null), empty.ranges)) diff.push(rk)
  t.equal(diff.length, 1, 'a target key against an empty source differs')
  t.equal(diff[0].keys[0].key.toString('hex'), inode(5).toString('hex'), 'and lists the key')
})
