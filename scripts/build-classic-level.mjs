#!/usr/bin/env node
// Rebuild classic-level (LevelDB) from its sources with patches/classic-level+3.0.0.patch, so that
// LevelDB computes its CRC32C checksums (every log record, every table block it writes) with
// SSE4.2 instead of the portable byte-table loop of the stock prebuild: that loop was ~21% of the
// mount process's CPU while writing. The patch compiles only that function for SSE4.2 and LevelDB
// checks the CPU at run time, so the binary still runs (portably) without SSE4.2. The same patch
// makes batch_do size each WriteBatch once, read Buffers in place and reuse its batches (building
// a fresh multi-MiB batch faulted in every page), and turns off LevelDB's mmap of table files
// (every page a read or compaction touched counted in the process's RSS). Last, it keeps replfs's
// data blocks out of LevelDB's compactions (db_impl.cc): a memtable whose run of block keys is
// large is written as a table of its own, which overlaps nothing and goes straight to level 2,
// and a compaction ends an output table where the keys' first byte changes. Before, every table
// also held the metadata keys each batch rewrites, spanned every later block, and each compaction
// rewrote the new blocks with it (512 MiB written: ~520 MB compacted, ~0.8 s of stalled writes).
//
// Runs from "postinstall" after `patch-package`. Idempotent: skips the build when
// build/Release/classic_level.node is newer than the patched source and loads; --force (or
// CLASSIC_LEVEL_FORCE_REBUILD=1) rebuilds anyway. Never downloads Node headers.
import fs from 'node:fs'
import path from 'node:path'
import { probe, rebuild, rel, resolvedBinding, sameFile, target, upToDate } from './native-build.mjs'

const TAG = '[build-classic-level]'
const { pkgDir, binary, fail, force } = target('classic-level', 'classic_level.node', TAG, 'CLASSIC_LEVEL_FORCE_REBUILD')
const patched = 'deps/leveldb/leveldb-1.20/port/port_posix_sse.cc'
const alsoPatched = ['deps/leveldb/leveldb-1.20/util/env_posix.cc', 'deps/leveldb/leveldb-1.20/include/leveldb/write_batch.h', 'deps/leveldb/leveldb-1.20/db/db_impl.cc']

if (!fs.readFileSync(path.join(pkgDir, patched), 'utf8').includes('REPLFS_SSE42_TARGET') ||
    !fs.readFileSync(path.join(pkgDir, 'binding.cc'), 'utf8').includes('GiveBackBatch') ||
    !fs.readFileSync(path.join(pkgDir, 'deps/leveldb/leveldb-1.20/db/db_impl.cc'), 'utf8').includes('class FlushRunIterator')) {
  fail(`${rel(path.join(pkgDir, patched))} is not patched: is patches/classic-level+3.0.0.patch applied?`)
}

// In a fresh process: node-gyp-build picks our build over the prebuild, and a database opens,
// takes a write and reads it back (LevelDB checks the accelerated CRC against a known value at
// start and falls back to the portable one if it disagrees).
function verify () {
  const where = resolvedBinding(pkgDir)
  if (where.error !== undefined) return { ok: false, why: 'loading classic-level failed:\n' + where.error }
  if (!sameFile(where.resolved, binary)) return { ok: false, why: `node-gyp-build resolved ${where.resolved}, expected ${binary}` }
  const dir = fs.mkdtempSync(path.join(process.env.TMPDIR || '/tmp', 'replfs-classic-level-'))
  try {
    const r = probe(`
      const { ClassicLevel } = require('classic-level')
      ;(async () => {
        const db = new ClassicLevel(${JSON.stringify(dir)}, { valueEncoding: 'buffer' })
        await db.put('k', Buffer.alloc(100000, 7))
        await db.close()
        const again = new ClassicLevel(${JSON.stringify(dir)}, { valueEncoding: 'buffer' })
        const v = await again.get('k')
        await again.close()
        console.log(JSON.stringify({ ok: v.length === 100000 && v.every(b => b === 7) }))
      })().catch(err => { console.error(err.stack); process.exit(1) })`)
    if (r.error !== undefined) return { ok: false, why: 'a LevelDB round trip failed:\n' + r.error }
    return r.ok === true ? { ok: true } : { ok: false, why: 'a LevelDB round trip read back the wrong bytes' }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

if (!force && upToDate(pkgDir, binary, [patched, ...alsoPatched, 'binding.cc', 'binding.gyp']) && verify().ok) {
  console.log(`${TAG} OK: ${rel(binary)} is up to date and verified (use --force to rebuild)`)
  process.exit(0)
}

const headers = rebuild(pkgDir, binary, fail, ['-j', 'max'])
const v = verify()
if (!v.ok) fail(v.why)
console.log(`${TAG} OK: built ${rel(binary)} (node headers: ${headers}); loads, round trip verified`)
