import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { open } from 'node:fs/promises'
import { ReplfsError } from '../errors.js'

/**
 * Primitives for mutual authentication over a shared secret. Each side sends a fresh nonce in its
 * HELLO; the dialer proves first, then the listener, each with an HMAC over both HELLO frames
 * exactly as they crossed the wire and its own side of the connection. The secret never crosses
 * the wire; a proof is useless on another connection (fresh nonces), when sent back to its author
 * (sides), or with anything either HELLO said changed in transit (volume, roles, protocol).
 */

export const PROTOCOL_MIN = 3
export const PROTOCOL_MAX = 3

export type Role = 'primary' | 'secondary'
/** Which end of the connection a proof comes from. */
export type Side = 'dialer' | 'listener'

/** What a proof is bound to: the bodies of both HELLO frames, byte for byte. */
export interface Transcript { dialerHello: Buffer, listenerHello: Buffer }

const MIN_SECRET_BYTES = 16
const DOMAIN = 'replfs-auth-v3'
const NONCE_RE = /^[0-9a-f]{64}$/
const PROOF_RE = /^[0-9a-f]{64}$/

/** Reads the shared secret; refuses one that is short or that other users could read. */
export async function readSecretFile (path: string): Promise<Buffer> {
  const makeOne = `create one with: head -c 32 /dev/urandom | base64 > ${path} && chmod 600 ${path} (the same file on both hosts)`
  let raw: Buffer
  try {
    const fh = await open(path, 'r')
    try {
      // fstat the opened file, so the mode we check is the mode of what we read.
      const st = await fh.stat()
      if (!st.isFile()) throw new ReplfsError('BAD_ARGUMENT', `secret file ${path} is not a regular file`, { hint: makeOne })
      if ((st.mode & 0o077) !== 0) {
        throw new ReplfsError('BAD_ARGUMENT', `secret file ${path} is readable by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')})`, {
          hint: `chmod 600 ${path}`
        })
      }
      raw = await fh.readFile()
    } finally {
      await fh.close()
    }
  } catch (err) {
    if (err instanceof ReplfsError) throw err
    const code = (err as NodeJS.ErrnoException).code
    const why = code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? String(err)})`
    throw new ReplfsError('BAD_ARGUMENT', `secret file ${path} ${why}`, { hint: makeOne, cause: err })
  }
  let end = raw.length
  while (end > 0 && isSpace(raw[end - 1])) end--
  const secret = raw.subarray(0, end)
  if (secret.length < MIN_SECRET_BYTES) {
    throw new ReplfsError('BAD_ARGUMENT', `secret file ${path} holds ${secret.length} bytes, fewer than ${MIN_SECRET_BYTES}`, { hint: makeOne })
  }
  return secret
}

/** 32 random bytes, hex. */
export function newNonce (): string {
  return randomBytes(32).toString('hex')
}

/** True when x has the shape newNonce() produces; check a peer's nonce before using it. */
export function isNonce (x: unknown): x is string {
  return typeof x === 'string' && NONCE_RE.test(x)
}

/**
 * Proof that the sender, on `side` of the connection, knows the secret. The canonical string is a
 * JSON array of fixed-length digests, so no choice of HELLO contents can make two inputs collide.
 */
export function proof (secret: Buffer, side: Side, t: Transcript): string {
  const canonical = JSON.stringify([DOMAIN, side, sha256(t.dialerHello), sha256(t.listenerHello)])
  return createHmac('sha256', secret).update(canonical, 'utf8').digest('hex')
}

/** Checks a proof from `side` in constant time; anything that is not a 64-char lowercase hex string fails. */
export function checkProof (secret: Buffer, side: Side, t: Transcript, given: unknown): boolean {
  if (typeof given !== 'string' || !PROOF_RE.test(given)) return false
  const expected = Buffer.from(proof(secret, side, t), 'hex')
  return timingSafeEqual(expected, Buffer.from(given, 'hex'))
}

function sha256 (b: Buffer): string {
  return createHash('sha256').update(b).digest('hex')
}

/** The highest protocol version both sides speak, or null when the ranges do not overlap. */
export function pickProtocol (theirMin: number, theirMax: number): number | null {
  if (!Number.isSafeInteger(theirMin) || !Number.isSafeInteger(theirMax) || theirMin > theirMax) return null
  const v = Math.min(theirMax, PROTOCOL_MAX)
  return v >= Math.max(theirMin, PROTOCOL_MIN) ? v : null
}

function isSpace (b: number): boolean {
  return b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d
}
