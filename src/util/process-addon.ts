import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { ReplfsError } from '../errors.js'

/**
 * Typed loading of native/process (built and load-checked at install by
 * scripts/build-addons.mjs): what Node does not expose about processes, users and memory. Both
 * the daemon (socket peer credentials, the journal's page release) and the FUSE layer (malloc
 * settings) use it, so it lives below both.
 */

export interface PeerCredentials { pid: number, uid: number, gid: number }

export interface ProcessAddon {
  peerCredentials: (fd: number) => PeerCredentials
  peerGroups: (fd: number) => number[]
  groupId: (name: string) => number | null
  tuneMalloc: (mmapThreshold: number, trimThreshold: number) => boolean
  prefaultHeap: (bytes: number) => number
  releasePages: (fd: number, offset: number, length: number, wait: boolean) => number
}

const require = createRequire(import.meta.url)
// From src/util (ts-node) or dist/src/util alike, the repository root holds native/.
export const PROCESS_ADDON_PATHS: readonly string[] = ['../../native/process/build/Release/replfs_process.node', '../../../native/process/build/Release/replfs_process.node']
  .map(p => new URL(p, import.meta.url).pathname)

const INSTALL_HINT = 'Run: npm install (or node scripts/build-addons.mjs)'

let addon: ProcessAddon | null = null

/**
 * The addon from the first of `paths` that exists (once per process for the default paths).
 * Throws MOUNT_FAILED with the install hint when none is built or it does not load.
 */
export function loadProcessAddon (paths: readonly string[] = PROCESS_ADDON_PATHS): ProcessAddon {
  const cache = paths === PROCESS_ADDON_PATHS
  if (cache && addon !== null) return addon
  const path = paths.find(p => existsSync(p))
  if (path === undefined) {
    throw new ReplfsError('MOUNT_FAILED', `the native/process addon is not built (looked for ${paths.join(', ')})`, { hint: INSTALL_HINT })
  }
  let loaded: ProcessAddon
  try {
    loaded = require(path) as ProcessAddon
  } catch (err) {
    throw new ReplfsError('MOUNT_FAILED', `the native/process addon at ${path} does not load: ${(err as Error).message}`, { hint: INSTALL_HINT, cause: err })
  }
  if (cache) addon = loaded
  return loaded
}

/**
 * glibc's mallopt for M_MMAP_THRESHOLD and M_TRIM_THRESHOLD, for the whole process: whether
 * freed blocks stay in the heap for reuse. True if both took (false where there is no glibc).
 */
export function setMallocThresholds (mmapThreshold: number, trimThreshold: number): boolean {
  return loadProcessAddon().tuneMalloc(mmapThreshold, trimThreshold)
}

/**
 * Writes `bytes` of fresh glibc heap once and frees it, so later allocations get pages that no
 * longer fault on first touch (call after setMallocThresholds, whose trim threshold keeps them).
 * Returns the heap's free top in bytes afterwards.
 */
export function prefaultHeap (bytes: number): number {
  return loadProcessAddon().prefaultHeap(bytes)
}

/**
 * Hands a written file range back to the kernel (Node has neither sync_file_range nor
 * posix_fadvise): wait = false starts its writeback; wait = true waits for it and drops the
 * range's pages from the page cache. Returns 0 or a negative errno (-EBADF for a bad fd).
 */
export function releasePages (fd: number, offset: number, length: number, wait: boolean): number {
  return loadProcessAddon().releasePages(fd, offset, length, wait)
}
