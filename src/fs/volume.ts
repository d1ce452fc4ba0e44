import type { Logger } from 'pino'
import { constants as fsConstants } from 'node:fs'
import { ReplfsError, fsError } from '../errors.js'
import type { RecordLog } from '../log/record-log.js'
import { payloadWithHeadroom } from '../log/codec.js'
import type { LogRecord } from '../log/records.js'
import { NAME_MAX, ROOT_INO } from '../store/keys.js'
import {
  type Inode, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, S_ISGID, isDir, isLnk, isReg
} from '../store/inode.js'
import { SNAPSHOTS_DIR_INO, SNAPSHOT_INO_BASE, type VolumeState, inSnapshot, snapshotIno } from '../store/volume-state.js'
import { MAX_SNAPSHOTS, type SnapshotMeta, checkSnapshotName, heldBytes } from '../store/snapshots.js'
import { nowNs } from './clock.js'

/** Who is calling: the uid/gid the kernel reports for the process making the request. */
export interface Caller { uid: number, gid: number }

export interface Stat {
  ino: number
  mode: number
  nlink: number
  uid: number
  gid: number
  rdev: number
  size: number
  blocks: number
  blksize: number
  atime: bigint
  mtime: bigint
  ctime: bigint
}

export interface StatFs {
  bsize: number
  frsize: number
  blocks: number
  bfree: number
  bavail: number
  files: number
  ffree: number
  favail: number
  namemax: number
}

export interface VolumeOptions {
  /** Bytes the volume may hold; writes past it get ENOSPC. */
  sizeLimit: number
  readOnly?: boolean
  logger: Logger
}

/** Largest file offset we accept: beyond it writes and truncates get EFBIG. */
export const MAX_FILE_SIZE = 2 ** 43
const MAX_LINKS = 65_000
const PATH_MAX = 4096
const XATTR_SIZE_MAX = 65_536
const XATTR_CREATE = 1
const XATTR_REPLACE = 2
/** Preferred I/O size (st_blksize): the largest FUSE request, so cp and stdio fill one per write. */
const STAT_BLKSIZE = 1 << 20
/** statfs's block (f_frsize): a volume's size is counted in these, so it holds at least one. */
export const FRSIZE = 4096

/** `errSeen`: the write-back error count when this handle last reported one (or was opened). */
interface Handle { ino: number, flags: number, errSeen: number }

/** Set in O_DSYNC and in O_SYNC (which is O_DSYNC plus a bit of its own). */
const O_DSYNC = fsConstants.O_DSYNC

/** The directory (not listed in the root) through which snapshots are read. */
export const SNAPSHOTS_DIR = '.snapshots'

/** `diverged`: holds the other host's writes from a split brain (read-only; see docs/snapshots.md). */
export interface SnapshotInfo { name: string, seq: number, created: string, writable: boolean, diverged?: true, layers: number, heldBytes?: number }

const EMPTY_ROOT: Inode = {
  ino: ROOT_INO, mode: S_IFDIR | 0o755, uid: 0, gid: 0, nlink: 2, size: 0, bytes: 0, rdev: 0,
  atime: 0n, mtime: 0n, ctime: 0n, btime: 0n, parent: ROOT_INO, target: Buffer.alloc(0), xattrs: false
}

/**
 * libfuse (without hard_remove) renames a file that is unlinked (or renamed over) while open to
 * this name and unlinks that name at the last close. We turn the rename into an unlink that keeps
 * the inode as an orphan, and resolve the name to the orphan until libfuse unlinks it: fstat keeps
 * working and no hidden file ever shows in a directory (or keeps it from being removed).
 *
 * The name alone does not tell libfuse's rename from a user's: see `isLibfuseHide`.
 */
const HIDDEN_NAME = /^\.fuse_hidden[0-9a-f]{16}$/

/**
 * POSIX semantics over the store: paths, names, handles, errno. Every change becomes a record
 * submitted to the RecordLog; checks run under its lock, against the state the record will
 * apply to. Knows nothing of FUSE.
 */
export class Volume {
  private readonly handles = new Map<number, Handle>()
  private readonly openCounts = new Map<number, number>()
  private readonly hidden = new Map<string, number>()
  private nextFh = 1
  /** A secondary, or a primary that has not yet heard from its peer after a restart: EROFS. */
  readOnly: boolean
  sizeLimit: number
  private readonly logger: Logger
  private collecting: Promise<number> | null = null
  private stopped = false
  /** The LevelDB commit of the last record submitted here: the next answer waits for it. */
  private previousCommit: Promise<boolean> = Promise.resolve(true)
  /** Acknowledged records LevelDB then refused, and the last such error: see `submit`. */
  private writebackErrors = 0
  private writebackError: Error | null = null
  /** `writebackErrors` when an fsync without an open file handle (a directory's) last reported one. */
  private syncErrSeen = 0

  constructor (readonly log: RecordLog, opts: VolumeOptions) {
    this.sizeLimit = opts.sizeLimit
    this.readOnly = opts.readOnly ?? false
    this.logger = opts.logger
  }

  get state (): VolumeState { return this.log.state }

  /** Frees orphans left by a previous run (files unlinked while open when it stopped). */
  /** Frees orphans no handle here holds open (all of them at mount time). */
  async purgeOrphans (): Promise<number> {
    const orphans = [...this.state.orphans].filter(ino => !this.openCounts.has(ino))
    for (const ino of orphans) {
      await this.submit(() => this.openCounts.has(ino) || !this.state.orphans.has(ino) ? null : { type: 'purge', ino })
    }
    return orphans.length
  }

  /**
   * Runs the garbage collection a snapshot delete, restore or refresh left pending: one bounded
   * collect-garbage record at a time, so writes are applied between the steps instead of
   * waiting behind one scan of the whole store. Resolves with the bytes freed once nothing is
   * pending (or the volume is stopping). A secondary never starts one: it applies the primary's.
   */
  async collectGarbage (): Promise<number> {
    let freed = 0
    while (!this.readOnly && !this.stopped && this.state.counters.garbageFrom !== undefined) {
      this.collecting ??= this.collectionRun().finally(() => { this.collecting = null })
      freed += await this.collecting
    }
    return freed
  }

  /** Finishes the current collection step and starts no more (the cursor stays in the store for the next mount). */
  async stopCollecting (): Promise<void> {
    this.stopped = true
    await this.collecting?.catch(() => {})
  }

  private async collectionRun (): Promise<number> {
    let freed = 0
    let rec: LogRecord | null = null
    let before = 0
    const off = this.log.onRecord((_seq, r) => { if (r === rec) freed += before - this.state.counters.usedBytes })
    try {
      while (!this.stopped && this.state.counters.garbageFrom !== undefined) {
        const res = await this.log.submit(() => {
          if (this.state.counters.garbageFrom === undefined) return null
          before = this.state.counters.usedBytes
          rec = { type: 'collect-garbage' }
          return rec
        })
        if (res === null) break
        await res.durable
      }
    } finally {
      off()
    }
    return freed
  }

  // ---- reads ----

  async getattr (path: string): Promise<Stat> {
    return this.stat(await this.resolve(path))
  }

  async fgetattr (fh: number): Promise<Stat> {
    return this.stat(await this.handleInode(fh))
  }

  async readlink (path: string): Promise<string> {
    const n = await this.resolve(path)
    if (!isLnk(n)) throw fsError('EINVAL', `${path} is not a symlink`)
    return n.target.toString()
  }

  async readdir (path: string): Promise<Array<{ name: string, ino: number, type: number }>> {
    const n = await this.resolve(path)
    if (!isDir(n)) throw fsError('ENOTDIR', path)
    const out = [{ name: '.', ino: n.ino, type: S_IFDIR }, { name: '..', ino: n.parent, type: S_IFDIR }]
    if (n.ino === SNAPSHOTS_DIR_INO) {
      for (const s of this.state.snapshots) out.push({ name: s.name, ino: snapshotIno(s.id, ROOT_INO), type: S_IFDIR })
      return out
    }
    for await (const e of this.state.readdir(n.ino)) out.push(e)
    return out
  }

  async read (fh: number, buf: Buffer, len: number, offset: number): Promise<number> {
    const n = await this.handleInode(fh)
    if (isDir(n)) throw fsError('EISDIR')
    return await this.state.readInto(n, offset, buf, len)
  }

  async getxattr (path: string | null, fh: number | null, name: string): Promise<Buffer> {
    const n = await this.target(path, fh)
    checkXattrName(name)
    if (!name.startsWith('user.')) throw fsError('ENODATA')
    const v = await this.state.getxattr(n.ino, name)
    if (v === undefined) throw fsError('ENODATA')
    return v
  }

  async listxattr (path: string): Promise<string[]> {
    const n = await this.resolve(path)
    return await this.state.listxattr(n.ino)
  }

  async access (path: string, mode: number, caller: Caller): Promise<void> {
    const n = await this.resolve(path)
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

  statfs (): StatFs {
    const used = this.state.counters.usedBytes
    const blocks = Math.floor(this.sizeLimit / FRSIZE)
    const free = Math.max(0, blocks - Math.ceil(used / FRSIZE))
    const inodes = this.state.counters.inodes
    const files = Math.max(inodes, 0xffffffff >>> 1)
    return { bsize: FRSIZE, frsize: FRSIZE, blocks, bfree: free, bavail: free, files, ffree: files - inodes, favail: files - inodes, namemax: NAME_MAX }
  }

  // ---- handles ----

  async open (path: string, flags: number): Promise<number> {
    const n = await this.resolve(path)
    if (isLnk(n)) throw fsError('ELOOP', `${path} is a symlink`)
    if ((flags & 3) !== 0 && (this.readOnly || this.frozen(n.ino))) throw fsError('EROFS')
    if ((flags & 3) !== 0 && isDir(n)) throw fsError('EISDIR')
    return this.addHandle(n.ino, flags)
  }

  async opendir (path: string): Promise<number> {
    const n = await this.resolve(path)
    if (!isDir(n)) throw fsError('ENOTDIR', path)
    return 0
  }

  async release (fh: number): Promise<void> {
    const h = this.handles.get(fh)
    if (h === undefined) throw fsError('EBADF')
    this.handles.delete(fh)
    const left = (this.openCounts.get(h.ino) ?? 1) - 1
    if (left > 0) { this.openCounts.set(h.ino, left); return }
    this.openCounts.delete(h.ino)
    if (this.state.orphans.has(h.ino) && !this.readOnly) {
      // Last close of an unlinked file: now its data may go.
      await this.submit(() => this.openCounts.has(h.ino) || !this.state.orphans.has(h.ino) ? null : { type: 'purge', ino: h.ino })
    }
  }

  private addHandle (ino: number, flags: number): number {
    const fh = this.nextFh++
    if (this.nextFh > 0x7fffffff) this.nextFh = 1
    this.handles.set(fh, { ino, flags, errSeen: this.writebackErrors })
    this.openCounts.set(ino, (this.openCounts.get(ino) ?? 0) + 1)
    return fh
  }

  private async handleInode (fh: number): Promise<Inode> {
    const h = this.handles.get(fh)
    if (h === undefined) throw fsError('EBADF', `no open handle ${fh}`)
    const n = await this.state.inode(h.ino)
    if (n === undefined) throw fsError('EBADF', `handle ${fh} refers to a freed inode`)
    return n
  }

  // ---- changes ----

  async create (path: string, mode: number, caller: Caller, flags = 2): Promise<number> {
    const rec = await this.mknodRecord(path, (mode & 0o7777) | S_IFREG, caller)
    // In a writable snapshot the new file is numbered as that snapshot's inodes are.
    return this.addHandle(viewOf(rec.parent) === 0 ? rec.ino : snapshotIno(viewOf(rec.parent), rec.ino), flags)
  }

  async mknod (path: string, mode: number, rdev: number, caller: Caller): Promise<void> {
    const type = mode & S_IFMT
    if (type === S_IFDIR || type === S_IFLNK) throw fsError('EINVAL')
    await this.mknodRecord(path, type === 0 ? (mode | S_IFREG) : mode, caller, rdev)
  }

  async mkdir (path: string, mode: number, caller: Caller): Promise<void> {
    await this.mknodRecord(path, (mode & 0o7777) | S_IFDIR, caller)
  }

  async symlink (target: string, path: string, caller: Caller): Promise<void> {
    if (Buffer.byteLength(target) >= PATH_MAX) throw fsError('ENAMETOOLONG', 'symlink target too long')
    await this.mknodRecord(path, S_IFLNK | 0o777, caller, 0, target)
  }

  private async mknodRecord (path: string, mode: number, caller: Caller, rdev = 0, target?: string): Promise<LogRecord & { type: 'mknod' }> {
    const record = await this.submit(async () => {
      const { parent, name } = await this.resolveParent(path)
      if (await this.state.lookup(parent.ino, name) !== undefined) throw fsError('EEXIST', path)
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

  async link (existing: string, path: string): Promise<void> {
    await this.submit(async () => {
      const n = await this.resolve(existing)
      if (isDir(n)) throw fsError('EPERM', 'hard links to directories are not allowed')
      if (n.nlink >= MAX_LINKS) throw fsError('EMLINK')
      const { parent, name } = await this.resolveParent(path)
      if (viewOf(n.ino) !== viewOf(parent.ino)) throw fsError('EXDEV', 'a hard link cannot join a snapshot and another view')
      if (await this.state.lookup(parent.ino, name) !== undefined) throw fsError('EEXIST', path)
      return { type: 'link', ino: n.ino, parent: parent.ino, name, time: nowNs() }
    })
  }

  async unlink (path: string): Promise<void> {
    const hiddenIno = this.hidden.get(basename(path))
    if (hiddenIno !== undefined) {
      this.hidden.delete(basename(path))
      await this.submit(() => this.openCounts.has(hiddenIno) || !this.state.orphans.has(hiddenIno) ? null : { type: 'purge', ino: hiddenIno })
      return
    }
    await this.submit(async () => {
      const { parent, name } = await this.resolveParent(path)
      const e = await this.state.lookup(parent.ino, name)
      if (e === undefined) throw fsError('ENOENT', path)
      if (e.type === S_IFDIR) throw fsError('EISDIR', path)
      return { type: 'unlink', parent: parent.ino, name, time: nowNs(), keep: this.openCounts.has(e.ino) }
    })
  }

  async rmdir (path: string): Promise<void> {
    await this.submit(async () => {
      const { parent, name } = await this.resolveParent(path)
      if (name === '.') throw fsError('EINVAL')
      const e = await this.state.lookup(parent.ino, name)
      if (e === undefined) throw fsError('ENOENT', path)
      if (e.type !== S_IFDIR) throw fsError('ENOTDIR', path)
      if (!await this.state.isEmptyDir(e.ino)) throw fsError('ENOTEMPTY', path)
      return { type: 'rmdir', parent: parent.ino, name, time: nowNs() }
    })
  }

  async rename (from: string, to: string): Promise<void> {
    const hidden: { ino?: number } = {}
    await this.submit(async () => {
      const src = await this.resolveParent(from)
      const dst = await this.resolveParent(to)
      if (viewOf(src.parent.ino) !== viewOf(dst.parent.ino)) throw fsError('EXDEV', 'rename between a snapshot and another view')
      const e = await this.state.lookup(src.parent.ino, src.name)
      if (e === undefined) throw fsError('ENOENT', from)
      const old = await this.state.lookup(dst.parent.ino, dst.name)
      if (this.isLibfuseHide(src, dst, e, old)) {
        hidden.ino = e.ino
        return { type: 'unlink', parent: src.parent.ino, name: src.name, time: nowNs(), keep: true }
      }
      const movingDir = e.type === S_IFDIR
      if (movingDir && await this.isAncestorOrSelf(e.ino, dst.parent.ino)) throw fsError('EINVAL', `cannot move ${from} into itself`)
      if (old !== undefined && old.ino !== e.ino) {
        const oldDir = old.type === S_IFDIR
        if (oldDir && !movingDir) throw fsError('EISDIR', to)
        if (!oldDir && movingDir) throw fsError('ENOTDIR', to)
        if (oldDir && !await this.state.isEmptyDir(old.ino)) throw fsError('ENOTEMPTY', to)
      }
      if (movingDir && old === undefined && src.parent.ino !== dst.parent.ino && dst.parent.nlink >= MAX_LINKS) throw fsError('EMLINK')
      const keep = old !== undefined && this.openCounts.has(old.ino)
      return { type: 'rename', srcParent: src.parent.ino, srcName: src.name, dstParent: dst.parent.ino, dstName: dst.name, time: nowNs(), keep }
    })
    if (hidden.ino !== undefined) this.hidden.set(basename(to), hidden.ino)
  }

  /**
   * Whether a rename is libfuse hiding a file unlinked (or renamed over) while open, rather than a
   * user's rename. libfuse only hides a name it has open, only within its directory, only to a
   * name it first checked is free (our getattr answered ENOENT), and never a directory; a rename
   * that breaks any of these is the user's and is done as any other. Only a user's rename of a
   * file open here, to a free name of exactly libfuse's shape in the same directory, still looks
   * the same: libfuse gives nothing else to tell the two apart by.
   */
  private isLibfuseHide (src: { parent: Inode }, dst: { parent: Inode, name: string }, e: { ino: number, type: number }, old: { ino: number } | undefined): boolean {
    return HIDDEN_NAME.test(dst.name) && src.parent.ino === dst.parent.ino && old === undefined &&
      e.type !== S_IFDIR && this.openCounts.has(e.ino)
  }

  async chmod (path: string, mode: number): Promise<void> {
    await this.setattr(path, null, n => ({ mode: mode & 0o7777 }))
  }

  async chown (path: string, uid: number, gid: number): Promise<void> {
    // -1 (as unsigned) means "leave alone"
    await this.setattr(path, null, n => {
      const change: { uid?: number, gid?: number, mode?: number } = {}
      if (uid !== 0xffffffff && uid !== -1) change.uid = uid
      if (gid !== 0xffffffff && gid !== -1) change.gid = gid
      // Changing owner of a non-directory clears set-user-ID and set-group-ID, as on ext4.
      if (!isDir(n) && (n.mode & 0o6000) !== 0 && (change.uid !== undefined || change.gid !== undefined)) {
        change.mode = n.mode & ~((n.mode & 0o010) !== 0 ? 0o6000 : 0o4000) & 0o7777
      }
      return change
    })
  }

  async truncate (path: string | null, fh: number | null, size: number): Promise<void> {
    if (size < 0) throw fsError('EINVAL')
    if (size > MAX_FILE_SIZE) throw fsError('EFBIG')
    await this.setattr(path, fh, n => {
      if (isDir(n)) throw fsError('EISDIR')
      if (!isReg(n)) throw fsError('EINVAL')
      if (size > n.size) this.checkSpace(0)
      const t = nowNs()
      return { size, mtime: t }
    })
  }

  /** atime/mtime: nanoseconds, 'now', or 'omit' (UTIME_NOW / UTIME_OMIT). */
  async utimens (path: string | null, fh: number | null, atime: bigint | 'now' | 'omit', mtime: bigint | 'now' | 'omit'): Promise<void> {
    await this.setattr(path, fh, () => {
      const t = nowNs()
      const change: { atime?: bigint, mtime?: bigint } = {}
      if (atime !== 'omit') change.atime = atime === 'now' ? t : atime
      if (mtime !== 'omit') change.mtime = mtime === 'now' ? t : mtime
      return change
    })
  }

  private async setattr (path: string | null, fh: number | null, change: (n: Inode) => Omit<Partial<LogRecord & { type: 'setattr' }>, 'type' | 'ino' | 'time'>): Promise<void> {
    await this.submit(async () => {
      const n = await this.target(path, fh)
      return { type: 'setattr', ino: n.ino, ...change(n), time: nowNs() }
    })
  }

  async write (fh: number, buf: Buffer, len: number, offset: number): Promise<number> {
    const h = this.handles.get(fh)
    if (h === undefined) throw fsError('EBADF')
    if ((h.flags & 3) === 0) throw fsError('EBADF', 'handle is read-only')
    if (offset + len > MAX_FILE_SIZE) throw fsError('EFBIG')
    // The kernel's buffer is only valid until we reply: the record keeps its own copy, with
    // room in front for the record's header (see payloadWithHeadroom).
    const data = payloadWithHeadroom(len)
    buf.copy(data, 0, 0, len)
    await this.submit(async () => {
      const n = await this.state.inode(h.ino)
      if (n === undefined) throw fsError('EBADF')
      if (!isReg(n)) throw fsError('EINVAL', 'not a regular file')
      // Overwrites need no new space; appends and writes into holes past EOF do.
      this.checkSpace(Math.max(0, offset + len - Math.max(n.size, offset)))
      return { type: 'write', ino: h.ino, offset, data, time: nowNs() }
    })
    // O_SYNC and O_DSYNC: each write is an fsync (here and, with sync replication, on the peer).
    if ((h.flags & O_DSYNC) !== 0) await this.fsync(fh)
    return len
  }

  async setxattr (path: string, name: string, value: Buffer, flags: number): Promise<void> {
    checkXattrName(name)
    if (!name.startsWith('user.')) throw fsError('EOPNOTSUPP', `only user.* extended attributes are supported, not ${name}`)
    if (value.length > XATTR_SIZE_MAX) throw fsError('E2BIG')
    const copy = Buffer.from(value)
    await this.submit(async () => {
      const n = await this.resolve(path)
      if (!isReg(n) && !isDir(n)) throw fsError('EPERM', 'user.* attributes exist only on files and directories')
      const exists = await this.state.getxattr(n.ino, name) !== undefined
      if ((flags & XATTR_CREATE) !== 0 && exists) throw fsError('EEXIST')
      if ((flags & XATTR_REPLACE) !== 0 && !exists) throw fsError('ENODATA')
      this.checkSpace(copy.length)
      return { type: 'setxattr', ino: n.ino, name, value: copy, time: nowNs() }
    })
  }

  async removexattr (path: string, name: string): Promise<void> {
    checkXattrName(name)
    if (!name.startsWith('user.')) throw fsError('ENODATA')
    await this.submit(async () => {
      const n = await this.resolve(path)
      if (await this.state.getxattr(n.ino, name) === undefined) throw fsError('ENODATA')
      return { type: 'removexattr', ino: n.ino, name, time: nowNs() }
    })
  }

  /**
   * Makes everything written so far durable on disk. Like Linux, reports once per open file
   * (`fh`; directories and unknown handles share one count) a write-back error: a change that
   * was acknowledged and then refused by LevelDB since that file was opened or last told.
   */
  async fsync (fh?: number): Promise<void> {
    await this.log.sync()
    this.reportWritebackError(fh)
  }

  /** close(2) of one file descriptor: reports a write-back error as fsync does (nothing to flush: records are applied as they come). */
  flush (fh: number): void {
    this.reportWritebackError(fh)
  }

  private reportWritebackError (fh?: number): void {
    const h = fh === undefined ? undefined : this.handles.get(fh)
    const seen = h?.errSeen ?? this.syncErrSeen
    if (seen >= this.writebackErrors || this.writebackError === null) return
    if (h !== undefined) h.errSeen = this.writebackErrors
    else this.syncErrSeen = this.writebackErrors
    throw this.writebackError
  }

  // ---- helpers ----

  /**
   * Submits the record `make` returns and answers once it is applied (every read sees it) and
   * every record before it is in LevelDB. Its own LevelDB write then runs while the kernel
   * sends the next request: on this path a handoff to LevelDB's write thread and back costs
   * about as much as the FUSE round trip itself, and overlapping the two is worth 20-30% of
   * sequential write throughput (bench).
   *
   * So at most one acknowledged change is not yet in LevelDB at any moment. A kill -9 in that
   * window (well under a millisecond) can lose it, as a crash loses what a local filesystem
   * had not yet written back; fsync still means on disk, and the crash tests hold to that. If
   * LevelDB refuses it (disk full, I/O error), fsync and close of each open file report the
   * error once (as Linux reports write-back errors), and the next change gets it at once.
   *
   * `durable`: answer only once LevelDB holds the record (snapshot commands: their CLI says
   * "done"; with sync replication, once the peer does too). A plain change answers before the
   * peer has it, as a local filesystem answers before the disk has it: fsync is the promise.
   */
  private async submit<T extends LogRecord> (make: () => Promise<T | null> | T | null, opts: { durable?: boolean } = {}): Promise<T | null> {
    if (this.readOnly) throw fsError('EROFS')
    const res = await this.log.submit(async () => this.refuseFrozenTargets(await make()))
    if (res === null) return null
    const previous = this.previousCommit
    this.previousCommit = res.durable.then(() => true, () => false)
    if (opts.durable === true) {
      await res.durable
      return res.record
    }
    let acknowledged = false
    let refused = false
    res.durable.catch((err: unknown) => {
      if (!acknowledged) { refused = true; return }
      this.writebackErrors++
      this.writebackError = err instanceof Error ? err : new Error(String(err))
      this.logger.error({ err, seq: res.seq, type: res.record.type }, 'an acknowledged change was not stored: reported at the next fsync or close')
    })
    // A refused record takes every later pending one down with it (the store drops them): if
    // the one before ours failed, or ours already did, ours answers with its own outcome.
    if (!await previous || refused) await res.durable
    acknowledged = true
    return res.record
  }

  private checkSpace (adding: number): void {
    if (adding > 0 && this.state.counters.usedBytes + adding > this.sizeLimit) throw fsError('ENOSPC')
    if (adding === 0 && this.state.counters.usedBytes >= this.sizeLimit) throw fsError('ENOSPC')
  }

  private async target (path: string | null, fh: number | null): Promise<Inode> {
    if (fh !== null && fh !== 0 && this.handles.has(fh)) return await this.handleInode(fh)
    if (path === null) throw fsError('EBADF')
    return await this.resolve(path)
  }

  async resolve (path: string): Promise<Inode> {
    const hiddenIno = this.hidden.get(basename(path))
    if (hiddenIno !== undefined) {
      const h = await this.state.inode(hiddenIno)
      if (h === undefined) throw fsError('ENOENT', path)
      return h
    }
    const root = await this.state.inode(ROOT_INO)
    if (root === undefined) {
      // A replica that has not received its volume yet shows an empty directory: nothing in it exists.
      if (this.readOnly && this.state.format === null) {
        if (components(path).length > 0) throw fsError('ENOENT', path)
        return EMPTY_ROOT
      }
      throw fsError('EIO', 'volume has no root')
    }
    let n: Inode = root
    for (const name of components(path)) {
      if (!isDir(n)) throw fsError('ENOTDIR', path)
      if (n.ino === ROOT_INO && name === SNAPSHOTS_DIR) { n = this.snapshotsDir(n); continue }
      if (n.ino === SNAPSHOTS_DIR_INO) {
        const snap = this.state.snapshot(name)
        const snapRoot = snap === undefined ? undefined : await this.state.inode(snapshotIno(snap.id, ROOT_INO))
        if (snapRoot === undefined) throw fsError('ENOENT', path)
        n = { ...snapRoot, parent: SNAPSHOTS_DIR_INO }
        continue
      }
      const e = await this.state.lookup(n.ino, name)
      if (e === undefined) throw fsError('ENOENT', path)
      const next: Inode | undefined = await this.state.inode(e.ino)
      if (next === undefined) throw fsError('EIO', `dangling entry ${path}`)
      n = next
    }
    return n
  }

  /**
   * Whether an inode cannot change: the .snapshots directory, and inodes of read-only snapshots.
   * A diverged snapshot is one: only its fills write into it.
   */
  private frozen (ino: number): boolean {
    if (!inSnapshot(ino)) return false
    if (ino === SNAPSHOTS_DIR_INO) return true
    const id = viewOf(ino)
    const s = this.state.snapshots.find(s => s.id === id)
    return s?.writable !== true || s.diverged === true
  }

  /** Any change aimed at a frozen inode is EROFS, whichever path led to it. */
  private refuseFrozenTargets<T extends LogRecord> (rec: T | null): T | null {
    if (rec === null) return null
    const r = rec as unknown as Record<string, unknown>
    for (const f of ['ino', 'parent', 'srcParent', 'dstParent']) {
      if (rec.type === 'mknod' && f === 'ino') continue
      if (typeof r[f] === 'number' && this.frozen(r[f] as number)) throw fsError('EROFS', 'this snapshot is read-only')
    }
    return rec
  }

  /** The .snapshots directory: one read-only entry per snapshot, not listed in the root (like ZFS's hidden snapdir). */
  private snapshotsDir (root: Inode): Inode {
    return {
      ...root, ino: SNAPSHOTS_DIR_INO, mode: S_IFDIR | 0o555, nlink: 2 + this.state.snapshots.length, size: 0, bytes: 0, parent: ROOT_INO, target: Buffer.alloc(0)
    }
  }

  // ---- snapshots (commands travel in the record stream: see docs/snapshots.md) ----

  async createSnapshot (name: string, opts: { writable?: boolean } = {}): Promise<SnapshotInfo> {
    checkSnapshotName(name)
    await this.submit(() => {
      if (this.state.snapshot(name) !== undefined) throw new ReplfsError('SNAPSHOT_EXISTS', `snapshot ${name} exists`, { hint: `Refresh it with: replfs snapshot refresh <mountpoint> ${name}` })
      if (this.state.snapshots.length >= MAX_SNAPSHOTS) throw new ReplfsError('BAD_ARGUMENT', `a volume holds at most ${MAX_SNAPSHOTS} snapshots; delete one first`)
      return opts.writable === true ? { type: 'snapshot-create', name, time: nowNs(), writable: true } : { type: 'snapshot-create', name, time: nowNs() }
    }, { durable: true })
    return this.snapshotInfo(name)
  }

  /** Deletes the snapshot; resolves once the space only it held is freed, with the bytes freed. */
  async deleteSnapshot (name: string): Promise<{ freedBytes: number }> {
    await this.submit(() => { this.mustSnapshot(name); return { type: 'snapshot-delete', name } }, { durable: true })
    return { freedBytes: await this.collectGarbage() }
  }

  /**
   * Restores the whole volume, or with `path` only that file or tree (what is there now is
   * replaced, including what did not exist when the snapshot was taken; the rest is untouched).
   */
  async restoreSnapshot (name: string, path?: string): Promise<SnapshotInfo> {
    const restored = await this.submit(async () => {
      this.mustSnapshot(name)
      if (path === undefined) return { type: 'snapshot-restore', name, time: nowNs() }
      const parts = components(path)
      if (parts.length === 0) throw new ReplfsError('BAD_ARGUMENT', '--path names nothing: leave it out to restore the whole volume')
      if (parts[0] === SNAPSHOTS_DIR) throw new ReplfsError('BAD_ARGUMENT', '--path cannot point into .snapshots')
      for (const p of parts) checkName(p)
      try {
        await this.resolve(`/${SNAPSHOTS_DIR}/${name}/${parts.join('/')}`)
      } catch {
        throw new ReplfsError('BAD_ARGUMENT', `${parts.join('/')} is not in snapshot ${name}`, { hint: `Look with: ls <mountpoint>/${SNAPSHOTS_DIR}/${name}/` })
      }
      const parent = await this.resolve('/' + parts.slice(0, -1).join('/')).catch(() => undefined)
      if (parent === undefined || !isDir(parent)) {
        throw new ReplfsError('BAD_ARGUMENT', `the directory that holds ${parts.join('/')} does not exist in the volume now`, { hint: 'Restore that directory first (a --path one level up)' })
      }
      return { type: 'snapshot-restore', name, time: nowNs(), path: parts }
    }, { durable: true })
    // Files the snapshot caught open but unlinked are orphans again; free those not open here.
    if (restored?.path === undefined) await this.purgeOrphans()
    await this.collectGarbage()
    return this.snapshotInfo(name)
  }

  async refreshSnapshot (name: string): Promise<SnapshotInfo> {
    await this.submit(() => { this.mustSnapshot(name); return { type: 'snapshot-refresh', name, time: nowNs() } }, { durable: true })
    await this.collectGarbage()
    return this.snapshotInfo(name)
  }

  /** The snapshots; with `space`, also the data bytes each alone holds (one scan of the blocks). */
  async listSnapshots (opts: { space?: boolean } = {}): Promise<SnapshotInfo[]> {
    const infos = this.state.snapshots.map(s => this.snapshotInfo(s.name))
    if (opts.space !== true) return infos
    const held = await heldBytes(this.state.store, this.state.layers)
    return infos.map(i => ({ ...i, heldBytes: held.get(i.name) ?? 0 }))
  }

  private snapshotInfo (name: string): SnapshotInfo {
    const s = this.mustSnapshot(name)
    return {
      name: s.name,
      seq: s.seq,
      created: new Date(Number(BigInt(s.time) / 1_000_000n)).toISOString(),
      writable: s.writable === true,
      ...(s.diverged === true ? { diverged: true as const } : {}),
      layers: s.chain.length
    }
  }

  private mustSnapshot (name: string): SnapshotMeta {
    const s = this.state.snapshot(name)
    if (s === undefined) throw new ReplfsError('SNAPSHOT_MISSING', `no snapshot named ${name}`, { hint: 'List them with: replfs snapshot list <mountpoint>' })
    return s
  }

  private async resolveParent (path: string): Promise<{ parent: Inode, name: string }> {
    const parts = components(path)
    const name = parts.pop()
    if (name === undefined) throw fsError('EBUSY', 'the root cannot be changed this way')
    checkName(name)
    const parent = await this.resolve('/' + parts.join('/'))
    if (!isDir(parent)) throw fsError('ENOTDIR', path)
    if (this.frozen(parent.ino) || (parent.ino === ROOT_INO && name === SNAPSHOTS_DIR)) throw fsError('EROFS', `${path}: this snapshot is read-only`)
    return { parent, name }
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

  private stat (n: Inode): Stat {
    return {
      ino: n.ino,
      mode: n.mode,
      nlink: n.nlink,
      uid: n.uid,
      gid: n.gid,
      rdev: n.rdev,
      size: isDir(n) ? 4096 : n.size,
      blocks: Math.ceil(n.bytes / 512),
      blksize: STAT_BLKSIZE,
      atime: n.atime,
      mtime: n.mtime,
      ctime: n.ctime
    }
  }
}

/** The view an inode number belongs to: 0 live, else the snapshot's id. */
function viewOf (ino: number): number {
  return ino === SNAPSHOTS_DIR_INO ? -1 : Math.floor(ino / SNAPSHOT_INO_BASE)
}

function isDirMode (mode: number): boolean { return (mode & S_IFMT) === S_IFDIR }

function basename (path: string): string {
  return path.slice(path.lastIndexOf('/') + 1)
}

function components (path: string): string[] {
  return path.split('/').filter(c => c.length > 0)
}

function checkName (name: string): void {
  if (Buffer.byteLength(name) > NAME_MAX) throw fsError('ENAMETOOLONG', `name longer than ${NAME_MAX} bytes`)
  if (name === '.' || name === '..') throw fsError('EINVAL', `'${name}' cannot be created or removed`)
}

function checkXattrName (name: string): void {
  if (name.length === 0 || Buffer.byteLength(name) > 255) throw fsError('ERANGE', 'bad attribute name')
}

