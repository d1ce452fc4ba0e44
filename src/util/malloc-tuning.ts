import type { Logger } from 'pino'
import { prefaultHeap, setMallocThresholds } from './process-addon.js'

/**
 * glibc keeps freed blocks under 32 MiB in its heap and gives heap back to the OS only past
 * 128 MiB free, instead of an mmap and munmap per 1 MiB request buffer and per multi-MiB LevelDB
 * batch (its defaults adapt only up to the largest block freed so far, then trim at twice that):
 * every first touch of a fresh page faults. The heap may keep up to 128 MiB it no longer uses.
 * An operator's MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ take precedence.
 */
export const MALLOC_MMAP_THRESHOLD = 32 << 20
export const MALLOC_TRIM_THRESHOLD = 128 << 20

/**
 * Heap written once at mount, then kept free for request buffers and batches. Even with the
 * thresholds above, a fresh process grows its heap over its first writes (buffers wait for V8's
 * next GC before they are freed), and every new page faults on first touch, so a volume would be
 * slowest right after it started: after a restart, a failover, and on a fresh mount. This size
 * takes most of those faults; more takes few more and raises peak RSS.
 */
export const HEAP_PREFAULT = 64 << 20

let mallocTuned: boolean | null = null

/** Applies the thresholds above once per process and pre-faults the heap; true if they are in effect. */
export function tuneMalloc (log: Logger): boolean {
  if (mallocTuned !== null) return mallocTuned
  if (process.env.MALLOC_MMAP_THRESHOLD_ !== undefined || process.env.MALLOC_TRIM_THRESHOLD_ !== undefined) {
    log.info('malloc thresholds from the environment (MALLOC_*_THRESHOLD_) left as given')
    mallocTuned = false
  } else {
    mallocTuned = setMallocThresholds(MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD)
    if (!mallocTuned) log.warn('could not set the malloc thresholds (not glibc?): writes will be slower')
  }
  if (mallocTuned) {
    const t0 = performance.now()
    const kept = prefaultHeap(HEAP_PREFAULT)
    log.debug({ prefaulted: HEAP_PREFAULT, heapFreeTop: kept, ms: Math.round(performance.now() - t0) }, 'heap pre-faulted for request buffers')
  }
  return mallocTuned
}
