import { type Inode, S_IFDIR, S_IFMT, isDir } from '../store/inode.js'
import { ROOT_INO } from '../store/keys.js'
import type { Tx } from '../store/volume-state.js'
import { type Handlers, dirInode, dropLink, invalid, touchDir } from './apply-common.js'
import { SNAPSHOT_HANDLERS } from './apply-snapshots.js'
import type { LogRecord } from './records.js'

/**
 * The one state transition: turns a record into LevelDB ops on `tx`. Used unchanged by the
 * primary (right after it makes a record) and by a replica (when it receives one), so the same
 * records give the same store. It trusts nothing: a record that does not fit the state it is
 * applied to is refused with RECORD_INVALID and changes nothing.
 */
export async function applyRecord (rec: LogRecord, tx: Tx): Promise<void> {
  // An own property only: a type named like an Object method is as unknown as any other.
  if (!Object.hasOwn(HANDLERS, rec.type)) throw invalid(`unknown record type ${String(rec.type)}`)
  await (HANDLERS[rec.type] as (r: LogRecord, tx: Tx) => Promise<void>)(rec, tx)
}

/** The namespace and data records; the snapshot commands are in apply-snapshots.ts. */
const FILE_HANDLERS: Omit<Handlers, keyof typeof SNAPSHOT_HANDLERS> = {
  async init (rec, tx) {
    if (tx.state.format !== null) throw invalid('init: volume already initialised')
    const root: Inode = {
      ino: ROOT_INO, mode: S_IFDIR | (rec.mode & 0o7777), uid: rec.uid, gid: rec.gid, nlink: 2, size: 0, bytes: 0, rdev: 0,
      atime: rec.time, mtime: rec.time, ctime: rec.time, btime: rec.time, parent: ROOT_INO, target: Buffer.alloc(0), xattrs: false
    }
    tx.format = { formatVersion: 1, volumeId: rec.volumeId, blockSize: rec.blockSize }
    tx.putMeta('format', tx.format)
    tx.putMeta('layers', tx.state.layers)
    tx.putInode(root)
    tx.counters.inodes = 1
    tx.counters.nextIno = ROOT_INO + 1
  },

  async mknod (rec, tx) {
    const parent = await dirInode(tx, rec.parent, 'mknod')
    if (await tx.dirent(rec.parent, rec.name) !== undefined) throw invalid(`mknod: ${rec.parent}/${rec.name} exists`)
    // Inode numbers are handed out from nextIno up and never reused (fsck checks that none in use
    // is at or above it), so a number at or above it is free without reading the store.
    if (!Number.isSafeInteger(rec.ino) || rec.ino < tx.counters.nextIno) throw invalid(`mknod: inode ${rec.ino} is not free`)
    const dir = (rec.mode & S_IFMT) === S_IFDIR
    const target = rec.target === undefined ? Buffer.alloc(0) : Buffer.from(rec.target)
    tx.putInode({
      ino: rec.ino, mode: rec.mode, uid: rec.uid, gid: rec.gid, nlink: dir ? 2 : 1, size: target.length, bytes: 0,
      rdev: rec.rdev, atime: rec.time, mtime: rec.time, ctime: rec.time, btime: rec.time, parent: dir ? rec.parent : 0, target, xattrs: false
    })
    tx.putDirent(rec.parent, rec.name, rec.ino, rec.mode)
    if (dir) parent.nlink++
    touchDir(parent, rec.time)
    tx.putInode(parent)
    tx.counters.nextIno = rec.ino + 1
    if (tx.isLive) tx.counters.inodes++
  },

  async link (rec, tx) {
    const parent = await dirInode(tx, rec.parent, 'link')
    const n = await tx.mustInode(rec.ino, 'link')
    if (isDir(n)) throw invalid('link: cannot hard-link a directory')
    if (await tx.dirent(rec.parent, rec.name) !== undefined) throw invalid(`link: ${rec.parent}/${rec.name} exists`)
    tx.putDirent(rec.parent, rec.name, rec.ino, n.mode)
    n.nlink++
    n.ctime = rec.time
    tx.putInode(n)
    touchDir(parent, rec.time)
    tx.putInode(parent)
  },

  async unlink (rec, tx) {
    const parent = await dirInode(tx, rec.parent, 'unlink')
    const e = await tx.dirent(rec.parent, rec.name)
    if (e === undefined) throw invalid(`unlink: ${rec.parent}/${rec.name} does not exist`)
    const n = await tx.mustInode(e.ino, 'unlink')
    if (isDir(n)) throw invalid('unlink: is a directory')
    tx.deleteDirent(rec.parent, rec.name)
    touchDir(parent, rec.time)
    tx.putInode(parent)
    await dropLink(tx, n, rec.time, rec.keep)
  },

  async rmdir (rec, tx) {
    const parent = await dirInode(tx, rec.parent, 'rmdir')
    const e = await tx.dirent(rec.parent, rec.name)
    if (e === undefined) throw invalid(`rmdir: ${rec.parent}/${rec.name} does not exist`)
    const n = await dirInode(tx, e.ino, 'rmdir')
    if (!await tx.isEmptyDir(n.ino)) throw invalid('rmdir: directory not empty')
    tx.deleteDirent(rec.parent, rec.name)
    parent.nlink--
    touchDir(parent, rec.time)
    tx.putInode(parent)
    await tx.freeInode(n)
  },

  async rename (rec, tx) {
    const src = await dirInode(tx, rec.srcParent, 'rename')
    const e = await tx.dirent(rec.srcParent, rec.srcName)
    if (e === undefined) throw invalid(`rename: ${rec.srcParent}/${rec.srcName} does not exist`)
    const moving = await tx.mustInode(e.ino, 'rename')
    const replaced = await tx.dirent(rec.dstParent, rec.dstName)
    if (replaced?.ino === moving.ino) return // both names are links to one inode: POSIX says do nothing
    if (isDir(moving) && await isInside(tx, rec.dstParent, moving.ino)) throw invalid('rename: directory into itself')
    const sameDir = rec.srcParent === rec.dstParent
    const dst = sameDir ? src : await dirInode(tx, rec.dstParent, 'rename')
    if (replaced !== undefined) {
      const old = await tx.mustInode(replaced.ino, 'rename')
      if (isDir(old) !== isDir(moving)) throw invalid('rename: file and directory cannot replace each other')
      if (isDir(old)) {
        if (!await tx.isEmptyDir(old.ino)) throw invalid('rename: target directory not empty')
        dst.nlink--
        await tx.freeInode(old)
      } else {
        await dropLink(tx, old, rec.time, rec.keep)
      }
    }
    tx.deleteDirent(rec.srcParent, rec.srcName)
    tx.putDirent(rec.dstParent, rec.dstName, moving.ino, moving.mode)
    if (isDir(moving) && !sameDir) { src.nlink--; dst.nlink++; moving.parent = rec.dstParent }
    moving.ctime = rec.time
    tx.putInode(moving)
    touchDir(src, rec.time)
    tx.putInode(src)
    if (!sameDir) { touchDir(dst, rec.time); tx.putInode(dst) }
  },

  async setattr (rec, tx) {
    const n = await tx.mustInode(rec.ino, 'setattr')
    if (rec.size !== undefined) {
      if (isDir(n)) throw invalid('setattr: size of a directory')
      await tx.truncateData(n, rec.size)
    }
    if (rec.mode !== undefined) n.mode = (n.mode & S_IFMT) | (rec.mode & 0o7777)
    if (rec.uid !== undefined) n.uid = rec.uid
    if (rec.gid !== undefined) n.gid = rec.gid
    if (rec.atime !== undefined) n.atime = rec.atime
    if (rec.mtime !== undefined) n.mtime = rec.mtime
    n.ctime = rec.time
    tx.putInode(n)
  },

  async write (rec, tx) {
    const n = await tx.mustInode(rec.ino, 'write')
    if ((n.mode & S_IFMT) !== 0o100000) throw invalid('write: not a regular file')
    await tx.writeData(n, rec.offset, rec.data)
    n.mtime = rec.time
    n.ctime = rec.time
    tx.putInode(n)
  },

  async setxattr (rec, tx) {
    const n = await tx.mustInode(rec.ino, 'setxattr')
    tx.setXattr(rec.ino, rec.name, rec.value)
    n.ctime = rec.time
    n.xattrs = true
    tx.putInode(n)
  },

  async removexattr (rec, tx) {
    const n = await tx.mustInode(rec.ino, 'removexattr')
    tx.removeXattr(rec.ino, rec.name)
    n.ctime = rec.time
    tx.putInode(n)
  },

  async purge (rec, tx) {
    const n = await tx.mustInode(rec.ino, 'purge')
    if (n.nlink !== 0) throw invalid(`purge: inode ${rec.ino} still has ${n.nlink} links`)
    await tx.freeInode(n)
  }
}

const HANDLERS: Handlers = { ...FILE_HANDLERS, ...SNAPSHOT_HANDLERS }

/** Is directory `dir` the directory `ancestor` or below it? Walks up the parent links. */
export async function isInside (tx: Tx, dir: number, ancestor: number): Promise<boolean> {
  for (let ino = dir, hops = 0; ; hops++) {
    if (ino === ancestor) return true
    if (ino === ROOT_INO) return false
    if (hops > 1_000_000) throw invalid('directory parent links form a cycle')
    ino = (await dirInode(tx, ino, 'rename')).parent
  }
}
