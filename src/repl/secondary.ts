import type { Duplex } from 'node:stream'
import { crc32 } from 'node:zlib'
import type { Logger } from 'pino'
import { ReplfsError } from '../errors.js'
import type { JournalFile } from '../log/journal-file.js'
import { decodeRecord } from '../log/codec.js'
import type { Committed, RecordLog } from '../log/record-log.js'
import { type LogRecord, isCommand } from '../log/records.js'
import { StateImport, digestAt, type StateDigest } from '../store/state-transfer.js'
import { FrameChannel, type ChannelOptions } from './channel.js'
import { type Frame, decodeCopyChunk, decodeRecordFrame, parseJsonBody } from './frames.js'
import { type PeerError, PeerRefusal, describeError, peerError, refuse, secondaryHandshake } from './handshake.js'
import { DEFAULT_CHANNEL } from './primary.js'
import { LoopYield } from '../util/loop-yield.js'
import { LatencySamples } from './latency.js'

export interface SecondaryOptions {
  log: RecordLog
  journal: JournalFile
  secret: Buffer | null
  logger: Logger
  channel?: Partial<ChannelOptions>
  /** Called after a full copy replaced the state (caches above the store must be dropped). */
  onStateReplaced?: () => void
}

/** Longest stretch of applying buffered records before the event loop gets a turn (see LoopYield). */
const YIELD_EVERY_MS = 2

/** Bytes of applied records that may wait for LevelDB at once. */
const UNCOMMITTED_WINDOW = 32 * 1024 * 1024

interface Session { ch: FrameChannel, done: Promise<void>, peer: string }

/**
 * The secondary's side: applies the primary's records strictly in sequence, through the same
 * RecordLog and applyRecord as the primary, so each batch also stores the applied seq and a crash
 * can neither repeat nor skip a record. Data records are group-committed; a command record is
 * applied alone, with everything before it committed first and nothing after it started.
 */
export class ReplicationSecondary {
  private readonly log: Logger
  private session: Session | null = null
  private takeover: Promise<void> = Promise.resolve()
  phase: 'disconnected' | 'handshake' | 'copying' | 'streaming' = 'disconnected'
  peer: string | null = null
  primarySeq: number | null = null
  sync = false
  lastError: PeerError | null = null
  bytesIn = 0
  private ackedSeq = 0
  private ackScheduled = false
  private applyError: Error | null = null
  private uncommitted = 0
  /**
   * From a record frame's arrival (its last bytes off the socket) to its durable apply here, which
   * its ack waits for: queueing behind earlier records, applying, the LevelDB commit (synced in
   * sync mode). Most of a sync-mode write's latency.
   */
  private readonly durableLatency = new LatencySamples()

  constructor (private readonly opts: SecondaryOptions) {
    this.log = opts.logger.child({ component: 'repl.secondary' })
  }

  /** Serves one connection from a primary until it ends; throws why it ended. */
  async serve (stream: Duplex, peer: string): Promise<void> {
    const ch = new FrameChannel(stream, { ...DEFAULT_CHANNEL, ...this.opts.channel }, () => ({ seq: this.opts.log.state.counters.seq }))
    let mine: Session | null = null
    let done: Promise<void> = Promise.resolve()
    const run = (async () => {
      const { log } = this.opts
      const hs = await secondaryHandshake(ch, { volumeId: () => log.state.format?.volumeId ?? null, secret: this.opts.secret }, async () => {
        // Authenticated: this primary replaces any earlier connection (a primary that restarted
        // leaves a half-open one behind). Its records must all be applied before we say where we are.
        const prev = this.takeover
        let release!: () => void
        this.takeover = new Promise(resolve => { release = resolve })
        await prev
        if (this.session !== null) {
          this.log.info({ old: this.session.peer, peer }, 'a new primary connection replaces the old one')
          this.session.ch.close()
          await this.session.done
        }
        mine = { ch, done, peer }
        this.session = mine
        release()
        await log.settle()
        const seq = log.state.counters.seq
        const last = await log.state.lastRecord()
        return { seq, crc: last !== null && last.seq === seq ? last.crc : null }
      })
      this.peer = peer
      this.primarySeq = hs.start.primarySeq
      this.sync = hs.start.sync
      this.ackedSeq = log.state.counters.seq
      this.phase = hs.start.mode === 'copy' ? 'copying' : 'streaming'
      this.log.info({ peer, mode: hs.start.mode, from: hs.start.from, primarySeq: hs.start.primarySeq, sync: hs.start.sync }, 'primary connected')
      await this.receive(ch)
    })()
    done = run.then(() => {}, () => {})
    try {
      await run
    } catch (err) {
      this.noteError(err)
      this.log.warn({ peer, err }, 'replication connection ended')
      throw err
    } finally {
      ch.close()
      this.bytesIn += ch.bytesIn
      if (mine !== null && this.session === mine) { this.session = null; this.phase = 'disconnected' }
    }
  }

  noteError (err: unknown): void {
    this.lastError = describeError(err)
  }

  /** One table of handlers: a frame the protocol does not allow here is an error, never skipped. */
  private async receive (ch: FrameChannel): Promise<void> {
    let imp: StateImport | null = null
    this.applyError = null
    const turn = new LoopYield(YIELD_EVERY_MS)
    for (;;) {
      await turn.pause()
      const failed = this.applyError as Error | null
      if (failed !== null) refuse(ch, 'APPLY_FAILED', `applying failed here: ${failed.message}`)
      const f = await ch.next()
      if (f === null) throw new ReplfsError('PEER_REFUSED', 'the primary closed the connection')
      switch (f.type) {
        case 'RECORD': await this.applyRecordFrame(ch, f); break
        case 'COPY_BEGIN': {
          const { seq } = parseJsonBody<{ seq: number }>(f)
          if (this.phase !== 'copying' || imp !== null || !Number.isSafeInteger(seq)) refuse(ch, 'BAD_FRAME', 'unexpected COPY_BEGIN')
          this.log.info({ seq }, 'receiving a full copy; the mount shows a partial state until it ends')
          imp = await this.opts.log.exclusive(async () => await StateImport.begin(this.opts.log.state.store, seq))
          break
        }
        case 'COPY_CHUNK':
          if (imp === null) refuse(ch, 'BAD_FRAME', 'COPY_CHUNK outside a copy')
          await imp.add(decodeCopyChunk(f.body))
          break
        case 'COPY_END': {
          const end = parseJsonBody<{ seq: number } & StateDigest>(f)
          if (imp === null || end.seq !== imp.seq) refuse(ch, 'BAD_FRAME', 'COPY_END does not close the copy under way')
          await this.finishCopy(imp, end)
          imp = null
          break
        }
        case 'VERIFY_REQ': this.verify(ch, parseJsonBody<{ id: number, seq: number }>(f)); break
        case 'PING': {
          const { seq } = parseJsonBody<{ seq: number }>(f)
          if (Number.isSafeInteger(seq)) this.primarySeq = seq
          break
        }
        case 'ERROR': throw peerError(f)
        default: refuse(ch, 'BAD_FRAME', `unexpected ${f.type} from the primary`)
      }
    }
  }

  private async applyRecordFrame (ch: FrameChannel, f: Frame): Promise<void> {
    const { log } = this.opts
    if (this.phase !== 'streaming') refuse(ch, 'BAD_FRAME', 'RECORD before the copy ended')
    const arrived = f.at ?? performance.now()
    const { seq, record, crc } = decodeRecordFrame(f.body, f.crc)
    const next = log.state.counters.seq + 1
    if (seq !== next) refuse(ch, 'BAD_FRAME', `record ${seq} is out of sequence: expected ${next}`)
    let rec: LogRecord
    try {
      rec = decodeRecord(record)
    } catch (err) {
      refuse(ch, 'BAD_FRAME', `record ${seq}: ${(err as Error).message}`)
    }
    if (this.primarySeq === null || seq > this.primarySeq) this.primarySeq = seq
    if (isCommand(rec)) {
      // Commands stand alone: all before them committed, and nothing after starts until they are.
      await log.settle()
      const c = await log.apply(rec, { seq, sync: true, encoded: { bytes: record, crc: crc ?? crc32(record) } })
      await c.durable
      this.durable(ch, seq, arrived)
      return
    }
    let c: Committed
    try {
      c = await log.apply(rec, { seq, sync: this.sync, encoded: { bytes: record, crc: crc ?? crc32(record) } })
    } catch (err) {
      refuse(ch, 'APPLY_FAILED', `record ${seq} (${rec.type}) cannot be applied here: ${(err as Error).message}`)
    }
    c.durable.then(() => this.durable(ch, seq, arrived), (err: Error) => {
      this.applyError = err
      ch.close({ code: 'APPLY_FAILED', message: `record ${seq} not committed here: ${err.message}` })
    })
    // Applying runs ahead of LevelDB; past a window, wait for it, so a fast link cannot pile
    // up uncommitted batches in memory.
    this.uncommitted += f.body.length
    if (this.uncommitted > UNCOMMITTED_WINDOW) {
      this.uncommitted = 0
      await c.durable.catch(() => {})
    }
  }

  private async finishCopy (imp: StateImport, end: { seq: number } & StateDigest): Promise<void> {
    const { log, journal } = this.opts
    await log.exclusive(async () => {
      await imp.finish(end)
      await log.state.store.sync()
      await log.state.reload()
      if (log.state.counters.seq !== end.seq) throw new ReplfsError('RECORD_INVALID', `copied state is at seq ${log.state.counters.seq}, the primary said ${end.seq}`)
      journal.reset(end.seq)
      log.resetTo(end.seq)
    })
    this.opts.onStateReplaced?.()
    this.phase = 'streaming'
    this.log.info({ seq: end.seq, entries: end.entries }, 'full copy received and checked')
    this.ack(this.session!.ch, end.seq)
  }

  /** Digest at exactly `seq`: this request arrives right after record `seq`, before any later one is applied. */
  private verify (ch: FrameChannel, req: { id: number, seq: number }): void {
    const { log } = this.opts
    const snapP = log.snapshotAt()
    void snapP.then(async ({ seq, snap }) => {
      try {
        if (seq !== req.seq) throw new ReplfsError('RECORD_INVALID', `verify at ${req.seq} arrived at ${seq}`)
        const d = await digestAt(log.state.store, snap)
        if (!ch.stream.destroyed) ch.sendJson('VERIFY_RES', { id: req.id, seq, ...d })
      } finally {
        await snap.close()
      }
    }).catch(err => {
      this.log.error({ err }, 'verify failed')
      ch.close({ code: 'APPLY_FAILED', message: `verify failed here: ${(err as Error).message}` })
    })
  }

  /** Record `seq` (whose frame arrived at `arrived`) is durable here: time it, then ack it. */
  private durable (ch: FrameChannel, seq: number, arrived: number): void {
    this.durableLatency.add(performance.now() - arrived)
    this.ack(ch, seq)
  }

  /** Acks are coalesced: one frame per turn of the event loop carries the highest durable seq. */
  private ack (ch: FrameChannel, seq: number): void {
    if (seq > this.ackedSeq) this.ackedSeq = seq
    if (this.ackScheduled) return
    this.ackScheduled = true
    setImmediate(() => {
      this.ackScheduled = false
      if (!ch.stream.destroyed) ch.sendJson('ACK', { seq: this.ackedSeq })
    })
  }

  status (): Record<string, unknown> {
    const seq = this.opts.log.state.counters.seq
    return {
      role: 'secondary',
      peer: this.peer,
      connected: this.session !== null,
      phase: this.phase,
      mode: this.session === null ? null : (this.sync ? 'sync' : 'async'),
      appliedSeq: seq,
      primarySeq: this.primarySeq,
      lagRecords: this.primarySeq === null ? null : Math.max(0, this.primarySeq - seq),
      durableLatencyMs: this.durableLatency.summary(),
      journal: { firstSeq: this.opts.journal.firstSeq, lastSeq: this.opts.journal.lastSeq, bytes: this.opts.journal.bytes },
      bytesIn: this.bytesIn + (this.session?.ch.bytesIn ?? 0),
      lastError: this.lastError
    }
  }

  async close (): Promise<void> {
    const s = this.session
    if (s !== null) {
      s.ch.close()
      await s.done
    }
  }
}

export { PeerRefusal }
