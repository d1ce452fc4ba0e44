import t from 'tap'
t.setTimeout(240_000)
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { mountVolume, sh } from '../helpers/mount.js'

t.test('1.5 GiB sparse file: tiny allocation, holes read as zeros, data where written', async t => {
  const m = await mountVolume(t)
  const f = join(m.mnt, 'sparse')
  const SIZE = 1.5 * 2 ** 30
  fs.writeFileSync(f, '')
  fs.truncateSync(f, SIZE)
  const fd = fs.openSync(f, 'r+')
  const offsets = [0, 123456789, 2 ** 30, SIZE - 10]
  for (const off of offsets) fs.writeSync(fd, Buffer.from(`mark@${off}`.slice(0, 10).padEnd(10, '.')), 0, 10, off)
  const st = fs.fstatSync(fd)
  t.equal(st.size, SIZE, 'size is 1.5 GiB')
  t.ok(st.blocks * 512 < 16 * 2 ** 20, `st_blocks small: ${st.blocks} blocks`)
  const du = Number(sh(`du -k ${f}`).split('\t')[0])
  t.ok(du < 16 * 1024, `du ${du} KiB`)
  for (const off of offsets) {
    const b = Buffer.alloc(10)
    fs.readSync(fd, b, 0, 10, off)
    t.equal(b.toString(), `mark@${off}`.slice(0, 10).padEnd(10, '.'), `data at ${off}`)
  }
  for (const off of [10, 5 * 2 ** 20 + 3, 2 ** 30 - 65546, 2 ** 30 + 100000, SIZE - 65546]) {
    const b = Buffer.alloc(65536, 1)
    t.equal(fs.readSync(fd, b, 0, b.length, off), b.length)
    t.ok(b.every(x => x === 0), `hole at ${off} reads as zeros`)
  }
  fs.closeSync(fd)
})

t.test('200 MiB dense file written in 1 MiB chunks reads back with the same sha256', async t => {
  const m = await mountVolume(t)
  const f = join(m.mnt, 'dense')
  const h = createHash('sha256')
  const fd = fs.openSync(f, 'w')
  const chunk = Buffer.alloc(1 << 20)
  const started = Date.now()
  for (let i = 0; i < 200; i++) {
    for (let j = 0; j < chunk.length; j += 4) chunk.writeUInt32LE((i * 2654435761 + j * 40503) >>> 0, j)
    fs.writeSync(fd, chunk)
    h.update(chunk)
  }
  fs.closeSync(fd)
  const wsec = (Date.now() - started) / 1000
  const want = h.digest('hex')
  t.equal(fs.statSync(f).size, 200 * 2 ** 20)
  const got = sh(`sha256sum ${f}`).split(' ')[0]
  t.equal(got, want, `sha256 equal (write took ${wsec.toFixed(1)} s)`)
})
