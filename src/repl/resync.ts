import type { Logger } from 'pino'
import { ReplfsError } from '../errors.js'
import type { JournalFile } from '../log/journal-file.js'
import type { RecordLog } from '../log/record-log.js'
import { divergedOverlay, fillChunks, logicalEntries } from '../store/diverged.js'
import {
  type KeyHash, type RangeSummary, StagedResync, differingRanges, rangeBounds, rangeDelta, stateEntriesIn, stateWithStaged, summarizeRanges
} from '../store/range-sync.js'
import {
  appendSummaries, decodeRangeDelta, decodeRangeKeys, decodeSummaries, encodeRangeDelta, encodeRangeKeys, encodeSummaries
} from '../store/range-sync-codec.js'
import { JOURNAL_RANGE } from '../store/keys.js'
import type { BatchOp, StoreSnapshot } from '../store/store.js'
import { lastRecordAt, lastRecordOp } from '../store/volume-state.js'
import { nowNs } from '../fs/clock.js'
import type { FrameChannel } from './channel.js'
import { type Frame, type FrameTypeName, parseJsonBody } from './frames.js'
import { type StartFrame, peerError, refuse } from './handshake.js'
import type { NodeGenerations } from './node-state.js'

/**
 * Resync by difference over one connection (store/range-sync.ts does the store side). The source
 * summarizes its state at one seq in ranges; the target answers the ranges it holds differently
 * with its keys; the source sends what differs; the target stages it and swaps it in only once
 * the whole matches the source's digest, so it is never empty or half-way. When the target holds
 * writes of its own (diverged), they first become a snapshot on the source, which the resync then
 * brings back to the target with everything else: nothing either side wrote is discarded.
 *
 *   source -> RESYNC {step: begin, seq, ranges}, RANGES...
 *   target -> RANGE_KEYS... (each differing range), RESYNC {step: keys-end}
 *   source -> RANGE_DELTA... (answering each), RESYNC {step: end, seq, digest, entries, bytes, crc}
 */

export interface ResyncProgress {
  phase: 'diverged' | 'comparing' | 'applying' | 'done'
  ranges: number
  rangesDiffering: number
  /** Bytes of the source's ranges found differing so far: the most their deltas can carry. */
  rangeBytesDiffering: number
  /** Bytes of deltas sent (source) or received (target) so far. */
  deltaBytes: number
  bytesReceived: number
  bytesSent: number
}

/** At most how many bytes of deltas are still to come (0 once done; grows while ranges are compared). */
export function resyncRemaining (p: ResyncProgress): number {
  return p.phase === 'done' ? 0 : Math.max(0, p.rangeBytesDiffering - p.deltaBytes)
}

interface Ctx { log: RecordLog, journal: JournalFile, logger: Logger, progress: ResyncProgress }

export function newProgress (): ResyncProgress {
  return { phase: 'comparing', ranges: 0, rangesDiffering: 0, rangeBytesDiffering: 0, deltaBytes: 0, bytesReceived: 0, bytesSent: 0 }
}

/** The next frame of the resync: PINGs pass, an ERROR is the peer's refusal, anything else not in `allowed` ends it. */
async function next (ch: FrameChannel, allowed: FrameTypeName[]): Promise<Frame> {
  for (;;) {
    const f = await ch.next()
    if (f === null) throw new ReplfsError('PEER_REFUSED', 'the peer closed the connection during a resync')
    if (f.type === 'PING') continue
    if (f.type === 'ERROR') throw peerError(f)
    if (!allowed.includes(f.type)) refuse(ch, 'BAD_FRAME', `unexpected ${f.type} during a resync`)
    return f
  }
}

async function step<T> (ch: FrameChannel, name: string): Promise<T & { step: string }> {
  const body = parseJsonBody<T & { step: string }>(await next(ch, ['RESYNC']))
  if (body.step !== name) refuse(ch, 'BAD_FRAME', `resync step ${String(body.step)} where ${name} was due`)
  return body
}

async function send (ch: FrameChannel, type: FrameTypeName, bodies: Buffer[], p: ResyncProgress): Promise<void> {
  for (const b of bodies) {
    p.bytesSent += b.length
    if (!ch.send(type, b)) await ch.drained()
  }
}

async function receiveSummaries (ch: FrameChannel, count: number, p: ResyncProgress): Promise<RangeSummary[]> {
  const summaries: RangeSummary[] = []
  for (;;) {
    const f = await next(ch, ['RANGES'])
    p.bytesReceived += f.body.length
    if (appendSummaries(summaries, decodeSummaries(f.body))) break
  }
  if (summaries.length !== count) refuse(ch, 'BAD_FRAME', `the source announced ${count} ranges and sent ${summaries.length}`)
  return summaries
}

/** Logical entries of a view whose bases fall in [start, end) as the summaries cut them. */
async function logicalIn (store: RecordLog['state']['store'], chain: readonly number[], start: Buffer | null, end: Buffer | null): Promise<Array<[Buffer, Buffer]>> {
  const out: Array<[Buffer, Buffer]> = []
  for await (const e of logicalEntries(store, chain, start, null)) {
    if (end !== null && e[0].compare(end) >= 0) break
    out.push(e)
  }
  return out
}

// ---- source ------------------------------------------------------------------------------------

/** Runs the source's side; returns the seq streaming goes on after. */
export async function sendResync (ch: FrameChannel, ctx: Ctx, start: StartFrame, victimGeneration: string | undefined): Promise<number> {
  if (start.diverged) await keepDiverged(ch, ctx, victimGeneration)
  const { log, journal, progress: p } = ctx
  const store = log.state.store
  p.phase = 'comparing'
  const { seq, snap } = await log.snapshotAt()
  // The journal must still hold what follows the snapshot when the resync ends.
  const pin = journal.reader(seq + 1)
  try {
    const { ranges, total } = await summarizeRanges(stateEntriesIn(store, null, null, snap))
    p.ranges = ranges.length
    ch.sendJson('RESYNC', { step: 'begin', seq, ranges: ranges.length })
    await send(ch, 'RANGES', encodeSummaries(ranges), p)
    const pending = new Map<number, KeyHash[]>()
    for (;;) {
      const f = await next(ch, ['RANGE_KEYS', 'RESYNC'])
      if (f.type === 'RESYNC') {
        if (parseJsonBody<{ step: string }>(f).step !== 'keys-end' || pending.size > 0) refuse(ch, 'BAD_FRAME', 'resync keys ended with a range half-sent')
        break
      }
      p.bytesReceived += f.body.length
      const part = decodeRangeKeys(f.body)
      if (part.index >= ranges.length) refuse(ch, 'BAD_FRAME', `keys for range ${part.index} of ${ranges.length}`)
      const keys = (pending.get(part.index) ?? []).concat(part.keys)
      if (!part.last) { pending.set(part.index, keys); continue }
      pending.delete(part.index)
      p.rangesDiffering++
      p.rangeBytesDiffering += ranges[part.index].bytes
      const [lo, hi] = rangeBounds(ranges, part.index)
      const bodies = encodeRangeDelta(part.index, await rangeDelta(stateEntriesIn(store, lo, hi, snap), keys))
      for (const b of bodies) p.deltaBytes += b.length
      await send(ch, 'RANGE_DELTA', bodies, p)
    }
    const last = await lastRecordAt(store, snap)
    ch.sendJson('RESYNC', { step: 'end', seq, ...total, crc: last?.seq === seq ? last.crc : (journal.recordCrc(seq) ?? null) })
    p.phase = 'done'
    ctx.logger.info({ seq, ranges: ranges.length, differing: p.rangesDiffering, bytesSent: p.bytesSent, bytesReceived: p.bytesReceived }, 'resync by difference sent')
    return seq + 1
  } finally {
    pin.close()
    await snap.close()
  }
}

/**
 * The target's own writes become a read-only snapshot here first: an O(1) snapshot of this
 * volume, then its own top layer filled with whatever the target's live view holds differently.
 * A retry (the link or a host failed during an earlier pass) refills the snapshot that pass began
 * for the same victim generation instead of leaving it half-filled beside a new one: the victim,
 * a secondary since, holds what it held then, and the fill puts the same entries again.
 */
async function keepDiverged (ch: FrameChannel, ctx: Ctx, victimGeneration: string | undefined): Promise<void> {
  const { log, progress: p } = ctx
  p.phase = 'diverged'
  const info = await step<{ inodes: number }>(ch, 'diverged-info')
  if (!Number.isSafeInteger(info.inodes) || info.inodes < 0) refuse(ch, 'BAD_FRAME', 'diverged-info without an inode count')
  const prefix = `diverged-${(victimGeneration ?? 'unknown').slice(0, 8)}-`
  const earlier = victimGeneration === undefined
    ? undefined
    : log.state.snapshots.filter(s => s.diverged === true && s.name.startsWith(prefix) && s.inodes === info.inodes).at(-1)
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')
  const name = earlier?.name ?? `${prefix}${stamp}`
  if (earlier === undefined) {
    const made = await log.submit(() => ({ type: 'snapshot-diverged' as const, name, time: nowNs(), inodes: info.inodes }))
    await made?.durable
  } else {
    ctx.logger.warn({ snapshot: name, victimGeneration }, 'an earlier resync began this diverged snapshot: filling it again')
  }
  const chain = (): number[] => log.state.snapshot(name)?.chain.slice(1) ?? []
  const store = log.state.store
  const { ranges } = await summarizeRanges(logicalEntries(store, chain(), null, null))
  ch.sendJson('RESYNC', { step: 'diverged-begin', name, ranges: ranges.length })
  await send(ch, 'RANGES', encodeSummaries(ranges), p)
  const pending = new Map<number, Array<[Buffer, Buffer]>>()
  let filled = 0
  for (;;) {
    const f = await next(ch, ['RANGE_DELTA', 'RESYNC'])
    if (f.type === 'RESYNC') {
      if (parseJsonBody<{ step: string }>(f).step !== 'diverged-end' || pending.size > 0) refuse(ch, 'BAD_FRAME', 'diverged entries ended with a range half-sent')
      break
    }
    p.bytesReceived += f.body.length
    const part = decodeRangeDelta(f.body)
    if (part.index >= ranges.length || part.dels.length > 0 || part.copies.length > 0) refuse(ch, 'BAD_FRAME', `bad diverged entries for range ${part.index}`)
    const victim = (pending.get(part.index) ?? []).concat(part.puts)
    if (!part.last) { pending.set(part.index, victim); continue }
    pending.delete(part.index)
    const [lo, hi] = rangeBounds(ranges, part.index)
    for (const entries of fillChunks(divergedOverlay(await logicalIn(store, chain(), lo, hi), victim))) {
      const r = await log.submit(() => ({ type: 'snapshot-fill' as const, name, entries }))
      await r?.durable
      filled += entries.length
    }
  }
  ctx.logger.warn({ snapshot: name, entries: filled, victimGeneration }, 'the peer\'s diverged writes are kept as a read-only snapshot')
}

// ---- target ------------------------------------------------------------------------------------

export interface TargetCtx extends Ctx { node: NodeGenerations, onStateReplaced?: () => void }

/** Runs the target's side; returns the seq this node now holds (streaming goes on after it). */
export async function receiveResync (ch: FrameChannel, ctx: TargetCtx, start: StartFrame): Promise<number> {
  const { log, journal, progress: p } = ctx
  const state = log.state
  const store = state.store
  if (start.diverged) await giveDiverged(ch, ctx)
  p.phase = 'comparing'
  const begin = await step<{ seq: number, ranges: number }>(ch, 'begin')
  if (!Number.isSafeInteger(begin.seq) || !Number.isSafeInteger(begin.ranges) || begin.ranges < 1) refuse(ch, 'BAD_FRAME', 'malformed resync begin')
  const summaries = await receiveSummaries(ch, begin.ranges, p)
  p.ranges = summaries.length
  await log.settle()
  const staged = await log.exclusive(async () => await StagedResync.begin(store, { seq: begin.seq, direct: state.format === null }))
  if (staged.resumed) ctx.logger.info({ seq: begin.seq }, 'an interrupted resync staged data here: this one goes on from it')
  // Compared as it will be with what an earlier attempt staged, at one point in time (the deltas
  // land meanwhile); copies in the deltas read their values from that same point.
  const view = await store.snapshot()
  let end: ResyncEnd
  try {
    end = await receiveDeltas(ch, p, staged, view, begin.seq, (async () => {
      for await (const rk of differingRanges(stateWithStaged(store, view), summaries)) {
        p.rangesDiffering++
        p.rangeBytesDiffering += summaries[rk.index].bytes
        await send(ch, 'RANGE_KEYS', encodeRangeKeys(rk), p)
      }
      ch.sendJson('RESYNC', { step: 'keys-end' })
    })())
  } finally {
    await view.close()
  }
  p.phase = 'applying'
  // The host-local journal of record headers belonged to the old state: it goes in the same batch.
  const finalOps: BatchOp[] = [ctx.node.adoptOp(start.history), ...(end.crc === null ? [] : [lastRecordOp(end.seq, end.crc)])]
  for await (const [k] of store.iterate(JOURNAL_RANGE[0], JOURNAL_RANGE[1], { values: false })) finalOps.push({ type: 'del', key: k })
  await log.exclusive(async () => {
    await staged.commit({ digest: String(end.digest), entries: Number(end.entries), bytes: Number(end.bytes) }, finalOps)
    await state.reload()
    if (state.counters.seq !== end.seq) throw new ReplfsError('RECORD_INVALID', `resynced state is at seq ${state.counters.seq}, the source said ${end.seq}`)
    journal.reset(end.seq)
    log.resetTo(end.seq)
  })
  ctx.onStateReplaced?.()
  p.phase = 'done'
  ctx.logger.info({ seq: end.seq, ranges: summaries.length, differing: p.rangesDiffering, bytesReceived: p.bytesReceived, bytesSent: p.bytesSent }, 'resync by difference received and checked')
  return end.seq
}

interface ResyncEnd { seq: number, digest: string, entries: number, bytes: number, crc: number | null }

/** Stages each RANGE_DELTA until the source's end, while `sending` sends this side's keys. */
async function receiveDeltas (ch: FrameChannel, p: ResyncProgress, staged: StagedResync, view: StoreSnapshot, seq: number, sending: Promise<void>): Promise<ResyncEnd> {
  sending.catch(() => {}) // awaited below; a failure of the connection also ends the loop
  for (;;) {
    const f = await next(ch, ['RANGE_DELTA', 'RESYNC'])
    if (f.type === 'RESYNC') {
      const end = parseJsonBody<ResyncEnd & { step?: string }>(f)
      if (end.step !== 'end' || end.seq !== seq) refuse(ch, 'BAD_FRAME', 'resync end does not close the resync under way')
      await sending
      return end
    }
    p.bytesReceived += f.body.length
    p.deltaBytes += f.body.length
    await staged.add(decodeRangeDelta(f.body), view)
  }
}

/** Victim's side of keepDiverged: its live view's entries wherever the source's view differs. */
async function giveDiverged (ch: FrameChannel, ctx: TargetCtx): Promise<void> {
  const { log, progress: p } = ctx
  p.phase = 'diverged'
  const state = log.state
  await log.settle()
  ch.sendJson('RESYNC', { step: 'diverged-info', inodes: state.counters.inodes })
  const begin = await step<{ name: string, ranges: number }>(ch, 'diverged-begin')
  if (typeof begin.name !== 'string' || !Number.isSafeInteger(begin.ranges) || begin.ranges < 1) refuse(ch, 'BAD_FRAME', 'malformed diverged-begin')
  const summaries = await receiveSummaries(ch, begin.ranges, p)
  const live = state.layers.live
  for await (const rk of differingRanges(logicalEntries(state.store, live, null, null), summaries)) {
    const [lo, hi] = rangeBounds(summaries, rk.index)
    await send(ch, 'RANGE_DELTA', encodeRangeDelta(rk.index, { puts: await logicalIn(state.store, live, lo, hi), dels: [], copies: [] }), p)
  }
  ch.sendJson('RESYNC', { step: 'diverged-end' })
  ctx.logger.warn({ snapshot: begin.name }, 'this node yields: its own writes are kept as a read-only snapshot, then it resyncs')
}
