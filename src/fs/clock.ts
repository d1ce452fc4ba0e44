/**
 * Wall-clock time in nanoseconds: Date.now() gives the epoch, hrtime the resolution. Records
 * carry the value, so replaying them never reads a clock.
 */
const anchor = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint()

export function nowNs (): bigint {
  return anchor + process.hrtime.bigint()
}
