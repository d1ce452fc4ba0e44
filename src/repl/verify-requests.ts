import { ReplfsError } from '../errors.js'
import type { StateDigest } from '../store/state-transfer.js'
import type { FrameChannel } from './channel.js'
import { type Frame, parseJsonBody } from './frames.js'
import { refuse } from './handshake.js'

interface PendingVerify { id: number, seq: number, sent: boolean, resolve: (d: StateDigest) => void, reject: (e: Error) => void }

/**
 * The primary's outstanding `verify` requests: each names a seq and travels in-band right after
 * that record (VERIFY_REQ), so the secondary digests its state at the same point; its VERIFY_RES
 * answers it.
 */
export class VerifyRequests {
  private pending: PendingVerify[] = []
  private lastId = 0

  /** A request for the secondary's digest at `seq`. */
  add (seq: number): Promise<StateDigest> {
    const p = new Promise<StateDigest>((resolve, reject) => { this.pending.push({ id: ++this.lastId, seq, sent: false, resolve, reject }) })
    p.catch(() => {}) // the caller awaits it after digesting its own side
    return p
  }

  /** Whether a request not yet sent is due once records before `next` are sent. */
  due (next: number): boolean {
    return this.pending.some(v => !v.sent && v.seq < next)
  }

  /** Sends every request whose record (at most `upTo`, and sent) is on the wire. */
  sendDue (ch: FrameChannel, upTo: number, sentSeq: number): void {
    for (const v of this.pending) {
      if (!v.sent && v.seq <= upTo && v.seq <= sentSeq) {
        ch.sendJson('VERIFY_REQ', { id: v.id, seq: v.seq })
        v.sent = true
      }
    }
  }

  /** A VERIFY_RES from the secondary: settles the request it answers. */
  answer (ch: FrameChannel, f: Frame): void {
    const r = parseJsonBody<{ id: number } & StateDigest>(f)
    const i = this.pending.findIndex(v => v.sent && v.id === r.id)
    if (i < 0) refuse(ch, 'BAD_FRAME', `VERIFY_RES for unknown request ${String(r.id)}`)
    const [v] = this.pending.splice(i, 1)
    v.resolve({ digest: String(r.digest), entries: Number(r.entries), bytes: Number(r.bytes) })
  }

  /** The connection ended: every request fails (verify needs a streaming secondary). */
  failAll (): void {
    for (const v of this.pending.splice(0)) v.reject(new ReplfsError('PEER_REFUSED', 'connection to the secondary ended during verify'))
  }
}
