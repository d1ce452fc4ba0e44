import type { Duplex } from 'node:stream'
import { ReplfsError } from '../errors.js'
import { type Frame, FrameDecoder, type FrameTypeName, MAX_FRAME_BODY, encodeFrame, encodeJsonFrame } from './frames.js'

export interface ChannelOptions {
  /** Drop the connection when nothing arrives for this long (the peer sends pings when idle). */
  idleTimeoutMs: number
  /** Send a ping after this long without sending anything. */
  pingIntervalMs: number
  /** Stop reading from the socket while this many received bytes wait to be handled. */
  highWaterBytes?: number
  maxFrameBody?: number
}

/**
 * Frames over any duplex stream (a TCP or TLS socket, or an in-memory pair in tests): an async
 * queue of decoded frames with read backpressure, writes that report when to wait, and
 * liveness by pings, so a peer that silently vanishes is noticed.
 */
export class FrameChannel {
  private readonly decoder: FrameDecoder
  private readonly queue: Frame[] = []
  private queuedBytes = 0
  private waiter: { resolve: (f: Frame | null) => void, reject: (e: Error) => void } | null = null
  private error: Error | null = null
  private ended = false
  private lastIn = Date.now()
  private lastOut = Date.now()
  private readonly timer: NodeJS.Timeout
  bytesOut = 0
  readonly closed: Promise<void>
  private readonly high: number

  constructor (readonly stream: Duplex, private readonly opts: ChannelOptions, private readonly pingBody: () => unknown = () => ({})) {
    this.decoder = new FrameDecoder({ maxBody: opts.maxFrameBody })
    this.high = opts.highWaterBytes ?? 16 * 1024 * 1024
    stream.on('data', (chunk: Buffer) => this.onData(chunk))
    stream.on('end', () => { this.ended = true; this.wake() })
    stream.on('error', err => this.fail(err))
    this.closed = new Promise(resolve => stream.once('close', () => resolve()))
    stream.once('close', () => { this.ended = true; clearInterval(this.timer); this.wake() })
    this.timer = setInterval(() => this.tick(), Math.min(opts.pingIntervalMs, opts.idleTimeoutMs) / 2)
    this.timer.unref()
  }

  get bytesIn (): number { return this.decoder.bytesIn }

  /**
   * The largest frame body accepted from here on: the handshake keeps it small until the peer
   * has authenticated; null goes back to the channel's own limit.
   */
  limitFrames (maxBody: number | null): void {
    this.decoder.maxBody = maxBody ?? this.opts.maxFrameBody ?? MAX_FRAME_BODY
  }

  /** The next frame; null when the peer closed the stream cleanly. Throws on malformed input. */
  async next (): Promise<Frame | null> {
    const f = this.queue.shift()
    if (f !== undefined) {
      this.queuedBytes -= f.body.length
      if (this.queuedBytes < this.high / 2 && this.stream.isPaused()) this.stream.resume()
      return f
    }
    if (this.error !== null) throw this.error
    if (this.ended) return null
    return await new Promise((resolve, reject) => { this.waiter = { resolve, reject } })
  }

  /** Writes a frame; false means the stream's buffer is full: await `drained()` before more. */
  send (type: FrameTypeName, body: Buffer | Buffer[]): boolean {
    const parts = Array.isArray(body) ? body : encodeFrame(type, body)
    return this.write(parts)
  }

  sendJson (type: FrameTypeName, value: unknown): boolean {
    return this.write(encodeJsonFrame(type, value))
  }

  write (parts: Buffer[]): boolean {
    if (this.stream.destroyed) throw this.error ?? new ReplfsError('PEER_REFUSED', 'connection closed')
    this.lastOut = Date.now()
    let ok = true
    this.stream.cork()
    for (const p of parts) {
      this.bytesOut += p.length
      ok = this.stream.write(p)
    }
    this.stream.uncork()
    return ok
  }

  async drained (): Promise<void> {
    if (!this.stream.writableNeedDrain) return
    await new Promise<void>((resolve, reject) => {
      const done = (): void => { this.stream.off('drain', done); this.stream.off('close', closed); resolve() }
      const closed = (): void => { this.stream.off('drain', done); reject(this.error ?? new ReplfsError('PEER_REFUSED', 'connection closed')) }
      this.stream.once('drain', done)
      this.stream.once('close', closed)
    })
  }

  /** Closes the connection; with an error, also tells the peer why (best effort). */
  close (why?: { code: string, message: string }): void {
    if (why !== undefined && !this.stream.destroyed) {
      try { this.sendJson('ERROR', why) } catch { /* closing anyway */ }
      this.stream.end()
      setTimeout(() => this.stream.destroy(), 200).unref()
    } else {
      this.stream.destroy()
    }
    clearInterval(this.timer)
  }

  private onData (chunk: Buffer): void {
    if (this.error !== null) return
    let frames: Frame[]
    try {
      frames = this.decoder.push(chunk)
    } catch (err) {
      this.fail(err as Error)
      // Say why before hanging up, so the sender's log and status name the fault.
      this.close({ code: 'BAD_FRAME', message: `frame refused: ${(err as Error).message}` })
      return
    }
    // Liveness counts whole frames, not bytes: a peer trickling bytes that never make a frame is dead.
    if (frames.length > 0) {
      this.lastIn = Date.now()
      const at = performance.now()
      for (const f of frames) {
        f.at = at
        this.queue.push(f)
        this.queuedBytes += f.body.length
      }
    }
    if (this.queuedBytes >= this.high) this.stream.pause()
    this.wake()
  }

  private tick (): void {
    const now = Date.now()
    if (now - this.lastIn > this.opts.idleTimeoutMs) {
      this.fail(new ReplfsError('PEER_REFUSED', `peer silent for ${Math.round((now - this.lastIn) / 1000)} s`))
      this.stream.destroy()
      return
    }
    if (now - this.lastOut >= this.opts.pingIntervalMs && !this.stream.destroyed && !this.stream.writableNeedDrain) {
      try { this.sendJson('PING', this.pingBody()) } catch { /* closed meanwhile */ }
    }
  }

  private fail (err: Error): void {
    if (this.error === null) this.error = err
    this.wake()
  }

  private wake (): void {
    const w = this.waiter
    if (w === null) return
    const f = this.queue.shift()
    if (f !== undefined) {
      this.waiter = null
      this.queuedBytes -= f.body.length
      w.resolve(f)
    } else if (this.error !== null) {
      this.waiter = null
      w.reject(this.error)
    } else if (this.ended) {
      this.waiter = null
      w.resolve(null)
    }
  }
}
