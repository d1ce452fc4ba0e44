import type { Logger } from 'pino'
import { constants as fsConstants } from 'node:fs'
import { fsError } from '../errors.js'
import type { RecordLog } from '../log/record-log.js'
import { payloadWithHeadroom } from '../log/codec.js'
import type { LogRecord } from '../log/records.js'
import { NAME_MAX } from '../store/keys.js'
import { type Inode, isDir, isReg } from '../store/inode.js'
import { SNAPSHOTS_DIR_INO, SNAPSHOT_INO_BASE, type VolumeState, inSnapshot } from '../store/volume-state.js'
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
/** Preferred I/O size (st_blksize): the largest FUSE request, so cp and stdio fill one per write. */
const STAT_BLKSIZE = 1 << 20
/** statfs's block (f_frsize): a volume's size is counted in these, so it holds at least one. */
export const FRSIZE = 4096

/** `errSeen`: the write-back error count when this handle last reported one (or was opened). */
interface Handle { ino: number, flags: number, errSeen: number }

/** Set in O_DSYNC and in O_SYNC (which is O_DSYNC plus a bit of its own). */
const O_DSYNC = fsConstants.O_DSYNC

/** The view an inode number belongs to: 0 live, else the snapshot's id (-1: the .snapshots directory). */
export function viewOf (ino: number): number {
  return ino === SNAPSHOTS_DIR_INO ? -1 : Math.floor(ino / SNAPSHOT_INO_BASE)
}

/**
 * What every file system operation shares: the record log and its state, open handles, space
 * accounting, read-only and frozen views, and the write-back error reporting of `submit`. The
 * operations on names and inodes build on it (inode-volume.ts). Knows nothing of FUSE.
 */
export class VolumeCore {
  private readonly handles = new Map<number, Handle>()
  private readonly openCounts = new Map<number, number>()
  private nextFh = 1
  /** A secondary, or a primary that has not yet heard from its peer after a restart: EROFS. */
  readOnly: boolean
  sizeLimit: number
  protected readonly logger: Logger
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

  /** Whether a handle here holds the inode open. */
  isOpen (ino: number): boolean { return this.openCounts.has(ino) }

  /** Frees orphans no handle here holds open (all of them at mount time: files unlinked while open when it stopped). */
  async purgeOrphans (): Promise<number> {
    const orphans = [...this.state.orphans].filter(ino => !this.openCounts.has(ino))
    for (const ino of orphans) await this.purgeIfClosed(ino)
    return orphans.length
  }

  /** Frees an orphan's data unless a handle here still holds it open. */
  async purgeIfClosed (ino: number): Promise<void> {
    await this.submit(() => this.openCounts.has(ino) || !this.state.orphans.has(ino) ? null : { type: 'purge', ino })
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

  statfs (): StatFs {
    const used = this.state.counters.usedBytes
    const blocks = Math.floor(this.sizeLimit / FRSIZE)
    const free = Math.max(0, blocks - Math.ceil(used / FRSIZE))
    const inodes = this.state.counters.inodes
    const files = Math.max(inodes, 0xffffffff >>> 1)
    return { bsize: FRSIZE, frsize: FRSIZE, blocks, bfree: free, bavail: free, files, ffree: files - inodes, favail: files - inodes, namemax: NAME_MAX }
  }

  // ---- handles ----

  async fgetattr (fh: number): Promise<Stat> {
    return this.stat(await this.handleInode(fh))
  }

  async read (fh: number, buf: Buffer, len: number, offset: number): Promise<number> {
    const n = await this.handleInode(fh)
    if (isDir(n)) throw fsError('EISDIR')
    return await this.state.readInto(n, offset, buf, len)
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

  async release (fh: number): Promise<void> {
    const h = this.handles.get(fh)
    if (h === undefined) throw fsError('EBADF')
    this.handles.delete(fh)
    const left = (this.openCounts.get(h.ino) ?? 1) - 1
    if (left > 0) { this.openCounts.set(h.ino, left); return }
    this.openCounts.delete(h.ino)
    // Last close of an unlinked file: now its data may go.
    if (this.state.orphans.has(h.ino) && !this.readOnly) await this.purgeIfClosed(h.ino)
  }

  protected addHandle (ino: number, flags: number): number {
    const fh = this.nextFh++
    if (this.nextFh > 0x7fffffff) this.nextFh = 1
    this.handles.set(fh, { ino, flags, errSeen: this.writebackErrors })
    this.openCounts.set(ino, (this.openCounts.get(ino) ?? 0) + 1)
    return fh
  }

  hasHandle (fh: number): boolean { return this.handles.has(fh) }

  protected async handleInode (fh: number): Promise<Inode> {
    const h = this.handles.get(fh)
    if (h === undefined) throw fsError('EBADF', `no open handle ${fh}`)
    const n = await this.state.inode(h.ino)
    if (n === undefined) throw fsError('EBADF', `handle ${fh} refers to a freed inode`)
    return n
  }

  /**
   * Makes everything written so far durable on disk. Like Linux, reports once per open file
   * (`fh`; directories and unknown handles share one count) a write-back error: a change that
   * was acknowledged and then refused by LevelDB since that file was opened or last told.
   */
  async fsync (fh?: number): Promise<void> {
    try {
      await this.log.sync()
    } catch (err) {
      // The store cannot take writes yet (disk still full): that failure is the report.
      this.markReported(fh)
      throw err
    }
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
    this.markReported(fh)
    throw this.writebackError
  }

  private markReported (fh?: number): void {
    const h = fh === undefined ? undefined : this.handles.get(fh)
    if (h !== undefined) h.errSeen = this.writebackErrors
    else this.syncErrSeen = this.writebackErrors
  }

  /**
   * Submits the record `make` returns and answers once it is applied (every read sees it) and
   * every record before it is in LevelDB. Its own LevelDB write then runs while the kernel
   * sends the next request: on this path a handoff to LevelDB's write thread and back costs
   * about as much as the FUSE round trip itself, so overlapping the two pays.
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
  async submit<T extends LogRecord> (make: () => Promise<T | null> | T | null, opts: { durable?: boolean } = {}): Promise<T | null> {
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

  protected checkSpace (adding: number): void {
    if (adding > 0 && this.state.counters.usedBytes + adding > this.sizeLimit) throw fsError('ENOSPC')
    if (adding === 0 && this.state.counters.usedBytes >= this.sizeLimit) throw fsError('ENOSPC')
  }

  /**
   * Whether an inode cannot change: the .snapshots directory, and inodes of read-only snapshots.
   * A diverged snapshot is one: only its fills write into it.
   */
  protected frozen (ino: number): boolean {
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

  stat (n: Inode): Stat {
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
