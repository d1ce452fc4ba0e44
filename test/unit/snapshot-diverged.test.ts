import t from 'tap'
import { decodeRecord, encodeRecord } from '../../src/log/codec.js'
import { isCommand, type LogRecord } from '../../src/log/records.js'
import { encodeDirent, encodeInode } from '../../src/store/inode.js'
import { fsck } from '../../src/store/fsck.js'
import { divergedOverlay, fillChunks, fillEntryBytes, FILL_MAX_BYTES } from '../../src/store/diverged.js'
import {
  BLOCK_SIZE, P_DIRENT, P_XATTR, blockBase, direntBase, inodeBase, journalKey, localKey, metaKey, withLayer, xattrBase
} from '../../src/store/keys.js'
import { snapshotIno } from '../../src/store/volume-state.js'
import { readFile, treeDump } from '../helpers/replica.js'
import { ROOT, putFile } from '../helpers/volume.js'
import { pattern } from '../helpers/workload.js'
import { allLogical, digestOf, fillRecords, recordingHost, replicaOf, submit } from '../helpers/diverged.js'

const KiB = 1024
const b = (s: string): Buffer => Buffer.from(s)

t.test('overlay of two sorted logical ranges: the victim\'s differing values, tombstones where it lacks a base', async t => {
  const survivor: Array<[Buffer, Buffer]> = [[b('a'), b('1')], [b('b'), b('2')], [b('d'), b('4')]]
  const victim: Array<[Buffer, Buffer]> = [[b('b'), b('2')], [b('c'), b('3')], [b('d'), b('X')]]
  t.same(divergedOverlay(survivor, victim).map(([k, v]) => [k.toString(), v.toString()]), [['a', ''], ['c', '3'], ['d', 'X']])
  t.same(divergedOverlay([], victim).map(([k]) => k.toString()), ['b', 'c', 'd'], 'everything is new')
  t.same(divergedOverlay(survivor, []).map(([k, v]) => [k.toString(), v.length]), [['a', 0], ['b', 0], ['d', 0]], 'everything is gone')
  t.same(divergedOverlay(survivor, survivor), [], 'same content: nothing to fill')
  const entries: Array<[Buffer, Buffer]> = [0, 1, 2, 3, 4].map(i => [b(`k${i}`), Buffer.alloc(100)])
  const chunks = fillChunks(entries, 2 * fillEntryBytes(entries[0]))
  t.same(chunks.map(c => c.length), [2, 2, 1], 'chunks fill up to the limit, in order')
  t.same(chunks.flat().map(([k]) => k.toString()), ['k0', 'k1', 'k2', 'k3', 'k4'])
})

t.test('snapshot-diverged and snapshot-fill are commands that round-trip through the codec', async t => {
  const entries: Array<[Buffer, Buffer]> = [[inodeBase(7), encodeInode({
    ino: 7, mode: 0o100644, uid: 1, gid: 2, nlink: 1, size: 3, bytes: 3, rdev: 0, atime: 1n, mtime: 2n, ctime: 3n, btime: 4n, parent: 0, target: Buffer.alloc(0), xattrs: false
  })], [blockBase(7, 0), b('abc')], [xattrBase(7, b('user.q')), Buffer.alloc(0)]]
  const fill: LogRecord = { type: 'snapshot-fill', name: 'diverged-3-x', entries }
  const diverged: LogRecord = { type: 'snapshot-diverged', name: 'diverged-3-x', time: 123456789012345678n, inodes: 42 }
  t.same(decodeRecord(encodeRecord(fill)), fill)
  t.same(decodeRecord(encodeRecord(diverged)), diverged)
  t.ok(isCommand(fill) && isCommand(diverged), 'both are commands')
  const enc = encodeRecord(fill)
  t.throws(() => decodeRecord(enc.subarray(0, enc.length - 2)), { code: 'RECORD_INVALID' }, 'a truncated fill payload is refused')
  const jsonLen = enc.readUInt32BE(2)
  const torn = Buffer.from(enc)
  torn.writeUInt32BE(0xffff, 6 + jsonLen) // the first base's length now overruns the payload
  t.throws(() => decodeRecord(torn), { code: 'RECORD_INVALID' }, 'an entry length past the payload is refused')
})

t.test('a split brain: the survivor keeps the victim\'s live view as a read-only diverged snapshot', async t => {
  const a = await recordingHost()
  t.teardown(a.close)
  // Both hosts share this history.
  await a.vol.mkdir('/d', 0o755, ROOT)
  await a.vol.mkdir('/d/sub', 0o755, ROOT)
  await putFile(a.vol, '/big', pattern(300 * KiB, 1))
  await putFile(a.vol, '/d/f', 'shared file')
  await putFile(a.vol, '/d/sub/g', pattern(70 * KiB, 2))
  await a.vol.setxattr('/d/f', 'user.k', b('shared'), 0)
  await a.vol.symlink('d/f', '/lnk', ROOT)
  await a.vol.link('/d/f', '/d/f-link')
  await a.vol.createSnapshot('before')
  await a.log.settle()
  const victim = await replicaOf(a.records)
  t.teardown(victim.close)
  t.equal(await digestOf(victim), await digestOf(a), 'the twins start identical')

  // Each writes on its own: both hand out the same new inode numbers, to different files.
  await putFile(a.vol, '/a-only', pattern(100 * KiB, 3))
  const fh = await a.vol.open('/big', 2)
  await a.vol.write(fh, pattern(10 * KiB, 4), 10 * KiB, 64 * KiB)
  await a.vol.release(fh)
  await a.vol.unlink('/d/f-link')
  await a.vol.rename('/d/sub', '/sub-moved')
  await a.vol.setxattr('/d/f', 'user.k', b('survivor'), 0)

  await putFile(victim.vol, '/b-only', pattern(130 * KiB, 5))
  await victim.vol.setxattr('/b-only', 'user.b', b('victim'), 0)
  await victim.vol.truncate('/big', null, 100 * KiB)
  const vfh = await victim.vol.open('/d/f', 2)
  await victim.vol.write(vfh, b('victim wrote this'), 17, 0)
  await victim.vol.release(vfh)
  await victim.vol.removexattr('/d/f', 'user.k')
  await victim.vol.unlink('/d/sub/g')
  await victim.vol.mkdir('/d/sub/new-dir', 0o700, ROOT)
  await victim.vol.rename('/lnk', '/d/sub/new-dir/lnk2')
  await victim.vol.link('/b-only', '/d/b-link')
  await victim.vol.chmod('/d', 0o711)
  await victim.log.settle()
  t.equal((await a.vol.getattr('/a-only')).ino, (await victim.vol.getattr('/b-only')).ino, 'both allocated the same inode number')

  const survivorTree = await treeDump(a.vol, '/')
  const victimTree = await treeDump(victim.vol, '/')
  t.not(JSON.stringify(survivorTree), JSON.stringify(victimTree), 'the two trees differ')
  const usedBefore = a.state.counters.usedBytes

  const name = 'diverged-7-20240101T000000Z'
  await submit(a, { type: 'snapshot-diverged', name, time: 1_700_000_000_000_000_000n, inodes: victim.state.counters.inodes })
  const snap = a.state.snapshot(name)!
  t.equal(snap.diverged, true)
  t.equal(snap.inodes, victim.state.counters.inodes, 'the snapshot counts the victim\'s inodes')
  t.not(snap.chain[0], a.state.live.chain[0], 'the snapshot has its own top layer')
  t.same(snap.chain.slice(1), a.state.live.chain.slice(1), '... over the live chain as it was, whose old top is now frozen')
  t.same(await treeDump(a.vol, `/.snapshots/${name}`), survivorTree, 'before the fills it shows the survivor\'s view')

  // Range by range, with bounds inside the block and inode prefixes too.
  const bounds = [null, blockBase(3, 1), Buffer.from([P_DIRENT]), inodeBase(4), Buffer.from([P_XATTR]), null]
  const whole = await allLogical(victim, victim.state.live.chain)
  const pieces = []
  for (let i = 0; i + 1 < bounds.length; i++) pieces.push(...await allLogical(victim, victim.state.live.chain, bounds[i], bounds[i + 1]))
  t.same(pieces, whole, 'the ranges together give the whole view, in base order')
  t.notOk(whole.some(([k, v]) => ![0x62, 0x64, 0x69, 0x78].includes(k[0]) || v.length === 0), 'only layered bases, no tombstones')
  const fills = await fillRecords(a, name, victim, bounds, 64 * KiB)
  t.ok(fills.length > 2, `the overlay went out in ${fills.length} fill records`)
  for (const f of fills) await submit(a, f)

  t.same(await treeDump(a.vol, `/.snapshots/${name}`), victimTree, 'the snapshot shows exactly the victim\'s live tree')
  t.same(await treeDump(a.vol, '/'), survivorTree, 'the survivor\'s live tree is unchanged')
  const shown = await allLogical(a, snap.chain)
  t.same(shown, whole, 'logically the snapshot is the victim\'s view')
  t.same(divergedOverlay(shown, whole), [], 'so comparing again leaves nothing to fill')
  t.same((await fsck(a.state)).problems, [], 'fsck is clean')
  t.ok(a.state.counters.nextIno >= victim.state.counters.nextIno, 'new inode numbers stay above the snapshot\'s')
  const infos = await a.vol.listSnapshots({ space: true })
  const info = infos.find(i => i.name === name)!
  t.equal(info.diverged, true, 'snapshot list marks it diverged')
  t.equal(info.writable, false)
  t.equal(infos.find(i => i.name === 'before')!.diverged, undefined, 'and only it')

  // Read-only for users, whichever way they try.
  const at = `/.snapshots/${name}`
  await t.rejects(a.vol.open(`${at}/d/f`, 2), { code: 'EROFS' }, 'open for writing')
  await t.rejects(a.vol.create(`${at}/new`, 0o644, ROOT), { code: 'EROFS' }, 'create')
  await t.rejects(a.vol.mkdir(`${at}/d/nd`, 0o755, ROOT), { code: 'EROFS' }, 'mkdir')
  await t.rejects(a.vol.unlink(`${at}/b-only`), { code: 'EROFS' }, 'unlink')
  await t.rejects(a.vol.rename(`${at}/b-only`, `${at}/b2`), { code: 'EROFS' }, 'rename')
  await t.rejects(a.vol.truncate(`${at}/b-only`, null, 0), { code: 'EROFS' }, 'truncate')
  await t.rejects(a.vol.setxattr(`${at}/b-only`, 'user.z', b('z'), 0), { code: 'EROFS' }, 'setxattr')
  await t.rejects(a.vol.access(`${at}/b-only`, 2, ROOT), { code: 'EROFS' }, 'access W_OK')
  const bOnly = (await victim.vol.getattr('/b-only')).ino
  await t.rejects(a.log.apply({ type: 'write', ino: snapshotIno(snap.id, bOnly), offset: 0, data: b('x'), time: 1n }), { code: 'RECORD_INVALID' }, 'a write record aimed at it is refused too')

  // Malformed records are refused and change nothing.
  const digest = await digestOf(a)
  const seq = a.state.counters.seq
  const fill = (entries: unknown, n = name): LogRecord => ({ type: 'snapshot-fill', name: n, entries } as unknown as LogRecord)
  const bad: Array<[string, LogRecord]> = [
    ['a meta key base', fill([[metaKey('counters'), b('{}')]])],
    ['a journal key base', fill([[journalKey(1), b('x')]])],
    ['a local key base', fill([[localKey('last-record'), b('x')]])],
    ['a base with its layer suffix', fill([[withLayer(inodeBase(2), 5), Buffer.alloc(0)]])],
    ['a short inode base', fill([[inodeBase(2).subarray(0, 8), Buffer.alloc(0)]])],
    ['an empty dirent name', fill([[direntBase(1, Buffer.alloc(0)), Buffer.alloc(0)]])],
    ['an unknown snapshot', fill([[blockBase(bOnly, 0), b('x')]], 'nope')],
    ['a read-only snapshot that is not diverged', fill([[blockBase(bOnly, 0), b('x')]], 'before')],
    ['an oversized block', fill([[blockBase(bOnly, 0), Buffer.alloc(BLOCK_SIZE + 1)]])],
    ['an inode value that does not decode', fill([[inodeBase(bOnly), b('junk')]])],
    ['a dirent value of the wrong size', fill([[direntBase(1, b('zz')), b('short')]])],
    ['an xattr value without its marker', fill([[xattrBase(bOnly, b('user.m')), b('v')]])],
    ['bases out of order', fill([[blockBase(bOnly, 1), b('x')], [blockBase(bOnly, 0), b('x')]])],
    ['a base twice', fill([[blockBase(bOnly, 0), b('x')], [blockBase(bOnly, 0), b('y')]])],
    ['more than FILL_MAX_BYTES', fill(Array.from({ length: FILL_MAX_BYTES / BLOCK_SIZE + 1 }, (_, i) => [blockBase(bOnly, i), Buffer.alloc(BLOCK_SIZE)]))],
    ['entries that are not pairs of Buffers', fill([['a', 'b']])],
    ['no entries array', fill('nope')]
  ]
  for (const [what, rec] of bad) await t.rejects(a.log.apply(rec), { code: 'RECORD_INVALID' }, `fill with ${what}`)
  await t.rejects(a.log.apply({ type: 'snapshot-diverged', name, time: 1n, inodes: 1 }), { code: 'SNAPSHOT_EXISTS' }, 'diverged: a name that exists')
  await t.rejects(a.log.apply({ type: 'snapshot-diverged', name: 'a/b', time: 1n, inodes: 1 }), { code: 'RECORD_INVALID' }, 'diverged: an invalid name')
  await t.rejects(a.log.apply({ type: 'snapshot-diverged', name: 'fine', time: 1n, inodes: -1 }), { code: 'RECORD_INVALID' }, 'diverged: a negative inode count')
  t.equal(a.state.counters.seq, seq, 'no record was applied')
  t.equal(await digestOf(a), digest, 'the state is byte for byte what it was')

  // Another host replaying the same records ends up byte-identical: verify and GC agree.
  const replica = await replicaOf(a.records)
  t.teardown(replica.close)
  t.equal(await digestOf(replica), digest, 'a replay gives a byte-identical state digest')
  t.same((await fsck(replica.state)).problems, [], 'and is fsck-clean')

  // On the replica: restore from it like from any snapshot.
  await replica.vol.restoreSnapshot(name)
  t.same(await treeDump(replica.vol, '/'), victimTree, 'after a restore the live tree is the victim\'s')
  await putFile(replica.vol, '/after-restore', 'new file')
  t.equal((await readFile(replica.vol, '/after-restore')).toString(), 'new file', 'new files get numbers of their own')
  t.same((await fsck(replica.state)).problems, [], 'fsck is clean after the restore and a create')
  const late = Buffer.concat([Buffer.from([1]), b('late')])
  await submit(replica, { type: 'snapshot-fill', name, entries: [[xattrBase(bOnly, b('user.late')), late]] })
  t.equal((await replica.vol.getxattr(`${at}/b-only`, null, 'user.late')).toString(), 'late', 'a fill after the restore lands in the snapshot')
  await t.rejects(replica.vol.getxattr('/b-only', null, 'user.late'), { code: 'ENODATA' }, '... and not in the restored live view')
  t.same((await fsck(replica.state)).problems, [], 'fsck is clean after that fill')

  // On the survivor: delete frees exactly what only the snapshot held.
  const used = a.state.counters.usedBytes
  t.ok(used > usedBefore, 'the fills stored the victim\'s blocks')
  t.equal(info.heldBytes, used - usedBefore, 'list says the snapshot alone holds those bytes')
  const { freedBytes } = await a.vol.deleteSnapshot(name)
  t.equal(freedBytes, used - usedBefore, 'delete frees them')
  t.equal(a.state.counters.usedBytes, usedBefore, 'usedBytes is back where it was')
  t.same(await treeDump(a.vol, '/'), survivorTree, 'the live tree is still the survivor\'s')
  t.same((await fsck(a.state)).problems, [], 'fsck is clean after the delete')
})

t.test('a refreshed diverged snapshot becomes a plain one and takes no more fills', async t => {
  const a = await recordingHost()
  t.teardown(a.close)
  await putFile(a.vol, '/f', 'x')
  await submit(a, { type: 'snapshot-diverged', name: 'dv', time: 5n, inodes: 2 })
  t.notOk(a.state.layers.live.includes(a.state.snapshot('dv')!.chain[0]), 'its top is its own')
  await a.vol.refreshSnapshot('dv')
  t.equal(a.state.snapshot('dv')!.diverged, undefined, 'no longer diverged')
  t.equal((await a.vol.listSnapshots())[0].diverged, undefined)
  await t.rejects(a.log.apply({ type: 'snapshot-fill', name: 'dv', entries: [] }), { code: 'RECORD_INVALID' }, 'fills are refused')
  t.same((await fsck(a.state)).problems, [], 'fsck is clean')
})

t.test('a fill that replaces a block in the snapshot\'s top counts only the difference', async t => {
  const a = await recordingHost()
  t.teardown(a.close)
  await putFile(a.vol, '/f', 'live')
  await submit(a, { type: 'snapshot-diverged', name: 'dv', time: 5n, inodes: 3 })
  const used = a.state.counters.usedBytes
  const ino = a.state.counters.nextIno
  const file = encodeInode({
    ino, mode: 0o100644, uid: 0, gid: 0, nlink: 1, size: 10, bytes: 10, rdev: 0, atime: 1n, mtime: 1n, ctime: 1n, btime: 1n, parent: 0, target: Buffer.alloc(0), xattrs: false
  })
  const entries = (data: string): Array<[Buffer, Buffer]> => [
    [blockBase(ino, 0), b(data)], [direntBase(1, b('n')), encodeDirent(ino, 0o100644)], [inodeBase(ino), file]
  ]
  await submit(a, { type: 'snapshot-fill', name: 'dv', entries: entries('0123456789') })
  t.equal(a.state.counters.usedBytes, used + 10, 'a new block counts its bytes')
  await submit(a, { type: 'snapshot-fill', name: 'dv', entries: entries('abcdefghij') })
  t.equal(a.state.counters.usedBytes, used + 10, 'replacing it counts nothing more')
  t.equal((await readFile(a.vol, '/.snapshots/dv/n')).toString(), 'abcdefghij', 'the snapshot shows the new version')
  await t.rejects(a.vol.getattr('/n'), { code: 'ENOENT' }, 'the live view does not')
  t.equal(a.state.counters.nextIno, ino + 1, 'the counter moved past the snapshot\'s new inode')
  t.same((await fsck(a.state)).problems, [], 'fsck is clean')
})
