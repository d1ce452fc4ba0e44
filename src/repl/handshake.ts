import { ReplfsError } from '../errors.js'
import { markAuthenticated } from '../net/admission.js'
import { PROTOCOL_MAX, PROTOCOL_MIN, type Role, checkProof, isNonce, newNonce, pickProtocol, proof } from './auth.js'
import type { FrameChannel } from './channel.js'
import { type Decision, type Generation, HISTORY_MAX, type NodeView, SPLIT_BRAIN_POLICIES, decide } from './generations.js'
import { type Frame, type FrameTypeName, parseJsonBody } from './frames.js'

/**
 * Connection setup. A primary dials (a restarted, fenced one too). Both sides prove they hold
 * the shared secret, the dialer first: the listener proves nothing to a peer that has not
 * proven itself, and each proof signs both HELLO frames as sent and its side of the connection,
 * so it cannot be replayed, reflected, or relayed with either HELLO altered (auth.ts). Then both
 * tell their role, generations and seq, and each decides on its own, with the same pure
 * function (generations.ts), who sends from where.
 *
 *   dialer   -> HELLO {protocolMin, protocolMax, role, volumeId, nonce, auth}
 *   listener -> HELLO {protocol, role, volumeId|null, nonce, auth}
 *   dialer   -> AUTH  {proof}          (with a secret on both sides; else no AUTH frames)
 *   listener -> AUTH  {proof}
 *   dialer   -> STATE {role, fenced, history, seq, crc, policy}
 *   listener -> STATE {...}
 *   source   -> START {mode: resume|diff, from, sync, primarySeq, history, diverged}
 *
 * Until the peer has authenticated, frames are limited to HANDSHAKE_MAX_FRAME bytes. Either side
 * may answer ERROR {code, message} instead and close: that is how a refused peer learns why.
 */

/** Largest frame body taken from a peer that has not authenticated: HELLO, AUTH and ERROR are tiny. */
export const HANDSHAKE_MAX_FRAME = 4096

interface HelloFromDialer { protocolMin: number, protocolMax: number, role: Role, volumeId: string, nonce: string, auth: boolean }
interface HelloFromListener { protocol: number, role: Role, volumeId: string | null, nonce: string, auth: boolean }
export interface StartFrame { mode: 'resume' | 'diff', from: number, sync: boolean, primarySeq: number, history: Generation[], diverged: boolean }

/** What a side says of itself once authenticated: its generations and where its records end. */
export interface PeerState extends NodeView { volumeId: string | null, crc: number | null }

/** Refusals both sides log and show in `status`: the code says what an operator must fix. */
export type RefusalCode = 'AUTH_FAILED' | 'VOLUME_MISMATCH' | 'PROTOCOL' | 'ROLE_CONFLICT' | 'SPLIT_BRAIN' | 'PEER_NEWER' | 'NO_VOLUME' | 'BAD_FRAME' | 'APPLY_FAILED' | 'DISK_FULL'

export class PeerRefusal extends ReplfsError {
  constructor (readonly refusal: RefusalCode, message: string, readonly byPeer: boolean) {
    super(refusal === 'AUTH_FAILED' ? 'AUTH_FAILED' : 'PEER_REFUSED', message)
  }
}

/** Why replication last stopped, as `status` shows it: a refusal's code, or the error's. */
export interface PeerError { code: string, message: string, at: string }

export function describeError (err: unknown): PeerError {
  const e = err as ReplfsError & { refusal?: string }
  return { code: e.refusal ?? e.code ?? 'EIO', message: e.message, at: new Date().toISOString() }
}

/** Refuses the peer: tells it why, closes, and throws for our own log and status. */
export function refuse (ch: FrameChannel, code: RefusalCode, message: string): never {
  ch.close({ code, message })
  throw new PeerRefusal(code, message, false)
}

/** The next frame, which must be of `type`; an ERROR from the peer becomes a PeerRefusal. */
export async function expectFrame (ch: FrameChannel, type: FrameTypeName): Promise<Frame> {
  for (;;) {
    const f = await ch.next()
    if (f === null) throw new ReplfsError('PEER_REFUSED', `connection closed while waiting for ${type}`)
    if (f.type === 'PING') continue
    if (f.type === 'ERROR') throw peerError(f)
    if (f.type !== type) refuse(ch, 'BAD_FRAME', `expected ${type}, got ${f.type}`)
    return f
  }
}

export function peerError (f: Frame): PeerRefusal {
  let e: { code?: string, message?: string } = {}
  try { e = parseJsonBody(f) } catch { /* shown as unknown below */ }
  return new PeerRefusal((e.code ?? 'BAD_FRAME') as RefusalCode, `peer refused: ${e.message ?? 'no reason given'}`, true)
}

function str (v: unknown): v is string { return typeof v === 'string' && v.length > 0 && v.length < 200 }

export interface Negotiated { protocol: number, peer: PeerState, decision: Decision }

/** The dialing side. `view` is asked once the peer has proven itself. */
export async function dialerHandshake (ch: FrameChannel, me: { volumeId: string, secret: Buffer | null, view: () => Promise<PeerState> }): Promise<Negotiated> {
  ch.limitFrames(HANDSHAKE_MAX_FRAME)
  const dialerHello = jsonBody({ protocolMin: PROTOCOL_MIN, protocolMax: PROTOCOL_MAX, role: 'primary', volumeId: me.volumeId, nonce: newNonce(), auth: me.secret !== null } satisfies HelloFromDialer)
  ch.send('HELLO', dialerHello)
  const helloFrame = await expectFrame(ch, 'HELLO').catch((err: Error) => {
    if (err instanceof PeerRefusal) throw err
    throw new ReplfsError('PEER_REFUSED', `the peer closed the connection before answering (${err.message}): a TLS certificate it does not accept, TLS on one side only, or not a replfs node`, { cause: err })
  })
  const hello = parseJsonBody<HelloFromListener>(helloFrame)
  if (typeof hello.protocol !== 'number' || hello.protocol < PROTOCOL_MIN || hello.protocol > PROTOCOL_MAX) refuse(ch, 'PROTOCOL', `peer chose protocol ${String(hello.protocol)}, this replfs speaks ${PROTOCOL_MIN}..${PROTOCOL_MAX}`)
  if (!isNonce(hello.nonce)) refuse(ch, 'BAD_FRAME', 'HELLO without a nonce')
  if (hello.volumeId !== null && hello.volumeId !== me.volumeId) refuse(ch, 'VOLUME_MISMATCH', `the peer holds volume ${String(hello.volumeId)}, this is ${me.volumeId}`)
  if ((me.secret !== null) !== (hello.auth === true)) refuse(ch, 'AUTH_FAILED', me.secret === null ? 'the peer requires a shared secret; this node runs --insecure' : 'the peer runs --insecure; this node requires a shared secret')
  if (me.secret !== null) {
    const transcript = { dialerHello, listenerHello: Buffer.from(helloFrame.body) }
    ch.sendJson('AUTH', { proof: proof(me.secret, 'dialer', transcript) })
    const auth = parseJsonBody<{ proof: unknown }>(await expectFrame(ch, 'AUTH'))
    if (!checkProof(me.secret, 'listener', transcript, auth.proof)) refuse(ch, 'AUTH_FAILED', 'the peer does not know the shared secret')
  }
  authenticated(ch)
  const mine = await me.view()
  ch.sendJson('STATE', mine)
  const peer = parseState(ch, await expectFrame(ch, 'STATE'), me.volumeId)
  return { protocol: hello.protocol, peer, decision: decide(mine, peer) }
}

/**
 * The listening side. It proves itself only once the dialer has, and `view` runs only then too
 * (so an unauthenticated connection can never displace a working one); it says where this side stands.
 */
export async function listenerHandshake (
  ch: FrameChannel,
  me: { volumeId: () => string | null, secret: Buffer | null, view: () => Promise<PeerState> }
): Promise<Negotiated> {
  ch.limitFrames(HANDSHAKE_MAX_FRAME)
  const helloFrame = await expectFrame(ch, 'HELLO')
  const hello = parseJsonBody<HelloFromDialer>(helloFrame)
  const volumeId = me.volumeId()
  const protocol = pickProtocol(Number(hello.protocolMin), Number(hello.protocolMax))
  if (protocol === null) {
    refuse(ch, 'PROTOCOL', `peer speaks protocol ${String(hello.protocolMin)}..${String(hello.protocolMax)}, this replfs ${PROTOCOL_MIN}..${PROTOCOL_MAX}: run the same replfs release on both nodes`)
  }
  if (!isNonce(hello.nonce) || !str(hello.volumeId)) refuse(ch, 'BAD_FRAME', 'HELLO without nonce or volume id')
  // Only a primary dials: a fenced one too, to learn whether its peer is newer.
  if (hello.role !== 'primary') refuse(ch, 'ROLE_CONFLICT', `the connecting peer is ${String(hello.role)}, not primary`)
  if (volumeId !== null && hello.volumeId !== volumeId) refuse(ch, 'VOLUME_MISMATCH', `the primary serves volume ${hello.volumeId}, this store holds ${volumeId}`)
  if ((me.secret !== null) !== (hello.auth === true)) refuse(ch, 'AUTH_FAILED', me.secret === null ? 'the primary requires a shared secret; this node runs --insecure' : 'the primary runs --insecure; this node requires a shared secret')
  const listenerHello = jsonBody({ protocol, role: 'secondary', volumeId, nonce: newNonce(), auth: me.secret !== null } satisfies HelloFromListener)
  ch.send('HELLO', listenerHello)
  if (me.secret !== null) {
    const transcript = { dialerHello: Buffer.from(helloFrame.body), listenerHello }
    const auth = parseJsonBody<{ proof: unknown }>(await expectFrame(ch, 'AUTH'))
    if (!checkProof(me.secret, 'dialer', transcript, auth.proof)) refuse(ch, 'AUTH_FAILED', 'the primary does not know the shared secret')
    ch.sendJson('AUTH', { proof: proof(me.secret, 'listener', transcript) })
  }
  authenticated(ch)
  const peer = parseState(ch, await expectFrame(ch, 'STATE'), hello.volumeId)
  const mine = await me.view()
  ch.sendJson('STATE', mine)
  return { protocol, peer, decision: decide(mine, peer) }
}

/** The peer has proven itself: full-size frames from here on, and its connection leaves the admission cap. */
function authenticated (ch: FrameChannel): void {
  ch.limitFrames(null)
  markAuthenticated(ch.stream)
}

function jsonBody (value: object): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8')
}

/** Checks a peer's STATE field by field: it drives who overwrites whom, so nothing is taken on trust. */
function parseState (ch: FrameChannel, f: Frame, volumeId: string): PeerState {
  const s = parseJsonBody<PeerState>(f)
  const okHistory = Array.isArray(s.history) && s.history.length <= HISTORY_MAX && s.history.every((g, i, h) =>
    typeof g === 'object' && g !== null && str(g.id) && typeof g.at === 'string' && Number.isSafeInteger(g.since) && g.since >= 0 &&
    (i === 0 || g.since >= h[i - 1].since))
  if ((s.role !== 'primary' && s.role !== 'secondary') || typeof s.fenced !== 'boolean' || !okHistory ||
    !Number.isSafeInteger(s.seq) || s.seq < 0 || !SPLIT_BRAIN_POLICIES.includes(s.policy) ||
    (s.crc !== null && !Number.isSafeInteger(s.crc)) || (s.volumeId !== null && s.volumeId !== volumeId) || !str(s.nodeId)) {
    refuse(ch, 'BAD_FRAME', 'malformed STATE')
  }
  return { role: s.role, fenced: s.fenced, history: s.history.map(g => ({ id: g.id, since: g.since, at: g.at })), seq: s.seq, policy: s.policy, nodeId: s.nodeId, volumeId: s.volumeId, crc: s.crc }
}

/** The source's START, checked against what this side decided on its own. */
export async function expectStart (ch: FrameChannel, decision: Decision, appliedSeq: number): Promise<StartFrame> {
  const start = parseJsonBody<StartFrame>(await expectFrame(ch, 'START'))
  if ((start.mode !== 'resume' && start.mode !== 'diff') || !Number.isSafeInteger(start.from) || !Number.isSafeInteger(start.primarySeq) ||
    !Array.isArray(start.history) || typeof start.diverged !== 'boolean') {
    refuse(ch, 'BAD_FRAME', 'malformed START')
  }
  if (decision.kind !== 'target') refuse(ch, 'BAD_FRAME', 'START from a peer this node did not decide to follow')
  if (start.mode === 'resume' && start.from !== appliedSeq + 1) refuse(ch, 'BAD_FRAME', `primary resumes at ${start.from}, the next record here is ${appliedSeq + 1}`)
  if (start.mode === 'resume' && decision.diverged) refuse(ch, 'BAD_FRAME', 'a resume cannot heal diverged histories')
  return start
}

/**
 * Thrown by a primary's side when the peer turned out to be the source: this node must demote
 * itself and receive, on the same connection (the peer is about to send START).
 */
export class RoleHandover extends Error {
  constructor (readonly ch: FrameChannel, readonly negotiated: Negotiated, readonly peer: string) {
    super(`the peer is the source: ${negotiated.decision.kind === 'refuse' ? '' : negotiated.decision.reason}`)
  }
}
