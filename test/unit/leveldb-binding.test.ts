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

/** replfs's shape: every batch puts new blocks ('b', rising) and rewrites a few metadata keys ('i', 'm'). */
async function writeReplfsBatches (db: ClassicLevel<Buffer, Buffer>, batches: number, blocksPerBatch: number): Promise<{ block: Buffer, keys: Buffer[] }> {
  const block = randomBytes(64 * 1024)
  const keys: Buffer[] = []
  for (let batch = 0; batch < batches; batch++) {
    const ops: Array<{ type: 'put', key: Buffer, value: Buffer }> = []
    for (let i = 0; i < blocksPerBatch; i++) {
      const key = Buffer.alloc(9)
      key[0] = 0x62
      key.writeUInt32BE(keys.length, 5)
      keys.push(key)
      ops.push({ type: 'put', key, value: block })
    }
    ops.push({ type: 'put', key: Buffer.from('i-inode'), value: Buffer.from(String(keys.length)) })
    ops.push({ type: 'put', key: Buffer.from('m-applied-seq'), value: Buffer.from(String(batch)) })
    await db.batch(ops)
  }
  return { block, keys }
}

/** Per level, from leveldb.stats: its tables, MB its compactions read, MB its flushes and compactions wrote. */
function levelStats (db: ClassicLevel<Buffer, Buffer>): Array<{ level: number, files: number, readMB: number, writeMB: number }> {
  return db.getProperty('leveldb.stats').split('\n').map(l => l.trim().split(/\s+/).map(Number))
    .filter(c => c.length === 6 && c.every(Number.isFinite))
    .map(([level, files, , , readMB, writeMB]) => ({ level, files, readMB, writeMB }))
}

t.test('a memtable of new blocks is flushed as its own table below level 0, so sequentially written blocks are never read back by a compaction', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'replfs-test-leveldb-'))
  const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer', writeBufferSize: 4 << 20 })
  t.teardown(async () => { await db.close(); rmSync(dir, { recursive: true, force: true }) })
  // 64 MiB through 4 MiB memtables: 16 flushes. Stock LevelDB keeps each at level 0 (its metadata
  // keys overlap the one before) and must compact them (it stops writes at 12 level-0 tables).
  const { block, keys } = await writeReplfsBatches(db, 256, 4)
  const stats = levelStats(db)
  const read = stats.reduce((s, l) => s + l.readMB, 0)
  const written = stats.reduce((s, l) => s + l.writeMB, 0)
  const deep = stats.filter(l => l.level >= 1).reduce((s, l) => s + l.writeMB, 0)
  t.ok(written >= 56, `flushes wrote ${written} MB of tables`)
  t.ok(deep >= 56, `the block tables went below level 0 when flushed (${deep} MB): ${JSON.stringify(stats)}`)
  t.equal(read, 0, 'no compaction read any of it back')
  for (const i of [0, 1000, keys.length - 1]) t.ok((await db.get(keys[i]))?.equals(block), `block ${i} reads back`)
  t.equal((await db.get(Buffer.from('m-applied-seq')))?.toString(), '255', 'the newest metadata value wins')
  // Reopened (tables only, no log to replay): the same data.
  await db.close()
  await db.open()
  t.ok((await db.get(keys[keys.length - 1]))?.equals(block), 'the last block reads back after a reopen')
  t.equal((await db.get(Buffer.from('i-inode')))?.toString(), String(keys.length), 'the metadata reads back after a reopen')
})

t.test('compaction never writes a table that holds block keys and metadata keys together, so later blocks move down a level without being rewritten', async t => {
  const { db } = openDb(t)
  const { block, keys } = await writeReplfsBatches(db, 64, 4)
  await db.compactRange(Buffer.from([0]), Buffer.from([0xff]))
  const tables = db.getProperty('leveldb.sstables').split('\n').filter(l => l.includes('['))
  t.ok(tables.length >= 3, `compacted into several tables (${tables.length})`)
  // Each line: " <file>:<size>['<smallest>' @ <seq> : <type> .. '<largest>' @ <seq> : <type>]"
  const mixed = tables.filter(l => {
    const m = /\['(.)[^']*' @ .* \.\. '(.)[^']*' @/.exec(l)
    return m === null || m[1] !== m[2]
  })
  t.same(mixed, [], 'no table spans two key prefixes')
  for (const i of [0, 100, keys.length - 1]) t.ok((await db.get(keys[i]))?.equals(block), `block ${i} reads back`)
})
