import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'

/**
 * Bounds what peers that have not authenticated yet can hold on the listening side: at most
 * `maxUnauthenticated` connections in their handshake (TLS and replfs together), and each for at
 * most `handshakeTimeoutMs`. When a new connection would exceed the cap, the oldest pending one
 * is closed: a real peer's handshake takes a round trip or two, so it is the newest, while
 * connections held open by someone who cannot authenticate are the oldest.
 */

export interface AdmissionOptions {
  maxUnauthenticated: number
  handshakeTimeoutMs: number
}

export const DEFAULT_ADMISSION: AdmissionOptions = { maxUnauthenticated: 8, handshakeTimeoutMs: 10_000 }

const AUTHENTICATED = 'replfs:authenticated'

/** Says the peer of `stream` has proven itself: its connection no longer counts against the cap. */
export function markAuthenticated (stream: Duplex): void {
  stream.emit(AUTHENTICATED)
}

/** Calls `fn` once `stream` is marked authenticated. */
export function onAuthenticated (stream: Duplex, fn: () => void): void {
  stream.once(AUTHENTICATED, fn)
}

interface Pending { streams: Duplex[], timer: NodeJS.Timeout }

export class HandshakeAdmission {
  /** By remote address and port, oldest first (a Map keeps insertion order). */
  private readonly pending = new Map<string, Pending>()
  private evicted = 0
  private lastEvictionLog = 0

  constructor (private readonly opts: AdmissionOptions, private readonly log: Logger) {}

  get size (): number { return this.pending.size }

  /** A TCP connection was accepted (before any TLS handshake on it). */
  accepted (raw: Socket): void {
    // Reset before we saw it: nothing to admit (and no address to tell it by).
    if (raw.remoteAddress === undefined) { raw.destroy(); return }
    const key = keyOf(raw)
    while (this.pending.size >= this.opts.maxUnauthenticated) {
      const [oldKey, old] = this.pending.entries().next().value as [string, Pending]
      this.drop(oldKey, old)
      this.noteEviction(oldKey)
    }
    const entry: Pending = {
      streams: [raw],
      timer: setTimeout(() => {
        this.log.warn({ peer: key, timeoutMs: this.opts.handshakeTimeoutMs }, 'a connecting peer did not complete the handshake in time: closing it')
        this.drop(key, entry)
      }, this.opts.handshakeTimeoutMs)
    }
    entry.timer.unref()
    this.pending.set(key, entry)
    raw.once('close', () => this.release(key, entry))
  }

  /**
   * The stream the protocol runs on for an accepted connection (the socket itself, or TLS over
   * it); false when that connection was closed meanwhile.
   */
  handOver (stream: Socket): boolean {
    const key = keyOf(stream)
    const entry = this.pending.get(key)
    if (entry === undefined) return false
    if (!entry.streams.includes(stream)) {
      entry.streams.push(stream)
      stream.once('close', () => this.release(key, entry))
    }
    onAuthenticated(stream, () => this.release(key, entry))
    return true
  }

  private release (key: string, entry: Pending): void {
    if (this.pending.get(key) !== entry) return
    clearTimeout(entry.timer)
    this.pending.delete(key)
  }

  private drop (key: string, entry: Pending): void {
    this.release(key, entry)
    for (const s of entry.streams) s.destroy()
  }

  /** One log line per second at most: a flood of connections must not become a flood of log lines. */
  private noteEviction (peer: string): void {
    this.evicted++
    const now = Date.now()
    if (now - this.lastEvictionLog < 1000) return
    this.log.warn({ peer, closed: this.evicted, max: this.opts.maxUnauthenticated }, 'too many connections still in their handshake: closed the oldest')
    this.lastEvictionLog = now
    this.evicted = 0
  }
}

/** The peer's address and port: unique among the connections one listener holds. */
function keyOf (s: Socket): string {
  const host = s.remoteAddress ?? '?'
  return `${host.includes(':') ? `[${host}]` : host}:${s.remotePort ?? 0}`
}
