import type { Attr, DirEntry, DirEntryPlus, EntryParam, RequestContext, Statfs } from './binding.js'

/**
 * The operations table a filesystem gives to mountFuse3. Each handler returns its answer (or a
 * promise of it); the session turns that into the libfuse reply. A handler that throws FsError
 * answers its errno; anything else it throws answers EIO (and is logged). Operations left out
 * get libfuse's default (mostly ENOSYS).
 */

type Awaitable<T> = T | Promise<T>

export interface Req { ctx: RequestContext, ino: number }
export interface FileReq extends Req { fh: number, flags: number }
export interface NameReq { ctx: RequestContext, parent: number, name: Buffer }

export interface AttrReply { attr: Attr, timeout: number }
export interface OpenReply { fh: number, directIo?: boolean, keepCache?: boolean, nonseekable?: boolean, cacheReaddir?: boolean }

/** setattr's wishes: only fields being set are present; 'now' is UTIME_NOW (the server's clock). */
export interface SetattrReq extends Req {
  fh?: number
  mode?: number
  uid?: number
  gid?: number
  size?: number
  atime?: bigint | 'now'
  mtime?: bigint | 'now'
  ctime?: bigint
}

export interface ConnInfo {
  protoMajor: number
  protoMinor: number
  capable: number
  want: number
  maxWrite: number
  maxRead: number
  maxReadahead: number
}

export interface Fuse3Ops {
  init?: (conn: ConnInfo) => void
  /** After unmount, once the session is gone. */
  destroy?: () => void
  lookup?: (r: NameReq) => Awaitable<EntryParam>
  /** The kernel dropped nlookup references to ino (forget and forget_multi alike). */
  forget?: (ino: number, nlookup: number) => void
  getattr?: (r: Req & { fh?: number }) => Awaitable<AttrReply>
  setattr?: (r: SetattrReq) => Awaitable<AttrReply>
  readlink?: (r: Req) => Awaitable<Buffer>
  mknod?: (r: NameReq & { mode: number, rdev: number }) => Awaitable<EntryParam>
  mkdir?: (r: NameReq & { mode: number }) => Awaitable<EntryParam>
  unlink?: (r: NameReq) => Awaitable<void>
  rmdir?: (r: NameReq) => Awaitable<void>
  symlink?: (r: NameReq & { target: Buffer }) => Awaitable<EntryParam>
  /** flags: RENAME_NOREPLACE (1) and RENAME_EXCHANGE (2) from renameat2. */
  rename?: (r: NameReq & { newParent: number, newName: Buffer, flags: number }) => Awaitable<void>
  link?: (r: Req & { newParent: number, newName: Buffer }) => Awaitable<EntryParam>
  open?: (r: Req & { flags: number }) => Awaitable<OpenReply>
  read?: (r: FileReq & { size: number, off: number }) => Awaitable<Buffer>
  /** Returns how many bytes were written. */
  write?: (r: FileReq & { data: Buffer, off: number }) => Awaitable<number>
  flush?: (r: FileReq) => Awaitable<void>
  release?: (r: FileReq) => Awaitable<void>
  fsync?: (r: FileReq & { datasync: boolean }) => Awaitable<void>
  opendir?: (r: Req & { flags: number }) => Awaitable<OpenReply>
  /** Entries from offset off on; the session sends as many as fit in size. */
  readdir?: (r: FileReq & { size: number, off: number }) => Awaitable<DirEntry[]>
  /** As readdir; the kernel takes a lookup on each entry that fit (see readdirplusTaken). */
  readdirplus?: (r: FileReq & { size: number, off: number }) => Awaitable<DirEntryPlus[]>
  /** Called with the entries of a readdirplus answer that fit, each now looked up once. */
  readdirplusTaken?: (entries: DirEntryPlus[]) => void
  releasedir?: (r: FileReq) => Awaitable<void>
  fsyncdir?: (r: FileReq & { datasync: boolean }) => Awaitable<void>
  statfs?: (r: Req) => Awaitable<Statfs>
  setxattr?: (r: Req & { name: Buffer, value: Buffer, flags: number }) => Awaitable<void>
  /** The value; the session answers the size probe (size 0) and ERANGE itself. */
  getxattr?: (r: Req & { name: Buffer }) => Awaitable<Buffer>
  /** The names; the session joins them with NULs and answers size probes and ERANGE. */
  listxattr?: (r: Req) => Awaitable<Buffer[]>
  removexattr?: (r: Req & { name: Buffer }) => Awaitable<void>
  access?: (r: Req & { mask: number }) => Awaitable<void>
  create?: (r: NameReq & { mode: number, flags: number }) => Awaitable<{ entry: EntryParam, open: OpenReply }>
  fallocate?: (r: FileReq & { mode: number, off: number, length: number }) => Awaitable<void>
  /** Returns how many bytes were copied. */
  copyFileRange?: (r: FileReq & { off: number, inoOut: number, fhOut: number, offOut: number, length: number, copyFlags: number }) => Awaitable<number>
  /** Returns the new offset (SEEK_DATA / SEEK_HOLE). */
  lseek?: (r: FileReq & { off: number, whence: number }) => Awaitable<number>
}
