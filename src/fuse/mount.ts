import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { readdir, stat } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { resolve } from 'node:path'
import { promisify } from 'node:util'
import type { Logger } from 'pino'
import { ReplfsError } from '../errors.js'
import type { Volume } from '../fs/volume.js'
import { tuneMalloc } from '../util/malloc-tuning.js'
import { fuseOps } from './adapter.js'

const require = createRequire(import.meta.url)
const execFileP = promisify(execFile)

// fuse-native is CommonJS and has no types; patches/fuse-native+2.2.6.patch defines what we use.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type FuseCtor = any
export const Fuse: FuseCtor = require('fuse-native')

/** Largest FUSE request in pages: 256 (1 MiB) is the most Linux allows by default. */
export const MAX_REQUEST_PAGES = 256

export interface MountOptions {
  /** Let users other than the mounting one use the mount (needs user_allow_other for non-root). */
  allowOther?: boolean
  /** Seconds the kernel may cache attributes and names. */
  attrTimeout?: number
  fsname?: string
  logger: Logger
}

/** Is `mnt` listed as a mount point right now? */
export function isMounted (mnt: string): boolean {
  const want = resolve(mnt)
  const lines = readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
  return lines.some(l => unescapeMount(l.split(' ')[4] ?? '') === want)
}

function unescapeMount (s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))
}

/**
 * Checks that `mnt` can take a new mount: an existing empty directory. A mount left behind by a
 * killed process ("Transport endpoint is not connected") is detached first.
 */
export async function prepareMountpoint (mnt: string, log: Logger): Promise<void> {
  let st
  try {
    st = await stat(mnt)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOTCONN' || code === 'ECONNABORTED') {
      log.warn({ mountpoint: mnt }, 'stale FUSE mount found (its process died); detaching it')
      await execFileP('fusermount', ['-uz', mnt]).catch(e => {
        throw new ReplfsError('MOUNTPOINT_BUSY', `stale mount at ${mnt} could not be detached: ${String((e as Error).message)}`, { hint: `Try: umount -l ${mnt}` })
      })
      st = await stat(mnt)
    } else if (code === 'ENOENT') {
      throw new ReplfsError('MOUNTPOINT_INVALID', `mount point ${mnt} does not exist`, { hint: `Create it: mkdir -p ${mnt}` })
    } else {
      throw new ReplfsError('MOUNTPOINT_INVALID', `mount point ${mnt} is not usable: ${String((err as Error).message)}`)
    }
  }
  if (!st.isDirectory()) throw new ReplfsError('MOUNTPOINT_INVALID', `mount point ${mnt} is not a directory`)
  if (isMounted(mnt)) {
    throw new ReplfsError('MOUNTPOINT_BUSY', `${mnt} is already a mount point`, { hint: `Unmount it first: replfs umount ${mnt}` })
  }
  const entries = await readdir(mnt)
  if (entries.length > 0) {
    throw new ReplfsError('MOUNTPOINT_INVALID', `mount point ${mnt} is not empty (${entries.length} entries)`, {
      hint: 'Mount on an empty directory, so nothing is hidden under the mount'
    })
  }
}

export class FuseMount {
  private fuse: FuseCtor | null = null
  /** Kernel requests that reached JavaScript, by operation, since the mount. */
  readonly opCounts = new Map<string, number>()
  /** Failed calls by op and errno name (the metrics' replfs_fuse_errors_total). */
  readonly errorCounts = new Map<string, Map<string, number>>()
  constructor (readonly mountpoint: string, private readonly vol: Volume, private readonly opts: MountOptions) {}

  async mount (): Promise<void> {
    const log = this.opts.logger
    await prepareMountpoint(this.mountpoint, log)
    tuneMalloc(log)
    const ops = fuseOps(this.vol, Fuse, () => this.caller(), log, this.opCounts, this.errorCounts)
    const fuse = new Fuse(this.mountpoint, ops, {
      // The kernel checks permissions from our modes and owners, exactly as for ext4.
      defaultPermissions: true,
      allowOther: this.opts.allowOther ?? false,
      // Kernel writes arrive in up to 1 MiB pieces (big_writes lifts libfuse 2's 4 KiB, maxPages
      // its 128 KiB): each request is a trip through the kernel, the FUSE thread and JS, so fewer
      // and larger ones carry the same bytes at a fraction of the cost.
      bigWrites: true,
      maxPages: MAX_REQUEST_PAGES,
      // st_ino is our inode number, so hard links look like hard links to tar, git and find.
      useIno: true,
      // Handle-based calls may come without a path; we use the handle.
      nullPathOk: true,
      attrTimeout: this.opts.attrTimeout ?? 1,
      entryTimeout: this.opts.attrTimeout ?? 1,
      fsname: this.opts.fsname ?? 'replfs',
      subtype: 'replfs',
      // An operation may wait on the disk (or, later, the peer); never answer it with ETIMEDOUT
      // while it is still running.
      timeout: false
    })
    await new Promise<void>((resolve, reject) => fuse.mount((err: Error | null) => err !== null && err !== undefined
      ? reject(new ReplfsError('MOUNT_FAILED', `FUSE mount at ${this.mountpoint} failed: ${err.message}`, { cause: err, hint: 'Is /dev/fuse present and the fuse package installed?' }))
      : resolve()))
    this.fuse = fuse
  }

  private caller (): { uid: number, gid: number } {
    const ctx = this.fuse?.context?.() as { uid: number, gid: number } | undefined
    return ctx ?? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }
  }

  async unmount (): Promise<void> {
    const fuse = this.fuse
    if (fuse === null) return
    this.fuse = null
    await new Promise<void>((resolve, reject) => fuse.unmount((err: Error | null) => err !== null && err !== undefined ? reject(err) : resolve()))
  }
}
