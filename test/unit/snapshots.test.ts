import t, { type Test } from 'tap'
import fc from 'fast-check'
import { fsck } from '../../src/store/fsck.js'
import type { Volume } from '../../src/fs/volume.js'
import type { ReplfsErrorCode } from '../../src/errors.js'
import type { BatchOp } from '../../src/store/store.js'
import { ROOT, stateDump, tempVolume, type TestVolume } from '../helpers/volume.js'
import { readFile, treeDump } from '../helpers/replica.js'
import { type Op, SNAPSHOT_MIX, opArb, pattern, replayGivesSameStore, runOp } from '../helpers/workload.js'

t.setTimeout(120_000)

const KiB = 1024
const MiB = 1 << 20

async function put (vol: Volume, path: string, data: Buffer): Promise<void> {
  let fh: number
  try { fh = await vol.open(path, 2) } catch { fh = await vol.create(path, 0o644, ROOT) }
  try {
    await vol.truncate(null, fh, 0)
    if (data.length > 0) await vol.write(fh, data, data.length, 0)
  } finally { await vol.release(fh) }
}

async function overwrite (vol: Volume, path: string, data: Buffer): Promise<void> {
  const fh = await vol.open(path, 2)
  try { await vol.write(fh, data, data.length, 0) } finally { await vol.release(fh) }
}

async function fsckClean (tt: Test, v: TestVolume, what: string): Promise<void> {
  const r = await fsck(v.state)
  tt.same(r.problems, [], `fsck clean ${what}`)
}

async function rejectsWith (tt: Test, p: Promise<unknown>, code: string, what: string): Promise<void> {
  try {
    await p
    tt.fail(`${what}: succeeded, expected ${code}`)
  } catch (err) {
    const c = (err as { code?: string }).code
    tt.equal(c, code, `${what}: ${code}`)
    if (c !== code) tt.comment(String(err))
  }
}

/** Counts the ops of every store batch written while `fn` runs. */
async function batchOps (v: TestVolume, fn: () => Promise<unknown>): Promise<BatchOp[]> {
  const ops: BatchOp[] = []
  const orig = v.store.write.bind(v.store)
  v.store.write = (o: BatchOp[], opts?: { sync?: boolean, epoch?: number }) => { ops.push(...o); return orig(o, opts) }
  try { await fn(); await v.log.settle() } finally { v.store.write = orig }
  return ops
}

t.test('create is O(1): it writes only metadata, and the same number of ops whatever the data', async t => {
  const opCounts: number[] = []
  for (const files of [3, 200]) {
    const a = await tempVolume()
    t.teardown(() => a.close())
    for (let i = 0; i < files; i++) await put(a.vol, `/f${i}`, pattern(70 * KiB, i))
    await a.vol.mkdir('/d', 0o755, ROOT)
    await a.log.settle()
    const before = await stateDump(a)
    const ops = await batchOps(a, () => a.vol.createSnapshot('s1'))
    const after = await stateDump(a)
    const toMap = (d: Array<[string, string]>): Map<string, string> => new Map(d)
    const [mb, ma] = [toMap(before), toMap(after)]
    const changed = [...new Set([...mb.keys(), ...ma.keys()])].filter(k => mb.get(k) !== ma.get(k))
    const nonMeta = changed.filter(k => !k.startsWith('6d'))
    t.same(nonMeta, [], `${files} files: create changed no data key (changed: ${changed.map(k => Buffer.from(k, 'hex').toString('latin1').replace(/[^\x20-\x7e]/g, '.')).join(', ')})`)
    opCounts.push(ops.length)
    t.ok(ops.length <= 8, `${files} files: create wrote ${ops.length} ops`)
    await fsckClean(t, a, `after create (${files} files)`)
  }
  t.equal(opCounts[0], opCounts[1], 'same op count for 3 and 200 files')
})

t.test('a snapshot holds its point in time', async t => {
  const a = await tempVolume()
  t.teardown(() => a.close())
  const v1 = pattern(150 * KiB, 1)
  const v2 = pattern(150 * KiB, 2)
  await put(a.vol, '/A', v1)
  await put(a.vol, '/B', Buffer.from('bee'))
  await a.vol.mkdir('/dir', 0o755, ROOT)
  await put(a.vol, '/dir/inner', Buffer.from('inner v1'))
  await a.vol.setxattr('/A', 'user.tag', Buffer.from('one'), 0)
  const info = await a.vol.createSnapshot('s1')
  t.equal(info.name, 's1')
  t.equal(info.writable, false)
  t.equal(info.seq, a.state.counters.seq, 'the snapshot is at the seq of its create record')
  await overwrite(a.vol, '/A', v2)
  await a.vol.setxattr('/A', 'user.tag', Buffer.from('two'), 0)
  await a.vol.unlink('/B')
  await put(a.vol, '/C', Buffer.from('sea'))
  await put(a.vol, '/dir/inner', Buffer.from('inner v2, longer'))
  await a.vol.chmod('/dir', 0o700)

  t.ok((await readFile(a.vol, '/.snapshots/s1/A')).equals(v1), 'A is v1 in the snapshot')
  t.ok((await readFile(a.vol, '/A')).equals(v2), 'A is v2 live')
  t.equal((await readFile(a.vol, '/.snapshots/s1/B')).toString(), 'bee', 'B still in the snapshot')
  await rejectsWith(t, a.vol.getattr('/B'), 'ENOENT', 'B gone live')
  await rejectsWith(t, a.vol.getattr('/.snapshots/s1/C'), 'ENOENT', 'C not in the snapshot')
  t.equal((await readFile(a.vol, '/C')).toString(), 'sea', 'C live')
  t.equal((await readFile(a.vol, '/.snapshots/s1/dir/inner')).toString(), 'inner v1')
  t.equal((await a.vol.getxattr('/.snapshots/s1/A', null, 'user.tag')).toString(), 'one', 'xattr as of the snapshot')
  t.equal((await a.vol.getattr('/.snapshots/s1/dir')).mode & 0o7777, 0o755, 'dir mode as of the snapshot')
  const resolved = await a.vol.resolve('/.snapshots/s1/A')
  t.equal(Math.floor(resolved.ino / 2 ** 36), a.state.snapshot('s1')!.id, 'snapshot inode numbers are id*2^36+ino')
  t.equal(resolved.ino % 2 ** 36, (await a.vol.resolve('/A')).ino, '... with the live inode number below')
  const root = (await a.vol.readdir('/')).map(e => e.name)
  t.notOk(root.includes('.snapshots'), '.snapshots is not listed in the root')
  t.same((await a.vol.readdir('/.snapshots')).map(e => e.name).filter(n => n !== '.' && n !== '..'), ['s1'])
  t.same((await a.vol.listSnapshots()).map(s => s.name), ['s1'])
  await fsckClean(t, a, 'after changes')
})

t.test('restore: live becomes the snapshot, live-only bytes are freed', async t => {
  const a = await tempVolume()
  t.teardown(() => a.close())
  await put(a.vol, '/A', pattern(256 * KiB, 1))
  await a.vol.mkdir('/d', 0o755, ROOT)
  await put(a.vol, '/d/x', pattern(10_000, 3))
  await a.vol.symlink('A', '/lnk', ROOT)
  await a.vol.link('/A', '/d/A2')
  await a.vol.createSnapshot('s1')
  const snapTree = await treeDump(a.vol, '/.snapshots/s1')
  const usedAtSnap = a.state.counters.usedBytes
  t.equal(usedAtSnap, 256 * KiB + 10_000, 'usedBytes counts block bytes')
  await overwrite(a.vol, '/A', pattern(256 * KiB, 2)) // +256 KiB live-only
  await put(a.vol, '/C', pattern(128 * KiB, 4)) // +128 KiB live-only
  await a.vol.unlink('/d/x')
  await a.vol.rename('/d', '/e')
  await a.vol.setxattr('/e', 'user.k', Buffer.from('v'), 0)
  t.equal(a.state.counters.usedBytes, usedAtSnap + 384 * KiB, 'usedBytes before the restore')
  const applied: string[] = []
  const off = a.log.onRecord((_seq, r) => applied.push(r.type))
  const info = await a.vol.restoreSnapshot('s1')
  off()
  t.equal(info.name, 's1')
  t.same(applied, ['snapshot-restore', 'collect-garbage'], 'the restore is one record, then one collection step (the garbage is small)')
  t.equal(a.state.counters.garbageFrom, undefined, 'and nothing is left to collect when the call returns')
  t.same(await treeDump(a.vol, '/'), snapTree, 'live equals what the snapshot held')
  t.same(await treeDump(a.vol, '/.snapshots/s1'), snapTree, 'the snapshot is unchanged')
  t.equal(a.state.counters.usedBytes, usedAtSnap, 'usedBytes dropped by exactly the live-only bytes (384 KiB)')
  t.equal(a.state.counters.inodes, 5, 'inode count is the snapshot\'s (root, A, d, x, lnk)')
  await fsckClean(t, a, 'after restore')
  // The restored live volume is writable and independent of the snapshot.
  await overwrite(a.vol, '/A', Buffer.from('new'))
  t.equal((await readFile(a.vol, '/A')).subarray(0, 3).toString(), 'new')
  t.equal((await readFile(a.vol, '/d/A2')).subarray(0, 3).toString(), 'new', 'hard link still shared after restore')
  t.same(await treeDump(a.vol, '/.snapshots/s1'), snapTree, 'writing after the restore leaves the snapshot alone')
  await put(a.vol, '/new', Buffer.from('n'))
  await fsckClean(t, a, 'after writing past the restore')
})

t.test('refresh: the snapshot shows the live volume as it is now', async t => {
  const a = await tempVolume()
  t.teardown(() => a.close())
  await put(a.vol, '/A', pattern(200 * KiB, 1))
  const s0 = await a.vol.createSnapshot('s1')
  await overwrite(a.vol, '/A', pattern(200 * KiB, 2))
  await put(a.vol, '/B', Buffer.from('bee'))
  await a.vol.mkdir('/dd', 0o711, ROOT)
  const live = await treeDump(a.vol, '/')
  let refreshSeq = 0
  const off = a.log.onRecord((seq, r) => { if (r.type === 'snapshot-refresh') refreshSeq = seq })
  const info = await a.vol.refreshSnapshot('s1')
  off()
  t.ok(info.seq > s0.seq, `the snapshot's seq moved (${s0.seq} -> ${info.seq})`)
  t.equal(info.seq, refreshSeq, 'the snapshot is at the seq of the refresh record')
  t.same(await treeDump(a.vol, '/.snapshots/s1'), live, 'snapshot equals live')
  t.equal(a.state.counters.usedBytes, 200 * KiB + 3, 'the old snapshot\'s only copy of A (200 KiB) was freed')
  await fsckClean(t, a, 'after refresh')
  await overwrite(a.vol, '/A', Buffer.from('zzz'))
  t.same(await treeDump(a.vol, '/.snapshots/s1'), live, 'later live writes do not reach the snapshot')
  await fsckClean(t, a, 'after a write past the refresh')
})

t.test('delete frees what only the snapshot held', async t => {
  const a = await tempVolume()
  t.teardown(() => a.close())
  await put(a.vol, '/big', pattern(MiB, 1))
  t.equal(a.state.counters.usedBytes, MiB)
  await a.vol.createSnapshot('s1')
  await a.vol.createSnapshot('s2')
  await a.vol.deleteSnapshot('s2').then(r => t.equal(r.freedBytes, 0, 'deleting a snapshot sharing everything frees nothing'))
  await overwrite(a.vol, '/big', pattern(MiB, 2))
  t.equal(a.state.counters.usedBytes, 2 * MiB, 'two versions held')
  const r = await a.vol.deleteSnapshot('s1')
  t.equal(r.freedBytes, MiB, 'freedBytes = 1 MiB')
  t.equal(a.state.counters.usedBytes, MiB, 'usedBytes back to 1 MiB')
  t.ok((await readFile(a.vol, '/big')).equals(pattern(MiB, 2)), 'live content intact')
  t.same((await a.vol.listSnapshots()), [])
  await rejectsWith(t, a.vol.getattr('/.snapshots/s1'), 'ENOENT', 'the snapshot directory is gone')
  await fsckClean(t, a, 'after delete')
  // And with the snapshot's own unlinked file
  await put(a.vol, '/tmp', pattern(300 * KiB, 5))
  await a.vol.createSnapshot('s3')
  await a.vol.unlink('/tmp')
  t.equal(a.state.counters.usedBytes, MiB + 300 * KiB, 'an unlinked file stays while a snapshot holds it')
  t.equal((await a.vol.deleteSnapshot('s3')).freedBytes, 300 * KiB, 'and goes with the snapshot')
  await fsckClean(t, a, 'after the second delete')
})

t.test('bad names, duplicates and missing snapshots are refused and change nothing', async t => {
  const a = await tempVolume()
  t.teardown(() => a.close())
  await put(a.vol, '/f', Buffer.from('x'))
  await a.vol.createSnapshot('s1')
  await a.log.settle()
  const seq = a.state.counters.seq
  const dump = JSON.stringify(await stateDump(a))
  for (const bad of ['', '.', '..', 'a/b', '/', 'x'.repeat(256), 'é'.repeat(128)]) {
    await rejectsWith(t, a.vol.createSnapshot(bad), 'BAD_ARGUMENT', `create ${JSON.stringify(bad.slice(0, 10))}${bad.length > 10 ? `… (${Buffer.byteLength(bad)} bytes)` : ''}`)
  }
  await rejectsWith(t, a.vol.createSnapshot('s1'), 'SNAPSHOT_EXISTS', 'duplicate create')
  await rejectsWith(t, a.vol.deleteSnapshot('nope'), 'SNAPSHOT_MISSING', 'delete missing')
  await rejectsWith(t, a.vol.restoreSnapshot('nope'), 'SNAPSHOT_MISSING', 'restore missing')
  await rejectsWith(t, a.vol.refreshSnapshot('nope'), 'SNAPSHOT_MISSING', 'refresh missing')
  await a.log.settle()
  t.equal(a.state.counters.seq, seq, 'seq unchanged')
  t.equal(JSON.stringify(await stateDump(a)), dump, 'state unchanged')
  // the limits themselves are fine
  await a.vol.createSnapshot('x'.repeat(255))
  await a.vol.createSnapshot('...')
  t.same((await a.vol.listSnapshots()).map(s => s.name), ['s1', 'x'.repeat(255), '...'])
  t.ok((await a.vol.listSnapshots()).every(s => s.writable === false && s.layers >= 1 && !Number.isNaN(Date.parse(s.created))), 'list fields')
})

t.test('snapshots are read-only: EROFS for every change', async t => {
  const a = await tempVolume()
  t.teardown(() => a.close())
  await put(a.vol, '/A', Buffer.from('aaa'))
  await a.vol.mkdir('/d', 0o755, ROOT)
  await a.vol.createSnapshot('s1')
  await a.log.settle()
  const seq = a.state.counters.seq
  const S = '/.snapshots/s1'
  await rejectsWith(t, a.vol.create(`${S}/new`, 0o644, ROOT), 'EROFS', 'create')
  await rejectsWith(t, a.vol.open(`${S}/A`, 2), 'EROFS', 'open O_RDWR')
  await rejectsWith(t, a.vol.open(`${S}/A`, 1), 'EROFS', 'open O_WRONLY')
  await rejectsWith(t, a.vol.unlink(`${S}/A`), 'EROFS', 'unlink')
  await rejectsWith(t, a.vol.rmdir(`${S}/d`), 'EROFS', 'rmdir')
  await rejectsWith(t, a.vol.mkdir(`${S}/d2`, 0o755, ROOT), 'EROFS', 'mkdir inside')
  await rejectsWith(t, a.vol.rename(`${S}/A`, `${S}/B`), 'EROFS', 'rename inside')
  await rejectsWith(t, a.vol.rename(`${S}/A`, '/out'), 'EROFS', 'rename out of')
  await rejectsWith(t, a.vol.rename('/A', `${S}/in`), 'EROFS', 'rename into')
  await rejectsWith(t, a.vol.link(`${S}/A`, `${S}/A3`), 'EROFS', 'link inside')
  await rejectsWith(t, a.vol.symlink('x', `${S}/sl`, ROOT), 'EROFS', 'symlink inside')
  await rejectsWith(t, a.vol.setxattr(`${S}/A`, 'user.x', Buffer.from('1'), 0), 'EROFS', 'setxattr')
  await rejectsWith(t, a.vol.chmod(`${S}/A`, 0o600), 'EROFS', 'chmod')
  await rejectsWith(t, a.vol.chown(`${S}/A`, 1, 1), 'EROFS', 'chown')
  await rejectsWith(t, a.vol.truncate(`${S}/A`, null, 0), 'EROFS', 'truncate')
  await rejectsWith(t, a.vol.utimens(`${S}/A`, null, 'now', 'now'), 'EROFS', 'utimens')
  await rejectsWith(t, a.vol.chmod(S, 0o700), 'EROFS', 'chmod snapshot root')
  await rejectsWith(t, a.vol.mkdir('/.snapshots', 0o755, ROOT), 'EROFS', 'mkdir /.snapshots')
  await rejectsWith(t, a.vol.mkdir('/.snapshots/s2', 0o755, ROOT), 'EROFS', 'mkdir /.snapshots/s2')
  await rejectsWith(t, a.vol.rmdir(S), 'EROFS', 'rmdir the snapshot')
  await rejectsWith(t, a.vol.rename(S, '/stolen'), 'EROFS', 'rename the snapshot out')
  await rejectsWith(t, a.vol.chmod('/.snapshots', 0o777), 'EROFS', 'chmod /.snapshots')
  await a.log.settle()
  t.equal(a.state.counters.seq, seq, 'nothing was recorded')
  t.equal((await readFile(a.vol, `${S}/A`)).toString(), 'aaa', 'reads still work')
  const fh = await a.vol.open(`${S}/A`, 0)
  await rejectsWith(t, a.vol.write(fh, Buffer.from('z'), 1, 0), 'EBADF', 'write on a read-only handle')
  await a.vol.release(fh)
})

// ---- determinism -------------------------------------------------------------------------

// Also handles held open across the ops that follow, and the names '.' and '' (refused: BAD_ARGUMENT).
const opMix = opArb({
  ...SNAPSHOT_MIX,
  weights: { ...SNAPSHOT_MIX.weights, 'keep-open': 1 },
  snapshotNames: [...SNAPSHOT_MIX.snapshotNames!, '.', '']
})
const snapshotRefusals: ReplfsErrorCode[] = ['BAD_ARGUMENT', 'SNAPSHOT_EXISTS', 'SNAPSHOT_MISSING']

t.test('replaying the journaled records (files and snapshot commands) gives a byte-identical store', async t => {
  const seed = Number(process.env.FC_SEED ?? Date.now() % 100000)
  t.comment(`fast-check seed ${seed}`)
  let snapRecords = 0
  await t.resolves(fc.assert(fc.asyncProperty(fc.array(opMix, { minLength: 5, maxLength: 50 }), async ops => {
    const records = await replayGivesSameStore(async a => {
      const open: number[] = []
      const setup: Op[] = [{ op: 'mkdir', path: '/a' }, { op: 'create', path: '/b' }, { op: 'write', path: '/b', offset: 0, len: 70_000, seed: 9 }, { op: 'snap-create', name: 's1' }]
      try {
        for (const o of [...setup, ...ops]) await runOp(a.vol, o, { open, snapshotRefusals })
      } finally {
        for (const fh of open.splice(0)) await a.vol.release(fh).catch(() => {})
      }
    })
    snapRecords += records.filter(r => r.type.startsWith('snapshot-')).length
  }), { numRuns: 100, seed }), 'held for 100 random workloads')
  t.ok(snapRecords > 100, `${snapRecords} snapshot records replayed`)
})

// ---- edge cases ----------------------------------------------------------------------------

t.test('a file open and unlinked when the snapshot was taken: restore, then the last close', async t => {
  const a = await tempVolume()
  t.teardown(() => a.close())
  await put(a.vol, '/keep', Buffer.from('k'))
  await put(a.vol, '/f', pattern(100_000, 1))
  const fh = await a.vol.open('/f', 2)
  const ino = (await a.vol.resolve('/f')).ino
  await a.vol.unlink('/f')
  t.ok(a.state.orphans.has(ino), 'f is an orphan')
  await a.vol.createSnapshot('s1')
  await a.vol.restoreSnapshot('s1')
  await a.vol.release(fh)
  await a.log.settle()
  await fsckClean(t, a, 'after restore and last close')
  t.equal(a.state.counters.inodes, 2, 'only root and /keep are live')
  t.equal(await a.state.inode(ino), undefined, 'the unlinked file is freed at its last close')
  await a.vol.deleteSnapshot('s1')
  t.equal(a.state.counters.usedBytes, 1, 'its 100 000 bytes are freed once no snapshot holds it')
  await fsckClean(t, a, 'after deleting the snapshot')
})

t.test('deleteSnapshot reports the bytes the delete freed, even with writes in flight', async t => {
  const a = await tempVolume()
  t.teardown(() => a.close())
  await put(a.vol, '/big', pattern(MiB, 1))
  await a.vol.createSnapshot('s1')
  await overwrite(a.vol, '/big', pattern(MiB, 2)) // s1 alone holds 1 MiB
  await put(a.vol, '/other', Buffer.alloc(0))
  const fh = await a.vol.open('/other', 2)
  // A 512 KiB append is submitted just before the delete: it applies first.
  const [, r] = await Promise.all([a.vol.write(fh, pattern(512 * 1024, 3), 512 * 1024, 0), a.vol.deleteSnapshot('s1')])
  await a.vol.release(fh)
  t.equal(r.freedBytes, MiB, `freedBytes ${r.freedBytes} is what the delete freed (1 MiB)`)
  t.equal(a.state.counters.usedBytes, MiB + 512 * 1024)
})

t.test('a volume holds at most 256 snapshots', async t => {
  const a = await tempVolume()
  t.teardown(() => a.close())
  await put(a.vol, '/f', Buffer.from('x'))
  for (let i = 0; i < 256; i++) await a.vol.createSnapshot(`s${i}`)
  const seq = a.state.counters.seq
  await rejectsWith(t, a.vol.createSnapshot('one-too-many'), 'BAD_ARGUMENT', '257th')
  t.equal(a.state.counters.seq, seq, 'nothing recorded')
  await a.vol.deleteSnapshot('s0')
  await a.vol.createSnapshot('again')
  t.equal((await readFile(a.vol, '/.snapshots/again/f')).toString(), 'x')
  await fsckClean(t, a, 'with 256 snapshots')
})

t.test('a file open across a whole-volume restore goes on by inode number: it reads and writes the restored version (README)', async t => {
  const a = await tempVolume()
  t.teardown(() => a.close())
  await put(a.vol, '/A', Buffer.from('old-content'))
  await a.vol.createSnapshot('s1')
  await overwrite(a.vol, '/A', Buffer.from('new-content'))
  const fh = await a.vol.open('/A', 2)
  await a.vol.restoreSnapshot('s1')
  const buf = Buffer.alloc(11)
  await a.vol.read(fh, buf, 11, 0)
  t.equal(buf.toString(), 'old-content', 'the open handle reads the restored version of its file')
  await a.vol.write(fh, Buffer.from('W'), 1, 0)
  t.equal((await readFile(a.vol, '/A')).toString(), 'Wld-content', 'a write through it changes the restored file')
  t.equal((await readFile(a.vol, '/.snapshots/s1/A')).toString(), 'old-content', 'the snapshot is untouched')
  await a.vol.release(fh)
  await put(a.vol, '/B', Buffer.from('made after'))
  const fb = await a.vol.open('/B', 0)
  await a.vol.restoreSnapshot('s1')
  await t.rejects(a.vol.read(fb, Buffer.alloc(4), 4, 0), { code: 'EBADF' }, 'a file the restored volume does not have gets EBADF')
  await a.vol.release(fb)
  await fsckClean(t, a, 'after')
})

t.test('a file unlinked while open and purged before the restore does not come back as a leaked inode', async t => {
  const a = await tempVolume()
  t.teardown(() => a.close())
  await put(a.vol, '/f', pattern(100_000, 1))
  const fh = await a.vol.open('/f', 2)
  const ino = (await a.vol.resolve('/f')).ino
  await a.vol.unlink('/f')
  await a.vol.createSnapshot('s1')
  await a.vol.release(fh) // last close: purged in the live view (the snapshot keeps its copy)
  t.equal(await a.state.inode(ino), undefined, 'purged live')
  await a.vol.restoreSnapshot('s1')
  await a.log.settle()
  await fsckClean(t, a, 'after the restore')
  t.equal(a.state.counters.inodes, 1, 'only the root is live')
})

t.test('deleting snapshots in any order frees exactly the versions only each held', async t => {
  const a = await tempVolume()
  t.teardown(() => a.close())
  const K = 256 * KiB
  await put(a.vol, '/f', pattern(K, 1))
  await a.vol.createSnapshot('s1')
  await overwrite(a.vol, '/f', pattern(K, 2))
  await a.vol.createSnapshot('s2')
  await overwrite(a.vol, '/f', pattern(K, 3))
  await a.vol.createSnapshot('s3')
  await overwrite(a.vol, '/f', pattern(K, 4))
  t.equal(a.state.counters.usedBytes, 4 * K)
  t.equal((await a.vol.deleteSnapshot('s2')).freedBytes, K, 'the middle one')
  t.ok((await readFile(a.vol, '/.snapshots/s1/f')).equals(pattern(K, 1)), 's1 intact')
  t.ok((await readFile(a.vol, '/.snapshots/s3/f')).equals(pattern(K, 3)), 's3 intact')
  await fsckClean(t, a, 'after deleting s2')
  t.equal((await a.vol.deleteSnapshot('s3')).freedBytes, K, 'the newest')
  t.ok((await readFile(a.vol, '/.snapshots/s1/f')).equals(pattern(K, 1)), 's1 intact')
  t.equal((await a.vol.deleteSnapshot('s1')).freedBytes, K, 'the oldest')
  t.ok((await readFile(a.vol, '/f')).equals(pattern(K, 4)), 'live intact')
  t.equal(a.state.counters.usedBytes, K)
  await fsckClean(t, a, 'after deleting all')
})

t.test('access(W_OK) on a snapshot file is EROFS, as on any read-only filesystem', async t => {
  const a = await tempVolume()
  t.teardown(() => a.close())
  await put(a.vol, '/A', Buffer.from('a'))
  await a.vol.chmod('/A', 0o666)
  await a.vol.createSnapshot('s1')
  await t.resolves(a.vol.access('/.snapshots/s1/A', 4, { uid: 1000, gid: 1000 }), 'R_OK allowed')
  await rejectsWith(t, a.vol.access('/.snapshots/s1/A', 2, { uid: 1000, gid: 1000 }), 'EROFS', 'W_OK, non-root')
  await rejectsWith(t, a.vol.access('/.snapshots/s1/A', 2, ROOT), 'EROFS', 'W_OK, root')
  await t.resolves(a.vol.access('/A', 2, { uid: 1000, gid: 1000 }), 'W_OK allowed on the live file')
})

t.test('list --space tells what each snapshot alone holds, and that is exactly what deleting it frees', async t => {
  const a = await tempVolume()
  t.teardown(() => a.close())
  const K = 64 * KiB
  await put(a.vol, '/f', pattern(4 * K, 1))
  await a.vol.createSnapshot('s1')
  await overwrite(a.vol, '/f', pattern(4 * K, 2))
  await a.vol.createSnapshot('s2')
  await a.vol.createSnapshot('s3')
  await overwrite(a.vol, '/f', pattern(4 * K, 3))
  const held = Object.fromEntries((await a.vol.listSnapshots({ space: true })).map(s => [s.name, s.heldBytes]))
  t.same(held, { s1: 4 * K, s2: 0, s3: 0 }, 's1 alone holds v1; s2 and s3 share v2, so neither alone holds it')
  t.equal((await a.vol.deleteSnapshot('s1')).freedBytes, held.s1, 'deleting s1 frees what list said')
  const after = Object.fromEntries((await a.vol.listSnapshots({ space: true })).map(s => [s.name, s.heldBytes]))
  t.same(after, { s2: 0, s3: 0 })
  await a.vol.deleteSnapshot('s2')
  t.same(Object.fromEntries((await a.vol.listSnapshots({ space: true })).map(s => [s.name, s.heldBytes])), { s3: 4 * K }, 'with s2 gone, s3 alone holds v2')
  t.equal((await a.vol.deleteSnapshot('s3')).freedBytes, 4 * K)
})
