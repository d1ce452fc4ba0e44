/**
 * Work that can run for long stretches on promises alone (a secondary applying a backlog of
 * records that are already buffered) never lets the event loop turn: FUSE requests on its
 * mount, socket reads and the acks it schedules all wait until the backlog is gone. That was up
 * to 32 MiB of records, a few hundred milliseconds. Calling `pause()` between steps gives the
 * loop one turn whenever `everyMs` has passed since the last, and costs nothing otherwise.
 */
export class LoopYield {
  private last: number

  constructor (private readonly everyMs: number, private readonly now: () => number = () => performance.now()) {
    this.last = now()
  }

  /** True if this call yielded. */
  async pause (): Promise<boolean> {
    if (this.now() - this.last < this.everyMs) return false
    await new Promise<void>(resolve => setImmediate(resolve))
    this.last = this.now()
    return true
  }
}
