/**
 * Handing written file ranges back to the kernel's page cache allocator. Node has neither
 * sync_file_range nor posix_fadvise; the patched fuse-native binding (already loaded by every
 * replfs process) carries both.
 */
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

interface PageCacheBinding { releasePages?: (fd: number, offset: number, length: number, wait: boolean) => number }

let binding: PageCacheBinding | null | undefined
let loadError: Error | null = null

function load (): PageCacheBinding | null {
  if (binding === undefined) {
    try {
      binding = require('fuse-native') as PageCacheBinding
    } catch (err) {
      // Callers get -ENOSYS and can say why through releasePagesUnavailable().
      loadError = err as Error
      binding = null
    }
  }
  return binding
}

/** Why releasePages cannot work here (the binding failed to load), if it cannot. */
export function releasePagesUnavailable (): Error | null {
  load()
  return loadError
}

/**
 * wait = false: starts writeback of [offset, offset + length) and returns. wait = true: waits
 * for that writeback, then drops the range's pages from the cache. Returns 0, or a negative
 * errno (-ENOSYS when the binding is not there).
 */
export function releasePages (fd: number, offset: number, length: number, wait: boolean): number {
  const fn = load()?.releasePages
  if (fn === undefined) return -38
  return fn(fd, offset, length, wait)
}
