import t from 'tap'
t.setTimeout(240_000)
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { mountVolume } from '../helpers/mount.js'

// Each writer process fills its own file and its own 1 MiB slice of a shared file, in 64 KiB
// pwrites, byte value derived from (writer, offset) so any misplaced byte shows.
const WRITER = `
const fs = require('fs')
const [own, shared, idx] = [process.argv[1], process.argv[2], Number(process.argv[3])]
const SLICE = 1 << 20, CH = 65536
const fo = fs.openSync(own, 'w'), fsh = fs.openSync(shared, 'r+')
for (let off = 0; off < SLICE; off += CH) {
  const b = Buffer.alloc(CH); for (let i = 0; i < CH; i++) b[i] = (idx * 31 + ((off + i) >> 8) + i) & 255
  fs.writeSync(fo, b, 0, CH, off)
  fs.writeSync(fsh, b, 0, CH, idx * SLICE + off)
}
fs.fsyncSync(fsh); fs.closeSync(fo); fs.closeSync(fsh)
`
const expected = (idx: number): Buffer => {
  const SLICE = 1 << 20; const out = Buffer.alloc(SLICE)
  for (let j = 0; j < SLICE; j++) { const i = j % 65536; out[j] = (idx * 31 + (j >> 8) + i) & 255 }
  return out
}
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

t.test('4 concurrent processes writing their own files and disjoint slices of one file', async t => {
  const m = await mountVolume(t)
  const shared = join(m.mnt, 'shared.bin')
  fs.writeFileSync(shared, '')
  const N = 4
  const codes = await Promise.all(Array.from({ length: N }, async (_, i) => await new Promise<number | null>(resolve => {
    const c = spawn(process.execPath, ['-e', WRITER, join(m.mnt, `own${i}.bin`), shared, String(i)], { stdio: 'inherit' })
    c.on('exit', code => resolve(code))
  })))
  t.same(codes, [0, 0, 0, 0], 'all writers exited 0')
  const sh = fs.readFileSync(shared)
  t.equal(sh.length, N << 20, 'shared file is 4 MiB')
  for (let i = 0; i < N; i++) {
    const want = sha(expected(i))
    t.equal(sha(fs.readFileSync(join(m.mnt, `own${i}.bin`))), want, `own${i}.bin intact`)
    t.equal(sha(sh.subarray(i << 20, (i + 1) << 20)), want, `slice ${i} of shared file intact`)
  }
})
