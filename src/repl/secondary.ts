import type { Duplex } from 'node:stream'
import { crc32 } from 'node:zlib'
import type { Logger } from 'pino'
import { ReplfsError } from '../errors.js'
import type { JournalFile } from '../log/journal-file.js'
import { decodeRecord } from '../log/codec.js'
import type { Committed, RecordLog } from '../log/record-log.js'
import { type LogRecord, isCommand } from '../log/records.js'
import { digestAt } from '../store/state-transfer.js'
import { FrameChannel, type ChannelOptions } from './channel.js'
import { type Frame, decodeRecordFrame, parseJsonBody } from './frames.js'
import type { SplitBrainPolicy } from './generations.js'
import { type Negotiated, type PeerError, PeerRefusal, type RefusalCode, type RoleHandover, describeError, expectStart, listenerHandshake, peerError, refuse } from './handshake.js'
import type { NodeGenerations } from './node-state.js'
import { type ResyncProgress, newProgress, receiveResync, resyncRemaining } from './resync.js'
import { DEFAULT_CHANNEL } from './primary.js'
import { LoopYield } from '../util/loop-yield.js'
import { LatencySamples } from './latency.js'

export interface SecondaryOptions {
  log: RecordLog
  journal: JournalFile
  secret: Buffer | null
  logger: Logger
  channel?: Partial<ChannelOptions>
  /** Called after a resync replaced the state (caches above the store must be dropped). */
  onStateReplaced?: () => void
  node: NodeGenerations
  policy?: SplitBrainPolicy
  /** The primary hands over (planned switchover): this node holds everything and is to promote itself. */
  onSwitchover?: (seq: number) => void
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
  phase: 'disconnected' | 'handshake' | 'resyncing' | 'streaming' = 'disconnected'
  progress: ResyncProgress | null = null
  /** Seq at which the primary said it stepped down, with this node holding all of it. */
  peerDemotedAt: number | null = null
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

  /** Serves one connection a primary dialed in, until it ends; throws why it ended. */
  async serve (stream: Duplex, peer: string): Promise<void> {
    const ch = new FrameChannel(stream, { ...DEFAULT_CHANNEL, ...this.opts.channel }, () => ({ seq: this.opts.log.state.counters.seq }))
    const { log, node } = this.opts
    let mine: Session | null = null
    let done: Promise<void> = Promise.resolve()
    const run = (async () => {
      const hs = await listenerHandshake(ch, {
        volumeId: () => log.state.format?.volumeId ?? null,
        secret: this.opts.secret,
        view: async () => {
          mine = await this.takeOver(ch, peer, done)
          return await node.viewOf(log, this.opts.policy ?? 'disconnect')
        }
      })
      await this.follow(ch, hs, peer)
    })()
    done = run.then(() => {}, () => {})
    await this.ended(run, ch, peer, () => mine)
  }

  /** Goes on with a connection this node's primary side negotiated before it demoted itself. */
  async serveHandover (h: RoleHandover): Promise<void> {
    let mine: Session | null = null
    let done: Promise<void> = Promise.resolve()
    const run = (async () => {
      await null // `done` is set once this function first yields
      mine = await this.takeOver(h.ch, h.peer, done)
      await this.follow(h.ch, h.negotiated, h.peer)
    })()
    done = run.then(() => {}, () => {})
    await this.ended(run, h.ch, h.peer, () => mine)
  }

  private async ended (run: Promise<void>, ch: FrameChannel, peer: string, mine: () => Session | null): Promise<void> {
    let told = false
    try {
      await run
    } catch (err) {
      this.noteError(err)
      this.log.warn({ peer, err }, 'replication connection ended')
      // The primary's status says why this node takes nothing: it redials, and goes on once space returns.
      if (err instanceof ReplfsError && err.code === 'DISK_FULL') {
        ch.close({ code: 'DISK_FULL', message: `the secondary's disk is full: it keeps what it holds and goes on when space returns (${err.message})` })
        told = true
      }
      throw err
    } finally {
      if (!told) ch.close()
      this.bytesIn += ch.bytesIn
      const m = mine()
      if (m !== null && this.session === m) { this.session = null; this.phase = 'disconnected' }
    }
  }

  /**
   * An authenticated primary replaces any earlier connection (a primary that restarted leaves a
   * half-open one behind); the old one's records are all applied before we say where we are.
   */
  private async takeOver (ch: FrameChannel, peer: string, done: Promise<void>): Promise<Session> {
    const prev = this.takeover
    let release!: () => void
    this.takeover = new Promise(resolve => { release = resolve })
    await prev
    if (this.session !== null) {
      this.log.info({ old: this.session.peer, peer }, 'a new primary connection replaces the old one')
      this.session.ch.close()
      await this.session.done
    }
    const mine = { ch, done, peer }
    this.session = mine
    release()
    await this.opts.log.settle()
    return mine
  }

  private async follow (ch: FrameChannel, hs: Negotiated, peer: string): Promise<void> {
    const { log, node } = this.opts
    const d = hs.decision
    if (d.kind === 'refuse') {
      this.log.error({ peer, code: d.code, reason: d.reason }, 'peer refused')
      refuse(ch, d.code, d.reason)
    }
    if (d.kind === 'source') refuse(ch, 'ROLE_CONFLICT', 'this node is secondary: it does not send')
    const start = await expectStart(ch, d, log.state.counters.seq)
    this.peerDemotedAt = null
    this.peer = peer
    this.primarySeq = start.primarySeq
    this.sync = start.sync
    this.log.info({ peer, mode: start.mode, from: start.from, primarySeq: start.primarySeq, sync: start.sync, diverged: start.diverged, reason: d.reason }, 'primary connected')
    if (start.mode === 'resume') {
      // From here the records are the source's lineage: its generations are ours.
      await node.adopt(start.history)
    } else {
      this.phase = 'resyncing'
      this.progress = newProgress()
      const seq = await receiveResync(ch, { log, journal: this.opts.journal, logger: this.log, progress: this.progress, node, onStateReplaced: this.opts.onStateReplaced }, start)
      this.ack(ch, seq)
    }
    this.ackedSeq = log.state.counters.seq
    this.phase = 'streaming'
    await this.receive(ch)
  }

  noteError (err: unknown): void {
    this.lastError = describeError(err)
  }

  /** One table of handlers: a frame the protocol does not allow here is an error, never skipped. */
  private async receive (ch: FrameChannel): Promise<void> {
    this.applyError = null
    const turn = new LoopYield(YIELD_EVERY_MS)
    for (;;) {
      await turn.pause()
      const failed = this.applyError as Error | null
      if (failed !== null) refuse(ch, applyFailure(failed), `applying failed here: ${failed.message}`)
      const f = await ch.next()
      if (f === null) throw new ReplfsError('PEER_REFUSED', 'the primary closed the connection')
      switch (f.type) {
        case 'RECORD': await this.applyRecordFrame(ch, f); break
        case 'SWITCHOVER': {
          const { seq, promote } = parseJsonBody<{ seq: number, promote?: boolean }>(f)
          await this.opts.log.settle()
          if (seq !== this.opts.log.state.counters.seq || this.opts.onSwitchover === undefined) refuse(ch, 'BAD_FRAME', `switchover at ${String(seq)}, but this node holds ${this.opts.log.state.counters.seq}`)
          ch.sendJson('SWITCHOVER', { seq })
          // A demote: the primary steps down with everything here; a promote without --force may follow.
          this.peerDemotedAt = seq
          if (promote !== false) this.opts.onSwitchover(seq)
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
    if (this.phase !== 'streaming') refuse(ch, 'BAD_FRAME', 'RECORD before the resync ended')
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
      refuse(ch, applyFailure(err), `record ${seq} (${rec.type}) cannot be applied here: ${(err as Error).message}`)
    }
    c.durable.then(() => this.durable(ch, seq, arrived), (err: Error) => {
      this.applyError = err
      ch.close({ code: applyFailure(err), message: `record ${seq} not committed here: ${err.message}` })
    })
    // Applying runs ahead of LevelDB; past a window, wait for it, so a fast link cannot pile
    // up uncommitted batches in memory.
    this.uncommitted += f.body.length
    if (this.uncommitted > UNCOMMITTED_WINDOW) {
      this.uncommitted = 0
      await c.durable.catch(() => {})
    }
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
      generation: this.opts.node.current ?? null,
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
      resync: this.progress === null ? null : { ...this.progress, bytesRemaining: resyncRemaining(this.progress) },
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

/** The refusal a failed apply gives: a full disk is its own case (the primary's status says so). */
function applyFailure (err: unknown): RefusalCode {
  return err instanceof ReplfsError && err.code === 'DISK_FULL' ? 'DISK_FULL' : 'APPLY_FAILED'
}
