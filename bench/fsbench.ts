// File-system workloads: sequential write/read with 1 MiB calls, and many small files.
import { execSync } from 'node:child_process'
import { randomFillSync } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import fsp from 'node:fs/promises'
import { join } from 'node:path'
import { LEVELDB_MAX_FILE_SIZE, LEVELDB_WRITE_BUFFER } from '../src/store/store.js'
import { ClassicLevel } from 'classic-level'

export const MiB = 1024 * 1024
/** "100M", "2G", "1.5GiB", "4096" -> bytes. */
export function parseSize (s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(s.trim())
  if (m === null) throw new Error(`bad size: ${s}`)
  const mult = { '': 1, k: 1024, m: MiB, g: 1024 * MiB, t: 1024 * 1024 * MiB }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't']
  return Math.round(Number(m[1]) * mult)
}

export const now = (): number => Number(process.hrtime.bigint()) / 1e9

export function dropCaches (): void {
  execSync('sync')
  try { writeFileSync('/proc/sys/vm/drop_caches', '3') } catch (err) { console.error(`warning: cannot drop caches: ${(err as Error).message}`) }
}

/** A 1 MiB random chunk; each call stamps the chunk index so no two chunks are identical. */
const chunk = randomFillSync(Buffer.alloc(MiB))
function chunkFor (i: number): Buffer { chunk.writeUInt32LE(i, 0); chunk.writeUInt32LE((i ^ 0x9e3779b9) >>> 0, 8); return chunk }

export async function seqWrite (file: string, bytes: number, onDone?: () => void): Promise<number> {
  const t0 = now()
  const fh = await fsp.open(file, 'w')
  try {
    let pos = 0
    for (let i = 0; pos < bytes; i++) {
      const len = Math.min(MiB, bytes - pos)
      const { bytesWritten } = await fh.write(chunkFor(i), 0, len, pos)
      if (bytesWritten !== len) throw new Error(`short write at ${pos}: ${bytesWritten}/${len}`)
      pos += len
    }
    await fh.sync()
  } finally { await fh.close() }
  const dt = now() - t0
  onDone?.()
  return bytes / MiB / dt
}

export async function seqRead (file: string, bytes: number): Promise<number> {
  const buf = Buffer.alloc(MiB)
  const t0 = now()
  const fh = await fsp.open(file, 'r')
  let total = 0
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, MiB, total)
      if (bytesRead === 0) break
      total += bytesRead
    }
  } finally { await fh.close() }
  const dt = now() - t0
  if (total !== bytes) throw new Error(`read ${total} bytes, expected ${bytes}`)
  return bytes / MiB / dt
}

export interface SmallResult { create: number, stat: number, delete: number }

export async function smallFiles (dir: string, n: number): Promise<SmallResult> {
  await fsp.mkdir(dir, { recursive: true })
  const data = randomFillSync(Buffer.alloc(4096))
  const names = Array.from({ length: n }, (_v, i) => join(dir, `f${String(i).padStart(6, '0')}`))
  let t0 = now()
  for (const f of names) {
    const fh = await fsp.open(f, 'w')
    await fh.write(data, 0, data.length, 0)
    await fh.close()
  }
  const create = n / (now() - t0)
  t0 = now()
  for (const f of names) {
    const st = await fsp.stat(f)
    if (st.size !== 4096) throw new Error(`${f}: size ${st.size}`)
  }
  const stat = n / (now() - t0)
  t0 = now()
  for (const f of names) await fsp.unlink(f)
  const del = n / (now() - t0)
  await fsp.rmdir(dir)
  return { create, stat, delete: del }
}

const LEVELDB_OPTS = { keyEncoding: 'buffer', valueEncoding: 'buffer', createIfMissing: true, errorIfExists: true, writeBufferSize: LEVELDB_WRITE_BUFFER, maxFileSize: LEVELDB_MAX_FILE_SIZE } as const

/** Raw LevelDB with replfs's store settings: the same bytes as 64 KiB values, 2 per batch. */
export async function leveldb (dir: string, bytes: number): Promise<{ write: number, read: number }> {
  const write = await leveldbWrite(dir, bytes)
  dropCaches()
  const db = new ClassicLevel<Buffer, Buffer>(dir, { ...LEVELDB_OPTS, errorIfExists: false })
  const t0 = now()
  await db.open()
  let total = 0
  try {
    const it = db.iterator({ keys: false })
    for (;;) {
      const entries = await it.nextv(256)
      if (entries.length === 0) break
      for (const [, v] of entries) total += (v as Buffer).length
    }
    await it.close()
  } finally { await db.close() }
  const read = bytes / MiB / (now() - t0)
  if (total !== bytes) throw new Error(`leveldb read ${total} bytes, expected ${bytes}`)
  return { write, read }
}

/** The write half of `leveldb`: MiB/s of writing `bytes` into a fresh database (the last batch synced). */
export async function leveldbWrite (dir: string, bytes: number): Promise<number> {
  const db = new ClassicLevel<Buffer, Buffer>(dir, LEVELDB_OPTS)
  await db.open()
  const V = 64 * 1024
  const nvals = Math.ceil(bytes / V)
  const key = (i: number): Buffer => { const k = Buffer.alloc(8); k.writeBigUInt64BE(BigInt(i)); return k }
  const t0 = now()
  try {
    for (let i = 0; i < nvals; i += 2) {
      const ops = []
      for (let j = i; j < Math.min(i + 2, nvals); j++) {
        const off = j * V
        const len = Math.min(V, bytes - off)
        const c = chunkFor(Math.floor(off / MiB))
        const value = Buffer.from(c.subarray(off % MiB, off % MiB + len)) // copy: LevelDB keeps no reference but the chunk is reused
        value.writeUInt32LE(j, 4)
        ops.push({ type: 'put' as const, key: key(j), value })
      }
      await db.batch(ops, { sync: i + 2 >= nvals })
    }
  } finally { await db.close() }
  return bytes / MiB / (now() - t0)
}
