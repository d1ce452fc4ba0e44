/** The nearest-rank `p` quantile (0..1) of ascending `sorted`; NaN when it is empty. */
export function nearestRank (sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
}

/** Percentiles of one step's recent durations, as `status` reports them. */
export interface LatencySummary { p50: number | null, p99: number | null, samples: number }

/**
 * The last `capacity` durations (ms) of one step of replication, in a fixed ring: a busy volume
 * records one per record, so the memory must not grow with the stream.
 */
export class LatencySamples {
  private readonly ring: Float64Array
  private count = 0

  constructor (capacity = 4096) {
    this.ring = new Float64Array(capacity)
  }

  add (ms: number): void {
    this.ring[this.count % this.ring.length] = ms
    this.count++
  }

  summary (): LatencySummary {
    const n = Math.min(this.count, this.ring.length)
    if (n === 0) return { p50: null, p99: null, samples: 0 }
    const sorted = this.ring.slice(0, n).sort()
    const pct = (p: number): number => Math.round(nearestRank(sorted, p) * 100) / 100
    return { p50: pct(0.5), p99: pct(0.99), samples: n }
  }
}
