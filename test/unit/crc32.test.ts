import t from 'tap'
import fc from 'fast-check'
import { crc32 } from 'node:zlib'
import { crc32Combine, crc32Suffix } from '../../src/util/crc32.js'

t.test('property: crc32Combine(crc(A), crc(B), |B|) is crc(A‖B) and crc32Suffix gives crc(B) back, as zlib computes them', async t => {
  const bytes = fc.uint8Array({ maxLength: 3000 }).map(a => Buffer.from(a))
  t.doesNotThrow(() => fc.assert(fc.property(bytes, bytes, (a, b) => {
    const ab = crc32(Buffer.concat([a, b]))
    return crc32Combine(crc32(a), crc32(b), b.length) === ab && crc32Suffix(ab, crc32(a), b.length) === crc32(b)
  }), { numRuns: 500 }), 'held for 500 runs')
  // Lengths whose bits reach far into the table, as 1 MiB records and 16 MiB frames do.
  for (const len of [1 << 20, (1 << 24) + 13, 3 * (1 << 20) + 1]) {
    const a = Buffer.from('RECORD + seq')
    const b = Buffer.alloc(len, len & 0xff)
    const ab = crc32(b, crc32(a))
    t.equal(crc32Combine(crc32(a), crc32(b), len), ab, `${len} bytes`)
    t.equal(crc32Suffix(ab, crc32(a), len), crc32(b), `${len} bytes back`)
  }
})
