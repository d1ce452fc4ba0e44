import type { ClassicLevel } from 'classic-level'
import type { Logger } from 'pino'
import { BLOCK_SIZE, P_BLOCK, P_STAGE, localKey, prefixEnd } from './keys.js'

/**
 * Why this exists: replfs's data blocks are written as tables that go straight to a deep level
 * (the classic-level patch), so LevelDB's own compactions, which are driven by level sizes, seldom
 * touch them again. A deleted or overwritten block leaves its old value down there and a small
 * tombstone or new version above it, and nothing ever merges the two: the store grows without
 * bound under churn, and an emptied volume keeps every byte it ever held. This counts the bytes
 * each key region may have freed and, once the store is idle, compacts those regions (LevelDB's
 * CompactRange) in bounded steps, each step taken only while no write has come for `idleMs`.
 * What is left to do is kept in the local key `l reclaim` at each step and at close, so a
 * restart does not forget it (a crash forgets what came since the last of those).
 */
export interface ReclaimOptions {
  /** No write for this long means idle: only then does a step start. */
  idleMs?: number
  /** Reclaim once this many bytes may be freed; less waits for `lazyMs` of idleness. */
  thresholdBytes?: number
  /** Idle this long, any debt at all is reclaimed (so small leftovers do not stay forever). */
  lazyMs?: number
  /** The most debt one compaction step covers. */
  stepBytes?: number
}

export interface ReclaimStats {
  /** Bytes that deletes and overwrites may have left behind, not yet compacted. */
  debtBytes: number
  /** Compaction steps finished, and the debt they covered. */
  steps: number
  reclaimedDebtBytes: number
  running: boolean
  lastError: Error | null
}

interface Region { end: Buffer, bytes: number }

/** Blocks per region: a region of block keys spans 64 MiB of one file, so one step stays bounded. */
const BLOCKS_PER_REGION = 1024
/** A deleted key other than a block, and its tombstone: a rough size. */
const SMALL_KEY_BYTES = 128
const RECLAIM_KEY = localKey('reclaim')
/** For each first byte: the region of all keys starting with it. */
const PREFIX_REGIONS = Array.from({ length: 256 }, (_v, i) => ({ k: String.fromCharCode(i), end: prefixEnd(Buffer.from([i])) }))
/** Regions merged into one step at most, so a step's key range stays narrow. */
const MAX_REGIONS_PER_STEP = 256

export class SpaceReclaim {
  readonly idleMs: number
  readonly thresholdBytes: number
  readonly lazyMs: number
  readonly stepBytes: number
  private readonly regions = new Map<string, Region>()
  private debt = 0
  private lastWrite = Date.now()
  private timer: NodeJS.Timeout | null = null
  private current: Promise<void> | null = null
  private halted = false
  /** A step failed: take none until the next write. */
  private failed = false
  /** A run started (the threshold was passed): it goes on until no debt is left. */
  private draining = false
  /** The block region the last block key fell in (see add). */
  private lastRegion: { k: string, start: Buffer, first: number, region: Region } | null = null
  /** `l reclaim` holds spans (so an empty list must be written too). */
  private saved = false
  private readonly counts = { steps: 0, reclaimedDebtBytes: 0, lastError: null as Error | null }

  constructor (private readonly db: () => ClassicLevel<Buffer, Buffer>, opts: ReclaimOptions = {}, private readonly logger?: Logger) {
    this.idleMs = opts.idleMs ?? 5000
    this.thresholdBytes = opts.thresholdBytes ?? 16 * 1024 * 1024
    this.lazyMs = opts.lazyMs ?? 60_000
    this.stepBytes = opts.stepBytes ?? 64 * 1024 * 1024
  }

  get stats (): ReclaimStats {
    return { debtBytes: this.debt, steps: this.counts.steps, reclaimedDebtBytes: this.counts.reclaimedDebtBytes, running: this.current !== null, lastError: this.counts.lastError }
  }

  /**
   * Counts what a batch may free: every deleted key, and every block put (it may replace an
   * older version; a new block's region compacts at almost no cost, as nothing lies above it).
   */
  note (ops: ReadonlyArray<{ type: 'put' | 'del', key: Buffer, value?: Buffer }>): void {
    if (ops.length === 0) return
    this.lastWrite = Date.now()
    this.failed = false
    for (const op of ops) {
      if (op.key.length === 0) continue
      if (op.type === 'del') this.add(op.key, op.key[0] === P_BLOCK || (op.key[0] === P_STAGE && op.key[1] === P_BLOCK) ? BLOCK_SIZE : SMALL_KEY_BYTES)
      else if (op.key[0] === P_BLOCK) this.add(op.key, op.value?.length ?? BLOCK_SIZE)
    }
    this.schedule(this.idleMs)
  }

  /** A bulk removal of [gte, lt) of about `bytes` (see Store.clearRange). */
  noteRange (gte: Buffer, lt: Buffer, bytes: number): void {
    this.lastWrite = Date.now()
    this.noteSpan(gte, lt, bytes)
    this.schedule(this.idleMs)
  }

  private noteSpan (gte: Buffer, lt: Buffer, bytes: number): void {
    const k = gte.toString('latin1')
    const r = this.regions.get(k)
    if (r === undefined || Buffer.compare(r.end, lt) < 0) this.regions.set(k, { end: Buffer.from(lt), bytes: (r?.bytes ?? 0) + bytes })
    else r.bytes += bytes
    this.debt += bytes
  }

  private add (key: Buffer, bytes: number): void {
    let start: Buffer
    let end: Buffer
    if (key[0] === P_BLOCK && key.length >= 17) {
      // b ino block: the region is the 64 MiB window of blocks the key falls in. Batches run
      // through one file's blocks in order: the last region found is usually the one.
      const block = key.readUInt32BE(9) * 0x100000000 + key.readUInt32BE(13)
      const first = block - (block % BLOCKS_PER_REGION)
      const last = this.lastRegion
      if (last !== null && last.first === first && key.compare(last.start, 1, 9, 1, 9) === 0 && this.regions.get(last.k) === last.region) {
        last.region.bytes += bytes
        this.debt += bytes
        return
      }
      start = blockKeyAt(key, first)
      end = blockKeyAt(key, first + BLOCKS_PER_REGION)
    } else {
      // Other keys are small: one region per prefix (inodes, entries, journal...) is enough, and
      // the journal's one deletion per record would otherwise make a region per record.
      const p = PREFIX_REGIONS[key[0]]
      const r = this.regions.get(p.k)
      if (r === undefined) this.regions.set(p.k, { end: p.end, bytes })
      else r.bytes += bytes
      this.debt += bytes
      return
    }
    const k = start.toString('latin1')
    let r = this.regions.get(k)
    if (r === undefined) { r = { end, bytes }; this.regions.set(k, r) } else r.bytes += bytes
    this.debt += bytes
    if (key[0] === P_BLOCK) this.lastRegion = { k, start, first: start.readUInt32BE(9) * 0x100000000 + start.readUInt32BE(13), region: r }
  }

  private schedule (ms: number): void {
    if (this.halted || this.failed || this.timer !== null || this.current !== null || this.debt === 0) return
    this.timer = setTimeout(() => { this.timer = null; this.tick() }, ms)
    this.timer.unref()
  }

  private tick (): void {
    if (this.halted || this.current !== null) return
    const quiet = Date.now() - this.lastWrite
    if (quiet < this.idleMs) return this.schedule(this.idleMs - quiet)
    // The threshold decides when a run starts; once started, it drains every region while idle.
    if (!this.draining && this.debt < this.thresholdBytes && quiet < this.lazyMs) {
      this.current = this.save().finally(() => { this.current = null; this.schedule(this.lazyMs - quiet) })
      return
    }
    this.draining = true
    this.current = this.step().then(async () => await this.save()).finally(() => {
      this.current = null
      if (this.debt === 0) this.draining = false
      this.schedule(0)
    })
  }

  /** The regions in key order, merged into the spans one step each would take. */
  private spans (): Array<{ start: Buffer, end: Buffer, bytes: number, keys: string[] }> {
    const out: Array<{ start: Buffer, end: Buffer, bytes: number, keys: string[] }> = []
    let cur: { start: Buffer, end: Buffer, bytes: number, keys: string[] } | null = null
    for (const k of [...this.regions.keys()].sort()) {
      const r = this.regions.get(k)!
      if (cur === null || cur.bytes + r.bytes > this.stepBytes || cur.keys.length >= MAX_REGIONS_PER_STEP) {
        cur = { start: Buffer.from(k, 'latin1'), end: r.end, bytes: 0, keys: [] }
        out.push(cur)
      }
      cur.keys.push(k)
      cur.bytes += r.bytes
      if (Buffer.compare(r.end, cur.end) > 0) cur.end = r.end
    }
    return out
  }

  /** Writes what is left to do to `l reclaim` (directly: it is no write of the volume's). */
  private async save (): Promise<void> {
    const spans = this.spans()
    if (spans.length === 0 && !this.saved) return
    const parts: Buffer[] = []
    for (const sp of spans) {
      const head = Buffer.alloc(12)
      head.writeUInt16BE(sp.start.length, 0)
      head.writeUInt16BE(sp.end.length, 2)
      head.writeUInt32BE(Math.floor(sp.bytes / 0x100000000), 4)
      head.writeUInt32BE(sp.bytes >>> 0, 8)
      parts.push(head, sp.start, sp.end)
    }
    try {
      if (spans.length === 0) await this.db().del(RECLAIM_KEY)
      else await this.db().put(RECLAIM_KEY, Buffer.concat(parts))
      this.saved = spans.length > 0
    } catch (err) {
      this.logger?.error({ err }, 'store space reclaim: cannot record what is left to reclaim')
    }
  }

  /** Reads what a previous run left to do (at open). */
  async load (): Promise<void> {
    const v = await this.db().get(RECLAIM_KEY)
    if (v === undefined) return
    let at = 0
    while (at + 12 <= v.length) {
      const sl = v.readUInt16BE(at)
      const el = v.readUInt16BE(at + 2)
      const bytes = v.readUInt32BE(at + 4) * 0x100000000 + v.readUInt32BE(at + 8)
      const start = Buffer.from(v.subarray(at + 12, at + 12 + sl))
      const end = Buffer.from(v.subarray(at + 12 + sl, at + 12 + sl + el))
      at += 12 + sl + el
      this.noteSpan(start, end, bytes)
    }
    this.saved = true
    this.schedule(this.idleMs)
  }

  /** One compaction over the next regions in key order, up to `stepBytes` of their debt. */
  private async step (): Promise<void> {
    const span = this.spans()[0]
    if (span === undefined) return
    const taken: Array<[string, Region]> = span.keys.map(k => [k, this.regions.get(k)!])
    for (const k of span.keys) this.regions.delete(k)
    const bytes = span.bytes
    const end = span.end
    this.debt -= bytes
    const start = span.start
    try {
      await this.db().compactRange(start, end)
      this.counts.steps++
      this.counts.reclaimedDebtBytes += bytes
      this.logger?.debug({ bytes, regions: taken.length, start: start.toString('hex'), end: end.toString('hex') }, 'store space reclaimed')
    } catch (err) {
      // Keep the debt, and try again only after the next write: a store that fails to compact
      // (disk full, closing) must not spin.
      for (const [k, r] of taken) {
        const had = this.regions.get(k)
        if (had === undefined) this.regions.set(k, r)
        else had.bytes += r.bytes
      }
      this.debt += bytes
      this.counts.lastError = err as Error
      this.failed = true
      this.logger?.error({ err }, 'store space reclaim failed; retried after the next write')
    }
  }

  /** Stops starting steps and waits for the one running (before the database closes). */
  async halt (): Promise<void> {
    this.halted = true
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null }
    if (this.current !== null) await this.current
    await this.save()
  }

  /** Takes steps again (after a halt, or after a failed step once a write came). */
  resume (): void {
    this.halted = false
    this.schedule(this.idleMs)
  }

  /** Resolves once nothing is running and no debt is left (for tests and the benchmark). */
  async drained (): Promise<void> {
    while (this.debt > 0 || this.current !== null) {
      if (this.current !== null) await this.current
      else await new Promise(resolve => setTimeout(resolve, 20))
    }
  }
}

/** The block key of `ino` (from `like`, a block key) at block number `block`, without a layer. */
function blockKeyAt (like: Buffer, block: number): Buffer {
  const k = Buffer.from(like.subarray(0, 17))
  k.writeUInt32BE(Math.floor(block / 0x100000000), 9)
  k.writeUInt32BE(block >>> 0, 13)
  return k
}
