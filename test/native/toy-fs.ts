import { constants } from 'node:fs'
import { fsError } from '../../src/errors.js'
import type { Attr, DirEntryPlus, EntryParam, Statfs } from '../../src/fuse3/binding.js'
import type { Fuse3Ops, NameReq } from '../../src/fuse3/ops.js'
import { RENAME_EXCHANGE, RENAME_NOREPLACE } from '../../src/fuse3/session.js'

/** A node of the toy filesystem: an inode with its own attributes, whatever names point at it. */
export interface ToyNode {
  ino: number
  mode: number
  nlink: number
  uid: number
  gid: number
  data: Buffer
  target?: Buffer
  children?: Map<string, number>
  xattrs: Map<string, Buffer>
  atimeNs: bigint
  mtimeNs: bigint
  ctimeNs: bigint
}

const S_IFMT = constants.S_IFMT
const key = (b: Buffer): string => b.toString('latin1')
const now = (): bigint => BigInt(Date.now()) * 1_000_000n

/**
 * An in-memory inode filesystem (Map of inode -> node) served through the fuse3 binding, for the
 * binding's tests. Its hooks let a test make a handler throw or never answer.
 */
export class ToyFs {
  readonly nodes = new Map<number, ToyNode>()
  private next = 2
  largestWrite = 0
  /** Operations that reached a handler, for ops a kernel could also emulate (fallocate, copy). */
  readonly seen = new Set<string>()
  /** Names whose lookup throws a plain Error (not an FsError). */
  readonly throwOn = new Set<string>()
  /** Names whose open never answers; the resolve is called when the request arrives. */
  readonly hangOn = new Set<string>()
  onHang: () => void = () => {}
  statfsFigures: Statfs = { bsize: 4096, blocks: 1000, bfree: 600, bavail: 500, files: 100, ffree: 42, namemax: 255 }

  constructor (readonly timeouts: { attr: number, entry: number } = { attr: 1, entry: 1 }) {
    this.nodes.set(1, this.make(1, constants.S_IFDIR | 0o755, 2))
    this.nodes.get(1)!.children = new Map()
  }

  private make (ino: number, mode: number, nlink: number): ToyNode {
    const t = now()
    return { ino, mode, nlink, uid: 0, gid: 0, data: Buffer.alloc(0), xattrs: new Map(), atimeNs: t, mtimeNs: t, ctimeNs: t }
  }

  node (ino: number): ToyNode {
    const n = this.nodes.get(ino)
    if (n === undefined) throw fsError('ENOENT', `no inode ${ino}`)
    return n
  }

  private dir (ino: number): Map<string, number> {
    const n = this.node(ino)
    if (n.children === undefined) throw fsError('ENOTDIR')
    return n.children
  }

  /** The inode at a slash-separated path from the root (test convenience). */
  resolve (path: string): ToyNode {
    let n = this.node(1)
    for (const part of path.split('/').filter(p => p !== '')) n = this.node(this.dir(n.ino).get(part) ?? -1)
    return n
  }

  attr (n: ToyNode): Attr {
    const size = n.target !== undefined ? n.target.length : n.children !== undefined ? 4096 : n.data.length
    return { ino: n.ino, mode: n.mode, nlink: n.nlink, uid: n.uid, gid: n.gid, size, atimeNs: n.atimeNs, mtimeNs: n.mtimeNs, ctimeNs: n.ctimeNs }
  }

  entry (n: ToyNode): EntryParam {
    return { ino: n.ino, attr: this.attr(n), attrTimeout: this.timeouts.attr, entryTimeout: this.timeouts.entry }
  }

  private add (r: NameReq, mode: number): ToyNode {
    const d = this.dir(r.parent)
    if (d.has(key(r.name))) throw fsError('EEXIST')
    const n = this.make(this.next++, mode, (mode & S_IFMT) === constants.S_IFDIR ? 2 : 1)
    n.uid = r.ctx.uid
    n.gid = r.ctx.gid
    this.nodes.set(n.ino, n)
    d.set(key(r.name), n.ino)
    const p = this.node(r.parent)
    if (n.nlink === 2) { n.children = new Map(); p.nlink++ }
    p.mtimeNs = p.ctimeNs = now()
    return n
  }

  /** Drops the name from parent; the inode stays while open descriptors may still use it. */
  private drop (parent: number, name: string): void {
    const d = this.dir(parent)
    const n = this.node(d.get(name) ?? -1)
    d.delete(name)
    if (n.children !== undefined) { n.nlink = 0; this.node(parent).nlink-- } else n.nlink--
    n.ctimeNs = now()
  }

  private readdirAll (ino: number): Array<{ name: string, n: ToyNode }> {
    const all = [{ name: '.', n: this.node(ino) }, { name: '..', n: this.node(ino) }]
    for (const [name, child] of this.dir(ino)) all.push({ name, n: this.node(child) })
    return all
  }

  ops (): Fuse3Ops {
    return {
      lookup: r => {
        if (this.throwOn.has(key(r.name))) throw new Error('toy fs: a handler bug')
        const ino = this.dir(r.parent).get(key(r.name))
        if (ino === undefined) throw fsError('ENOENT')
        return this.entry(this.node(ino))
      },
      getattr: r => ({ attr: this.attr(this.node(r.ino)), timeout: this.timeouts.attr }),
      setattr: r => {
        const n = this.node(r.ino)
        if (r.mode !== undefined) n.mode = (n.mode & S_IFMT) | (r.mode & 0o7777)
        if (r.uid !== undefined) n.uid = r.uid
        if (r.gid !== undefined) n.gid = r.gid
        if (r.size !== undefined) {
          const d = Buffer.alloc(r.size)
          n.data.copy(d, 0, 0, Math.min(r.size, n.data.length))
          n.data = d
          n.mtimeNs = now()
        }
        if (r.atime !== undefined) n.atimeNs = r.atime === 'now' ? now() : r.atime
        if (r.mtime !== undefined) n.mtimeNs = r.mtime === 'now' ? now() : r.mtime
        n.ctimeNs = r.ctime ?? now()
        return { attr: this.attr(n), timeout: this.timeouts.attr }
      },
      readlink: r => this.node(r.ino).target ?? Buffer.alloc(0),
      mknod: r => this.entry(this.add(r, r.mode)),
      mkdir: r => this.entry(this.add(r, constants.S_IFDIR | (r.mode & 0o7777))),
      symlink: r => {
        const n = this.add(r, constants.S_IFLNK | 0o777)
        n.target = Buffer.from(r.target)
        return this.entry(n)
      },
      create: r => ({ entry: this.entry(this.add(r, constants.S_IFREG | (r.mode & 0o7777))), open: { fh: 0 } }),
      unlink: r => this.drop(r.parent, key(r.name)),
      rmdir: r => {
        const n = this.node(this.dir(r.parent).get(key(r.name)) ?? -1)
        if (n.children === undefined) throw fsError('ENOTDIR')
        if (n.children.size > 0) throw fsError('ENOTEMPTY')
        this.drop(r.parent, key(r.name))
      },
      rename: r => {
        const from = this.dir(r.parent)
        const to = this.dir(r.newParent)
        const src = from.get(key(r.name))
        if (src === undefined) throw fsError('ENOENT')
        const dst = to.get(key(r.newName))
        if ((r.flags & RENAME_NOREPLACE) !== 0 && dst !== undefined) throw fsError('EEXIST')
        if ((r.flags & RENAME_EXCHANGE) !== 0) {
          if (dst === undefined) throw fsError('ENOENT')
          from.set(key(r.name), dst)
          to.set(key(r.newName), src)
          return
        }
        if (dst !== undefined) {
          if ((this.node(dst).children?.size ?? 0) > 0) throw fsError('ENOTEMPTY')
          this.drop(r.newParent, key(r.newName))
        }
        from.delete(key(r.name))
        to.set(key(r.newName), src)
        const moved = this.node(src)
        if (moved.children !== undefined && r.parent !== r.newParent) { this.node(r.parent).nlink--; this.node(r.newParent).nlink++ }
        moved.ctimeNs = now()
      },
      link: r => {
        const n = this.node(r.ino)
        const d = this.dir(r.newParent)
        if (d.has(key(r.newName))) throw fsError('EEXIST')
        d.set(key(r.newName), n.ino)
        n.nlink++
        n.ctimeNs = now()
        return this.entry(n)
      },
      open: r => {
        const names = [...this.dir(1)].filter(([, ino]) => ino === r.ino).map(([name]) => name)
        if (names.some(name => this.hangOn.has(name))) {
          this.onHang()
          return new Promise(() => {})
        }
        return { fh: r.ino }
      },
      read: r => this.node(r.ino).data.subarray(r.off, r.off + r.size),
      write: r => {
        const n = this.node(r.ino)
        this.largestWrite = Math.max(this.largestWrite, r.data.length)
        const end = r.off + r.data.length
        if (end > n.data.length) {
          // Grows into the spare room of the underlying buffer, doubling it when full.
          const room = n.data.buffer.byteLength - n.data.byteOffset
          if (end <= room && n.data.byteOffset === 0) n.data = Buffer.from(n.data.buffer, 0, end)
          else {
            const grown = Buffer.alloc(Math.max(end, room * 2))
            n.data.copy(grown)
            n.data = grown.subarray(0, end)
          }
        }
        r.data.copy(n.data, r.off)
        n.mtimeNs = n.ctimeNs = now()
        return r.data.length
      },
      release: () => {},
      flush: () => {},
      fsync: () => {},
      opendir: () => ({ fh: 0 }),
      releasedir: () => {},
      readdir: r => this.readdirAll(r.ino).slice(r.off).map((e, i) => ({ name: e.name, ino: e.n.ino, mode: e.n.mode, off: r.off + i + 1 })),
      readdirplus: r => this.readdirAll(r.ino).slice(r.off).map((e, i): DirEntryPlus => ({ name: e.name, off: r.off + i + 1, entry: this.entry(e.n) })),
      statfs: () => this.statfsFigures,
      setxattr: r => {
        const x = this.node(r.ino).xattrs
        if ((r.flags & 1) !== 0 && x.has(key(r.name))) throw fsError('EEXIST')
        if ((r.flags & 2) !== 0 && !x.has(key(r.name))) throw fsError('ENODATA')
        x.set(key(r.name), Buffer.from(r.value))
      },
      getxattr: r => {
        const v = this.node(r.ino).xattrs.get(key(r.name))
        if (v === undefined) throw fsError('ENODATA')
        return v
      },
      listxattr: r => [...this.node(r.ino).xattrs.keys()].map(k => Buffer.from(k, 'latin1')),
      removexattr: r => {
        if (!this.node(r.ino).xattrs.delete(key(r.name))) throw fsError('ENODATA')
      },
      fallocate: r => {
        this.seen.add('fallocate')
        if (r.mode !== 0) throw fsError('EOPNOTSUPP')
        const n = this.node(r.ino)
        if (r.off + r.length > n.data.length) n.data = Buffer.concat([n.data, Buffer.alloc(r.off + r.length - n.data.length)])
      },
      copyFileRange: r => {
        this.seen.add('copyFileRange')
        const src = this.node(r.ino).data.subarray(r.off, r.off + r.length)
        const dst = this.node(r.inoOut)
        if (r.offOut + src.length > dst.data.length) dst.data = Buffer.concat([dst.data, Buffer.alloc(r.offOut + src.length - dst.data.length)])
        src.copy(dst.data, r.offOut)
        return src.length
      }
    }
  }
}
