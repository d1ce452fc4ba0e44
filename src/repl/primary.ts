import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { ReplfsError } from '../errors.js'
import type { JournalFile } from '../log/journal-file.js'
import type { RecordLog } from '../log/record-log.js'
import { DigestBuilder, digestAt, exportState, type StateDigest } from '../store/state-transfer.js'
import { FrameChannel, type ChannelOptions } from './channel.js'
import { encodeCopyChunk, encodeRecordFrame, parseJsonBody } from './frames.js'
import { type PeerError, PeerRefusal, describeError, type StartFrame, peerError, primaryHandshake, refuse } from './handshake.js'
import { LatencySamples } from './latency.js'

export type ReplicationMode = 'sync' | 'async'

export interface PrimaryOptions {
  log: RecordLog
  journal: JournalFile
  secret: Buffer | null
  mode: ReplicationMode
  logger: Logger
  channel?: Partial<ChannelOptions>
}

export interface VerifyResult { seq: number, identical: boolean, primary: StateDigest, secondary: StateDigest }

interface PendingVerify { id: number, seq: number, resolve: (d: StateDigest) => void, reject: (e: Error) => void }

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
  phase: 'disconnected' | 'handshake' | 'copying' | 'streaming' = 'disconnected'
  peer: string | null = null
  lastError: PeerError | null = null
  bytesOut = 0
  private session: { ch: FrameChannel, done: Promise<void> } | null = null
  private gateWaiters: Array<{ seq: number, resolve: () => void }> = []
  private verifies: PendingVerify[] = []
  private verifyId = 0
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
    if (!this.streaming || this.ackedSeq >= seq) return
    await new Promise<void>(resolve => this.gateWaiters.push({ seq, resolve }))
  }

  /** Runs one connection to a secondary until it ends; throws why it ended. */
  async serve (stream: Duplex, peer: string): Promise<void> {
    if (this.session !== null) {
      stream.destroy()
      throw new ReplfsError('PEER_REFUSED', `already replicating to ${this.peer ?? '?'}`)
    }
    const ch = new FrameChannel(stream, { ...DEFAULT_CHANNEL, ...this.opts.channel }, () => ({ seq: this.opts.log.committedSeq }))
    const run = this.run(ch, peer)
    this.session = { ch, done: run.then(() => {}, () => {}) }
    try {
      await run
    } catch (err) {
      this.noteError(err)
      throw err
    } finally {
      ch.close()
      this.bytesOut += ch.bytesOut
      this.session = null
      this.phase = 'disconnected'
      this.releaseWaiters()
      for (const v of this.verifies.splice(0)) v.reject(new ReplfsError('PEER_REFUSED', 'connection to the secondary ended during verify'))
    }
  }

  /** Records why replication is not working, for `status`. */
  noteError (err: unknown): void {
    this.lastError = describeError(err)
  }

  private async run (ch: FrameChannel, peer: string): Promise<void> {
    const { log } = this.opts
    const state = log.state
    const volumeId = state.format?.volumeId
    if (volumeId === undefined) throw new ReplfsError('STORE_MISSING', 'this store holds no volume to replicate')
    this.peer = peer
    this.phase = 'handshake'
    const hs = await primaryHandshake(ch, { volumeId, secret: this.opts.secret })
    const plog = this.log.child({ peer, peerSeq: hs.peerSeq })
    const seq = log.committedSeq
    if (hs.peerSeq > seq) {
      refuse(ch, 'PEER_AHEAD', `the secondary has applied up to ${hs.peerSeq} but this primary only up to ${seq}: this host lost records (crash before sync?); promote the secondary or resync this one`)
    }
    if (hs.peerSeq > 0 && hs.peerCrc !== null) {
      const last = await state.lastRecord()
      const ourCrc = this.opts.journal.recordCrc(hs.peerSeq) ?? (last?.seq === hs.peerSeq ? last.crc : undefined)
      if (ourCrc !== undefined && ourCrc !== hs.peerCrc) {
        refuse(ch, 'DIVERGED', `record ${hs.peerSeq} differs between the hosts: the volumes have diverged (written on both sides?). To copy this primary's volume to the secondary afresh: stop the secondary, remove its store, start it again`)
      }
    }
    const resume = hs.peerVolumeId !== null || this.opts.journal.firstSeq === 1 ? hs.peerSeq + 1 >= this.opts.journal.firstSeq : false
    const start: StartFrame = { mode: resume ? 'resume' : 'copy', from: hs.peerSeq + 1, sync: this.opts.mode === 'sync', primarySeq: seq }
    ch.sendJson('START', start)
    this.ackedSeq = hs.peerSeq
    this.sentSeq = hs.peerSeq
    this.dropTimesUpTo(hs.peerSeq)
    plog.info({ mode: start.mode, from: start.from, primarySeq: seq }, resume ? 'secondary connected; resuming' : 'secondary connected; sending a full copy')
    if (resume) this.phase = 'streaming'
    const reading = this.readLoop(ch)
    const sending = this.sendLoop(ch, resume ? start.from : null, plog)
    // Whichever side fails first ends the session; the other is then woken by the close.
    await Promise.race([reading, sending]).finally(() => {
      ch.close()
      this.wake?.()
    })
    await Promise.allSettled([reading, sending])
  }

  private async sendLoop (ch: FrameChannel, from: number | null, plog: Logger): Promise<void> {
    const { log, journal } = this.opts
    let next = from ?? await this.sendCopy(ch, plog)
    const reader = journal.reader(next)
    try {
      while (!ch.stream.destroyed) {
        this.sendVerifies(ch, next - 1)
        const entries = await reader.next(READ_BYTES, log.committedSeq)
        if (entries.length === 0) {
          await this.idle(ch, next)
          continue
        }
        for (const e of entries) {
          this.sendVerifies(ch, e.seq - 1)
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
    if (this.opts.log.committedSeq >= next || this.verifies.some(v => v.seq < next && v.id > 0)) return
    await Promise.race([new Promise<void>(resolve => { this.wake = resolve }), ch.closed]).finally(() => { this.wake = null })
  }

  /** Streams the whole state as of one seq while writes go on; returns the seq streaming resumes at. */
  private async sendCopy (ch: FrameChannel, plog: Logger): Promise<number> {
    const { log } = this.opts
    this.phase = 'copying'
    const { seq, snap } = await log.snapshotAt()
    // The journal must still hold what follows the snapshot when the copy ends.
    const pin = this.opts.journal.reader(seq + 1)
    try {
      ch.sendJson('COPY_BEGIN', { seq, volumeId: log.state.format?.volumeId })
      const digest = new DigestBuilder()
      for await (const chunk of exportState(log.state.store, snap)) {
        for (const [k, v] of chunk) digest.add(k, v)
        if (!ch.send('COPY_CHUNK', encodeCopyChunk(chunk))) await ch.drained()
      }
      const d = digest.finish()
      ch.sendJson('COPY_END', { seq, ...d })
      plog.info({ seq, entries: d.entries, bytes: d.bytes }, 'full copy sent')
      this.sentSeq = seq
      return seq + 1
    } finally {
      pin.close()
      await snap.close()
    }
  }

  private sendVerifies (ch: FrameChannel, upTo: number): void {
    for (const v of this.verifies) {
      if (v.id > 0 && v.seq <= upTo && v.seq <= this.sentSeq) {
        ch.sendJson('VERIFY_REQ', { id: v.id, seq: v.seq })
        v.id = -v.id
      }
    }
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
        case 'VERIFY_RES': {
          const r = parseJsonBody<{ id: number } & StateDigest>(f)
          const i = this.verifies.findIndex(v => v.id === -r.id)
          if (i < 0) refuse(ch, 'BAD_FRAME', `VERIFY_RES for unknown request ${String(r.id)}`)
          const [v] = this.verifies.splice(i, 1)
          v.resolve({ digest: String(r.digest), entries: Number(r.entries), bytes: Number(r.bytes) })
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
    if (this.phase === 'copying' && seq >= this.sentSeq) this.phase = 'streaming'
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
    const theirs = new Promise<StateDigest>((resolve, reject) => {
      this.verifies.push({ id: ++this.verifyId, seq, resolve, reject })
      this.wake?.()
    })
    theirs.catch(() => {})
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
      lastError: this.lastError
    }
  }

  async close (): Promise<void> {
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
