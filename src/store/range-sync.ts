import { createHash } from 'node:crypto'
import { ReplfsError } from '../errors.js'
import { JOURNAL_RANGE, P_META, RESYNC_MARKER, STAGE_RANGE, STATE_RANGES, isStateKey, metaKey, stageKey, unstageKey } from './keys.js'
import { DigestBuilder, type StateDigest } from './state-transfer.js'
import type { BatchOp, Store, StoreSnapshot } from './store.js'

/**
 * Resync by difference: brings a target store to a source's state at some seq while only the
 * difference crosses the wire. The source cuts its state into ranges of about `targetBytes`
 * and sends one summary per range; the target answers, for each range it holds differently,
 * its keys with a short hash of each value; the source answers with the puts and dels that
 * make the range equal. The target stages those ops under `s` (keys.ts) and touches its real
 * keys only once (old state + staged ops) digests to the source's whole-state digest, so it
 * always holds either its old state or the whole new one. An interrupted resync keeps what it
 * staged: the next one compares the source with (state + staged ops), so only what is still
 * missing crosses again. Nothing here knows frames or sockets; range-sync-codec.ts turns the
 * messages into bodies and back.
 */

export const DEFAULT_RANGE_BYTES = 1 << 20
const APPLY_BATCH_BYTES = 4 << 20
/** Target-side buffer of a range's entries before their value hashes are taken anyway. */
const PENDING_MAX = 4 << 20
/** Bytes of a range's digest (RangeSummary.digest). */
export const DIGEST_BYTES = 16
/** Bytes of a value's hash (KeyHash.hash). */
export const HASH_BYTES = 8
const TAG_DEL = 0x00
const TAG_PUT = 0x01

export interface RangeSummary {
  /** Exclusive end key; null = end of the state keyspace (the last range, and only it). */
  end: Buffer | null
  /** First 16 bytes of sha256 over (u32 klen, k, u32 vlen, v) of the range's entries. */
  digest: Buffer
  entries: number
  /** Bytes of its keys and values: what the range costs to send whole (resync progress). */
  bytes: number
}
export interface KeyHash { key: Buffer, hash: Buffer }
export interface RangeKeys { index: number, keys: KeyHash[] }
/** `copies`: [key, from] — put under key the value the target holds under `from` (its key list named it). */
export interface RangeDelta { puts: Array<[Buffer, Buffer]>, dels: Buffer[], copies: Array<[Buffer, Buffer]> }

function rangeDigest (d: DigestBuilder): Buffer {
  return Buffer.from(d.finish().digest, 'hex').subarray(0, DIGEST_BYTES)
}

function valueHash (v: Buffer): Buffer {
  return createHash('sha256').update(v).digest().subarray(0, HASH_BYTES)
}

/** The smallest key after `k`: ends a range right after its last entry, with no look-ahead. */
function successor (k: Buffer): Buffer {
  return Buffer.concat([k, Buffer.of(0)])
}

/** Walks `entries` (state entries in key order) once: range summaries plus the whole-state digest. */
export async function summarizeRanges (entries: AsyncIterable<[Buffer, Buffer]>, targetBytes = DEFAULT_RANGE_BYTES): Promise<{ ranges: RangeSummary[], total: StateDigest }> {
  if (!(targetBytes > 0)) throw new ReplfsError('BAD_ARGUMENT', `range size must be positive, got ${targetBytes}`)
  const ranges: RangeSummary[] = []
  const total = new DigestBuilder()
  let cur = new DigestBuilder()
  for await (const [k, v] of entries) {
    total.add(k, v)
    cur.add(k, v)
    if (cur.bytes >= targetBytes) {
      ranges.push({ end: successor(k), digest: rangeDigest(cur), entries: cur.entries, bytes: cur.bytes })
      cur = new DigestBuilder()
    }
  }
  // The last range reaches the end of the keyspace, so a target's keys past the source's are in one.
  if (cur.entries > 0 || ranges.length === 0) ranges.push({ end: null, digest: rangeDigest(cur), entries: cur.entries, bytes: cur.bytes })
  else ranges[ranges.length - 1].end = null
  return { ranges, total: total.finish() }
}

/** A complete summary list: ends strictly increasing, only the last one open. */
function checkSummaries (s: RangeSummary[]): void {
  if (s.length === 0 || s[s.length - 1].end !== null) throw frameInvalid('range summaries do not end with an open range')
  for (let i = 0; i < s.length - 1; i++) {
    const [prev, end] = [i > 0 ? s[i - 1].end : null, s[i].end]
    if (end === null || (prev !== null && prev.compare(end) >= 0)) throw frameInvalid(`range ${i} does not end after range ${i - 1}`)
  }
}

/** Target side: yields, in order, each range whose entries differ from the summary, with the target's key hashes in it. */
export async function * differingRanges (entries: AsyncIterable<[Buffer, Buffer]>, summaries: RangeSummary[]): AsyncGenerator<RangeKeys> {
  checkSummaries(summaries)
  let i = 0
  let d = new DigestBuilder()
  // Most ranges match: hash values only once a range differs, unless it grows too big to hold.
  let pending: Array<[Buffer, Buffer]> = []
  let hashed: KeyHash[] = []
  const flush = (): void => {
    for (const [key, v] of pending) hashed.push({ key, hash: valueHash(v) })
    pending = []
  }
  const close = (): RangeKeys | null => {
    const s = summaries[i++]
    const differs = d.entries !== s.entries || !rangeDigest(d).equals(s.digest)
    if (differs) flush()
    const out = differs ? { index: i - 1, keys: hashed } : null
    d = new DigestBuilder()
    pending = []
    hashed = []
    return out
  }
  for await (const [k, v] of entries) {
    for (let end = summaries[i].end; end !== null && k.compare(end) >= 0; end = summaries[i].end) {
      const r = close()
      if (r !== null) yield r
    }
    const before = d.bytes
    d.add(k, v)
    pending.push([k, v])
    if (Math.floor(before / PENDING_MAX) !== Math.floor(d.bytes / PENDING_MAX)) flush()
  }
  while (i < summaries.length) {
    const r = close()
    if (r !== null) yield r
  }
}

/** Bounds [start, end) of range i (start null = beginning of the state keyspace). */
export function rangeBounds (summaries: RangeSummary[], index: number): [Buffer | null, Buffer | null] {
  if (!Number.isInteger(index) || index < 0 || index >= summaries.length) throw frameInvalid(`no range ${index} (${summaries.length} ranges)`)
  return [index === 0 ? null : summaries[index - 1].end, summaries[index].end]
}

/** Values shorter than this are sent even when the target holds them under another key. */
const COPY_MIN_BYTES = 256

/**
 * Source side: what the target must put and delete so that range [start,end) holds exactly the
 * source's entries. A value the target already holds under another key of the range (a diverged
 * snapshot's layer beside the live one it was filled from) goes as a copy, not again in full.
 */
export async function rangeDelta (sourceEntriesInRange: AsyncIterable<[Buffer, Buffer]>, targetKeys: KeyHash[]): Promise<RangeDelta> {
  for (let n = 1; n < targetKeys.length; n++) if (targetKeys[n - 1].key.compare(targetKeys[n].key) >= 0) throw frameInvalid('target key list is not in strict key order')
  const held = new Map<string, Buffer>()
  for (const { key, hash } of targetKeys) if (!held.has(hash.toString('latin1'))) held.set(hash.toString('latin1'), key)
  const puts: Array<[Buffer, Buffer]> = []
  const copies: Array<[Buffer, Buffer]> = []
  const put = (k: Buffer, v: Buffer, h: Buffer): void => {
    const from = v.length >= COPY_MIN_BYTES ? held.get(h.toString('latin1')) : undefined
    if (from === undefined) puts.push([k, v])
    else copies.push([k, from])
  }
  const dels: Buffer[] = []
  let j = 0
  for await (const [k, v] of sourceEntriesInRange) {
    while (j < targetKeys.length && targetKeys[j].key.compare(k) < 0) dels.push(targetKeys[j++].key)
    const h = valueHash(v)
    if (j < targetKeys.length && targetKeys[j].key.equals(k)) {
      if (!h.equals(targetKeys[j].hash)) put(k, v, h)
      j++
    } else put(k, v, h)
  }
  while (j < targetKeys.length) dels.push(targetKeys[j++].key)
  return { puts, dels, copies }
}

/** The value of `key` in the target's state as it will be with the staged ops, at `snapshot`. */
async function stagedValueAt (store: Store, key: Buffer, snapshot: StoreSnapshot): Promise<Buffer | undefined> {
  for (const k of [stageKey(key), key]) {
    for await (const [, v] of store.iterate(k, successor(k), { snapshot })) {
      if (k === key) return v
      return v[0] === TAG_PUT ? v.subarray(1) : undefined
    }
  }
  return undefined
}

/** Entries of `store` (optionally at a StoreSnapshot) in [start,end) restricted to STATE_RANGES, in key order. */
export async function * stateEntriesIn (store: Store, start: Buffer | null, end: Buffer | null, snapshot?: StoreSnapshot): AsyncGenerator<[Buffer, Buffer]> {
  for (const [gte, lt] of STATE_RANGES) {
    const lo = start !== null && start.compare(gte) > 0 ? start : gte
    const hi = end !== null && end.compare(lt) < 0 ? end : lt
    if (lo.compare(hi) < 0) yield * store.iterate(lo, hi, { snapshot })
  }
}

// ---- Staging on the target.

type Phase = 'staging' | 'applying' | 'direct'
const PHASES: Phase[] = ['staging', 'applying', 'direct']

interface Marker { phase: Phase, seq: number, finalOps: BatchOp[] }

/** Marker value: JSON of the phase, the seq and (applying) the final ops, keys and values in hex. */
function encodeMarker (phase: Phase, seq: number, finalOps: BatchOp[] = []): Buffer {
  const ops = finalOps.map(op => op.type === 'put' ? [op.key.toString('hex'), op.value.toString('hex')] : [op.key.toString('hex')])
  return Buffer.from(JSON.stringify({ phase, seq, ops }))
}

function decodeMarker (v: Buffer): Marker {
  try {
    const m = JSON.parse(v.toString()) as { phase: Phase, seq: number, ops: string[][] }
    if (!PHASES.includes(m.phase) || !Array.isArray(m.ops)) throw new Error(`phase ${String(m.phase)}`)
    const finalOps = m.ops.map(([k, val]): BatchOp => val === undefined
      ? { type: 'del', key: Buffer.from(k, 'hex') }
      : { type: 'put', key: Buffer.from(k, 'hex'), value: Buffer.from(val, 'hex') })
    return { phase: m.phase, seq: m.seq, finalOps }
  } catch (err) {
    throw new ReplfsError('STORE_CORRUPT', 'the resync marker is unreadable: cannot tell whether the state is old or half-applied', { cause: err, hint: 'Recreate this replica with a full copy from the primary' })
  }
}

export interface CommitOptions {
  /** Bytes of staged entries per apply batch. */
  batchBytes?: number
  /** Called after each apply batch but the last; a test that throws here simulates a crash mid-apply. */
  afterBatch?: (batches: number) => void | Promise<void>
}
export interface ResyncStats { puts: number, dels: number, bytes: number }

/** Merges the state with staged ops (in key order): what the state will be once they are applied. */
async function * withStaged (state: AsyncIterable<[Buffer, Buffer]>, staged: AsyncIterable<[Buffer, Buffer]>): AsyncGenerator<[Buffer, Buffer]> {
  const a = state[Symbol.asyncIterator]()
  const b = staged[Symbol.asyncIterator]()
  try {
    let x = await a.next()
    let y = await b.next()
    while (x.done !== true || y.done !== true) {
      if (y.done === true || (x.done !== true && x.value[0].compare(unstageKey(y.value[0])) < 0)) {
        yield x.value as [Buffer, Buffer]
        x = await a.next()
        continue
      }
      const [sk, sv] = y.value
      if (sv[0] === TAG_PUT) yield [unstageKey(sk), sv.subarray(1)]
      if (x.done !== true && x.value[0].equals(unstageKey(sk))) x = await a.next()
      y = await b.next()
    }
  } finally {
    await a.return?.()
    await b.return?.()
  }
}

/** Applies every staged op in batches, each also dropping what it applied, so a redo is idempotent. */
async function applyStaged (store: Store, finalOps: BatchOp[], opts: CommitOptions): Promise<ResyncStats> {
  const limit = opts.batchBytes ?? APPLY_BATCH_BYTES
  const stats = { puts: 0, dels: 0, bytes: 0 }
  let ops: BatchOp[] = []
  let size = 0
  let batches = 0
  for await (const [sk, sv] of store.iterate(STAGE_RANGE[0], STAGE_RANGE[1])) {
    const key = unstageKey(sk)
    if (sv[0] === TAG_PUT) {
      ops.push({ type: 'put', key, value: sv.subarray(1) })
      stats.puts++
      stats.bytes += key.length + sv.length - 1
    } else {
      ops.push({ type: 'del', key })
      stats.dels++
    }
    ops.push({ type: 'del', key: sk })
    size += sk.length + sv.length
    if (size >= limit) {
      await store.write(ops)
      ops = []
      size = 0
      await opts.afterBatch?.(++batches)
    }
  }
  await store.write([...ops, ...finalOps, { type: 'del', key: RESYNC_MARKER }], { sync: true })
  return stats
}

async function stateIsEmpty (store: Store): Promise<boolean> {
  for await (const _ of stateEntriesIn(store, null, null)) return false // returning closes the iterator
  return true
}

/** Empties the state (as discardPartialCopy does), then the staging area. */
async function wipe (store: Store): Promise<void> {
  for (const [gte, lt] of [...STATE_RANGES, JOURNAL_RANGE, STAGE_RANGE]) await store.clearRange(gte, lt)
}

async function dropMarker (store: Store): Promise<void> {
  await store.write([{ type: 'del', key: RESYNC_MARKER }], { sync: true })
}

async function readMarker (store: Store): Promise<Marker | null> {
  const v = await store.get(RESYNC_MARKER)
  return v === undefined ? null : decodeMarker(v)
}

/**
 * A direct copy keeps the volume's metadata (format, counters, layers) staged until its commit:
 * until then the store holds no volume, so a copy cut off part-way is never mistaken for one,
 * and the next copy can go on from what it holds.
 */
function heldBack (key: Buffer): boolean {
  return key[0] === P_META
}

/** What the target's state will be once its staged ops are applied, in key order (at `snapshot` if given). */
export function stateWithStaged (store: Store, snapshot?: StoreSnapshot): AsyncGenerator<[Buffer, Buffer]> {
  return withStaged(stateEntriesIn(store, null, null, snapshot), store.iterate(STAGE_RANGE[0], STAGE_RANGE[1], { snapshot }))
}

export class StagedResync {
  private readonly stats: ResyncStats = { puts: 0, dels: 0, bytes: 0 }
  private finished = false
  private constructor (private readonly store: Store, readonly seq: number, readonly direct: boolean, readonly resumed: boolean) {}

  /**
   * Marks a resync under way (synced). What an interrupted attempt staged is kept, so this one
   * goes on from there: compare the source against stateWithStaged(), not the state alone. An
   * attempt interrupted while applying is finished first. `direct`: the state is empty (or holds
   * an interrupted direct copy), so ops go straight to the real keys, all but the metadata.
   */
  static async begin (store: Store, info: { seq: number, direct?: boolean }): Promise<StagedResync> {
    let earlier = await readMarker(store)
    if (earlier?.phase === 'applying') {
      await StagedResync.recover(store)
      earlier = null
    }
    const direct = info.direct === true
    if (direct && earlier?.phase !== 'direct' && !(await stateIsEmpty(store))) throw new ReplfsError('BAD_ARGUMENT', 'a direct resync needs a store with an empty state', { hint: 'Resync without direct mode, which stages the difference' })
    await store.write([{ type: 'put', key: RESYNC_MARKER, value: encodeMarker(direct ? 'direct' : 'staging', info.seq) }], { sync: true })
    return new StagedResync(store, info.seq, direct, earlier !== null)
  }

  /**
   * Stages (or, direct, writes) one part of a delta; each call is written before it returns.
   * Copies take their values from the state the target's key list was read from (`view`).
   */
  async add (part: RangeDelta, view?: StoreSnapshot): Promise<void> {
    if (this.finished) throw new ReplfsError('BAD_ARGUMENT', 'resync already committed or abandoned')
    const { dels } = part
    const puts = [...part.puts]
    for (const [k, from] of part.copies) {
      checkKey(from)
      const v = view === undefined ? undefined : await stagedValueAt(this.store, from, view)
      if (v === undefined) throw new ReplfsError('RECORD_INVALID', `resync delta copies from a key this target does not hold (${from.toString('hex').slice(0, 24)})`)
      puts.push([k, v])
    }
    for (const k of [...puts.map(([k]) => k), ...dels]) checkKey(k)
    const staging = (k: Buffer): boolean => !this.direct || heldBack(k)
    const ops: BatchOp[] = [
      ...puts.map(([k, v]): BatchOp => staging(k)
        ? { type: 'put', key: stageKey(k), value: Buffer.concat([Buffer.of(TAG_PUT), v]) }
        : { type: 'put', key: k, value: v }),
      ...dels.map((k): BatchOp => staging(k) ? { type: 'put', key: stageKey(k), value: Buffer.of(TAG_DEL) } : { type: 'del', key: k })
    ]
    this.stats.puts += puts.length
    this.stats.dels += dels.length
    for (const [k, v] of puts) this.stats.bytes += k.length + v.length
    await this.store.write(ops)
  }

  /**
   * Checks (state + staged ops) against the source's whole-state digest without touching the
   * real keys; on a mismatch drops the staging (direct: empties the state again) and throws
   * RECORD_INVALID. Then applies the staged ops and, in the last synced batch, `finalOps`.
   */
  async commit (expected: StateDigest, finalOps: BatchOp[] = [], opts: CommitOptions = {}): Promise<ResyncStats> {
    if (this.finished) throw new ReplfsError('BAD_ARGUMENT', 'resync already committed or abandoned')
    this.finished = true
    const got = await this.digest()
    if (got.digest !== expected.digest || got.entries !== expected.entries || got.bytes !== expected.bytes) {
      if (this.direct) await wipe(this.store)
      else await this.store.clearRange(STAGE_RANGE[0], STAGE_RANGE[1])
      await dropMarker(this.store)
      throw new ReplfsError('RECORD_INVALID', `resync at seq ${this.seq} does not match the source's digest (${got.entries} entries ${got.digest.slice(0, 12)}, expected ${expected.entries} ${expected.digest.slice(0, 12)}); the old state is kept`)
    }
    // From here on, recovery finishes the apply (with the same final ops) instead of keeping it staged.
    await this.store.write([{ type: 'put', key: RESYNC_MARKER, value: encodeMarker('applying', this.seq, finalOps) }], { sync: true })
    const applied = await applyStaged(this.store, finalOps, opts)
    return this.direct ? { ...this.stats } : applied
  }

  /** Digest of the state this resync would leave. */
  private async digest (): Promise<StateDigest> {
    const snap = await this.store.snapshot()
    try {
      const d = new DigestBuilder()
      for await (const [k, v] of stateWithStaged(this.store, snap)) d.add(k, v)
      return d.finish()
    } finally {
      await snap.close()
    }
  }

  /**
   * At store open: finishes a resync that a crash interrupted while applying its checked data.
   * One interrupted earlier is kept ('kept'): its staging, or its direct copy without metadata,
   * holds no volume the store would serve, and the next resync goes on from it.
   */
  static async recover (store: Store): Promise<'none' | 'kept' | 'applied' | 'emptied'> {
    const m = await readMarker(store)
    if (m === null) return 'none'
    if (m.phase === 'applying') {
      await applyStaged(store, m.finalOps, {})
      return 'applied'
    }
    // A direct copy by an older replfs wrote the metadata straight away: only emptying it is safe.
    if (m.phase === 'direct' && await store.get(metaKey('format')) !== undefined) {
      await wipe(store)
      await dropMarker(store)
      return 'emptied'
    }
    return 'kept'
  }

  /** Drops what an interrupted resync staged: this node's own state is the one that counts now (it became primary). */
  static async abandon (store: Store): Promise<boolean> {
    const m = await readMarker(store)
    if (m === null) return false
    if (m.phase === 'applying') {
      await applyStaged(store, m.finalOps, {})
      return false
    }
    if (m.phase === 'direct') await wipe(store)
    else await store.clearRange(STAGE_RANGE[0], STAGE_RANGE[1])
    await dropMarker(store)
    return true
  }
}

function checkKey (k: Buffer): void {
  if (!isStateKey(k)) throw new ReplfsError('RECORD_INVALID', `resync delta holds a key outside the replicated state (prefix 0x${k[0]?.toString(16) ?? '??'})`)
}

/** A peer's message (or what it asks for) that does not hold together. */
export function frameInvalid (msg: string, cause?: unknown): ReplfsError {
  return new ReplfsError('FRAME_INVALID', msg, { cause })
}
