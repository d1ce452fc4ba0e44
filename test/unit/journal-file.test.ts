import t from 'tap'
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { JournalFile, type JournalEntry, type JournalReader } from '../../src/log/journal-file.js'
import { releasePages } from '../../src/util/process-addon.js'

function tempDir (t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'replfs-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return join(dir, 'journal')
}

/** A record whose bytes are distinct per seq and whose length varies. */
function rec (seq: number, len = 100 + (seq * 37) % 900): Buffer {
  const b = Buffer.alloc(len)
  for (let i = 0; i < len; i++) b[i] = (seq * 131 + i * 7) & 0xff
  if (len >= 4) b.writeUInt32BE(seq, 0)
  return b
}

async function readAll (r: JournalReader, upto: number, chunk = 4096): Promise<JournalEntry[]> {
  const out: JournalEntry[] = []
  for (;;) {
    const got = await r.next(chunk, upto)
    if (got.length === 0) return out
    out.push(...got)
  }
}

function segFiles (dir: string): string[] {
  return readdirSync(dir).filter(n => n.endsWith('.seg')).sort()
}

function dirBytes (dir: string): number {
  return segFiles(dir).reduce((s, n) => s + statSync(join(dir, n)).size, 0)
}

t.test('records round-trip byte-exact across segment rotations', async t => {
  const dir = tempDir(t)
  const j = await JournalFile.open({ dir, segmentBytes: 8 * 1024 }, 0)
  t.equal(j.firstSeq, 1)
  t.equal(j.lastSeq, 0)
  for (let s = 1; s <= 300; s++) j.append(s, rec(s))
  t.equal(j.lastSeq, 300)
  const files = segFiles(dir)
  t.ok(files.length >= 10, `${files.length} segments`)
  t.equal(files[0], '0000000000000001.seg', 'segments are named by their first seq in 16 hex digits')
  t.equal(j.bytes, dirBytes(dir), 'bytes matches the files')
  const expectBytes = Array.from({ length: 300 }, (_, i) => 16 + rec(i + 1).length).reduce((a, b) => a + b, 0)
  t.equal(j.bytes, expectBytes, 'each entry costs a 16-byte header plus its record')

  // The first entry on disk, decoded by hand.
  const raw = readFileSync(join(dir, files[0]))
  const r1 = rec(1)
  t.equal(raw.readUInt32BE(0), r1.length)
  t.equal(raw.readBigUInt64BE(8), 1n)
  t.equal(raw.readUInt32BE(4), crc32(Buffer.concat([raw.subarray(8, 16), r1])))
  t.same(raw.subarray(16, 16 + r1.length), r1)

  const r = j.reader(1)
  const got = await readAll(r, 300)
  t.equal(got.length, 300)
  t.ok(got.every((e, i) => e.seq === i + 1 && e.record.equals(rec(i + 1))), 'every record is exact')
  t.equal(r.position, 301)
  r.close()

  const mid = j.reader(123)
  const part = await readAll(mid, 200, 1)
  t.same(part.map(e => e.seq), Array.from({ length: 78 }, (_, i) => 123 + i), 'reads from the middle, one entry per call with a tiny budget, stop at uptoSeq')
  mid.close()
  t.equal(j.bytesAfter(250), Array.from({ length: 50 }, (_, i) => 16 + rec(251 + i).length).reduce((a, b) => a + b, 0))
  t.equal(j.bytesAfter(300), 0)
  await j.close()

  const again = await JournalFile.open({ dir, segmentBytes: 8 * 1024 }, 300)
  t.equal(again.firstSeq, 1)
  t.equal(again.lastSeq, 300)
  const all = await readAll(again.reader(1), 300, 1 << 20)
  t.ok(all.length === 300 && all.every((e, i) => e.record.equals(rec(i + 1))), 'reopened journal serves the same bytes')
  await again.close()
})

t.test('a reader keeps up with concurrent appends, including into new segments', async t => {
  const dir = tempDir(t)
  const j = await JournalFile.open({ dir, segmentBytes: 4096 }, 0)
  const r = j.reader(1)
  const got: JournalEntry[] = []
  let s = 0
  while (s < 500) {
    for (let k = 0; k < 7 && s < 500; k++) { s++; j.append(s, rec(s)) }
    const p = r.next(3000, Number.MAX_SAFE_INTEGER)
    s++; j.append(s, rec(s)) // appended while the read is in flight
    got.push(...await p)
  }
  got.push(...await readAll(r, j.lastSeq))
  t.equal(got.length, j.lastSeq)
  t.ok(got.every((e, i) => e.seq === i + 1 && e.record.equals(rec(i + 1))), 'every record arrives once, in order, exact')
  t.same(await r.next(1 << 20, Number.MAX_SAFE_INTEGER), [], 'nothing more')
  r.close()
  await j.close()
})

t.test('reopen with a lower store seq cuts the tail; with a higher one restarts empty', async t => {
  const dir = tempDir(t)
  let j = await JournalFile.open({ dir, segmentBytes: 4096 }, 0)
  for (let s = 1; s <= 100; s++) j.append(s, rec(s))
  await j.close()

  j = await JournalFile.open({ dir, segmentBytes: 4096 }, 60)
  t.equal(j.firstSeq, 1)
  t.equal(j.lastSeq, 60, 'entries past the store seq are cut')
  const expect = Array.from({ length: 60 }, (_, i) => 16 + rec(i + 1).length).reduce((a, b) => a + b, 0)
  t.equal(dirBytes(dir), expect, 'files truncated at the first entry past the seq, later segments deleted')
  t.equal(j.bytes, expect)
  const got = await readAll(j.reader(1), 1000)
  t.same(got.map(e => e.seq), Array.from({ length: 60 }, (_, i) => i + 1))
  j.append(61, rec(61, 10))
  t.throws(() => j.append(63, rec(63)), { code: 'JOURNAL_SEQUENCE' })
  await j.close()

  j = await JournalFile.open({ dir, segmentBytes: 4096 }, 75)
  t.equal(j.firstSeq, 76, 'records 62..75 missing: journal restarts after the store seq')
  t.equal(j.lastSeq, 75)
  t.equal(j.bytes, 0)
  t.same(segFiles(dir), [], 'all segments deleted')
  t.throws(() => j.reader(1), { code: 'JOURNAL_TRIMMED' })
  j.append(76, rec(76))
  t.same(segFiles(dir), ['000000000000004c.seg'])
  t.same((await readAll(j.reader(76), 76)).map(e => e.record), [rec(76)])
  await j.close()
})

t.test('a torn tail and garbage bytes are cut back to the last good entry', async t => {
  const dir = tempDir(t)
  let j = await JournalFile.open({ dir }, 0)
  for (let s = 1; s <= 20; s++) j.append(s, rec(s))
  await j.close()
  const file = join(dir, '0000000000000001.seg')
  const full = statSync(file).size
  const lastLen = 16 + rec(20).length
  truncateSync(file, full - 5) // entry 20 torn mid-record
  j = await JournalFile.open({ dir }, 19)
  t.equal(j.lastSeq, 19)
  t.equal(statSync(file).size, full - lastLen, 'file truncated at the torn entry')
  j.append(20, rec(20))
  await j.close()

  appendFileSync(file, Buffer.from('this is not a journal entry at all, just junk'))
  j = await JournalFile.open({ dir }, 20)
  t.equal(j.lastSeq, 20)
  t.equal(statSync(file).size, full, 'garbage after the last entry removed')
  const got = await readAll(j.reader(1), 20)
  t.ok(got.length === 20 && got.every((e, i) => e.record.equals(rec(i + 1))))
  await j.close()

  // A torn header (fewer than 16 bytes) too.
  truncateSync(file, full - lastLen + 7)
  j = await JournalFile.open({ dir }, 19)
  t.equal(j.lastSeq, 19)
  t.equal(statSync(file).size, full - lastLen)
  await j.close()
})

t.test('a flipped byte is caught by the crc', async t => {
  const dir = tempDir(t)
  let j = await JournalFile.open({ dir, segmentBytes: 2048 }, 0)
  for (let s = 1; s <= 60; s++) j.append(s, rec(s))
  await j.close()
  const files = segFiles(dir)
  t.ok(files.length >= 5)

  // In the newest segment: cut there; the store says 60, so the journal can no longer serve it.
  const newest = join(dir, files[files.length - 1])
  const firstOfNewest = parseInt(files[files.length - 1], 16)
  const buf = readFileSync(newest)
  buf[16 + 3] ^= 0x40 // inside the first record of that segment
  writeFileSync(newest, buf)
  j = await JournalFile.open({ dir, segmentBytes: 2048 }, firstOfNewest - 1)
  t.equal(j.lastSeq, firstOfNewest - 1, 'corrupt entry and everything after it cut')
  t.notOk(segFiles(dir).includes(files[files.length - 1]), 'the now empty segment is gone')
  for (let s = firstOfNewest; s <= 60; s++) j.append(s, rec(s))
  await j.close()

  // In the middle of an older segment: it and everything older are dropped.
  const files2 = segFiles(dir)
  const victim = join(dir, files2[2])
  const b2 = readFileSync(victim)
  b2[b2.length - 3] ^= 0x01 // last record of segment 2
  writeFileSync(victim, b2)
  j = await JournalFile.open({ dir, segmentBytes: 2048 }, 60)
  t.equal(j.firstSeq, parseInt(files2[3], 16), 'firstSeq moves past the damaged segment')
  t.equal(j.lastSeq, 60)
  t.same(segFiles(dir), files2.slice(3))
  const got = await readAll(j.reader(j.firstSeq), 60)
  t.ok(got.every(e => e.record.equals(rec(e.seq))) && got.length === 60 - j.firstSeq + 1)
  t.throws(() => j.reader(1), { code: 'JOURNAL_TRIMMED' })

  // Corruption that appears under a live journal is reported by the reader, not passed on.
  const cur = join(dir, segFiles(dir)[0])
  const b3 = readFileSync(cur)
  b3[20] ^= 0xff
  writeFileSync(cur, b3)
  await t.rejects(j.reader(j.firstSeq).next(1 << 20, 60), { code: 'STORE_CORRUPT' })
  t.equal(j.recordCrc(j.firstSeq), undefined, 'no crc for an entry that fails its checksum')
  await j.close()
})

t.test('trimming by maxBytes moves firstSeq; a reader of trimmed seqs gets JOURNAL_TRIMMED', async t => {
  const dir = tempDir(t)
  const j = await JournalFile.open({ dir, segmentBytes: 4096, maxBytes: 16 * 1024 }, 0)
  for (let s = 1; s <= 200; s++) j.append(s, rec(s, 1000))
  t.ok(j.bytes <= 16 * 1024 + 4096 + 1016, `bytes ${j.bytes} bounded`)
  t.equal(j.bytes, dirBytes(dir))
  const first = parseInt(segFiles(dir)[0], 16)
  t.ok(first > 1)
  t.equal(j.firstSeq, first, 'firstSeq is the oldest remaining segment\'s first entry')
  t.throws(() => j.reader(first - 1), { code: 'JOURNAL_TRIMMED' })
  const got = await readAll(j.reader(first), 200)
  t.equal(got[0].seq, first)
  t.equal(got.length, 200 - first + 1)

  // A live reader pins its segment up to 2x maxBytes, then loses it.
  const pinned = j.reader(j.firstSeq)
  const pinnedFirst = j.firstSeq
  let s = 201
  for (; j.bytes <= 2 * 16 * 1024 - 1016; s++) j.append(s, rec(s, 1000))
  t.equal(j.firstSeq, pinnedFirst, 'the pinned segment survives while under 2x maxBytes')
  for (let k = 0; k < 10; k++, s++) j.append(s, rec(s, 1000))
  t.ok(j.firstSeq > pinnedFirst, 'over 2x maxBytes the pinned segment is trimmed')
  await t.rejects(pinned.next(1 << 20, s), { code: 'JOURNAL_TRIMMED' })
  pinned.close()
  await j.close()
})

t.test('truncateAfter drops the tail and appends continue at the next seq', async t => {
  const dir = tempDir(t)
  const j = await JournalFile.open({ dir, segmentBytes: 4096 }, 0)
  for (let s = 1; s <= 100; s++) j.append(s, rec(s))
  const behind = j.reader(40)
  const ahead = j.reader(90)
  await readAll(ahead, 95)
  j.truncateAfter(50)
  t.equal(j.lastSeq, 50)
  const expect = Array.from({ length: 50 }, (_, i) => 16 + rec(i + 1).length).reduce((a, b) => a + b, 0)
  t.equal(j.bytes, expect)
  t.equal(dirBytes(dir), expect, 'files cut to exactly 50 entries')
  t.throws(() => j.append(52, rec(52)), { code: 'JOURNAL_SEQUENCE' })
  t.throws(() => j.append(50, rec(50)), { code: 'JOURNAL_SEQUENCE' })
  for (let s = 51; s <= 120; s++) j.append(s, rec(s, 50 + s))
  const got = await readAll(behind, 200)
  t.same(got.map(e => e.seq), Array.from({ length: 81 }, (_, i) => 40 + i))
  t.ok(got.every(e => e.record.equals(e.seq <= 50 ? rec(e.seq) : rec(e.seq, 50 + e.seq))), 'old entries before the cut, new ones after')
  await t.rejects(ahead.next(1 << 20, 200), { code: 'JOURNAL_TRIMMED' }, 'a reader past the cut cannot silently skip the new entries')
  await j.close()

  const again = await JournalFile.open({ dir, segmentBytes: 4096 }, 120)
  const all = await readAll(again.reader(1), 120)
  t.ok(all.length === 120 && all.every(e => e.record.equals(e.seq <= 50 ? rec(e.seq) : rec(e.seq, 50 + e.seq))), 'survives reopen')
  again.reset(500)
  t.equal(again.firstSeq, 501)
  t.equal(again.lastSeq, 500)
  t.same(segFiles(dir), [])
  again.append(501, rec(501))
  t.equal(again.bytesAfter(0), 16 + rec(501).length)
  await again.close()
})

t.test('recordCrc is zlib crc32 of the record bytes', async t => {
  const dir = tempDir(t)
  const j = await JournalFile.open({ dir, segmentBytes: 1024 }, 9)
  for (let s = 10; s <= 40; s++) j.append(s, rec(s))
  for (const s of [10, 25, 40]) t.equal(j.recordCrc(s), crc32(rec(s)), `seq ${s}`)
  t.equal(j.recordCrc(9), undefined)
  t.equal(j.recordCrc(41), undefined)
  j.append(41, Buffer.alloc(0))
  t.equal(j.recordCrc(41), crc32(Buffer.alloc(0)), 'empty record')
  t.same((await j.reader(41).next(10, 41)).map(e => e.record.length), [0])
  await j.close()
})

t.test('entries carry crc32 of their record, from memory and from the files alike, with the caller\'s crc or without', async t => {
  const dir = tempDir(t)
  const j = await JournalFile.open({ dir, segmentBytes: 4096 }, 0)
  for (let s = 1; s <= 60; s++) {
    if (s % 2 === 0) j.append(s, rec(s), crc32(rec(s)))
    else j.append(s, rec(s))
  }
  const fromMemory = await readAll(j.reader(1), 60)
  t.ok(fromMemory.length === 60 && fromMemory.every(e => e.crc === crc32(e.record)), 'served from memory')
  await j.close()
  const again = await JournalFile.open({ dir, segmentBytes: 4096 }, 60)
  const fromFiles = await readAll(again.reader(1), 60)
  t.ok(fromFiles.length === 60 && fromFiles.every((e, i) => e.record.equals(rec(i + 1)) && e.crc === crc32(e.record)), 'read back from the segment files')
  for (const s of [1, 30, 60]) t.equal(again.recordCrc(s), crc32(rec(s)), `recordCrc(${s}) from the files`)
  await again.close()
})

t.test('an append that hits ENOSPC throws DISK_FULL and leaves the journal exactly as before', async t => {
  const mnt = mkdtempSync(join(tmpdir(), 'replfs-test-tmpfs-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt])
  t.teardown(() => { try { execFileSync('umount', ['-l', mnt]) } catch {} rmSync(mnt, { recursive: true, force: true }) })
  const dir = join(mnt, 'journal')
  const j = await JournalFile.open({ dir, segmentBytes: 256 * 1024 }, 0)
  let s = 0
  let failure: (Error & { code?: string }) | null = null
  const big = (n: number): Buffer => rec(n, 60_000)
  while (failure === null && s < 100) {
    try {
      j.append(s + 1, big(s + 1))
      s++
    } catch (err) {
      failure = err as Error
    }
  }
  t.equal(failure?.code, 'DISK_FULL', `the disk filled after ${s} entries`)
  t.equal(j.lastSeq, s)
  t.equal(dirBytes(dir), j.bytes, 'partly written entry removed from the files')
  t.ok(segFiles(dir).every(n => statSync(join(dir, n)).size > 0), 'no empty segment left behind by a failed rotation')
  t.throws(() => j.append(s + 1, big(s + 1)), { code: 'DISK_FULL' }, 'still full')
  execFileSync('mount', ['-o', 'remount,size=8m', mnt])
  j.append(s + 1, big(s + 1))
  await j.sync()
  const got = await readAll(j.reader(1), s + 1, 1 << 20)
  t.equal(got.length, s + 1)
  t.ok(got.every(e => e.record.equals(big(e.seq))), 'every entry exact after space returns')
  await j.close()
  const again = await JournalFile.open({ dir, segmentBytes: 256 * 1024 }, s + 1)
  t.equal(again.lastSeq, s + 1, 'reopen finds nothing to cut')
  t.equal(dirBytes(dir), again.bytes)
  await again.close()
})

/** Bytes of `path` in the page cache (util-linux fincore). */
function cachedBytes (path: string): number {
  const out = execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path], { encoding: 'utf8' })
  return Number(out.trim())
}

t.test('written journal ranges leave the page cache as the journal grows, and still read back exactly', async t => {
  const MiB = 1024 * 1024
  const cached: Record<string, number> = {}
  for (const releaseWritten of [true, false]) {
    const dir = tempDir(t)
    const j = await JournalFile.open({ dir, releasePages: releaseWritten ? releasePages : undefined }, 0)
    for (let s = 1; s <= 48; s++) j.append(s, rec(s, MiB))
    const [seg] = segFiles(dir)
    cached[String(releaseWritten)] = cachedBytes(join(dir, seg))
    // Past RECENT_BYTES (16 MiB) the reader reads the segment file, dropped pages and all.
    const got = await readAll(j.reader(1), 48, 4 * MiB)
    t.equal(got.length, 48, `releaseWritten ${String(releaseWritten)}: every entry read back`)
    t.ok(got.every(e => e.record.equals(rec(e.seq, MiB))), `releaseWritten ${String(releaseWritten)}: byte-exact`)
    await j.close()
  }
  t.ok(cached.false >= 44 * MiB, `kept: ${(cached.false / MiB).toFixed(1)} MiB of 48 cached`)
  t.ok(cached.true <= 24 * MiB, `released: ${(cached.true / MiB).toFixed(1)} MiB of 48 cached`)
})
