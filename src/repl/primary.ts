import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { ReplfsError } from '../errors.js'
import type { JournalFile } from '../log/journal-file.js'
import type { RecordLog } from '../log/record-log.js'
import { digestAt, type StateDigest } from '../store/state-transfer.js'
import { type ResyncProgress, newProgress, resyncRemaining, sendResync } from './resync.js'
import { FrameChannel, type ChannelOptions } from './channel.js'
import { encodeRecordFrame, parseJsonBody } from './frames.js'
import type { SplitBrainPolicy } from './generations.js'
import { type Negotiated, type PeerError, PeerRefusal, RoleHandover, describeError, dialerHandshake, listenerHandshake, type StartFrame, peerError, refuse } from './handshake.js'
import type { NodeGenerations } from './node-state.js'
import { LatencySamples } from './latency.js'
import { VerifyRequests } from './verify-requests.js'

export type ReplicationMode = 'sync' | 'async'

export interface PrimaryOptions {
  log: RecordLog
  journal: JournalFile
  secret: Buffer | null
  mode: ReplicationMode
  logger: Logger
  channel?: Partial<ChannelOptions>
  node: NodeGenerations
  policy?: SplitBrainPolicy
  /** A fenced primary's peer confirmed it holds nothing newer: the volume may take writes. */
  onConfirmed?: () => void
}

export interface VerifyResult { seq: number, identical: boolean, primary: StateDigest, secondary: StateDigest }

/** How much of the journal one read hands the socket. */
const READ_BYTES = 1 << 20

export const DEFAULT_CHANNEL: ChannelOptions = { idleTimeoutMs: 15_000, pingIntervalMs: 2_000 }

/**
 * The primary's side of replication: sends the journal to one secondary from wherever the
 * secondary stands (or a full copy when the journal no longer reaches back that far), tracks what
 * it has acknowledged, and in sync mode holds each write until the secondary has it durably.
 * Works over any duplex stream; dialing and reconnecting live in net/.
 */
export class ReplicationPrimary {
  private readonly log: Logger
  /** Highest seq the secondary has durably applied, as far as we know. */
  ackedSeq = -1
  sentSeq = 0
  phase: 'disconnected' | 'handshake' | 'resyncing' | 'streaming' = 'disconnected'
  /** The last resync by difference (bytes each way, ranges compared and differing). */
  progress: ResyncProgress | null = null
  peer: string | null = null
  lastError: PeerError | null = null
  bytesOut = 0
  private session: { ch: FrameChannel, done: Promise<void> } | null = null
  private gateWaiters: Array<{ seq: number, resolve: () => void }> = []
  private readonly verifies = new VerifyRequests()
  private wake: (() => void) | null = null
  /** Commit times of not-yet-acknowledged records, sampled, for lag in seconds and ack latency. */
  private readonly pendingTimes: Array<[number, number, boolean]> = []
  private readonly latencies = new LatencySamples()
  private readonly unsubscribe: () => void

  constructor (private readonly opts: PrimaryOptions) {
    this.log = opts.logger.child({ component: 'repl.primary' })
    this.unsubscribe = opts.log.onCommitted(seq => {
      const now = performance.now()
      const last = this.pendingTimes[this.pendingTimes.length - 1]
      if (last === undefined || now - last[1] >= 1 || this.pendingTimes.length < 64) this.pendingTimes.push([seq, now, this.streaming])
      if (this.pendingTimes.length > 100_000) this.pendingTimes.splice(0, 50_000)
      this.wake?.()
    })
    if (opts.mode === 'sync') opts.log.replicated = async seq => await this.replicated(seq)
  }

  get streaming (): boolean { return this.phase === 'streaming' }

  /**
   * Sync mode: resolves once the secondary holds `seq`. With no secondary streaming, the volume
   * runs degraded (as DRBD's protocol C does) and writes complete locally; `status` says so.
   */
  private async replicated (seq: number): Promise<void> {
    if (this.ackedSeq >= seq || (!this.streaming && performance.now() >= this.holdUntil)) return
    await new Promise<void>(resolve => this.gateWaiters.push({ seq, resolve }))
  }

  private holdUntil = 0

  /**
   * A switchover's new primary: the old one is about to connect as its secondary, so for up to
   * `ms` sync writes wait for it instead of completing degraded (as for a silent secondary).
   */
  holdWrites (ms: number): void {
    this.holdUntil = performance.now() + ms
    setTimeout(() => { if (!this.streaming) this.releaseWaiters() }, ms).unref()
  }

  private handOffDone: ((seq: number) => void) | null = null

  /**
   * Planned switchover: asks the streaming peer, which holds everything up to `seq`, to promote
   * itself; resolves once it says it has. The caller has stopped writes first.
   */
  async handOff (seq: number, timeoutMs: number, opts: { promote?: boolean } = {}): Promise<void> {
    const s = this.session
    if (s === null || !this.streaming || this.ackedSeq < seq) throw new ReplfsError('PEER_REFUSED', 'the peer is not streaming with everything acknowledged', { hint: 'See replfs status' })
    const answered = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { this.handOffDone = null; reject(new ReplfsError('PEER_REFUSED', `the peer did not confirm its promotion within ${timeoutMs / 1000} s`)) }, timeoutMs)
      this.handOffDone = got => { clearTimeout(timer); this.handOffDone = null; got === seq ? resolve() : reject(new ReplfsError('PEER_REFUSED', `the peer promoted itself at ${got}, not ${seq}`)) }
      s.ch.closed.then(() => { clearTimeout(timer); reject(new ReplfsError('PEER_REFUSED', 'the connection ended during the switchover')) }, () => {})
    })
    s.ch.sendJson('SWITCHOVER', { seq, promote: opts.promote !== false })
    await answered
  }

  /**
   * Resolves once the peer has acknowledged `seq` (for a demote: nothing this primary holds may be
   * missing there); rejects when no peer is streaming, or after `timeoutMs`.
   */
  async waitAcked (seq: number, timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs
    while (this.ackedSeq < seq || !this.streaming) {
      if (!this.streaming && this.session === null) {
        throw new ReplfsError('PEER_REFUSED', `the peer is not connected, so it may lack records up to ${seq}`, { hint: 'Reconnect it first, or: replfs demote --force (its missing records then come back as a diverged snapshot)' })
      }
      if (Date.now() > until) throw new ReplfsError('PEER_REFUSED', `the peer has acknowledged ${this.ackedSeq} of ${seq} after ${timeoutMs / 1000} s`, { hint: 'See replfs status; or: replfs demote --force' })
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  }

  /**
   * Runs one connection to the peer until it ends; throws why it ended. `dialed`: this node
   * opened it (else the peer dialed in: a restarted primary that has to learn who is newer).
   * A RoleHandover means the peer is the source: the caller demotes this node and hands the
   * still open connection to its secondary side.
   */
  async serve (stream: Duplex, peer: string, opts: { dialed?: boolean } = {}): Promise<void> {
    if (this.session !== null) {
      stream.destroy()
      throw new ReplfsError('PEER_REFUSED', `already replicating to ${this.peer ?? '?'}`)
    }
    const ch = new FrameChannel(stream, { ...DEFAULT_CHANNEL, ...this.opts.channel }, () => ({ seq: this.opts.log.committedSeq }))
    const run = this.run(ch, peer, opts.dialed ?? true)
    this.session = { ch, done: run.then(() => {}, () => {}) }
    let streamed = false
    try {
      await run
    } catch (err) {
      if (err instanceof RoleHandover) throw err
      this.noteError(err)
      throw err
    } finally {
      streamed = this.phase === 'streaming'
      if (this.handedOver !== ch) ch.close()
      this.handedOver = null
      this.bytesOut += ch.bytesOut
      this.session = null
      this.phase = 'disconnected'
      if (performance.now() >= this.holdUntil) this.releaseWaiters()
      this.verifies.failAll()
      if (streamed) this.startAlone()
    }
  }

  private handedOver: FrameChannel | null = null

  /** The peer is gone: what this primary writes from now on belongs to a generation of its own. */
  private startAlone (): void {
    const { node, log } = this.opts
    if (node.role !== 'primary' || node.fenced || this.closing) return
    node.startAlone(log.committedSeq).then(
      () => this.log.info({ generation: node.current?.id, since: node.current?.since }, 'peer lost: a new generation starts'),
      err => this.log.error({ err }, 'could not record the new generation'))
  }

  /** Records why replication is not working, for `status`. */
  noteError (err: unknown): void {
    this.lastError = describeError(err)
  }

  private async run (ch: FrameChannel, peer: string, dialed: boolean): Promise<void> {
    const { log, journal, node } = this.opts
    const state = log.state
    const volumeId = state.format?.volumeId
    if (volumeId === undefined) throw new ReplfsError('STORE_MISSING', 'this store holds no volume to replicate')
    this.peer = peer
    this.phase = 'handshake'
    const me = { secret: this.opts.secret, view: async () => await node.viewOf(log, this.opts.policy ?? 'disconnect') }
    const hs = dialed ? await dialerHandshake(ch, { ...me, volumeId }) : await listenerHandshake(ch, { ...me, volumeId: () => volumeId })
    const d = hs.decision
    const plog = this.log.child({ peer, peerSeq: hs.peer.seq })
    if (d.kind === 'refuse') {
      plog.error({ code: d.code, reason: d.reason, peerGeneration: hs.peer.history.at(-1)?.id }, 'peer refused')
      refuse(ch, d.code, d.reason)
    }
    if (d.kind === 'target') {
      this.handedOver = ch
      throw new RoleHandover(ch, hs, peer)
    }
    if (node.fenced) {
      node.unfence()
      this.opts.onConfirmed?.()
      plog.info({ reason: d.reason }, 'the peer holds nothing newer: this primary takes writes')
    }
    const start = await this.startFrame(hs)
    ch.sendJson('START', start)
    this.ackedSeq = d.from
    this.sentSeq = d.from
    this.dropTimesUpTo(d.from)
    plog.info({ mode: start.mode, from: start.from, diverged: start.diverged, primarySeq: start.primarySeq, reason: d.reason }, start.mode === 'resume' ? 'secondary connected; resuming' : 'secondary connected; resyncing by difference')
    let from = start.from
    if (start.mode === 'resume') {
      this.phase = 'streaming'
    } else {
      this.phase = 'resyncing'
      this.progress = newProgress()
      from = await sendResync(ch, { log, journal, logger: plog, progress: this.progress }, start, hs.peer.history.at(-1)?.id)
      this.sentSeq = from - 1
    }
    const reading = this.readLoop(ch)
    const sending = this.sendLoop(ch, from, plog)
    // Whichever side fails first ends the session; the other is then woken by the close.
    await Promise.race([reading, sending]).finally(() => {
      ch.close()
      this.wake?.()
    })
    await Promise.allSettled([reading, sending])
  }

  /** Resume from the journal where it still reaches back and the histories agree; else a resync by difference. */
  private async startFrame (hs: Negotiated): Promise<StartFrame> {
    const { log, journal, node } = this.opts
    const d = hs.decision
    if (d.kind === 'refuse') throw new ReplfsError('PEER_REFUSED', d.reason)
    let diverged = d.diverged
    let resume = !diverged && d.from + 1 >= journal.firstSeq && (hs.peer.volumeId !== null || journal.firstSeq === 1)
    if (resume && d.from > 0 && hs.peer.crc !== null) {
      const last = await log.state.lastRecord()
      const ours = journal.recordCrc(d.from) ?? (last?.seq === d.from ? last.crc : undefined)
      if (ours !== undefined && ours !== hs.peer.crc) {
        // The generations say one history, the records say two: keep the peer's as diverged.
        this.log.warn({ seq: d.from }, 'the record at the common point differs between the hosts: resyncing, the peer keeps its state as a diverged snapshot')
        resume = false
        diverged = true
      }
    }
    return { mode: resume ? 'resume' : 'diff', from: d.from + 1, sync: this.opts.mode === 'sync', primarySeq: log.committedSeq, history: node.history, diverged }
  }

  private async sendLoop (ch: FrameChannel, from: number, plog: Logger): Promise<void> {
    const { log, journal } = this.opts
    let next = from
    const reader = journal.reader(next)
    try {
      while (!ch.stream.destroyed) {
        this.verifies.sendDue(ch, next - 1, this.sentSeq)
        const entries = await reader.next(READ_BYTES, log.committedSeq)
        if (entries.length === 0) {
          await this.idle(ch, next)
          continue
        }
        for (const e of entries) {
          this.verifies.sendDue(ch, e.seq - 1, this.sentSeq)
          if (!ch.send('RECORD', encodeRecordFrame(e.seq, e.record, e.crc))) await ch.drained()
          this.sentSeq = e.seq
        }
        next = entries[entries.length - 1].seq + 1
      }
    } finally {
      reader.close()
    }
  }

  /** Waits for a new committed record, a verify request, or the end of the connection. */
  private async idle (ch: FrameChannel, next: number): Promise<void> {
    if (this.opts.log.committedSeq >= next || this.verifies.due(next)) return
    await Promise.race([new Promise<void>(resolve => { this.wake = resolve }), ch.closed]).finally(() => { this.wake = null })
  }

  private async readLoop (ch: FrameChannel): Promise<void> {
    for (;;) {
      const f = await ch.next()
      if (f === null) throw new ReplfsError('PEER_REFUSED', 'the secondary closed the connection')
      switch (f.type) {
        case 'ACK': {
          const { seq } = parseJsonBody<{ seq: number }>(f)
          if (!Number.isSafeInteger(seq) || seq > this.sentSeq || seq < this.ackedSeq) {
            refuse(ch, 'BAD_FRAME', `ACK of ${String(seq)} while ${this.ackedSeq}..${this.sentSeq} is outstanding`)
          }
          this.acked(seq)
          break
        }
        case 'VERIFY_RES': this.verifies.answer(ch, f); break
        case 'SWITCHOVER': {
          const { seq } = parseJsonBody<{ seq: number }>(f)
          if (this.handOffDone === null || !Number.isSafeInteger(seq)) refuse(ch, 'BAD_FRAME', 'SWITCHOVER answer nobody asked for')
          this.handOffDone(seq)
          break
        }
        case 'PING': break
        case 'ERROR': throw peerError(f)
        default: refuse(ch, 'BAD_FRAME', `unexpected ${f.type} from the secondary`)
      }
    }
  }

  private acked (seq: number): void {
    this.ackedSeq = seq
    if (this.phase === 'resyncing' && seq >= this.sentSeq) this.phase = 'streaming'
    const now = performance.now()
    let n = 0
    while (n < this.pendingTimes.length && this.pendingTimes[n][0] <= seq) {
      // Ack latency describes the link while streaming; records made while the peer was away say nothing about it.
      if (this.pendingTimes[n][2]) this.latencies.add(now - this.pendingTimes[n][1])
      n++
    }
    if (n > 0) this.pendingTimes.splice(0, n)
    if (this.gateWaiters.length > 0) {
      const keep: typeof this.gateWaiters = []
      for (const w of this.gateWaiters) (w.seq <= seq ? w.resolve() : keep.push(w))
      this.gateWaiters = keep
    }
  }

  private dropTimesUpTo (seq: number): void {
    let n = 0
    while (n < this.pendingTimes.length && this.pendingTimes[n][0] <= seq) n++
    this.pendingTimes.splice(0, n)
  }

  private releaseWaiters (): void {
    const ws = this.gateWaiters
    this.gateWaiters = []
    if (ws.length > 0) this.log.warn({ waiting: ws.length }, 'secondary gone: sync writes complete locally (degraded) until it is back')
    for (const w of ws) w.resolve()
  }

  /**
   * Digests both sides at one seq: ours from a snapshot taken under the log's lock, the
   * secondary's when it reaches the same record (the request travels in-band, right after it).
   */
  async verify (): Promise<VerifyResult> {
    if (!this.streaming || this.session === null) {
      throw new ReplfsError('PEER_REFUSED', `the secondary is not connected and streaming (${this.phase})`, { hint: 'See: replfs status <mountpoint>' })
    }
    const { log } = this.opts
    const { seq, snap } = await log.snapshotAt()
    const theirs = this.verifies.add(seq)
    this.wake?.()
    let ours: StateDigest
    try {
      ours = await digestAt(log.state.store, snap)
    } finally {
      await snap.close()
    }
    const secondary = await theirs
    return { seq, identical: ours.digest === secondary.digest && ours.entries === secondary.entries, primary: ours, secondary }
  }

  status (): Record<string, unknown> {
    const seq = this.opts.log.state.counters.seq
    const acked = Math.max(this.ackedSeq, 0)
    const oldest = this.pendingTimes[0]
    return {
      role: 'primary',
      fenced: this.opts.node.fenced,
      generation: this.opts.node.current ?? null,
      mode: this.opts.mode,
      peer: this.peer,
      connected: this.session !== null && this.phase !== 'handshake',
      phase: this.phase,
      degraded: this.opts.mode === 'sync' && !this.streaming,
      seq,
      sentSeq: this.sentSeq,
      ackedSeq: this.ackedSeq < 0 ? null : this.ackedSeq,
      lagRecords: this.ackedSeq < 0 ? null : seq - acked,
      lagBytes: this.ackedSeq < 0 ? null : this.opts.journal.bytesAfter(acked),
      lagSeconds: oldest === undefined || this.ackedSeq < 0 ? 0 : Math.round((performance.now() - oldest[1]) / 10) / 100,
      ackLatencyMs: this.latencies.summary(),
      journal: { firstSeq: this.opts.journal.firstSeq, lastSeq: this.opts.journal.lastSeq, bytes: this.opts.journal.bytes },
      bytesOut: this.bytesOut + (this.session?.ch.bytesOut ?? 0),
      resync: this.progress === null ? null : { ...this.progress, bytesRemaining: resyncRemaining(this.progress) },
      lastError: this.lastError
    }
  }

  private closing = false

  async close (): Promise<void> {
    this.closing = true
    this.unsubscribe()
    this.opts.log.replicated = null
    const s = this.session
    if (s !== null) {
      s.ch.close()
      await s.done
    }
    this.releaseWaiters()
  }
}

export { PeerRefusal }
