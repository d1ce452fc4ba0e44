import t from 'tap'
import { decodeRecord, encodeRecord, encodeRecordParts, payloadWithHeadroom } from '../../src/log/codec.js'
import type { LogRecord } from '../../src/log/records.js'

t.test('records round-trip through the binary codec, payload raw', async t => {
  const data = Buffer.alloc(70_000, 7)
  const rec: LogRecord = { type: 'write', ino: 12, offset: 2 ** 40, data, time: 1234567890123456789n }
  const buf = encodeRecord(rec)
  t.ok(buf.length < data.length + 200, `encoding adds ${buf.length - data.length} bytes to a ${data.length}-byte payload`)
  t.same(decodeRecord(buf), rec)
  const sym: LogRecord = { type: 'mknod', parent: 1, name: 'l', ino: 9, mode: 0o120777, uid: 1, gid: 2, rdev: 0, target: 'x/y', time: -5n }
  t.same(decodeRecord(encodeRecord(sym)), sym)
})

t.test('malformed records are refused with RECORD_INVALID, never half-decoded', async t => {
  const good = encodeRecord({ type: 'write', ino: 3, offset: 0, data: Buffer.from('abc'), time: 1n })
  const cases: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['unknown version', Buffer.concat([Buffer.from([9]), good.subarray(1)])],
    ['unknown type', Buffer.concat([good.subarray(0, 1), Buffer.from([200]), good.subarray(2)])],
    ['header overrun', Buffer.concat([good.subarray(0, 2), Buffer.from([0, 0, 255, 255]), good.subarray(6)])],
    ['truncated payload', good.subarray(0, good.length - 1)],
    ['trailing bytes', Buffer.concat([encodeRecord({ type: 'purge', ino: 4 }), Buffer.from([0])])],
    ['bad json', Buffer.concat([good.subarray(0, 6), Buffer.from('{'.padEnd(good.readUInt32BE(2), ' ')), good.subarray(6 + good.readUInt32BE(2))])]
  ]
  for (const [name, buf] of cases) {
    t.throws(() => decodeRecord(buf), { code: 'RECORD_INVALID' }, name)
  }
  t.throws(() => decodeRecord(encodeRecord({ type: 'write', ino: 3, offset: 0, data: Buffer.from('abc'), time: 1n }, { omitPayload: true })), { code: 'RECORD_INVALID' }, 'a journal entry without its payload cannot pass for a write')
})

t.test('a payload with headroom encodes as one Buffer over its own memory, byte-identical to the plain encoding; a received record decodes to a view of a large payload, a copy of a small one', async t => {
  const data = payloadWithHeadroom(1 << 20)
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff
  const rec: LogRecord = { type: 'write', ino: 5, offset: 4096, data, time: 99n }
  const parts = encodeRecordParts(rec)
  t.equal(parts.length, 1, 'one Buffer')
  t.equal(parts[0].buffer, data.buffer, 'over the payload\'s own memory: the payload was not copied')
  t.ok(parts[0].equals(encodeRecord({ ...rec, data: Buffer.from(data) })), 'the same bytes as a plain payload gives')
  t.same(decodeRecord(parts[0]), { ...rec, data: Buffer.from(data) }, 'and it decodes to the record')
  t.equal(encodeRecordParts(rec)[0].buffer, data.buffer, 'encoding the same record again reuses the room')
  const other = encodeRecordParts({ ...rec, ino: 6 })
  t.equal(other.length, 2, 'another record with the same payload gets a header of its own')
  t.ok(parts[0].equals(encodeRecord({ ...rec, data: Buffer.from(data) })), 'and the first encoding is untouched')
  t.same(decodeRecord(Buffer.concat(other)), { ...rec, ino: 6, data: Buffer.from(data) })

  const received = Buffer.from(parts[0])
  const big = decodeRecord(received) as LogRecord & { data: Buffer }
  t.equal(big.data.length, 1 << 20)
  t.equal(big.data.buffer, received.buffer, 'a large payload is a view of the received record: no second copy')
  const small = encodeRecord({ ...rec, data: Buffer.from('tiny') })
  const inBigChunk = Buffer.concat([small, Buffer.alloc(60_000)]).subarray(0, small.length)
  const tiny = decodeRecord(inBigChunk) as LogRecord & { data: Buffer }
  t.not(tiny.data.buffer, inBigChunk.buffer, 'a small payload is copied out of a big buffer, which a view would keep alive')
  t.equal(tiny.data.toString(), 'tiny')
})
