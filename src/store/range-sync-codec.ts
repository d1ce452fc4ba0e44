import { ReplfsError } from '../errors.js'
import { DIGEST_BYTES, HASH_BYTES, frameInvalid, type KeyHash, type RangeDelta, type RangeKeys, type RangeSummary } from './range-sync.js'

/**
 * The messages of a resync by difference (range-sync.ts) as bodies and back: range summaries,
 * one range's key hashes, one range's delta. Each may take several bodies, so that none is
 * larger than the frame layer allows. Every body: u8 kind | u8 flags (bit 0: last part) |
 * u32 BE index | counts (varint) | items.
 */

/** Largest body the encoders make: the frame layer's limit (repl/frames.ts; store must not import repl). */
export const MAX_MESSAGE_BODY = 16 * 1024 * 1024

const KIND_SUMMARIES = 1
const KIND_KEYS = 2
const KIND_DELTA = 3
const HEADER_MAX = 1 + 1 + 4 + 5 + 5 + 5

export interface SummaryChunk { start: number, ranges: RangeSummary[], last: boolean }
export interface RangeKeysPart extends RangeKeys { last: boolean }
export interface RangeDeltaPart extends RangeDelta { index: number, last: boolean }

function varintLen (n: number): number {
  let len = 1
  while (n >= 0x80) { n = Math.floor(n / 0x80); len++ }
  return len
}
const blobLen = (b: Buffer): number => varintLen(b.length) + b.length

class Writer {
  private readonly buf: Buffer
  private off = 0
  constructor (size: number) { this.buf = Buffer.allocUnsafe(size) }
  u8 (n: number): this { this.buf[this.off++] = n; return this }
  u32 (n: number): this { this.buf.writeUInt32BE(n, this.off); this.off += 4; return this }
  varint (n: number): this {
    for (; n >= 0x80; n = Math.floor(n / 0x80)) this.buf[this.off++] = (n % 0x80) | 0x80
    return this.u8(n)
  }

  bytes (b: Buffer): this { b.copy(this.buf, this.off); this.off += b.length; return this }
  blob (b: Buffer): this { return this.varint(b.length).bytes(b) }
  done (): Buffer { return this.buf.subarray(0, this.off) }
}

/** Reads a body it owns a copy of, so decoded keys and values outlive the frame's buffers. */
class Reader {
  private readonly buf: Buffer
  private off = 0
  constructor (body: Buffer, private readonly what: string) { this.buf = Buffer.from(body) }
  bytes (n: number): Buffer {
    if (n > this.buf.length - this.off) throw frameInvalid(`${this.what} truncated at byte ${this.off}`)
    this.off += n
    return this.buf.subarray(this.off - n, this.off)
  }

  u8 (): number { return this.bytes(1)[0] }
  u32 (): number { return this.bytes(4).readUInt32BE(0) }
  /** At most 5 bytes and 2^32 - 1, so garbage can neither overflow nor run on. */
  varint (): number {
    let n = 0
    for (let i = 0, mul = 1, b = 0x80; i < 5 && b >= 0x80; i++, mul *= 0x80) {
      b = this.u8()
      n += (b & 0x7f) * mul
      if (b < 0x80 && n <= 0xffffffff) return n
    }
    throw frameInvalid(`${this.what} has a malformed varint at byte ${this.off}`)
  }

  blob (): Buffer { return this.bytes(this.varint()) }
  header (kind: number): { last: boolean, index: number } {
    const k = this.u8()
    if (k !== kind) throw frameInvalid(`${this.what}: message kind ${k}, expected ${kind}`)
    const flags = this.u8()
    if ((flags & ~1) !== 0) throw frameInvalid(`${this.what}: unknown flags 0x${flags.toString(16)}`)
    return { last: (flags & 1) === 1, index: this.u32() }
  }

  end (): void {
    if (this.off !== this.buf.length) throw frameInvalid(`${this.what} has ${this.buf.length - this.off} bytes after its end`)
  }
}

/** Groups items into parts whose bodies stay within maxBody. Always at least one part. */
function split<T> (items: T[], size: (x: T) => number, maxBody: number, what: string): Array<{ items: T[], bytes: number }> {
  const budget = maxBody - HEADER_MAX
  const parts = [{ items: [] as T[], bytes: 0 }]
  for (const x of items) {
    const s = size(x)
    if (s > budget) throw new ReplfsError('BAD_ARGUMENT', `${what}: one item of ${s} bytes does not fit a ${maxBody}-byte body`)
    let p = parts[parts.length - 1]
    if (p.bytes + s > budget) parts.push(p = { items: [], bytes: 0 })
    p.items.push(x)
    p.bytes += s
  }
  return parts
}

/** Encodes items as one or more bodies, each holding as many as fit and its counts (`counts`). */
function encodeParts<T> (kind: number, index: (first: number) => number, items: T[], size: (x: T) => number,
  counts: (part: T[]) => number[], write: (w: Writer, x: T) => void, maxBody: number, what: string): Buffer[] {
  let first = 0
  return split(items, size, maxBody, what).map((p, n, all) => {
    const w = new Writer(HEADER_MAX + p.bytes).u8(kind).u8(n === all.length - 1 ? 1 : 0).u32(index(first))
    for (const c of counts(p.items)) w.varint(c)
    for (const x of p.items) write(w, x)
    first += p.items.length
    return w.done()
  })
}

/** The range list as one or more bodies (SummaryChunks, index = first range), in order. */
export function encodeSummaries (ranges: RangeSummary[], maxBody = MAX_MESSAGE_BODY): Buffer[] {
  return encodeParts(KIND_SUMMARIES, first => first, ranges,
    s => 1 + (s.end === null ? 0 : blobLen(s.end)) + DIGEST_BYTES + varintLen(s.entries) + varintLen(s.bytes), p => [p.length],
    (w, s) => (s.end === null ? w.u8(0) : w.u8(1).blob(s.end)).bytes(s.digest).varint(s.entries).varint(s.bytes), maxBody, 'range summaries')
}

export function decodeSummaries (body: Buffer): SummaryChunk {
  const r = new Reader(body, 'range summaries')
  const { last, index } = r.header(KIND_SUMMARIES)
  const ranges: RangeSummary[] = []
  for (let i = 0, n = r.varint(); i < n; i++) {
    const tag = r.u8()
    if (tag > 1) throw frameInvalid(`range summaries: end tag ${tag}`)
    const end = tag === 1 ? r.blob() : null
    const prev = i > 0 ? ranges[i - 1].end : null
    if (i > 0 && (prev === null || (end !== null && prev.compare(end) >= 0))) throw frameInvalid('range summaries: ends out of order')
    ranges.push({ end, digest: r.bytes(DIGEST_BYTES), entries: r.varint(), bytes: r.varint() })
  }
  r.end()
  const n = ranges.length
  if (last ? n === 0 || ranges[n - 1].end !== null : n > 0 && ranges[n - 1].end === null) throw frameInvalid('range summaries: the open range is not the last one')
  return { start: index, ranges, last }
}

/** Appends a received chunk to the list so far; returns whether the list is complete. */
export function appendSummaries (into: RangeSummary[], chunk: SummaryChunk): boolean {
  if (chunk.start !== into.length) throw frameInvalid(`range summaries chunk starts at ${chunk.start}, expected ${into.length}`)
  into.push(...chunk.ranges)
  return chunk.last
}

/** One range's key hashes as one or more bodies; the source joins the parts up to the last. */
export function encodeRangeKeys (rk: RangeKeys, maxBody = MAX_MESSAGE_BODY): Buffer[] {
  return encodeParts(KIND_KEYS, () => rk.index, rk.keys, k => blobLen(k.key) + HASH_BYTES, p => [p.length],
    (w, k) => w.blob(k.key).bytes(k.hash), maxBody, 'range keys')
}

export function decodeRangeKeys (body: Buffer): RangeKeysPart {
  const r = new Reader(body, 'range keys')
  const { last, index } = r.header(KIND_KEYS)
  const keys: KeyHash[] = []
  for (let i = 0, n = r.varint(); i < n; i++) {
    const key = r.blob()
    if (i > 0 && keys[i - 1].key.compare(key) >= 0) throw frameInvalid('range keys: keys out of order')
    keys.push({ key, hash: r.bytes(HASH_BYTES) })
  }
  r.end()
  return { index, keys, last }
}

/** One range's delta as one or more bodies (puts, then copies, then dels); the target stages each part as it arrives. */
export function encodeRangeDelta (index: number, delta: RangeDelta, maxBody = MAX_MESSAGE_BODY): Buffer[] {
  type Op = { put: [Buffer, Buffer] } | { copy: [Buffer, Buffer] } | { del: Buffer }
  const ops: Op[] = [...delta.puts.map(put => ({ put })), ...delta.copies.map(copy => ({ copy })), ...delta.dels.map(del => ({ del }))]
  const size = (o: Op): number => 'del' in o ? blobLen(o.del) : 'put' in o ? blobLen(o.put[0]) + blobLen(o.put[1]) : blobLen(o.copy[0]) + blobLen(o.copy[1])
  return encodeParts(KIND_DELTA, () => index, ops, size,
    p => [p.filter(o => 'put' in o).length, p.filter(o => 'copy' in o).length, p.filter(o => 'del' in o).length],
    (w, o) => 'del' in o ? w.blob(o.del) : 'put' in o ? w.blob(o.put[0]).blob(o.put[1]) : w.blob(o.copy[0]).blob(o.copy[1]), maxBody, 'range delta')
}

export function decodeRangeDelta (body: Buffer): RangeDeltaPart {
  const r = new Reader(body, 'range delta')
  const { last, index } = r.header(KIND_DELTA)
  const nPuts = r.varint()
  const nCopies = r.varint()
  const nDels = r.varint()
  const puts: Array<[Buffer, Buffer]> = []
  const copies: Array<[Buffer, Buffer]> = []
  const dels: Buffer[] = []
  for (let i = 0; i < nPuts; i++) puts.push([r.blob(), r.blob()])
  for (let i = 0; i < nCopies; i++) copies.push([r.blob(), r.blob()])
  for (let i = 0; i < nDels; i++) dels.push(r.blob())
  r.end()
  return { index, puts, dels, copies, last }
}
