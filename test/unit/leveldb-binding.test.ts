import t from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ClassicLevel } from 'classic-level'

// What patches/classic-level+3.0.0.patch changes in the binding, checked through classic-level's
// own batch entry point (the one Store uses): reused native batches, borrowed Buffers, no mmaps.

type Batch = (ops: Array<{ type: 'put', key: Buffer | string, value: Buffer | Uint8Array | string } | { type: 'del', key: Buffer | string }>, opts: { sync: boolean }) => Promise<void>

function openDb (t: { teardown: (fn: () => Promise<void>) => void }): { db: ClassicLevel<Buffer, Buffer>, dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'replfs-test-leveldb-'))
  // A small write buffer, so the data lands in table files that reads then open.
  const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer', writeBufferSize: 1 << 20 })
  t.teardown(async () => { await db.close(); rmSync(dir, { recursive: true, force: true }) })
  return { db, dir }
}

t.test('batches of every size, one after another, store exactly their own ops: a reused native batch carries nothing over', async t => {
  const { db } = openDb(t)
  await db.open()
  const batch = (db as unknown as { _batch: Batch })._batch.bind(db)
  const model = new Map<string, Buffer>()
  const key = (i: number): Buffer => Buffer.from(`k${String(i).padStart(6, '0')}`)
  let next = 0
  // Large, small, large again, with deletes, strings and Uint8Arrays (which the binding copies or views differently).
  for (const [count, size] of [[64, 65536], [3, 100], [80, 65536], [1, 0], [40, 4096], [100, 65536], [2, 10]] as const) {
    const ops: Parameters<Batch>[0] = []
    for (let j = 0; j < count; j++) {
      const i = next++
      const value = randomBytes(size)
      if (j % 7 === 3) {
        ops.push({ type: 'put', key: key(i).toString(), value: new Uint8Array(value) })
      } else if (j % 11 === 5) {
        ops.push({ type: 'put', key: key(i), value: value.toString('hex') })
        model.set(key(i).toString(), Buffer.from(value.toString('hex')))
        continue
      } else {
        ops.push({ type: 'put', key: key(i), value })
      }
      model.set(key(i).toString(), value)
    }
    if (next > 10) {
      const gone = key(next - 10)
      ops.push({ type: 'del', key: gone })
      model.delete(gone.toString())
    }
    await batch(ops, { sync: false })
  }
  const stored = new Map<string, Buffer>()
  for await (const [k, v] of db.iterator()) stored.set(k.toString(), v)
  t.equal(stored.size, model.size, `${model.size} keys`)
  let same = 0
  for (const [k, v] of model) if (stored.get(k)?.equals(v) === true) same++
  t.equal(same, model.size, 'every value is exactly the one last put')
})

t.test('table files are read with pread, never memory-mapped, so reading a store does not grow the RSS by its size', async t => {
  const { db, dir } = openDb(t)
  await db.open()
  const batch = (db as unknown as { _batch: Batch })._batch.bind(db)
  const values: Buffer[] = []
  for (let i = 0; i < 96; i++) {
    const ops: Parameters<Batch>[0] = []
    for (let j = 0; j < 4; j++) {
      const v = randomBytes(65536)
      values.push(v)
      ops.push({ type: 'put', key: Buffer.from(`k${String(i * 4 + j).padStart(6, '0')}`), value: v })
    }
    await batch(ops, { sync: false })
  }
  await db.compactRange(Buffer.from('k'), Buffer.from('l'))
  let n = 0
  let same = 0
  for await (const [, v] of db.iterator()) if (v.equals(values[n++])) same++
  t.equal(n, values.length, `read back ${n} values of 64 KiB (24 MiB) from table files`)
  t.equal(same, n, 'each one exactly as written')
  const mapped = readFileSync('/proc/self/maps', 'utf8').split('\n').filter(l => l.includes(dir))
  t.same(mapped, [], 'no file of the store is mapped into the process')
})
