import { ReplfsError } from '../errors.js'
import { RECORD_VERSION, type LogRecord, type RecordType } from './records.js'

/**
 * Binary record encoding, used by the journal (and the wire): a version byte, a type code, the
 * JSON of the scalar fields (bigints as decimal strings), then the record's binary payload
 * (write data, xattr value raw; a fill's entries as lengths and bytes), so big payloads are
 * never base64'd or JSON-escaped.
 */

const TYPE_CODES: Record<RecordType, number> = {
  init: 1, mknod: 2, link: 3, unlink: 4, rmdir: 5, rename: 6, setattr: 7, write: 8, setxattr: 9, removexattr: 10, purge: 11,
  'snapshot-create': 12, 'snapshot-delete': 13, 'snapshot-restore': 14, 'snapshot-refresh': 15, 'collect-garbage': 16,
  'snapshot-diverged': 17, 'snapshot-fill': 18
}
const TYPES_BY_CODE = new Map<number, RecordType>(
  (Object.entries(TYPE_CODES) as Array<[RecordType, number]>).map(([k, v]) => [v, k])
)

const BIGINT_FIELDS = new Set(['time', 'atime', 'mtime'])

/** The field a record type carries as its binary payload, and how that field becomes bytes and back. */
interface PayloadCodec {
  field: string
  encode: (value: unknown) => Buffer
  decode: (payload: Buffer) => unknown
}

/** A Buffer field, carried as is. */
function raw (field: string): PayloadCodec {
  return {
    field,
    encode: v => v as Buffer,
    // A view when the payload is most of its memory (a record received whole, e.g. a 1 MiB
    // write); a copy when it is a sliver of a bigger buffer, which a view would keep alive.
    decode: p => p.length >= p.buffer.byteLength / 2 ? p : Buffer.from(p)
  }
}

/** [base, value] pairs, each as u32 length + base, u32 length + value. */
const ENTRIES: PayloadCodec = {
  field: 'entries',
  encode: v => {
    const entries = v as Array<[Buffer, Buffer]>
    let len = 0
    for (const [k, val] of entries) len += 8 + k.length + val.length
    const out = payloadWithHeadroom(len)
    let off = 0
    for (const [k, val] of entries) {
      off = out.writeUInt32BE(k.length, off); off += k.copy(out, off)
      off = out.writeUInt32BE(val.length, off); off += val.copy(out, off)
    }
    return out
  },
  decode: p => {
    // A fill record is its entries: views of it keep nothing else alive.
    const whole = p.length >= p.buffer.byteLength / 2 ? p : Buffer.from(p)
    const entries: Array<[Buffer, Buffer]> = []
    const part = (off: number): Buffer => {
      if (off + 4 > whole.length) throw invalid('snapshot-fill entries end inside a length')
      const n = whole.readUInt32BE(off)
      if (off + 4 + n > whole.length) throw invalid('snapshot-fill entry overruns the payload')
      return whole.subarray(off + 4, off + 4 + n)
    }
    for (let off = 0; off < whole.length;) {
      const k = part(off)
      off += 4 + k.length
      const val = part(off)
      off += 4 + val.length
      entries.push([k, val])
    }
    return entries
  }
}

const PAYLOADS: Partial<Record<RecordType, PayloadCodec>> = { write: raw('data'), setxattr: raw('value'), 'snapshot-fill': ENTRIES }

/**
 * Bytes kept free in front of a payload made by `payloadWithHeadroom`, so `encodeRecordParts` can
 * write the record's header there and hand out the whole record as one Buffer without copying
 * the payload behind it (1 MiB per write record). A header is ~100 bytes of JSON.
 */
const HEADROOM = 256
/** Payloads with headroom, and the header last written into it (null: none yet). */
const withHeadroom = new WeakMap<Buffer, Buffer | null>()

/**
 * A Buffer of `length` bytes for a record's payload, with room in front for the record's header.
 * The room belongs to this payload alone, so nobody else may hold a view of the bytes before it.
 */
export function payloadWithHeadroom (length: number): Buffer {
  const payload = Buffer.allocUnsafeSlow(HEADROOM + length).subarray(HEADROOM)
  withHeadroom.set(payload, null)
  return payload
}

export interface EncodeOptions {
  /** Leave the binary payload out (journal entries nobody will read back need only the header). */
  omitPayload?: boolean
}

export function encodeRecord (rec: LogRecord, opts: EncodeOptions = {}): Buffer {
  const parts = encodeRecordParts(rec, opts)
  return parts.length === 1 ? parts[0] : Buffer.concat(parts)
}

/**
 * The encoding as [header, payload?], so callers that only hash or write it need not copy the
 * payload; or as one Buffer when the payload has room for the header in front of it.
 */
export function encodeRecordParts (rec: LogRecord, opts: EncodeOptions = {}): Buffer[] {
  const codec = PAYLOADS[rec.type]
  const fields: Record<string, unknown> = {}
  let payload: Buffer | undefined
  for (const [k, v] of Object.entries(rec)) {
    if (k === 'type') continue
    if (k === codec?.field) { payload = codec.encode(v); continue }
    fields[k] = typeof v === 'bigint' ? v.toString() : v
  }
  if (payload !== undefined) fields.payloadLength = payload.length
  const omit = payload !== undefined && opts.omitPayload === true
  if (omit) fields.payloadOmitted = true
  const json = Buffer.from(JSON.stringify(fields))
  const head = Buffer.allocUnsafe(6)
  head[0] = RECORD_VERSION
  head[1] = TYPE_CODES[rec.type]
  head.writeUInt32BE(json.length, 2)
  const header = Buffer.concat([head, json])
  if (payload !== undefined && !omit && header.length <= HEADROOM) {
    const written = withHeadroom.get(payload)
    // The room takes one header: a second encoding of the same payload reuses it only if its
    // header is the same (a record encoded twice), never overwriting bytes handed out before.
    if (written === null || written?.equals(header) === true) {
      const whole = Buffer.from(payload.buffer, payload.byteOffset - header.length, header.length + payload.length)
      if (written === null) {
        header.copy(whole, 0)
        withHeadroom.set(payload, header)
      }
      return [whole]
    }
  }
  if (payload === undefined || omit) return [header]
  return [header, payload]
}

export function decodeRecord (buf: Buffer): LogRecord {
  if (buf.length < 6) throw invalid(`record too short (${buf.length} bytes)`)
  if (buf[0] !== RECORD_VERSION) throw invalid(`unknown record version ${buf[0]}`)
  const type = TYPES_BY_CODE.get(buf[1])
  if (type === undefined) throw invalid(`unknown record type code ${buf[1]}`)
  const jsonLen = buf.readUInt32BE(2)
  if (6 + jsonLen > buf.length) throw invalid('record header overruns the buffer')
  let fields: unknown
  try {
    fields = JSON.parse(buf.subarray(6, 6 + jsonLen).toString('utf8'))
  } catch (err) {
    throw invalid('record header is not valid JSON', err)
  }
  if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) throw invalid('record header is not an object')
  const f = fields as Record<string, unknown>
  const rec: Record<string, unknown> = { type }
  for (const [k, v] of Object.entries(f)) {
    if (k === 'payloadLength' || k === 'payloadOmitted') continue
    rec[k] = BIGINT_FIELDS.has(k) && typeof v === 'string' ? BigInt(v) : v
  }
  const codec = PAYLOADS[type]
  if (codec !== undefined) {
    const len = f.payloadLength
    if (typeof len !== 'number') throw invalid(`${type} record without payloadLength`)
    if (f.payloadOmitted === true) throw invalid(`${type} record was journaled without its payload`)
    if (6 + jsonLen + len !== buf.length) throw invalid(`${type} payload is ${buf.length - 6 - jsonLen} bytes, header says ${len}`)
    rec[codec.field] = codec.decode(buf.subarray(6 + jsonLen))
  } else if (6 + jsonLen !== buf.length) {
    throw invalid('trailing bytes after record')
  }
  return rec as unknown as LogRecord
}

function invalid (msg: string, cause?: unknown): ReplfsError {
  return new ReplfsError('RECORD_INVALID', msg, { cause })
}
