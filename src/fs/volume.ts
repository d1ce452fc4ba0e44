import { fsError } from '../errors.js'
import type { RecordLog } from '../log/record-log.js'
import { S_IFDIR } from '../store/inode.js'
import type { Inode } from '../store/inode.js'
import type { VolumeState } from '../store/volume-state.js'
import { nowNs } from './clock.js'
import { InodeVolume, checkName } from './inode-volume.js'
import { lookupPath } from './path-lookup.js'
import { type SnapshotInfo, SnapshotCommands } from './snapshot-commands.js'
import type { Caller, Stat, StatFs, VolumeOptions } from './volume-core.js'

export { FRSIZE, MAX_FILE_SIZE, type Caller, type Stat, type StatFs, type VolumeOptions } from './volume-core.js'
export { SNAPSHOTS_DIR } from './inode-volume.js'
export type { SnapshotInfo } from './snapshot-commands.js'

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
 * The volume addressed by paths, as libfuse's high-level interface and the tests address it:
 * each path is looked up one component at a time (path-lookup.ts) and the operation is the
 * inode one (inode-volume.ts). Also what only that interface needs: libfuse's hidden names.
 */
export class Volume {
  readonly fs: InodeVolume
  readonly snapshots: SnapshotCommands
  private readonly hidden = new Map<string, number>()

  constructor (log: RecordLog, opts: VolumeOptions) {
    this.fs = new InodeVolume(log, opts)
    this.snapshots = new SnapshotCommands(this.fs)
  }

  get log (): RecordLog { return this.fs.log }
  get state (): VolumeState { return this.fs.state }
  get readOnly (): boolean { return this.fs.readOnly }
  set readOnly (v: boolean) { this.fs.readOnly = v }
  get sizeLimit (): number { return this.fs.sizeLimit }
  set sizeLimit (v: number) { this.fs.sizeLimit = v }

  async purgeOrphans (): Promise<number> { return await this.fs.purgeOrphans() }
  async collectGarbage (): Promise<number> { return await this.fs.collectGarbage() }
  async stopCollecting (): Promise<void> { await this.fs.stopCollecting() }
  statfs (): StatFs { return this.fs.statfs() }

  // ---- reads ----

  async getattr (path: string): Promise<Stat> { return this.fs.stat(await this.resolve(path)) }
  async fgetattr (fh: number): Promise<Stat> { return await this.fs.fgetattr(fh) }
  async readlink (path: string): Promise<string> { return await this.fs.readlink((await this.resolve(path)).ino) }
  async readdir (path: string): Promise<Array<{ name: string, ino: number, type: number }>> { return await this.fs.readdir((await this.resolve(path)).ino) }
  async read (fh: number, buf: Buffer, len: number, offset: number): Promise<number> { return await this.fs.read(fh, buf, len, offset) }
  async getxattr (path: string | null, fh: number | null, name: string): Promise<Buffer> { return await this.fs.getxattr(await this.targetIno(path, fh), fh, name) }
  async listxattr (path: string): Promise<string[]> { return await this.fs.listxattr((await this.resolve(path)).ino) }
  async access (path: string, mode: number, caller: Caller): Promise<void> { await this.fs.access((await this.resolve(path)).ino, mode, caller) }

  // ---- handles ----

  async open (path: string, flags: number): Promise<number> { return await this.fs.open((await this.resolve(path)).ino, flags) }
  async opendir (path: string): Promise<number> { return await this.fs.opendir((await this.resolve(path)).ino) }
  async release (fh: number): Promise<void> { await this.fs.release(fh) }
  async write (fh: number, buf: Buffer, len: number, offset: number): Promise<number> { return await this.fs.write(fh, buf, len, offset) }
  async fsync (fh?: number): Promise<void> { await this.fs.fsync(fh) }
  flush (fh: number): void { this.fs.flush(fh) }

  // ---- changes ----

  async create (path: string, mode: number, caller: Caller, flags = 2): Promise<number> {
    const { parent, name } = await this.parentOf(path)
    return (await this.fs.create(parent, name, mode, caller, flags)).fh
  }

  async mknod (path: string, mode: number, rdev: number, caller: Caller): Promise<void> {
    const { parent, name } = await this.parentOf(path)
    await this.fs.mknod(parent, name, mode, rdev, caller)
  }

  async mkdir (path: string, mode: number, caller: Caller): Promise<void> {
    const { parent, name } = await this.parentOf(path)
    await this.fs.mkdir(parent, name, mode, caller)
  }

  async symlink (target: string, path: string, caller: Caller): Promise<void> {
    const { parent, name } = await this.parentOf(path)
    await this.fs.symlink(target, parent, name, caller)
  }

  async link (existing: string, path: string): Promise<void> {
    const n = await this.resolve(existing)
    const { parent, name } = await this.parentOf(path)
    await this.fs.link(n.ino, parent, name)
  }

  async unlink (path: string): Promise<void> {
    const hiddenIno = this.hidden.get(basename(path))
    if (hiddenIno !== undefined) {
      this.hidden.delete(basename(path))
      await this.fs.purgeIfClosed(hiddenIno)
      return
    }
    const { parent, name } = await this.parentOf(path)
    await this.fs.unlink(parent, name)
  }

  async rmdir (path: string): Promise<void> {
    const { parent, name } = await this.parentOf(path)
    await this.fs.rmdir(parent, name)
  }

  async rename (from: string, to: string): Promise<void> {
    const src = await this.parentOf(from)
    const dst = await this.parentOf(to)
    let hiddenIno: number | undefined
    await this.fs.rename(src.parent, src.name, dst.parent, dst.name, 0, (e, old) => {
      if (!this.isLibfuseHide(src.parent, dst.parent, dst.name, e, old)) return null
      hiddenIno = e.ino
      return { type: 'unlink', parent: src.parent, name: src.name, time: nowNs(), keep: true }
    })
    if (hiddenIno !== undefined) this.hidden.set(basename(to), hiddenIno)
  }

  /**
   * Whether a rename is libfuse hiding a file unlinked (or renamed over) while open, rather than a
   * user's rename. libfuse only hides a name it has open, only within its directory, only to a
   * name it first checked is free (our getattr answered ENOENT), and never a directory; a rename
   * that breaks any of these is the user's and is done as any other. Only a user's rename of a
   * file open here, to a free name of exactly libfuse's shape in the same directory, still looks
   * the same: libfuse gives nothing else to tell the two apart by.
   */
  private isLibfuseHide (srcParent: number, dstParent: number, dstName: string, e: { ino: number, type: number }, old: { ino: number } | undefined): boolean {
    return HIDDEN_NAME.test(dstName) && srcParent === dstParent && old === undefined &&
      e.type !== S_IFDIR && this.fs.isOpen(e.ino)
  }

  async chmod (path: string, mode: number): Promise<void> { await this.fs.chmod((await this.resolve(path)).ino, null, mode) }
  async chown (path: string, uid: number, gid: number): Promise<void> { await this.fs.chown((await this.resolve(path)).ino, null, uid, gid) }
  async truncate (path: string | null, fh: number | null, size: number): Promise<void> { await this.fs.truncate(await this.targetIno(path, fh), fh, size) }

  /** atime/mtime: nanoseconds, 'now', or 'omit' (UTIME_NOW / UTIME_OMIT). */
  async utimens (path: string | null, fh: number | null, atime: bigint | 'now' | 'omit', mtime: bigint | 'now' | 'omit'): Promise<void> {
    await this.fs.utimens(await this.targetIno(path, fh), fh, atime, mtime)
  }

  async setxattr (path: string, name: string, value: Buffer, flags: number): Promise<void> { await this.fs.setxattr((await this.resolve(path)).ino, name, value, flags) }
  async removexattr (path: string, name: string): Promise<void> { await this.fs.removexattr((await this.resolve(path)).ino, name) }

  // ---- snapshots ----

  async createSnapshot (name: string, opts: { writable?: boolean } = {}): Promise<SnapshotInfo> { return await this.snapshots.create(name, opts) }
  async deleteSnapshot (name: string): Promise<{ freedBytes: number }> { return await this.snapshots.delete(name) }
  async restoreSnapshot (name: string, path?: string): Promise<SnapshotInfo> { return await this.snapshots.restore(name, path) }
  async refreshSnapshot (name: string): Promise<SnapshotInfo> { return await this.snapshots.refresh(name) }
  async listSnapshots (opts: { space?: boolean } = {}): Promise<SnapshotInfo[]> { return await this.snapshots.list(opts) }

  // ---- paths ----

  async resolve (path: string): Promise<Inode> {
    const hiddenIno = this.hidden.get(basename(path))
    if (hiddenIno !== undefined) {
      const h = await this.state.inode(hiddenIno)
      if (h === undefined) throw fsError('ENOENT', path)
      return h
    }
    return await lookupPath(this.fs, components(path))
  }

  /** The inode number an operation on (path, open handle) addresses: the handle's file wins. */
  private async targetIno (path: string | null, fh: number | null): Promise<number> {
    if (fh !== null && fh !== 0 && this.fs.hasHandle(fh)) return -1 // the inode operation takes the handle's file
    if (path === null) throw fsError('EBADF')
    return (await this.resolve(path)).ino
  }

  private async parentOf (path: string): Promise<{ parent: number, name: string }> {
    const parts = components(path)
    const name = parts.pop()
    if (name === undefined) throw fsError('EBUSY', 'the root cannot be changed this way')
    checkName(name)
    return { parent: (await lookupPath(this.fs, parts)).ino, name }
  }
}

function basename (path: string): string {
  return path.slice(path.lastIndexOf('/') + 1)
}

function components (path: string): string[] {
  return path.split('/').filter(c => c.length > 0)
}
