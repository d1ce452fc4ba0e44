import t from 'tap'
import { Store } from '../../src/store/store.js'
import { fsck } from '../../src/store/fsck.js'
import { blockBase, metaKey, withLayer, P_XATTR } from '../../src/store/keys.js'
import { decodeInode, encodeInode } from '../../src/store/inode.js'
import { ROOT, putFile, tempVolume } from '../helpers/volume.js'

t.test('writes past --size get ENOSPC and change nothing', async t => {
  const v = await tempVolume({ sizeLimit: 1 << 20 })
  t.teardown(v.close)
  const fh = await v.vol.create('/f', 0o644, ROOT)
  await v.vol.write(fh, Buffer.alloc(900_000, 1), 900_000, 0)
  const seq = v.state.counters.seq
  await t.rejects(v.vol.write(fh, Buffer.alloc(200_000, 2), 200_000, 900_000), { code: 'ENOSPC' })
  t.equal(v.state.counters.seq, seq, 'no record was made')
  t.equal((await v.vol.getattr('/f')).size, 900_000)
  // Overwriting in place needs no space and still works when full.
  await v.vol.write(fh, Buffer.alloc(1000, 3), 1000, 0)
  const out = Buffer.alloc(1000)
  await v.vol.read(fh, out, 1000, 0)
  t.ok(out.equals(Buffer.alloc(1000, 3)))
  t.ok((await fsck(v.state)).ok)
})

t.test('a store held by one process is refused to another with STORE_LOCKED and a hint', async t => {
  const v = await tempVolume()
  t.teardown(v.close)
  const err = await Store.open(v.dir).then(() => null, e => e)
  t.equal(err?.code, 'STORE_LOCKED')
  t.match(err?.hint, /fuser|unmount/)
})

t.test('fsck finds a lost block, a wrong counter and a dangling entry', async t => {
  const v = await tempVolume()
  t.teardown(v.close)
  const fh = await v.vol.create('/f', 0o644, ROOT)
  await v.vol.write(fh, Buffer.alloc(200_000, 1), 200_000, 0)
  await v.vol.release(fh)
  await v.vol.mkdir('/d', 0o755, ROOT)
  await v.log.settle()
  t.ok((await fsck(v.state)).ok, 'clean before damage')
  const ino = (await v.vol.getattr('/f')).ino
  await v.store.raw.del(withLayer(blockBase(ino, 1), 1))
  await v.store.raw.put(metaKey('counters'), Buffer.from(JSON.stringify({ ...v.state.counters, inodes: 99 })))
  const dir = (await v.vol.getattr('/d')).ino
  await v.store.raw.del(withLayer((await import('../../src/store/keys.js')).inodeBase(dir), 1))
  await v.state.reload()
  const r = await fsck(v.state)
  t.notOk(r.ok)
  t.ok(r.problems.some(p => /stored bytes/.test(p)), 'lost block found')
  t.ok(r.problems.some(p => /99 inodes/.test(p)), 'wrong inode counter found')
  t.ok(r.problems.some(p => /missing inode/.test(p)), 'dangling entry found')
})

t.test('sparse files store only what was written; holes read as zeros', async t => {
  const v = await tempVolume()
  t.teardown(v.close)
  const fh = await v.vol.create('/s', 0o644, ROOT)
  await v.vol.truncate(null, fh, 2 ** 31)
  await v.vol.write(fh, Buffer.from('end'), 3, 2 ** 31 - 3)
  const st = await v.vol.getattr('/s')
  t.equal(st.size, 2 ** 31)
  t.ok(st.blocks * 512 <= 65536, `${st.blocks * 512} bytes allocated for a 2 GiB sparse file`)
  const out = Buffer.alloc(8, 0xff)
  await v.vol.read(fh, out, 8, 2 ** 30)
  t.ok(out.equals(Buffer.alloc(8)), 'hole reads as zeros')
  t.ok((await fsck(v.state)).ok)
})

/** Makes the store's next LevelDB read(s) of a key slow, as a busy disk or thread pool would. */
function slowNextReads (v: Awaited<ReturnType<typeof tempVolume>>, ms: number): { release: () => void } {
  const db = (v.store as unknown as { db: Record<string, (...a: unknown[]) => Promise<unknown>> }).db
  const get = db.get.bind(db)
  const getMany = db.getMany.bind(db)
  let slow = true
  // Whether a read is slow is decided when it starts.
  const delay = async <T>(p: Promise<T>): Promise<T> => { const wait = slow; const r = await p; if (wait) await new Promise(resolve => setTimeout(resolve, ms)); return r }
  db.get = async (...a: unknown[]) => await delay(get(...a))
  db.getMany = async (...a: unknown[]) => await delay(getMany(...a))
  return { release: () => { slow = false; db.get = get; db.getMany = getMany } }
}

t.test('a lookup or inode read in flight across a commit does not cache what it read before the commit', async t => {
  const v = await tempVolume()
  t.teardown(v.close)
  await v.vol.create('/f', 0o644, ROOT).then(async fh => { await v.vol.write(fh, Buffer.from('v1'), 2, 0); await v.vol.release(fh) })
  const ino = (await v.state.lookup(1, 'f'))!.ino
  // Evict the cached entries by reloading, then start reads that LevelDB answers slowly.
  await v.state.reload()
  const slow = slowNextReads(v, 80)
  const lookup = v.state.lookup(1, 'x')
  const inode = v.state.inode(ino)
  slow.release() // the two reads above are already slow; the writes below are not
  const fh = await v.vol.create('/x', 0o644, ROOT)
  await v.vol.release(fh)
  const wf = await v.vol.open('/f', 2)
  await v.vol.write(wf, Buffer.from('longer'), 6, 0)
  await v.vol.release(wf)
  t.equal(await lookup, undefined, 'the lookup that started before the create saw no x (it began first)')
  t.equal((await inode)?.size, 2, 'the inode read that started before the write saw size 2')
  t.ok(await v.state.lookup(1, 'x') !== undefined, 'a later lookup finds x (no stale "no such name" was cached)')
  t.equal((await v.state.inode(ino))?.size, 6, 'a later read sees size 6 (no stale inode was cached)')
  t.equal((await v.vol.getattr('/f')).size, 6)
})

t.test('an inode says whether it may have xattrs: freeing one scans for them only then, and still frees them all', async t => {
  const v = await tempVolume()
  t.teardown(() => v.close())
  await putFile(v.vol, '/plain', 'x')
  await putFile(v.vol, '/tagged', 'y')
  await v.vol.setxattr('/tagged', 'user.a', Buffer.from('1'), 0)
  await v.vol.setxattr('/tagged', 'user.b', Buffer.from('2'), 0)
  await v.vol.removexattr('/tagged', 'user.b')
  const store = v.state.store
  const real = store.iteratePrefix.bind(store)
  let scans = 0
  store.iteratePrefix = (prefix, opts) => { if (prefix[0] === P_XATTR) scans++; return real(prefix, opts) }
  await v.vol.unlink('/plain')
  t.equal(scans, 0, 'a file that never had an xattr is freed without a scan')
  await v.vol.unlink('/tagged')
  t.ok(scans > 0, 'a file that had some is scanned')
  await v.log.settle()
  let left = 0
  for await (const _ of real(Buffer.from([P_XATTR]))) left++
  t.equal(left, 0, 'and no xattr is left behind')
  const r = await fsck(v.state)
  t.ok(r.ok, `fsck: ${r.problems.join('; ') || 'clean'}`)
})

t.test('inodes stored before the xattr flag existed (version 1) read the same, as possibly having xattrs', async t => {
  const n = { ino: 7, mode: 0o100644, uid: 1, gid: 2, nlink: 1, size: 5, bytes: 5, rdev: 0, atime: 1n, mtime: 2n, ctime: 3n, btime: 4n, parent: 0, target: Buffer.from('tgt'), xattrs: false }
  const v2 = encodeInode(n)
  t.equal(v2[0], 2, 'written as version 2')
  t.same(decodeInode(7, v2), n, 'version 2 round-trips')
  const v1 = Buffer.concat([v2.subarray(0, 77), v2.subarray(78)])
  v1[0] = 1
  t.same(decodeInode(7, v1), { ...n, xattrs: true }, 'version 1 reads with every field, and xattrs assumed')
  t.throws(() => decodeInode(7, Buffer.concat([Buffer.from([3]), v2.subarray(1)])), /bad encoding/, 'an unknown version is refused')
})
