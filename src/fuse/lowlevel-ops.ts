import { constants as fsConstants } from 'node:fs'
import type { Logger } from 'pino'
import { FsError, ReplfsError, fsError } from '../errors.js'
import type { InodeVolume } from '../fs/inode-volume.js'
import type { Stat } from '../fs/volume-core.js'
import { NAME_MAX } from '../store/keys.js'
import type { Attr, DirEntryPlus, EntryParam } from '../fuse3/binding.js'
import type { Fuse3Ops } from '../fuse3/ops.js'
import type { KernelNames } from './kernel-names.js'

export interface LowLevelOptions {
  /** Seconds the kernel may cache attributes and names. */
  attrTimeout: number
  logger: Logger
  names: KernelNames
  /** Requests by op, and failures by op and errno name (status and metrics). */
  counts?: Map<string, number>
  errorCounts?: Map<string, Map<string, number>>
}

const FALLOC_FL_KEEP_SIZE = 1
const O_TRUNC = fsConstants.O_TRUNC

/** A directory listing taken at opendir, served in pieces by offset until releasedir. */
interface Listing { entries: Array<{ name: string, ino: number, type: number }> }

/**
 * Maps the kernel's low-level requests (libfuse 3, inode numbers as node ids) to InodeVolume
 * operations and their answers: entries and attributes with the configured timeouts, errno for
 * failures. The kernel resolves every path itself, one lookup per component.
 */
export function lowLevelOps (fs: InodeVolume, o: LowLevelOptions): Fuse3Ops {
  const log = o.logger.child({ component: 'fuse' })
  const listings = new Map<number, Listing>()
  let nextListing = 1
  /** The directory each readdirplus entry was listed in, for the kernel's names once it takes them. */
  const listedIn = new WeakMap<DirEntryPlus, number>()

  const attr = (s: Stat): Attr => ({
    ino: s.ino, mode: s.mode, nlink: s.nlink, uid: s.uid, gid: s.gid, rdev: s.rdev, size: s.size, blocks: s.blocks, blksize: s.blksize,
    atimeNs: s.atime, mtimeNs: s.mtime, ctimeNs: s.ctime
  })
  /** An entry answer: the kernel takes a reference to it, which `forget` pays back. */
  const entry = async (parent: number, name: string, ino: number): Promise<EntryParam> => {
    const s = await fs.getattr(ino)
    o.names.looked(parent, name, ino)
    return { ino, attr: attr(s), attrTimeout: o.attrTimeout, entryTimeout: o.attrTimeout }
  }
  const nameOf = (b: Buffer): string => {
    if (b.length > NAME_MAX) throw fsError('ENAMETOOLONG', `name longer than ${NAME_MAX} bytes`)
    return b.toString()
  }
  const caller = (ctx: { uid: number, gid: number }): { uid: number, gid: number } => ({ uid: ctx.uid, gid: ctx.gid })

  /** Counts the call; turns what is not an FsError into one (disk full is ENOSPC) and logs the unexpected. */
  function guard<A extends unknown[], R> (op: string, fn: (...a: A) => R | Promise<R>): (...a: A) => Promise<R> {
    return async (...a: A) => {
      o.counts?.set(op, (o.counts.get(op) ?? 0) + 1)
      try {
        return await fn(...a)
      } catch (err) {
        const e = err instanceof FsError
          ? err
          : err instanceof ReplfsError && err.code === 'DISK_FULL' ? fsError('ENOSPC', err.message) : null
        if (e === null) log.error({ err, op }, 'operation failed unexpectedly')
        const failed = e ?? fsError('EIO', (err as Error).message)
        if (o.errorCounts !== undefined) {
          const byErr = o.errorCounts.get(op) ?? new Map<string, number>()
          byErr.set(failed.code, (byErr.get(failed.code) ?? 0) + 1)
          o.errorCounts.set(op, byErr)
        }
        throw failed
      }
    }
  }

  const ops: Fuse3Ops = {
    lookup: guard('lookup', async r => {
      const name = nameOf(r.name)
      return await entry(r.parent, name, (await fs.lookup(r.parent, name)).ino)
    }),
    forget: (ino, nlookup) => { o.names.forget(ino, nlookup) },
    getattr: guard('getattr', async r => ({ attr: attr(r.fh !== undefined && fs.hasHandle(r.fh) ? await fs.fgetattr(r.fh) : await fs.getattr(r.ino)), timeout: o.attrTimeout })),
    setattr: guard('setattr', async r => {
      const fh = r.fh !== undefined && fs.hasHandle(r.fh) ? r.fh : null
      await fs.setattrs(r.ino, fh, { mode: r.mode, uid: r.uid, gid: r.gid, size: r.size, atime: r.atime, mtime: r.mtime })
      return { attr: attr(fh !== null ? await fs.fgetattr(fh) : await fs.getattr(r.ino)), timeout: o.attrTimeout }
    }),
    readlink: guard('readlink', async r => Buffer.from(await fs.readlink(r.ino))),
    mknod: guard('mknod', async r => {
      const name = nameOf(r.name)
      return await entry(r.parent, name, await fs.mknod(r.parent, name, r.mode, r.rdev, caller(r.ctx)))
    }),
    mkdir: guard('mkdir', async r => {
      const name = nameOf(r.name)
      return await entry(r.parent, name, await fs.mkdir(r.parent, name, r.mode, caller(r.ctx)))
    }),
    symlink: guard('symlink', async r => {
      const name = nameOf(r.name)
      return await entry(r.parent, name, await fs.symlink(r.target.toString(), r.parent, name, caller(r.ctx)))
    }),
    link: guard('link', async r => {
      const name = nameOf(r.newName)
      await fs.link(r.ino, r.newParent, name)
      return await entry(r.newParent, name, r.ino)
    }),
    unlink: guard('unlink', async r => { await fs.unlink(r.parent, nameOf(r.name)) }),
    rmdir: guard('rmdir', async r => { await fs.rmdir(r.parent, nameOf(r.name)) }),
    rename: guard('rename', async r => { await fs.rename(r.parent, nameOf(r.name), r.newParent, nameOf(r.newName), r.flags) }),
    create: guard('create', async r => {
      const name = nameOf(r.name)
      const made = await fs.create(r.parent, name, r.mode, caller(r.ctx), r.flags)
      return { entry: await entry(r.parent, name, made.ino), open: { fh: made.fh, keepCache: true } }
    }),
    open: guard('open', async r => {
      const fh = await fs.open(r.ino, r.flags)
      // libfuse asks for atomic O_TRUNC: the kernel leaves the truncation to the open.
      if ((r.flags & O_TRUNC) !== 0 && (r.flags & 3) !== 0) {
        try {
          await fs.truncate(r.ino, fh, 0)
        } catch (err) {
          await fs.release(fh)
          throw err
        }
      }
      return { fh, keepCache: true }
    }),
    read: guard('read', async r => {
      const buf = Buffer.allocUnsafe(r.size)
      const n = await fs.read(r.fh, buf, r.size, r.off)
      return buf.subarray(0, n)
    }),
    write: guard('write', async r => await fs.write(r.fh, r.data, r.data.length, r.off)),
    flush: guard('flush', r => { fs.flush(r.fh) }),
    release: guard('release', async r => { await fs.release(r.fh) }),
    fsync: guard('fsync', async r => { await fs.fsync(r.fh) }),
    fsyncdir: guard('fsyncdir', async () => { await fs.fsync() }),
    opendir: guard('opendir', async r => {
      const entries = await fs.readdir(r.ino)
      const fh = nextListing++
      listings.set(fh, { entries })
      return { fh }
    }),
    readdir: guard('readdir', r => {
      const l = listings.get(r.fh)
      if (l === undefined) throw fsError('EBADF', `no open directory ${r.fh}`)
      return l.entries.slice(r.off).map((e, i) => ({ name: e.name, ino: e.ino, mode: e.type, off: r.off + i + 1 }))
    }),
    readdirplus: guard('readdirplus', async r => {
      const l = listings.get(r.fh)
      if (l === undefined) throw fsError('EBADF', `no open directory ${r.fh}`)
      const out: DirEntryPlus[] = []
      // Attributes for what one answer can hold (the kernel asks again from the next offset).
      let room = r.size
      for (let i = r.off; i < l.entries.length && room > 0; i++) {
        const e = l.entries[i]
        const dots = e.name === '.' || e.name === '..'
        const s = await fs.getattr(e.ino).catch(() => null)
        // '.' and '..' (and an entry gone since opendir) carry attributes but no lookup.
        const ent: EntryParam = s === null
          ? { ino: 0, attr: { ino: e.ino, mode: e.type, nlink: 1, uid: 0, gid: 0, size: 0, atimeNs: 0n, mtimeNs: 0n, ctimeNs: 0n }, attrTimeout: 0, entryTimeout: 0 }
          : { ino: dots ? 0 : e.ino, attr: attr(s), attrTimeout: dots ? 0 : o.attrTimeout, entryTimeout: dots ? 0 : o.attrTimeout }
        const d: DirEntryPlus = { name: e.name, off: i + 1, entry: ent }
        listedIn.set(d, r.ino)
        out.push(d)
        room -= 152 + Buffer.byteLength(e.name)
      }
      return out
    }),
    readdirplusTaken: (taken) => {
      // Only entries with an inode count as looked up ('.' and '..' go without one).
      for (const t of taken) if (t.entry.ino !== 0) o.names.looked(listedIn.get(t) ?? 0, String(t.name), t.entry.ino)
    },
    releasedir: guard('releasedir', r => { listings.delete(r.fh) }),
    statfs: guard('statfs', () => fs.statfs()),
    setxattr: guard('setxattr', async r => { await fs.setxattr(r.ino, r.name.toString(), r.value, r.flags) }),
    getxattr: guard('getxattr', async r => await fs.getxattr(r.ino, null, r.name.toString())),
    listxattr: guard('listxattr', async r => (await fs.listxattr(r.ino)).map(n => Buffer.from(n))),
    removexattr: guard('removexattr', async r => { await fs.removexattr(r.ino, r.name.toString()) }),
    access: guard('access', async r => { await fs.access(r.ino, r.mask, caller(r.ctx)) }),
    fallocate: guard('fallocate', async r => {
      // Blocks are allocated on write; fallocate can only make the file long enough.
      if ((r.mode & ~FALLOC_FL_KEEP_SIZE) !== 0) throw fsError('EOPNOTSUPP', `fallocate mode 0x${r.mode.toString(16)}`)
      if ((r.mode & FALLOC_FL_KEEP_SIZE) !== 0) return
      const s = await fs.fgetattr(r.fh)
      if (r.off + r.length > s.size) await fs.truncate(r.ino, r.fh, r.off + r.length)
    })
  }
  return ops
}
