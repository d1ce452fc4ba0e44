import type { Logger } from 'pino'
import { ReplfsError } from '../errors.js'
import type { Volume } from '../fs/volume.js'
import { type LogRecord, isCommand } from '../log/records.js'
import { ROOT_INO } from '../store/keys.js'
import { type Fuse3Session, mountFuse3 } from '../fuse3/session.js'
import { tuneMalloc } from '../util/malloc-tuning.js'
import { KernelNames } from './kernel-names.js'
import { lowLevelOps } from './lowlevel-ops.js'
import { type MountOptions, prepareMountpoint } from './mount.js'

/** How long the kernel may take to answer libfuse's init before the mount counts as failed. */
const INIT_TIMEOUT_MS = 10_000

/**
 * The volume mounted through libfuse 3's low-level interface (native/fuse3): inode numbers are
 * the kernel's node ids, so every name of a hard-linked file is one kernel inode, and the kernel
 * resolves paths one component at a time. Changes made behind the kernel's back (a secondary
 * applying its primary's records, a snapshot restore) are pushed to it as invalidations, so the
 * mount shows them at once, also through descriptors held open.
 */
export class LowLevelMount {
  /** Kernel requests that reached JavaScript, by operation, since the mount. */
  readonly opCounts = new Map<string, number>()
  /** Failed calls by op and errno name (the metrics' replfs_fuse_errors_total). */
  readonly errorCounts = new Map<string, Map<string, number>>()
  private readonly names = new KernelNames()
  private session: Fuse3Session | null = null
  private offRecord: (() => void) | null = null
  private readonly log: Logger

  constructor (readonly mountpoint: string, private readonly vol: Volume, private readonly opts: MountOptions) {
    this.log = opts.logger.child({ component: 'fuse' })
  }

  async mount (): Promise<void> {
    await prepareMountpoint(this.mountpoint, this.log)
    tuneMalloc(this.log)
    const ops = lowLevelOps(this.vol.fs, { attrTimeout: this.opts.attrTimeout ?? 1, logger: this.opts.logger, names: this.names, counts: this.opCounts, errorCounts: this.errorCounts })
    const session = mountFuse3(this.mountpoint, ops, {
      log: this.opts.logger,
      fsname: this.opts.fsname ?? 'replfs',
      // The kernel checks permissions from our modes and owners, exactly as for ext4.
      defaultPermissions: true,
      allowOther: this.opts.allowOther ?? false
    })
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([session.conn, new Promise((_resolve, reject) => {
        timer = setTimeout(() => reject(new ReplfsError('MOUNT_FAILED', `the kernel did not start the FUSE session at ${this.mountpoint} within ${INIT_TIMEOUT_MS / 1000} s`)), INIT_TIMEOUT_MS)
      })])
    } catch (err) {
      session.unmount()
      throw err
    } finally {
      clearTimeout(timer)
    }
    this.session = session
    this.offRecord = this.vol.log.onRecord((_seq, rec) => this.applied(rec))
  }

  /** A record applied: one this mount's kernel did not ask for changed what it may have cached. */
  private applied (rec: LogRecord): void {
    if (!this.vol.readOnly && !isCommand(rec)) return
    const inv = this.names.invalidations(rec)
    if (inv.everything) { this.invalidateAll(); return }
    for (const e of inv.entries) this.notify(s => s.notifyInvalEntry(e.parent, e.name))
    // A write drops only the pages it changed; anything else drops the inode's whole cache (0, 0).
    const [off, len] = rec.type === 'write' ? [rec.offset, rec.data.length] : [0, 0]
    for (const ino of inv.inodes) if (this.names.known(ino) || ino === ROOT_INO) this.notify(s => s.notifyInvalInode(ino, off, len))
  }

  /** The whole view changed (a restore, a resync): the kernel drops every name and inode it holds. */
  invalidateAll (): void {
    for (const e of this.names.all()) {
      this.notify(s => s.notifyInvalEntry(e.parent, e.name))
      this.notify(s => s.notifyInvalInode(e.ino))
    }
    this.notify(s => s.notifyInvalInode(ROOT_INO))
  }

  private notify (fn: (s: Fuse3Session) => Promise<boolean>): void {
    const s = this.session
    if (s === null) return
    fn(s).catch((err: unknown) => this.log.warn({ err }, 'the kernel did not take an invalidation'))
  }

  async unmount (): Promise<void> {
    const s = this.session
    if (s === null) return
    this.session = null
    this.offRecord?.()
    s.unmount()
    await s.exited
  }
}
