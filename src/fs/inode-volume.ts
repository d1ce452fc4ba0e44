import { fsError } from '../errors.js'
import type { LogRecord } from '../log/records.js'
import { NAME_MAX, ROOT_INO } from '../store/keys.js'
import { type Inode, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, S_ISGID, isDir, isLnk, isReg } from '../store/inode.js'
import { SNAPSHOTS_DIR_INO, snapshotIno } from '../store/volume-state.js'
import { nowNs } from './clock.js'
import { type Caller, MAX_FILE_SIZE, type Stat, VolumeCore, viewOf } from './volume-core.js'

const MAX_LINKS = 65_000
const PATH_MAX = 4096
const XATTR_SIZE_MAX = 65_536
const XATTR_CREATE = 1
const XATTR_REPLACE = 2
/** renameat2 flags. */
export const RENAME_NOREPLACE = 1
export const RENAME_EXCHANGE = 2

/** The directory (not listed in the root) through which snapshots are read. */
export const SNAPSHOTS_DIR = '.snapshots'

const EMPTY_ROOT: Inode = {
  ino: ROOT_INO, mode: S_IFDIR | 0o755, uid: 0, gid: 0, nlink: 2, size: 0, bytes: 0, rdev: 0,
  atime: 0n, mtime: 0n, ctime: 0n, btime: 0n, parent: ROOT_INO, target: Buffer.alloc(0), xattrs: false
}

type SetattrChange = Omit<Partial<LogRecord & { type: 'setattr' }>, 'type' | 'ino' | 'time'>

/**
 * POSIX semantics over the store, addressed as the kernel's low-level interface addresses them:
 * by inode number, and a directory's inode plus one name. Inode numbers are unique across the
 * live view and the snapshots' views, so they serve as the kernel's node ids. Every change
 * becomes a record submitted to the RecordLog; checks run under its lock, against the state the
 * record will apply to.
 */
export class InodeVolume extends VolumeCore {
  // ---- reads ----

  /** The inode `ino`, including the .snapshots directory and each snapshot's root (whose parent is .snapshots). */
  async inode (ino: number): Promise<Inode> {
    if (ino === SNAPSHOTS_DIR_INO) return this.snapshotsDir(await this.inode(ROOT_INO))
    const n = await this.state.inode(ino)
    if (n === undefined) {
      // A replica that has not received its volume yet shows an empty directory: nothing in it exists.
      if (ino === ROOT_INO && this.readOnly && this.state.format === null) return EMPTY_ROOT
      if (ino === ROOT_INO) throw fsError('EIO', 'volume has no root')
      throw fsError('ENOENT', `no inode ${ino}`)
    }
    if (ino !== ROOT_INO && viewOf(ino) > 0 && ino === snapshotIno(viewOf(ino), ROOT_INO)) return { ...n, parent: SNAPSHOTS_DIR_INO }
    return n
  }

  /** The entry `name` in directory `parent` (the kernel's lookup: one component, never a path). */
  async lookup (parent: number, name: string): Promise<Inode> {
    const dir = await this.inode(parent)
    if (!isDir(dir)) throw fsError('ENOTDIR')
    if (Buffer.byteLength(name) > NAME_MAX) throw fsError('ENAMETOOLONG', `name longer than ${NAME_MAX} bytes`)
    if (dir.ino === ROOT_INO && name === SNAPSHOTS_DIR && dir !== EMPTY_ROOT) return this.snapshotsDir(dir)
    if (dir.ino === SNAPSHOTS_DIR_INO) {
      const snap = this.state.snapshot(name)
      if (snap === undefined) throw fsError('ENOENT', name)
      return await this.inode(snapshotIno(snap.id, ROOT_INO))
    }
    const e = await this.state.lookup(dir.ino, name)
    if (e === undefined) throw fsError('ENOENT', name)
    const next = await this.state.inode(e.ino)
    if (next === undefined) throw fsError('EIO', `dangling entry ${name} in directory ${parent}`)
    return next
  }

  async getattr (ino: number): Promise<Stat> {
    return this.stat(await this.inode(ino))
  }

  async readlink (ino: number): Promise<string> {
    const n = await this.inode(ino)
    if (!isLnk(n)) throw fsError('EINVAL', `inode ${ino} is not a symlink`)
    return n.target.toString()
  }

  async readdir (ino: number): Promise<Array<{ name: string, ino: number, type: number }>> {
    const n = await this.inode(ino)
    if (!isDir(n)) throw fsError('ENOTDIR')
    const out = [{ name: '.', ino: n.ino, type: S_IFDIR }, { name: '..', ino: n.parent, type: S_IFDIR }]
    if (n.ino === SNAPSHOTS_DIR_INO) {
      for (const s of this.state.snapshots) out.push({ name: s.name, ino: snapshotIno(s.id, ROOT_INO), type: S_IFDIR })
      return out
    }
    for await (const e of this.state.readdir(n.ino)) out.push(e)
    return out
  }

  /** `fh` (an open handle) names the file when given; else `ino`. */
  async getxattr (ino: number, fh: number | null, name: string): Promise<Buffer> {
    const n = await this.targetOf(ino, fh)
    checkXattrName(name)
    if (!name.startsWith('user.')) throw fsError('ENODATA')
    const v = await this.state.getxattr(n.ino, name)
    if (v === undefined) throw fsError('ENODATA')
    return v
  }

  async listxattr (ino: number): Promise<string[]> {
    return await this.state.listxattr((await this.inode(ino)).ino)
  }

  async access (ino: number, mode: number, caller: Caller): Promise<void> {
    const n = await this.inode(ino)
    if (mode === 0) return
    if ((mode & 2) !== 0 && (this.readOnly || this.frozen(n.ino))) throw fsError('EROFS')
    if (caller.uid === 0) {
      // root may do anything except execute a file no one may execute
      if ((mode & 1) !== 0 && !isDir(n) && (n.mode & 0o111) === 0) throw fsError('EACCES')
      return
    }
    const bits = caller.uid === n.uid ? (n.mode >> 6) & 7 : caller.gid === n.gid ? (n.mode >> 3) & 7 : n.mode & 7
    if ((mode & bits) !== mode) throw fsError('EACCES')
  }

  // ---- handles ----

  async open (ino: number, flags: number): Promise<number> {
    const n = await this.inode(ino)
    if (isLnk(n)) throw fsError('ELOOP', `inode ${ino} is a symlink`)
    if ((flags & 3) !== 0 && (this.readOnly || this.frozen(n.ino))) throw fsError('EROFS')
    if ((flags & 3) !== 0 && isDir(n)) throw fsError('EISDIR')
    return this.addHandle(n.ino, flags)
  }

  async opendir (ino: number): Promise<number> {
    if (!isDir(await this.inode(ino))) throw fsError('ENOTDIR')
    return 0
  }

  // ---- changes ----

  /** A new regular file, open: its handle and inode number. */
  async create (parent: number, name: string, mode: number, caller: Caller, flags = 2): Promise<{ fh: number, ino: number }> {
    const rec = await this.mknodRecord(parent, name, (mode & 0o7777) | S_IFREG, caller)
    const ino = this.newInodeNumber(rec)
    return { fh: this.addHandle(ino, flags), ino }
  }

  async mknod (parent: number, name: string, mode: number, rdev: number, caller: Caller): Promise<number> {
    const type = mode & S_IFMT
    if (type === S_IFDIR || type === S_IFLNK) throw fsError('EINVAL')
    return this.newInodeNumber(await this.mknodRecord(parent, name, type === 0 ? (mode | S_IFREG) : mode, caller, rdev))
  }

  async mkdir (parent: number, name: string, mode: number, caller: Caller): Promise<number> {
    return this.newInodeNumber(await this.mknodRecord(parent, name, (mode & 0o7777) | S_IFDIR, caller))
  }

  async symlink (target: string, parent: number, name: string, caller: Caller): Promise<number> {
    if (Buffer.byteLength(target) >= PATH_MAX) throw fsError('ENAMETOOLONG', 'symlink target too long')
    return this.newInodeNumber(await this.mknodRecord(parent, name, S_IFLNK | 0o777, caller, 0, target))
  }

  /** In a writable snapshot a new inode is numbered as that snapshot's inodes are. */
  private newInodeNumber (rec: LogRecord & { type: 'mknod' }): number {
    return viewOf(rec.parent) === 0 ? rec.ino : snapshotIno(viewOf(rec.parent), rec.ino)
  }

  private async mknodRecord (parentIno: number, name: string, mode: number, caller: Caller, rdev = 0, target?: string): Promise<LogRecord & { type: 'mknod' }> {
    const record = await this.submit(async () => {
      const parent = await this.parentDir(parentIno, name)
      if (await this.state.lookup(parent.ino, name) !== undefined) throw fsError('EEXIST', name)
      if (isDirMode(mode) && parent.nlink >= MAX_LINKS) throw fsError('EMLINK')
      this.checkSpace(0)
      let gid = caller.gid
      if ((parent.mode & S_ISGID) !== 0) {
        // BSD group semantics in set-group-ID directories, as on ext4.
        gid = parent.gid
        if (isDirMode(mode)) mode |= S_ISGID
      }
      return {
        type: 'mknod' as const, parent: parent.ino, name, ino: this.state.counters.nextIno, mode, uid: caller.uid, gid, rdev, target, time: nowNs()
      }
    })
    return record!
  }

  async link (ino: number, parentIno: number, name: string): Promise<void> {
    await this.submit(async () => {
      const n = await this.inode(ino)
      if (isDir(n)) throw fsError('EPERM', 'hard links to directories are not allowed')
      if (n.nlink >= MAX_LINKS) throw fsError('EMLINK')
      const parent = await this.parentDir(parentIno, name)
      if (viewOf(n.ino) !== viewOf(parent.ino)) throw fsError('EXDEV', 'a hard link cannot join a snapshot and another view')
      if (await this.state.lookup(parent.ino, name) !== undefined) throw fsError('EEXIST', name)
      return { type: 'link', ino: n.ino, parent: parent.ino, name, time: nowNs() }
    })
  }

  /** Removes a name; a file still open here stays as an orphan until its last close. */
  async unlink (parentIno: number, name: string): Promise<void> {
    await this.submit(async () => {
      const parent = await this.parentDir(parentIno, name)
      const e = await this.state.lookup(parent.ino, name)
      if (e === undefined) throw fsError('ENOENT', name)
      if (e.type === S_IFDIR) throw fsError('EISDIR', name)
      return { type: 'unlink', parent: parent.ino, name, time: nowNs(), keep: this.isOpen(e.ino) }
    })
  }

  async rmdir (parentIno: number, name: string): Promise<void> {
    await this.submit(async () => {
      const parent = await this.parentDir(parentIno, name)
      const e = await this.state.lookup(parent.ino, name)
      if (e === undefined) throw fsError('ENOENT', name)
      if (e.type !== S_IFDIR) throw fsError('ENOTDIR', name)
      if (!await this.state.isEmptyDir(e.ino)) throw fsError('ENOTEMPTY', name)
      return { type: 'rmdir', parent: parent.ino, name, time: nowNs() }
    })
  }

  /**
   * rename(2), and renameat2's RENAME_NOREPLACE. `instead` may turn the rename into another
   * record (the path interface's hidden names); it runs under the log's lock with what it needs.
   */
  async rename (srcParentIno: number, srcName: string, dstParentIno: number, dstName: string, flags = 0,
    instead?: (e: { ino: number, type: number }, old: { ino: number } | undefined) => LogRecord | null): Promise<void> {
    if ((flags & RENAME_EXCHANGE) !== 0) throw fsError('EINVAL', 'RENAME_EXCHANGE is not supported')
    if ((flags & ~RENAME_NOREPLACE) !== 0) throw fsError('EINVAL', `unknown rename flags 0x${flags.toString(16)}`)
    await this.submit(async () => {
      const srcParent = await this.parentDir(srcParentIno, srcName)
      const dstParent = await this.parentDir(dstParentIno, dstName)
      if (viewOf(srcParent.ino) !== viewOf(dstParent.ino)) throw fsError('EXDEV', 'rename between a snapshot and another view')
      const e = await this.state.lookup(srcParent.ino, srcName)
      if (e === undefined) throw fsError('ENOENT', srcName)
      const old = await this.state.lookup(dstParent.ino, dstName)
      const other = instead?.(e, old) ?? null
      if (other !== null) return other
      if (old !== undefined && (flags & RENAME_NOREPLACE) !== 0) throw fsError('EEXIST', dstName)
      const movingDir = e.type === S_IFDIR
      if (movingDir && await this.isAncestorOrSelf(e.ino, dstParent.ino)) throw fsError('EINVAL', `cannot move ${srcName} into itself`)
      if (old !== undefined && old.ino !== e.ino) {
        const oldDir = old.type === S_IFDIR
        if (oldDir && !movingDir) throw fsError('EISDIR', dstName)
        if (!oldDir && movingDir) throw fsError('ENOTDIR', dstName)
        if (oldDir && !await this.state.isEmptyDir(old.ino)) throw fsError('ENOTEMPTY', dstName)
      }
      if (movingDir && old === undefined && srcParent.ino !== dstParent.ino && dstParent.nlink >= MAX_LINKS) throw fsError('EMLINK')
      const keep = old !== undefined && this.isOpen(old.ino)
      return { type: 'rename', srcParent: srcParent.ino, srcName, dstParent: dstParent.ino, dstName, time: nowNs(), keep }
    })
  }

  async chmod (ino: number, fh: number | null, mode: number): Promise<void> {
    await this.setattr(ino, fh, () => ({ mode: mode & 0o7777 }))
  }

  async chown (ino: number, fh: number | null, uid: number, gid: number): Promise<void> {
    await this.setattr(ino, fh, n => ownerChange(n, uid, gid))
  }

  async truncate (ino: number, fh: number | null, size: number): Promise<void> {
    if (size < 0) throw fsError('EINVAL')
    if (size > MAX_FILE_SIZE) throw fsError('EFBIG')
    await this.setattr(ino, fh, n => {
      if (isDir(n)) throw fsError('EISDIR')
      if (!isReg(n)) throw fsError('EINVAL')
      if (size > n.size) this.checkSpace(0)
      return { size, mtime: nowNs() }
    })
  }

  /** atime/mtime: nanoseconds, 'now', or 'omit' (UTIME_NOW / UTIME_OMIT). */
  async utimens (ino: number, fh: number | null, atime: bigint | 'now' | 'omit', mtime: bigint | 'now' | 'omit'): Promise<void> {
    await this.setattr(ino, fh, () => {
      const t = nowNs()
      const change: { atime?: bigint, mtime?: bigint } = {}
      if (atime !== 'omit') change.atime = atime === 'now' ? t : atime
      if (mtime !== 'omit') change.mtime = mtime === 'now' ? t : mtime
      return change
    })
  }

  /**
   * The kernel's setattr: every attribute it sets in one call, as one record. uid/gid -1 leave
   * the owner alone; times are nanoseconds or 'now'.
   */
  async setattrs (ino: number, fh: number | null, a: { mode?: number, uid?: number, gid?: number, size?: number, atime?: bigint | 'now', mtime?: bigint | 'now' }): Promise<void> {
    if (a.size !== undefined && a.size < 0) throw fsError('EINVAL')
    if (a.size !== undefined && a.size > MAX_FILE_SIZE) throw fsError('EFBIG')
    await this.setattr(ino, fh, n => {
      const t = nowNs()
      const change: SetattrChange = {}
      if (a.size !== undefined) {
        if (isDir(n)) throw fsError('EISDIR')
        if (!isReg(n)) throw fsError('EINVAL')
        if (a.size > n.size) this.checkSpace(0)
        change.size = a.size
        change.mtime = t
      }
      Object.assign(change, ownerChange(n, a.uid, a.gid))
      // A mode given with the owner is the caller's word (the kernel already dropped set-ID bits in it).
      if (a.mode !== undefined) change.mode = a.mode & 0o7777
      if (a.atime !== undefined) change.atime = a.atime === 'now' ? t : a.atime
      if (a.mtime !== undefined) change.mtime = a.mtime === 'now' ? t : a.mtime
      return change
    })
  }

  private async setattr (ino: number, fh: number | null, change: (n: Inode) => SetattrChange): Promise<void> {
    await this.submit(async () => {
      const n = await this.targetOf(ino, fh)
      return { type: 'setattr', ino: n.ino, ...change(n), time: nowNs() }
    })
  }

  async setxattr (ino: number, name: string, value: Buffer, flags: number): Promise<void> {
    checkXattrName(name)
    if (!name.startsWith('user.')) throw fsError('EOPNOTSUPP', `only user.* extended attributes are supported, not ${name}`)
    if (value.length > XATTR_SIZE_MAX) throw fsError('E2BIG')
    const copy = Buffer.from(value)
    await this.submit(async () => {
      const n = await this.inode(ino)
      if (!isReg(n) && !isDir(n)) throw fsError('EPERM', 'user.* attributes exist only on files and directories')
      const exists = await this.state.getxattr(n.ino, name) !== undefined
      if ((flags & XATTR_CREATE) !== 0 && exists) throw fsError('EEXIST')
      if ((flags & XATTR_REPLACE) !== 0 && !exists) throw fsError('ENODATA')
      this.checkSpace(copy.length)
      return { type: 'setxattr', ino: n.ino, name, value: copy, time: nowNs() }
    })
  }

  async removexattr (ino: number, name: string): Promise<void> {
    checkXattrName(name)
    if (!name.startsWith('user.')) throw fsError('ENODATA')
    await this.submit(async () => {
      const n = await this.inode(ino)
      if (await this.state.getxattr(n.ino, name) === undefined) throw fsError('ENODATA')
      return { type: 'removexattr', ino: n.ino, name, time: nowNs() }
    })
  }

  // ---- helpers ----

  /** The file an open handle names, else the inode. */
  private async targetOf (ino: number, fh: number | null): Promise<Inode> {
    if (fh !== null && fh !== 0 && this.hasHandle(fh)) return await this.handleInode(fh)
    return await this.inode(ino)
  }

  /** A directory in which `name` may be created or removed. */
  private async parentDir (ino: number, name: string): Promise<Inode> {
    checkName(name)
    const parent = await this.inode(ino)
    if (!isDir(parent)) throw fsError('ENOTDIR', name)
    if (this.frozen(parent.ino) || (parent.ino === ROOT_INO && name === SNAPSHOTS_DIR)) throw fsError('EROFS', `${name}: this snapshot is read-only`)
    return parent
  }

  private async isAncestorOrSelf (ancestor: number, dir: number): Promise<boolean> {
    for (let ino = dir; ;) {
      if (ino === ancestor) return true
      if (ino === ROOT_INO) return false
      const n = await this.state.inode(ino)
      if (n === undefined) return false
      ino = n.parent
    }
  }

  /** The .snapshots directory: one read-only entry per snapshot, not listed in the root (like ZFS's hidden snapdir). */
  private snapshotsDir (root: Inode): Inode {
    return {
      ...root, ino: SNAPSHOTS_DIR_INO, mode: S_IFDIR | 0o555, nlink: 2 + this.state.snapshots.length, size: 0, bytes: 0, parent: ROOT_INO, target: Buffer.alloc(0)
    }
  }
}

function isDirMode (mode: number): boolean { return (mode & S_IFMT) === S_IFDIR }

/** A chown's change; uid/gid -1 (or its unsigned form) or undefined leave that one alone. */
function ownerChange (n: Inode, uid: number | undefined, gid: number | undefined): { uid?: number, gid?: number, mode?: number } {
  const change: { uid?: number, gid?: number, mode?: number } = {}
  if (uid !== undefined && uid !== 0xffffffff && uid !== -1) change.uid = uid
  if (gid !== undefined && gid !== 0xffffffff && gid !== -1) change.gid = gid
  // Changing owner of a non-directory clears set-user-ID and set-group-ID, as on ext4.
  if (!isDir(n) && (n.mode & 0o6000) !== 0 && (change.uid !== undefined || change.gid !== undefined)) {
    change.mode = n.mode & ~((n.mode & 0o010) !== 0 ? 0o6000 : 0o4000) & 0o7777
  }
  return change
}

export function checkName (name: string): void {
  if (Buffer.byteLength(name) > NAME_MAX) throw fsError('ENAMETOOLONG', `name longer than ${NAME_MAX} bytes`)
  if (name === '.' || name === '..') throw fsError('EINVAL', `'${name}' cannot be created or removed`)
}

function checkXattrName (name: string): void {
  if (name.length === 0 || Buffer.byteLength(name) > 255) throw fsError('ERANGE', 'bad attribute name')
}
