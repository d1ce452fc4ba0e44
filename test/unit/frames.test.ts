import t from 'tap'
import { randomBytes } from 'node:crypto'
import fc from 'fast-check'
import { crc32 } from 'node:zlib'
import {
  FRAME_HEADER_LENGTH, FrameDecoder, FrameType, MAX_FRAME_BODY, frameHeader, decodeRecordFrame, encodeFrame,
  encodeJsonFrame, encodeRecordFrame, parseJsonBody, type Frame, type FrameTypeName
} from '../../src/repl/frames.js'

const TYPES = Object.keys(FrameType) as FrameTypeName[]

function decodeAll (bytes: Buffer, chunkSizes: number[] = [bytes.length]): Frame[] {
  const d = new FrameDecoder()
  const out: Frame[] = []
  let pos = 0
  for (let i = 0; pos < bytes.length; i++) {
    const n = Math.max(1, chunkSizes[i % chunkSizes.length])
    out.push(...d.push(bytes.subarray(pos, pos + n)))
    pos += n
  }
  return out
}

function plain (frames: Frame[]): Array<{ type: string, body: string }> {
  return frames.map(f => ({ type: f.type, body: f.body.toString('hex') }))
}

t.test('every frame type round-trips, with empty and 16 MiB bodies', async t => {
  for (const type of TYPES) {
    for (const body of [Buffer.alloc(0), Buffer.from(`body of ${type}`)]) {
      const wire = encodeFrame(type, body)
      t.equal(wire[0].length, FRAME_HEADER_LENGTH, `the header is ${FRAME_HEADER_LENGTH} bytes`)
      t.equal(wire[1], body, 'the body is passed through, not copied')
      t.same(plain(decodeAll(Buffer.concat(wire))), plain([{ type, body }]), `${type} with ${body.length} bytes`)
    }
  }
  const big = Buffer.alloc(MAX_FRAME_BODY)
  for (let i = 0; i < big.length; i += 4096) big[i] = i & 0xff
  const wire = Buffer.concat(encodeFrame('RANGE_DELTA', big))
  for (const chunks of [[wire.length], [65536]]) {
    const d = new FrameDecoder()
    const frames: Frame[] = []
    for (let pos = 0; pos < wire.length; pos += chunks[0]) frames.push(...d.push(wire.subarray(pos, pos + chunks[0])))
    t.equal(frames.length, 1)
    t.equal(frames[0].type, 'RANGE_DELTA')
    t.ok(frames[0].body.equals(big), `16 MiB body intact when fed in ${chunks[0]}-byte chunks`)
    t.equal(d.bytesIn, wire.length, 'bytesIn counts every byte')
    t.equal(d.buffered, 0)
  }
  t.throws(() => encodeFrame('RECORD', Buffer.alloc(MAX_FRAME_BODY + 1)), 'we never send a frame the peer must refuse')
})

t.test('JSON and RECORD bodies round-trip', async t => {
  const [json] = decodeAll(Buffer.concat(encodeJsonFrame('HELLO', { protocol: [1, 1], volume: 'v', nonce: 'ü' })))
  t.same(parseJsonBody(json), { protocol: [1, 1], volume: 'v', nonce: 'ü' })
  for (const seq of [0, 1, 2 ** 32 + 5, Number.MAX_SAFE_INTEGER]) {
    const record = Buffer.from(`record ${seq}`)
    const [f] = decodeAll(Buffer.concat(encodeRecordFrame(seq, record)))
    t.equal(f.type, 'RECORD')
    t.same(decodeRecordFrame(f.body), { seq, record }, `seq ${seq}`)
  }
  t.same(decodeRecordFrame(Buffer.alloc(8)), { seq: 0, record: Buffer.alloc(0) }, 'an empty record is a valid body')
  for (const record of [Buffer.alloc(0), Buffer.from('small'), randomBytes(1 << 20)]) {
    const plainWire = Buffer.concat(encodeRecordFrame(77, record))
    const derived = Buffer.concat(encodeRecordFrame(77, record, crc32(record)))
    t.ok(derived.equals(plainWire), `${record.length} bytes: a frame from the record's known crc is the same bytes`)
    const [f] = decodeAll(derived)
    t.equal(decodeRecordFrame(f.body, f.crc).crc, crc32(record), `${record.length} bytes: the record's crc comes back from the frame's`)
  }
})

t.test('a stream split at any two points decodes to the same frames', async t => {
  const frames: Frame[] = [
    { type: 'HELLO', body: Buffer.from('{"a":1}') },
    { type: 'PING', body: Buffer.alloc(0) },
    { type: 'RECORD', body: Buffer.from('0123456789abcdef') },
    { type: 'ACK', body: Buffer.from('{}') }
  ]
  const wire = Buffer.concat(frames.flatMap(f => encodeFrame(f.type, f.body)))
  const want = plain(frames)
  let cases = 0
  const wrong: string[] = []
  for (let i = 0; i <= wire.length; i++) {
    for (let j = i; j <= wire.length; j++) {
      const d = new FrameDecoder()
      const got = [...d.push(wire.subarray(0, i)), ...d.push(wire.subarray(i, j)), ...d.push(wire.subarray(j))]
      if (JSON.stringify(plain(got)) !== JSON.stringify(want) || d.buffered !== 0) wrong.push(`${i},${j}`)
      cases++
    }
  }
  const n = wire.length + 1
  t.equal(cases, n * (n + 1) / 2, `every pair of split points 0 <= i <= j <= ${wire.length} was tried`)
  t.same(wrong, [], `all ${cases} splits of a ${wire.length}-byte stream decode the same (listed: the splits that did not)`)
  t.same(plain(decodeAll(wire, [1])), want, 'one byte at a time')
})

t.test('property: random frames in random chunks decode to the same frames', async t => {
  const frameArb = fc.record({
    type: fc.constantFrom(...TYPES),
    body: fc.uint8Array({ maxLength: 2000 }).map(a => Buffer.from(a))
  })
  t.doesNotThrow(() => fc.assert(fc.property(
    fc.array(frameArb, { maxLength: 12 }),
    fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 20 }),
    (frames, chunkSizes) => {
      const wire = Buffer.concat(frames.flatMap(f => encodeFrame(f.type, f.body)))
      const got = decodeAll(wire, chunkSizes)
      return JSON.stringify(plain(got)) === JSON.stringify(plain(frames))
    }
  ), { numRuns: 300 }), 'held for 300 runs')
})

t.test('unknown frame types are refused, naming the number', async t => {
  for (const code of [0, 5, 12, 200, 255]) {
    const body = Buffer.from('x')
    const wire = Buffer.concat([frameHeader(body.length, code, crc32(body, crc32(Buffer.of(code)))), body])
    const d = new FrameDecoder()
    t.throws(() => d.push(wire), { code: 'FRAME_INVALID', message: new RegExp(`unknown frame type ${code}\\b`) }, `type ${code}`)
    t.throws(() => d.push(Buffer.alloc(0)), { code: 'FRAME_INVALID' }, 'the decoder stays failed')
  }
})

t.test('an oversize length is refused from the header alone, before the body is buffered', async t => {
  const head = frameHeader(MAX_FRAME_BODY + 1, FrameType.RANGE_DELTA, 0)
  const d = new FrameDecoder()
  t.same(d.push(head.subarray(0, 5)), [], 'a partial header is just buffered')
  t.throws(() => d.push(head.subarray(5)), { code: 'FRAME_INVALID', message: new RegExp(`${MAX_FRAME_BODY + 1}.*${MAX_FRAME_BODY}`) })
  t.ok(d.buffered <= FRAME_HEADER_LENGTH, `buffered ${d.buffered} bytes`)

  const small = new FrameDecoder({ maxBody: 1024 })
  const wire = Buffer.concat(encodeFrame('RECORD', Buffer.alloc(1025)))
  t.throws(() => small.push(wire.subarray(0, FRAME_HEADER_LENGTH)), { code: 'FRAME_INVALID', message: /1025 bytes exceeds the maximum of 1024/ })
  t.ok(small.buffered <= FRAME_HEADER_LENGTH)
  t.same(plain(new FrameDecoder({ maxBody: 1025 }).push(wire)), plain([{ type: 'RECORD', body: Buffer.alloc(1025) }]), 'a body at the limit passes')
})

t.test('property: one flipped bit anywhere in a frame is refused, never delivered', async t => {
  const maxBody = 4096
  t.doesNotThrow(() => fc.assert(fc.property(
    fc.constantFrom(...TYPES),
    fc.uint8Array({ maxLength: 1000 }).map(a => Buffer.from(a)),
    fc.nat(),
    (type, body, bitSeed) => {
      const wire = Buffer.concat(encodeFrame(type, body))
      const bit = bitSeed % (wire.length * 8)
      wire[bit >> 3] ^= 1 << (bit & 7)
      // Padding after the frame, so a length flipped upwards (but under maxBody) is complete
      // and must fail its crc rather than wait for bytes that never come.
      const d = new FrameDecoder({ maxBody })
      try {
        d.push(Buffer.concat([wire, Buffer.alloc(maxBody)]))
      } catch (err) {
        const e = err as { code?: string, message: string }
        if (e.code !== 'FRAME_INVALID') return false
        // Any flipped bit is a crc mismatch: of the header (length, type, either crc) or of the body.
        return bit < FRAME_HEADER_LENGTH * 8 ? /header crc mismatch/.test(e.message) : /crc mismatch/.test(e.message)
      }
      return false
    }
  ), { numRuns: 1000 }), 'held for 1000 runs')
})

t.test('malformed bodies are refused with FRAME_INVALID', async t => {
  const cases: Array<[string, () => unknown]> = [
    ['record frame too short', () => decodeRecordFrame(Buffer.alloc(7))],
    ['record seq beyond 2^53', () => decodeRecordFrame(Buffer.from('0020000000000000', 'hex'))],
    ['json not json', () => parseJsonBody({ type: 'HELLO', body: Buffer.from('{') })],
    ['json array', () => parseJsonBody({ type: 'HELLO', body: Buffer.from('[1]') })],
    ['json null', () => parseJsonBody({ type: 'HELLO', body: Buffer.from('null') })]
  ]
  for (const [name, fn] of cases) t.throws(fn, { code: 'FRAME_INVALID' }, name)
})
