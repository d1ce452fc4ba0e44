import t from 'tap'
t.setTimeout(240_000)
import * as fs from 'node:fs'
import { join } from 'node:path'
import { mountVolume } from '../helpers/mount.js'

// fsx-style exerciser: random pwrite / ftruncate / pread against an in-memory model of the file.
const OPS = Number(process.env.REPLFS_FSX_OPS ?? 25000)
const MAXLEN = 2 * 1024 * 1024
const SEED = Number(process.env.REPLFS_FSX_SEED ?? (Date.now() % 2 ** 31))

function rng (seed: number): () => number {
  let s = seed >>> 0 || 1
  return () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s / 2 ** 32 }
}

t.test(`fsx: ${OPS} random pwrite/ftruncate/pread/reopen ops on 2 files match an in-memory model (seed ${SEED})`, async t => {
  const m = await mountVolume(t)
  const rand = rng(SEED)
  const int = (n: number): number => Math.floor(rand() * n)
  const files = [0, 1].map(i => ({ path: join(m.mnt, `fsx${i}`), model: Buffer.alloc(MAXLEN), size: 0, fd: -1 }))
  for (const f of files) f.fd = fs.openSync(f.path, 'w+')
  const counts: Record<string, number> = { write: 0, truncate: 0, read: 0, reopen: 0, fullcheck: 0, fstat: 0 }
  const mismatches: string[] = []
  const check = (f: typeof files[0], off: number, len: number, op: number, what: string): void => {
    const buf = Buffer.alloc(len)
    const n = fs.readSync(f.fd, buf, 0, len, off)
    const wantN = Math.max(0, Math.min(len, f.size - off))
    if (n !== wantN) { mismatches.push(`op ${op} ${what}: read ${n} bytes at ${off}, want ${wantN}`); return }
    if (!buf.subarray(0, n).equals(f.model.subarray(off, off + n))) {
      let i = 0; while (buf[i] === f.model[off + i]) i++
      mismatches.push(`op ${op} ${what}: byte ${off + i} is ${buf[i]}, want ${f.model[off + i]} (read ${off}+${len}, size ${f.size})`)
    }
  }
  let op = 0
  for (; op < OPS && mismatches.length < 5; op++) {
    const f = files[int(2)]
    const r = rand()
    if (r < 0.45) {
      const len = 1 + (rand() < 0.7 ? int(8192) : int(200000))
      const off = int(MAXLEN - len)
      const data = Buffer.alloc(len)
      for (let i = 0; i < len; i++) data[i] = (op * 131 + i * 7 + (i >> 8)) & 255
      const n = fs.writeSync(f.fd, data, 0, len, off)
      if (n !== len) mismatches.push(`op ${op}: short write ${n}/${len}`)
      data.copy(f.model, off)
      f.size = Math.max(f.size, off + len)
      counts.write++
    } else if (r < 0.55) {
      const size = rand() < 0.3 ? int(65536) : int(MAXLEN)
      fs.ftruncateSync(f.fd, size)
      if (size < f.size) f.model.fill(0, size, f.size)
      f.size = size
      counts.truncate++
    } else if (r < 0.95) {
      const len = 1 + (rand() < 0.7 ? int(8192) : int(200000))
      const off = int(f.size + 4096)
      check(f, off, len, op, 'pread')
      counts.read++
    } else if (r < 0.98) {
      const st = fs.fstatSync(f.fd)
      if (st.size !== f.size) mismatches.push(`op ${op}: fstat size ${st.size}, want ${f.size}`)
      counts.fstat++
    } else {
      fs.closeSync(f.fd)
      f.fd = fs.openSync(f.path, 'r+')
      if (fs.fstatSync(f.fd).size !== f.size) mismatches.push(`op ${op}: size after reopen ${fs.fstatSync(f.fd).size}, want ${f.size}`)
      counts.reopen++
    }
    if (op % 2500 === 2499) { for (const g of files) check(g, 0, MAXLEN, op, 'full check'); counts.fullcheck++ }
  }
  for (const g of files) { check(g, 0, MAXLEN, op, 'final check'); fs.closeSync(g.fd) }
  t.same(mismatches, [], `${op} ops (${JSON.stringify(counts)}), seed ${SEED}: ${mismatches.length} mismatches`)
  t.equal(op, OPS, `ran all ${OPS} ops`)
})
