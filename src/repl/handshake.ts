import { ReplfsError } from '../errors.js'
import { PROTOCOL_MAX, PROTOCOL_MIN, type Role, checkProof, isNonce, newNonce, pickProtocol, proof } from './auth.js'
import type { FrameChannel } from './channel.js'
import { type Frame, type FrameTypeName, parseJsonBody } from './frames.js'

/**
 * Connection setup. The primary dials; both sides prove they hold the shared secret (each
 * signs both nonces, its role and the volume id, so a proof cannot be replayed or reflected),
 * then the secondary reports what it has applied and the primary says where streaming starts.
 *
 *   primary   -> HELLO {protocols, role, volumeId, nonce, auth}
 *   secondary -> HELLO {protocol, role, volumeId|null, nonce, proof}
 *   primary   -> AUTH  {proof}
 *   secondary -> ACK   {seq, crc}          last applied record and its checksum
 *   primary   -> START {mode: resume|copy, from, sync, primarySeq}
 *
 * Either side may answer ERROR {code, message} instead and close: that is how a refused peer
 * learns why.
 */

interface HelloFromPrimary { protocolMin: number, protocolMax: number, role: Role, volumeId: string, nonce: string, auth: boolean }
interface HelloFromSecondary { protocol: number, role: Role, volumeId: string | null, nonce: string, auth: boolean, proof: string | null }
export interface StartFrame { mode: 'resume' | 'copy', from: number, sync: boolean, primarySeq: number }

/** Refusals both sides log and show in `status`: the code says what an operator must fix. */
export type RefusalCode = 'AUTH_FAILED' | 'VOLUME_MISMATCH' | 'PROTOCOL' | 'ROLE_CONFLICT' | 'PEER_AHEAD' | 'DIVERGED' | 'BAD_FRAME' | 'APPLY_FAILED'

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

export interface PrimaryHandshakeResult { protocol: number, peerSeq: number, peerCrc: number | null, peerVolumeId: string | null }

export async function primaryHandshake (ch: FrameChannel, me: { volumeId: string, secret: Buffer | null }): Promise<PrimaryHandshakeResult> {
  const nonce = newNonce()
  ch.sendJson('HELLO', { protocolMin: PROTOCOL_MIN, protocolMax: PROTOCOL_MAX, role: 'primary', volumeId: me.volumeId, nonce, auth: me.secret !== null } satisfies HelloFromPrimary)
  const helloFrame = await expectFrame(ch, 'HELLO').catch((err: Error) => {
    if (err instanceof PeerRefusal) throw err
    throw new ReplfsError('PEER_REFUSED', `the peer closed the connection before answering (${err.message}): a TLS certificate it does not accept, TLS on one side only, or not a replfs secondary`, { cause: err })
  })
  const hello = parseJsonBody<HelloFromSecondary>(helloFrame)
  if (hello.role !== 'secondary') refuse(ch, 'ROLE_CONFLICT', `the peer is ${String(hello.role)} too: two primaries (split brain); demote one with --role secondary`)
  if (typeof hello.protocol !== 'number' || hello.protocol < PROTOCOL_MIN || hello.protocol > PROTOCOL_MAX) refuse(ch, 'PROTOCOL', `peer chose protocol ${String(hello.protocol)}, this replfs speaks ${PROTOCOL_MIN}..${PROTOCOL_MAX}`)
  if (!isNonce(hello.nonce)) refuse(ch, 'BAD_FRAME', 'HELLO without a nonce')
  if (hello.volumeId !== null && hello.volumeId !== me.volumeId) refuse(ch, 'VOLUME_MISMATCH', `the peer holds volume ${String(hello.volumeId)}, this is ${me.volumeId}`)
  if ((me.secret !== null) !== (hello.auth === true)) refuse(ch, 'AUTH_FAILED', me.secret === null ? 'the peer requires a shared secret; this node runs --insecure' : 'the peer runs --insecure; this node requires a shared secret')
  if (me.secret !== null && !checkProof(me.secret, 'secondary', hello.nonce, nonce, me.volumeId, hello.proof)) {
    refuse(ch, 'AUTH_FAILED', 'the peer does not know the shared secret')
  }
  ch.sendJson('AUTH', { proof: me.secret === null ? null : proof(me.secret, 'primary', nonce, hello.nonce, me.volumeId) })
  const ack = parseJsonBody<{ seq: number, crc: number | null }>(await expectFrame(ch, 'ACK'))
  if (!Number.isSafeInteger(ack.seq) || ack.seq < 0) refuse(ch, 'BAD_FRAME', `bad applied seq ${String(ack.seq)}`)
  return { protocol: hello.protocol, peerSeq: ack.seq, peerCrc: typeof ack.crc === 'number' ? ack.crc : null, peerVolumeId: hello.volumeId }
}

export interface SecondaryHandshakeResult { protocol: number, primaryVolumeId: string, start: StartFrame }

/**
 * `authenticated` runs once the primary has proven itself (so an unauthenticated connection
 * can never displace a working one) and returns what this side has applied.
 */
export async function secondaryHandshake (
  ch: FrameChannel,
  me: { volumeId: () => string | null, secret: Buffer | null },
  authenticated: () => Promise<{ seq: number, crc: number | null }>
): Promise<SecondaryHandshakeResult> {
  const hello = parseJsonBody<HelloFromPrimary>(await expectFrame(ch, 'HELLO'))
  const volumeId = me.volumeId()
  if (hello.role !== 'primary') refuse(ch, 'ROLE_CONFLICT', `the connecting peer is ${String(hello.role)}, not primary`)
  const protocol = pickProtocol(Number(hello.protocolMin), Number(hello.protocolMax))
  if (protocol === null) refuse(ch, 'PROTOCOL', `peer speaks protocol ${String(hello.protocolMin)}..${String(hello.protocolMax)}, this replfs ${PROTOCOL_MIN}..${PROTOCOL_MAX}`)
  if (!isNonce(hello.nonce) || !str(hello.volumeId)) refuse(ch, 'BAD_FRAME', 'HELLO without nonce or volume id')
  if (volumeId !== null && hello.volumeId !== volumeId) refuse(ch, 'VOLUME_MISMATCH', `the primary serves volume ${hello.volumeId}, this store holds ${volumeId}`)
  if ((me.secret !== null) !== (hello.auth === true)) refuse(ch, 'AUTH_FAILED', me.secret === null ? 'the primary requires a shared secret; this node runs --insecure' : 'the primary runs --insecure; this node requires a shared secret')
  const nonce = newNonce()
  ch.sendJson('HELLO', {
    protocol, role: 'secondary', volumeId, nonce, auth: me.secret !== null,
    proof: me.secret === null ? null : proof(me.secret, 'secondary', nonce, hello.nonce, hello.volumeId)
  } satisfies HelloFromSecondary)
  const auth = parseJsonBody<{ proof: unknown }>(await expectFrame(ch, 'AUTH'))
  if (me.secret !== null && !checkProof(me.secret, 'primary', hello.nonce, nonce, hello.volumeId, auth.proof)) {
    refuse(ch, 'AUTH_FAILED', 'the primary does not know the shared secret')
  }
  const applied = await authenticated()
  ch.sendJson('ACK', applied)
  const start = parseJsonBody<StartFrame>(await expectFrame(ch, 'START'))
  if ((start.mode !== 'resume' && start.mode !== 'copy') || !Number.isSafeInteger(start.from) || !Number.isSafeInteger(start.primarySeq)) {
    refuse(ch, 'BAD_FRAME', 'malformed START')
  }
  if (start.mode === 'resume' && start.from !== applied.seq + 1) refuse(ch, 'BAD_FRAME', `primary resumes at ${start.from}, the next record here is ${applied.seq + 1}`)
  return { protocol, primaryVolumeId: hello.volumeId, start }
}
