import type { Logger } from 'pino'
import { FsError, ReplfsError } from '../errors.js'
import { loadFuse3, type Fuse3Addon, type MountHandle, type RawArgs, type RequestHandle } from './binding.js'
import type { ConnInfo, Fuse3Ops, OpenReply, SetattrReq } from './ops.js'

export const RENAME_NOREPLACE = 1
export const RENAME_EXCHANGE = 2
const EIO = 5
const ERANGE = 34

export interface Fuse3MountOptions {
  log: Logger
  fsname?: string
  subtype?: string
  allowOther?: boolean
  defaultPermissions?: boolean
  /** libfuse's own request trace on stderr. */
  debug?: boolean
  /** Ask for FUSE_CAP_WRITEBACK_CACHE: the kernel caches writes and sends them in large batches. */
  writebackCache?: boolean
  /** yes: always readdirplus; auto: the kernel chooses; no: plain readdir only. Default auto. */
  readdirplus?: 'yes' | 'no' | 'auto'
  /** Largest write request to accept (libfuse's default, and the kernel's cap, is 1 MiB). */
  maxWrite?: number
  maxReadahead?: number
  /** More -o options, e.g. 'noatime'. */
  extraOptions?: string[]
  /** Another build of the addon (tests). */
  addonPath?: string
}

const openBits = (o: OpenReply): { fh: number, directIo: number, keepCache: number, nonseekable: number, cacheReaddir: number } =>
  ({ fh: o.fh, directIo: o.directIo === true ? 1 : 0, keepCache: o.keepCache === true ? 1 : 0, nonseekable: o.nonseekable === true ? 1 : 0, cacheReaddir: o.cacheReaddir === true ? 1 : 0 })

/** One mounted libfuse 3 session serving a Fuse3Ops table from the JS thread. */
export class Fuse3Session {
  readonly mountpoint: string
  /** Resolves with what the kernel and libfuse agreed at init. */
  readonly conn: Promise<ConnInfo>
  /** Resolves once the session thread has stopped (after unmount, or when unmounted from outside). */
  readonly exited: Promise<void>
  private readonly addon: Fuse3Addon
  private readonly handle: MountHandle
  private readonly ops: Fuse3Ops
  private readonly log: Logger
  private closed = false
  private resolveConn!: (c: ConnInfo) => void
  private resolveExited!: () => void

  constructor (mountpoint: string, ops: Fuse3Ops, opts: Fuse3MountOptions) {
    this.addon = loadFuse3(opts.addonPath)
    this.mountpoint = mountpoint
    this.ops = ops
    this.log = opts.log.child({ component: 'fuse3', mountpoint })
    this.conn = new Promise(resolve => { this.resolveConn = resolve })
    this.exited = new Promise(resolve => { this.resolveExited = resolve })
    const c = this.addon.constants
    const RDP = c.FUSE_CAP_READDIRPLUS
    const RDP_AUTO = c.FUSE_CAP_READDIRPLUS_AUTO
    // Without a readdirplus handler the kernel must not be offered it at all.
    const rdp = ops.readdirplus === undefined ? 'no' : opts.readdirplus ?? 'auto'
    const wantSet = (opts.writebackCache === true ? c.FUSE_CAP_WRITEBACK_CACHE : 0) | (rdp === 'no' ? 0 : rdp === 'yes' ? RDP : RDP | RDP_AUTO)
    const wantClear = rdp === 'no' ? RDP | RDP_AUTO : rdp === 'yes' ? RDP_AUTO : 0
    const mountOpts = [`fsname=${opts.fsname ?? 'replfs'}`, `subtype=${opts.subtype ?? 'replfs'}`, ...(opts.extraOptions ?? [])]
    if (opts.allowOther === true) mountOpts.push('allow_other')
    if (opts.defaultPermissions === true) mountOpts.push('default_permissions')
    const args = ['-o', mountOpts.join(','), ...(opts.debug === true ? ['-d'] : [])]
    const names = Object.keys(ops).filter(k => typeof (ops as Record<string, unknown>)[k] === 'function')
      .map(k => k === 'copyFileRange' ? 'copy_file_range' : k)
    if (ops.forget !== undefined) names.push('forget_multi')
    const caps = { wantSet, wantClear, maxWrite: opts.maxWrite ?? 0, maxReadahead: opts.maxReadahead ?? 0 }
    try {
      this.handle = this.addon.mount(mountpoint, args, names, caps, (op, req, a) => this.dispatch(op, req, a))
    } catch (err) {
      throw new ReplfsError('MOUNT_FAILED', `cannot mount ${mountpoint} with libfuse ${this.addon.libfuseVersion}: ${(err as Error).message}`,
        { hint: 'The mountpoint must be an existing empty directory, the options ones libfuse knows (libfuse prints which it refused on stderr)', cause: err })
    }
  }

  /** Drops the kernel's cached data (from off, len bytes; 0 = to the end) and attributes of ino. */
  async notifyInvalInode (ino: number, off = 0, len = 0): Promise<boolean> {
    return await this.addon.notifyInvalInode(this.handle, ino, off, len)
  }

  /** Drops the kernel's cached entry name in directory parent, so the next access looks it up. */
  async notifyInvalEntry (parent: number, name: Buffer | string): Promise<boolean> {
    return await this.addon.notifyInvalEntry(this.handle, parent, Buffer.from(name))
  }

  /** Tells the kernel that name in parent (inode child) is gone, as if unlinked. */
  async notifyDelete (parent: number, child: number, name: Buffer | string): Promise<boolean> {
    return await this.addon.notifyDelete(this.handle, parent, child, Buffer.from(name))
  }

  /** Unmounts: requests still unanswered get EIO. Safe to call twice. Until then the mount keeps the process alive. */
  unmount (): void {
    if (this.closed) return
    this.closed = true
    this.addon.unmount(this.handle)
    this.ops.destroy?.()
  }

  private fail (req: RequestHandle, op: string, err: unknown): void {
    if (err instanceof FsError) {
      this.addon.replyErr(req, err.errno)
      return
    }
    this.log.error({ err, op }, 'fuse3 handler failed; answering EIO')
    this.addon.replyErr(req, EIO)
  }

  /** Runs a handler and hands its answer (sync or async) to reply; every failure answers. */
  private answer<T> (req: RequestHandle, op: string, call: () => T | Promise<T>, reply: (v: T) => unknown): void {
    const send = (v: T): void => {
      try {
        reply(v)
      } catch (err) {
        this.fail(req, op, err)
      }
    }
    let v: T | Promise<T>
    try {
      v = call()
    } catch (err) {
      this.fail(req, op, err)
      return
    }
    if (v instanceof Promise) v.then(send, err => this.fail(req, op, err))
    else send(v)
  }

  private setattrReq (a: RawArgs): SetattrReq {
    const c = this.addon.constants
    const s = a.toSet ?? 0
    const at = a.attr!
    const r: SetattrReq = { ctx: a.ctx!, ino: a.ino }
    if (a.fh !== undefined) r.fh = a.fh
    if ((s & c.FUSE_SET_ATTR_MODE) !== 0) r.mode = at.mode
    if ((s & c.FUSE_SET_ATTR_UID) !== 0) r.uid = at.uid
    if ((s & c.FUSE_SET_ATTR_GID) !== 0) r.gid = at.gid
    if ((s & c.FUSE_SET_ATTR_SIZE) !== 0) r.size = at.size
    if ((s & c.FUSE_SET_ATTR_ATIME_NOW) !== 0) r.atime = 'now'
    else if ((s & c.FUSE_SET_ATTR_ATIME) !== 0) r.atime = at.atimeNs
    if ((s & c.FUSE_SET_ATTR_MTIME_NOW) !== 0) r.mtime = 'now'
    else if ((s & c.FUSE_SET_ATTR_MTIME) !== 0) r.mtime = at.mtimeNs
    if ((s & c.FUSE_SET_ATTR_CTIME) !== 0) r.ctime = at.ctimeNs
    return r
  }

  private dispatch (op: string, req: RequestHandle | null, a: RawArgs): void {
    const o = this.ops
    const f = this.addon
    if (req === null) {
      this.info(op, a)
      return
    }
    const ctx = a.ctx!
    const named = { ctx, parent: a.ino, name: a.name! }
    const file = { ctx, ino: a.ino, fh: a.fh ?? 0, flags: a.flags ?? 0 }
    const done = (): boolean => f.replyErr(req, 0)
    switch (op) {
      case 'lookup': return this.answer(req, op, () => o.lookup!(named), e => f.replyEntry(req, e))
      case 'getattr': return this.answer(req, op, () => o.getattr!({ ctx, ino: a.ino, fh: a.fh }), r => f.replyAttr(req, r.attr, r.timeout))
      case 'setattr': return this.answer(req, op, () => o.setattr!(this.setattrReq(a)), r => f.replyAttr(req, r.attr, r.timeout))
      case 'readlink': return this.answer(req, op, () => o.readlink!({ ctx, ino: a.ino }), t => f.replyReadlink(req, t))
      case 'mknod': return this.answer(req, op, () => o.mknod!({ ...named, mode: a.mode!, rdev: a.rdev! }), e => f.replyEntry(req, e))
      case 'mkdir': return this.answer(req, op, () => o.mkdir!({ ...named, mode: a.mode! }), e => f.replyEntry(req, e))
      case 'unlink': return this.answer(req, op, () => o.unlink!(named), done)
      case 'rmdir': return this.answer(req, op, () => o.rmdir!(named), done)
      case 'symlink': return this.answer(req, op, () => o.symlink!({ ...named, target: a.target! }), e => f.replyEntry(req, e))
      case 'rename': return this.answer(req, op, () => o.rename!({ ...named, newParent: a.newParent!, newName: a.newName!, flags: a.renameFlags! }), done)
      case 'link': return this.answer(req, op, () => o.link!({ ctx, ino: a.ino, newParent: a.newParent!, newName: a.newName! }), e => f.replyEntry(req, e))
      case 'open': return this.answer(req, op, () => o.open!({ ctx, ino: a.ino, flags: a.flags! }), r => f.replyOpen(req, openBits(r)))
      case 'opendir': return this.answer(req, op, () => o.opendir!({ ctx, ino: a.ino, flags: a.flags! }), r => f.replyOpen(req, openBits(r)))
      case 'read': return this.answer(req, op, () => o.read!({ ...file, size: a.size!, off: a.off! }), b => f.replyBuf(req, b))
      case 'write': return this.answer(req, op, () => o.write!({ ...file, data: a.data!, off: a.off! }), n => f.replyWrite(req, n))
      case 'flush': return this.answer(req, op, () => o.flush!(file), done)
      case 'release': return this.answer(req, op, () => o.release!(file), done)
      case 'releasedir': return this.answer(req, op, () => o.releasedir!(file), done)
      case 'fsync': return this.answer(req, op, () => o.fsync!({ ...file, datasync: a.datasync !== 0 }), done)
      case 'fsyncdir': return this.answer(req, op, () => o.fsyncdir!({ ...file, datasync: a.datasync !== 0 }), done)
      case 'readdir': return this.answer(req, op, () => o.readdir!({ ...file, size: a.size!, off: a.off! }), es => f.replyReaddir(req, a.size!, es))
      case 'readdirplus': return this.answer(req, op, () => o.readdirplus!({ ...file, size: a.size!, off: a.off! }), es => {
        const n = f.replyReaddirplus(req, a.size!, es)
        o.readdirplusTaken?.(es.slice(0, n))
      })
      case 'statfs': return this.answer(req, op, () => o.statfs!({ ctx, ino: a.ino }), s => f.replyStatfs(req, s))
      case 'setxattr': return this.answer(req, op, () => o.setxattr!({ ctx, ino: a.ino, name: a.name!, value: a.value!, flags: a.xattrFlags! }), done)
      case 'getxattr': return this.answer(req, op, () => o.getxattr!({ ctx, ino: a.ino, name: a.name! }), v => this.sized(req, a.size!, v))
      case 'listxattr': return this.answer(req, op, () => o.listxattr!({ ctx, ino: a.ino }),
        names => this.sized(req, a.size!, Buffer.concat(names.flatMap(n => [n, Buffer.alloc(1)]))))
      case 'removexattr': return this.answer(req, op, () => o.removexattr!({ ctx, ino: a.ino, name: a.name! }), done)
      case 'access': return this.answer(req, op, () => o.access!({ ctx, ino: a.ino, mask: a.mask! }), done)
      case 'create': return this.answer(req, op, () => o.create!({ ...named, mode: a.mode!, flags: a.flags! }), r => f.replyCreate(req, r.entry, openBits(r.open)))
      case 'fallocate': return this.answer(req, op, () => o.fallocate!({ ...file, mode: a.mode!, off: a.off!, length: a.length! }), done)
      case 'copy_file_range': return this.answer(req, op, () => o.copyFileRange!({ ...file, off: a.offIn!, inoOut: a.inoOut!, fhOut: a.fhOut!, offOut: a.offOut!, length: a.length!, copyFlags: a.copyFlags! }), n => f.replyWrite(req, n))
      case 'lseek': return this.answer(req, op, () => o.lseek!({ ...file, off: a.off!, whence: a.whence! }), n => f.replyLseek(req, n))
      default:
        this.log.error({ op }, 'fuse3 request of an unknown op; answering ENOSYS')
        f.replyErr(req, 38)
    }
  }

  /** xattr answers: a size probe (size 0) gets the length; too small a buffer gets ERANGE. */
  private sized (req: RequestHandle, size: number, value: Buffer): void {
    if (size === 0) this.addon.replyXattrSize(req, value.length)
    else if (value.length > size) this.addon.replyErr(req, ERANGE)
    else this.addon.replyBuf(req, value)
  }

  /** Messages that take no answer: init, forgets, and the end of the session thread. */
  private info (op: string, a: RawArgs): void {
    try {
      if (op === 'init') {
        const conn: ConnInfo = { protoMajor: a.protoMajor!, protoMinor: a.protoMinor!, capable: a.capable!, want: a.want!, maxWrite: a.maxWrite!, maxRead: a.maxRead!, maxReadahead: a.maxReadahead! }
        this.resolveConn(conn)
        this.ops.init?.(conn)
      } else if (op === 'forget') {
        this.ops.forget?.(a.ino, a.nlookup!)
      } else if (op === 'forget_multi') {
        for (const fg of a.forgets ?? []) this.ops.forget?.(fg.ino, fg.nlookup)
      } else if (op === 'exited') {
        if (!this.closed) {
          this.log.warn({ errno: a.error }, 'fuse3 session ended without unmount (unmounted from outside?)')
          this.unmount()
        }
        this.resolveExited()
      }
    } catch (err) {
      this.log.error({ err, op }, 'fuse3 notification handler failed')
    }
  }
}

/** Mounts ops at mountpoint through libfuse 3's low-level API. */
export function mountFuse3 (mountpoint: string, ops: Fuse3Ops, opts: Fuse3MountOptions): Fuse3Session {
  return new Fuse3Session(mountpoint, ops, opts)
}
