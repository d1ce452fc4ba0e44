import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { ReplfsError } from '../errors.js'

/**
 * Typed access to native/fuse3, the project's own N-API binding of libfuse 3's low-level API
 * (built at install by scripts/build-addons.mjs against pkg-config fuse3).
 *
 * Conventions at this boundary:
 * - inode numbers, file handles, offsets and sizes are JS numbers (exact below 2^53, which inode
 *   numbers and file sizes here never reach); times are bigint nanoseconds since the epoch.
 * - names, symlink targets, xattr names and values are Buffers (names are bytes, not UTF-8).
 * - every errno crosses as a positive number (ENOENT is 2); replyErr(req, 0) is not allowed.
 * - a request handle answers once: reply functions return false when it was already answered,
 *   or cancelled (answered EIO) by unmount. A handle dropped unanswered is answered EIO when
 *   collected, so a request never waits forever.
 */

/** Bumped with native/fuse3/fuse3.h F3_ABI when the JS-facing shape changes. */
export const FUSE3_ABI = 1

declare const requestBrand: unique symbol
declare const mountBrand: unique symbol
/** An open kernel request (a native external); pass it to one reply function. */
export interface RequestHandle { readonly [requestBrand]: true }
/** A mounted session (a native external). */
export interface MountHandle { readonly [mountBrand]: true }

export interface RequestContext { uid: number, gid: number, pid: number, umask: number }

export interface Attr {
  ino: number
  mode: number
  nlink: number
  uid: number
  gid: number
  rdev?: number
  size: number
  /** 512-byte blocks; defaults to ceil(size / 512). */
  blocks?: number
  blksize?: number
  atimeNs: bigint
  mtimeNs: bigint
  ctimeNs: bigint
}

/** A lookup answer. ino 0 without attr is a negative entry, cached for entryTimeout seconds. */
export interface EntryParam {
  ino: number
  generation?: number
  attr?: Attr
  attrTimeout: number
  entryTimeout: number
}

/** Native form of an open answer: flags as 0/1. */
export interface RawOpen { fh: number, directIo?: number, keepCache?: number, nonseekable?: number, cacheReaddir?: number }

export interface DirEntry { name: string | Buffer, ino: number, mode: number, /** offset of the NEXT entry */ off: number }
export interface DirEntryPlus { name: string | Buffer, off: number, entry: EntryParam }

export interface Statfs {
  bsize: number
  frsize?: number
  blocks: number
  bfree: number
  bavail: number
  files: number
  ffree: number
  favail?: number
  namemax?: number
}

export interface RawCaps { wantSet: number, wantClear: number, maxWrite: number, maxReadahead: number }

/** What the native side passes for each request; which fields are present depends on the op. */
export interface RawArgs {
  ctx?: RequestContext
  ino: number
  fh?: number
  flags?: number
  name?: Buffer
  newParent?: number
  newName?: Buffer
  target?: Buffer
  renameFlags?: number
  mode?: number
  rdev?: number
  size?: number
  off?: number
  data?: Buffer
  value?: Buffer
  xattrFlags?: number
  datasync?: number
  mask?: number
  length?: number
  offIn?: number
  inoOut?: number
  fhOut?: number
  offOut?: number
  copyFlags?: number
  whence?: number
  toSet?: number
  attr?: { mode: number, uid: number, gid: number, size: number, atimeNs: bigint, mtimeNs: bigint, ctimeNs: bigint }
  nlookup?: number
  forgets?: Array<{ ino: number, nlookup: number }>
  error?: number
  protoMajor?: number
  protoMinor?: number
  capable?: number
  want?: number
  maxWrite?: number
  maxRead?: number
  maxReadahead?: number
}

export type Dispatch = (op: string, req: RequestHandle | null, args: RawArgs) => void

export interface Fuse3Addon {
  abi: number
  fuseUseVersion: number
  libfuseVersion: string
  constants: Record<string, number>
  mount: (mountpoint: string, args: string[], ops: string[], caps: RawCaps, dispatch: Dispatch) => MountHandle
  unmount: (mount: MountHandle) => void
  replyErr: (req: RequestHandle, errno: number) => boolean
  replyNone: (req: RequestHandle) => boolean
  replyEntry: (req: RequestHandle, entry: EntryParam) => boolean
  replyCreate: (req: RequestHandle, entry: EntryParam, open: RawOpen) => boolean
  replyAttr: (req: RequestHandle, attr: Attr, timeout: number) => boolean
  replyOpen: (req: RequestHandle, open: RawOpen) => boolean
  replyWrite: (req: RequestHandle, count: number) => boolean
  replyXattrSize: (req: RequestHandle, size: number) => boolean
  replyLseek: (req: RequestHandle, off: number) => boolean
  replyBuf: (req: RequestHandle, data: Buffer) => boolean
  replyReadlink: (req: RequestHandle, target: Buffer) => boolean
  replyStatfs: (req: RequestHandle, statfs: Statfs) => boolean
  /** Packs entries into the size the kernel asked for; returns how many fit. */
  replyReaddir: (req: RequestHandle, size: number, entries: DirEntry[]) => number
  replyReaddirplus: (req: RequestHandle, size: number, entries: DirEntryPlus[]) => number
  /** Resolve true when the kernel dropped cached state, false when it had none cached. */
  notifyInvalInode: (mount: MountHandle, ino: number, off: number, len: number) => Promise<boolean>
  notifyInvalEntry: (mount: MountHandle, parent: number, name: Buffer) => Promise<boolean>
  notifyDelete: (mount: MountHandle, parent: number, child: number, name: Buffer) => Promise<boolean>
}

const require = createRequire(import.meta.url)
// From src/fuse3 (ts-node) or dist/src/fuse3 alike, the repository root holds native/.
const CANDIDATES = ['../../native/fuse3/build/Release/replfs_fuse3.node', '../../../native/fuse3/build/Release/replfs_fuse3.node']
  .map(p => new URL(p, import.meta.url).pathname)
const HINT = 'Install the libfuse 3 headers and rebuild the addons: apt-get install libfuse3-dev pkg-config && npm ci (or node scripts/build-addons.mjs)'

let cached: Fuse3Addon | null = null

/** Loads the addon (from `path`, or the built one) and checks its ABI; throws ReplfsError with a fix. */
export function loadFuse3 (path?: string): Fuse3Addon {
  if (path === undefined && cached !== null) return cached
  const file = path ?? CANDIDATES.find(p => existsSync(p))
  if (file === undefined || !existsSync(file)) {
    throw new ReplfsError('MOUNT_FAILED', `the native/fuse3 addon is not built${file === undefined ? '' : ` (no ${file})`}`, { hint: HINT })
  }
  let addon: Fuse3Addon
  try {
    addon = require(file) as Fuse3Addon
  } catch (err) {
    throw new ReplfsError('MOUNT_FAILED', `the native/fuse3 addon at ${file} does not load`, { hint: HINT, cause: err })
  }
  if (addon.abi !== FUSE3_ABI || typeof addon.mount !== 'function') {
    throw new ReplfsError('MOUNT_FAILED', `the native/fuse3 addon at ${file} has ABI ${String(addon.abi)}, expected ${FUSE3_ABI}`, { hint: HINT })
  }
  // 1 MiB requests and the 3.5+ low-level API need libfuse 3.6 or later at run time.
  const [major, minor] = String(addon.libfuseVersion).split('.').map(Number)
  if (major !== 3 || minor < 6) {
    throw new ReplfsError('MOUNT_FAILED', `the native/fuse3 addon at ${file} runs with libfuse ${addon.libfuseVersion}, need 3.6 or later`, { hint: HINT })
  }
  if (path === undefined) cached = addon
  return addon
}
