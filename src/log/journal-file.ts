/**
 * The replication journal: every record, with its full payload, in append-only segment files, so a
 * primary can resend exactly the records a peer lacks after a disconnect or a crash.
 *
 * LevelDB keeps the volume state; writing the write payloads into it a second time cut its
 * throughput to 0.37x, so the journal lives in flat files (page cache, cheap appends) instead.
 *
 * On-disk format
 * --------------
 * A directory of segment files named `<seq of its first entry, 16 lower-case hex digits>.seg`.
 * Segments hold consecutive sequence numbers: segment N's entries run from its name up to the next
 * segment's name - 1. Each segment is a plain concatenation of entries:
 *
 *   offset 0   u32 BE   length of the record in bytes (L)
 *   offset 4   u32 BE   crc32 (zlib) over [seq as u64 BE][record bytes]
 *   offset 8   u64 BE   seq
 *   offset 16  L bytes  record
 *
 * There is no file header and no footer; a segment's length is the sum of its entries. The writer
 * rotates to a new segment once the current one has grown past `segmentBytes`, and deletes the
 * oldest whole segments while the journal holds more than `maxBytes`.
 *
 * Crash recovery (`open`): every entry's checksum is verified. The newest segment is cut at its
 * first torn or corrupt entry, and at the first entry newer than the store's committed seq. An
 * older segment that is damaged, or that does not end right where the next one starts, is
 * dropped together with everything older (the journal keeps the contiguous newest run). If what
 * is left ends before the store's seq, the journal cannot serve those records: it is emptied and
 * restarts right after the store's seq.
 *
 * Written ranges do not stay in the page cache: every 8 MiB the journal starts the writeback of
 * what it wrote and drops the chunk before from the cache (see releaseWritten), so a volume that
 * writes 1 GiB does not leave 1 GiB of journal cached, and new appends reuse freed pages.
 *
 * In memory the journal keeps, per segment, the file offset of each entry (a Float64Array, 8 bytes
 * an entry) and the number of bytes known to be written; never record bytes. Readers do
 * positional reads of whole runs of entries (one read per `next` call) up to that known length, so
 * they work while the writer appends to the same segment.
 *
 * Not thread-safe in the sense of concurrent `next` calls on one reader: a reader has one consumer.
 */
import { closeSync, fdatasync, fsync, ftruncateSync, mkdirSync, openSync, readSync, readdirSync, unlinkSync, writevSync } from 'node:fs'
import { open as openFile, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { crc32 } from 'node:zlib'
import type { Logger } from 'pino'
import { ReplfsError } from '../errors.js'
import { crc32Combine, crc32Suffix } from '../util/crc32.js'

export type PageRelease = (fd: number, offset: number, length: number, wait: boolean) => number

export interface JournalFileOptions {
  /** Directory for segments (created if missing), e.g. <store>/journal. */
  dir: string
  /** Rotate to a new segment file once the current one exceeds this (default 64 MiB). */
  segmentBytes?: number
  /**
   * Keep at most this many bytes of segments (default 1 GiB). Oldest whole segments are deleted
   * first, never the current one, never one a live reader still needs unless the journal holds
   * over 2x maxBytes (then that reader's next() throws JOURNAL_TRIMMED).
   */
  maxBytes?: number
  /**
   * Hands written ranges back to the kernel instead of leaving them cached (see releaseWritten):
   * wait = false starts a range's writeback, wait = true waits for it and drops the range's
   * pages. Returns 0 or a negative errno. The daemon passes native/process's `releasePages`
   * (src/util/process-addon.ts; Node has neither sync_file_range nor posix_fadvise); without it
   * pages stay cached.
   */
  releasePages?: PageRelease
  logger?: Logger
}

/** `crc`: crc32 of `record` alone (the entry's own checksum also covers its seq). */
export interface JournalEntry { seq: number, record: Buffer, crc: number }

export interface JournalReader {
  /**
   * Next entries in order, at most about `maxBytes` of records (at least one if any is available),
   * never past `uptoSeq`. Returns [] when there is nothing more up to uptoSeq. Throws
   * JOURNAL_TRIMMED if the segments it needs were trimmed (or the entries it already returned were
   * dropped by truncateAfter/reset).
   */
  next (maxBytes: number, uptoSeq: number): Promise<JournalEntry[]>
  /** seq the next call will start at */
  readonly position: number
  /** Releases the reader's pin on old segments. */
  close (): void
}

export const JOURNAL_SEGMENT_BYTES = 64 * 1024 * 1024
export const JOURNAL_MAX_BYTES = 1024 * 1024 * 1024
const RECENT_BYTES = 16 * 1024 * 1024
/** See releaseWritten. */
const RELEASE_CHUNK = 8 * 1024 * 1024
const PAGE = 4096
const HEADER = 16
const SEGMENT_NAME = /^([0-9a-f]{16})\.seg$/
/** Scan buffer for `open`'s checksum pass. */
const SCAN_CHUNK = 8 * 1024 * 1024

const fdatasyncP = promisify(fdatasync)
const fsyncP = promisify(fsync)

function segmentName (firstSeq: number): string {
  return firstSeq.toString(16).padStart(16, '0') + '.seg'
}

function seqBytes (seq: number): Buffer {
  const s = Buffer.allocUnsafe(8)
  s.writeBigUInt64BE(BigInt(seq))
  return s
}

function ioError (what: string, err: unknown): ReplfsError {
  const code = (err as NodeJS.ErrnoException)?.code
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new ReplfsError('DISK_FULL', `${what}: no space left on device`, { cause: err, hint: 'Free space on the store\'s disk or lower the journal size' })
  }
  return new ReplfsError('STORE_CORRUPT', `${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err })
}

function trimmed (message: string): ReplfsError {
  return new ReplfsError('JOURNAL_TRIMMED', message, { hint: 'The peer needs a full state copy' })
}

/** One segment file and the in-memory index of its entries. */
class Segment {
  /** Entry i (seq firstSeq + i) starts at offs[i]; it ends where the next starts, or at `size`. */
  offs: Float64Array = new Float64Array(64)
  count = 0
  /** Bytes of whole entries known to be written. */
  size = 0
  /** Writer's descriptor: the current segment's, or an older one's still waiting for sync(). */
  fd: number | null = null
  /** Pages before this offset were handed back to the kernel; writeback was started up to `started`. */
  released = 0
  started = 0
  constructor (readonly firstSeq: number, readonly path: string) {}

  push (off: number): void {
    if (this.count === this.offs.length) {
      const bigger = new Float64Array(this.offs.length * 2)
      bigger.set(this.offs)
      this.offs = bigger
    }
    this.offs[this.count++] = off
  }

  end (i: number): number { return i + 1 < this.count ? this.offs[i + 1] : this.size }
  get lastSeq (): number { return this.firstSeq + this.count - 1 }
}

interface Scanned { seg: Segment, fileSize: number, damaged: boolean }

export class JournalFile {
  private segments: Segment[] = []
  /** firstSeq when there are no segments. */
  private emptyFirst: number
  private total = 0
  private readonly segmentBytes: number
  private readonly maxBytes: number
  private readonly logger?: Logger
  private readonly readers = new Set<Reader>()
  /** Bumped by truncateAfter/reset: a reader whose read spanned one re-checks. */
  generation = 0
  /**
   * The newest records, kept in memory up to RECENT_BYTES: a reader that keeps up with the
   * writer (the usual case) is served from here, without a read through the thread pool.
   */
  private readonly recent = new Map<number, { record: Buffer, crc: number }>()
  private recentFirst = 0
  private recentBytes = 0
  private dirDirty = false
  private closed = false
  /** fdatasync calls in flight per descriptor; a close waits for them. */
  private readonly inflight = new Map<number, number>()
  private readonly deferredClose = new Set<number>()
  /** Hands written ranges back to the kernel (see releaseWritten); null once that failed. */
  private releasePages: PageRelease | null

  private constructor (readonly dir: string, opts: JournalFileOptions, first: number) {
    this.segmentBytes = opts.segmentBytes ?? JOURNAL_SEGMENT_BYTES
    this.maxBytes = opts.maxBytes ?? JOURNAL_MAX_BYTES
    this.logger = opts.logger
    this.emptyFirst = first
    this.releasePages = opts.releasePages ?? null
  }

  /**
   * Opens (or creates) the journal. `lastSeq` is the sequence number the store says it last
   * committed. See the top comment for the recovery rules.
   */
  static async open (opts: JournalFileOptions, lastSeq: number): Promise<JournalFile> {
    try {
      mkdirSync(opts.dir, { recursive: true })
    } catch (err) {
      throw ioError(`cannot create journal directory ${opts.dir}`, err)
    }
    const j = new JournalFile(opts.dir, opts, lastSeq + 1)
    let names: string[]
    try {
      names = readdirSync(opts.dir)
    } catch (err) {
      throw ioError(`cannot list journal directory ${opts.dir}`, err)
    }
    const found: Segment[] = []
    for (const name of names) {
      const m = SEGMENT_NAME.exec(name)
      if (m !== null) found.push(new Segment(parseInt(m[1], 16), join(opts.dir, name)))
    }
    found.sort((a, b) => a.firstSeq - b.firstSeq)
    const scanned: Scanned[] = []
    for (const seg of found) scanned.push(await scanSegment(seg, lastSeq))

    // Entries past the store's seq are gone already (scanSegment stops there); empty tails go.
    const drop: Segment[] = []
    while (scanned.length > 0 && scanned[scanned.length - 1].seg.count === 0) drop.push(scanned.pop()!.seg)
    // Keep the newest contiguous, undamaged run.
    let keepFrom = scanned.length - 1
    while (keepFrom > 0) {
      const prev = scanned[keepFrom - 1]
      const ok = !prev.damaged && prev.seg.count > 0 && prev.seg.lastSeq + 1 === scanned[keepFrom].seg.firstSeq
      if (!ok) break
      keepFrom--
    }
    if (keepFrom > 0) {
      const lost = scanned.slice(0, keepFrom)
      j.logger?.warn({ dir: opts.dir, segments: lost.map(s => s.seg.path) }, 'journal: older segments damaged or not contiguous, dropped')
      for (const s of lost) drop.push(s.seg)
    }
    const kept = keepFrom >= 0 ? scanned.slice(keepFrom) : []
    const newest = kept.length > 0 ? kept[kept.length - 1].seg.lastSeq : null
    if (newest === null || newest < lastSeq) {
      for (const s of kept) drop.push(s.seg)
      const missing = newest === null ? lastSeq : lastSeq - newest
      if (missing > 0) {
        j.logger?.warn({ dir: opts.dir, lastSeq, newest, unavailable: missing },
          `journal: ${missing} record(s) up to seq ${lastSeq} are not in the journal; it restarts empty at seq ${lastSeq + 1}`)
      }
      kept.length = 0
    }
    for (const seg of drop) removeFile(seg.path, j.logger)
    if (drop.length > 0) j.dirDirty = true
    for (const s of kept) {
      if (s.fileSize !== s.seg.size) {
        j.logger?.warn({ path: s.seg.path, from: s.fileSize, to: s.seg.size }, 'journal: cut torn or uncommitted tail')
        const fd = openSync(s.seg.path, 'r+')
        try { ftruncateSync(fd, s.seg.size) } finally { closeSync(fd) }
      }
      j.segments.push(s.seg)
      j.total += s.seg.size
    }
    if (j.segments.length > 0) {
      const cur = j.segments[j.segments.length - 1]
      try {
        cur.fd = openSync(cur.path, 'r+')
      } catch (err) {
        throw ioError(`cannot open journal segment ${cur.path}`, err)
      }
    }
    j.trim()
    return j
  }

  get firstSeq (): number { return this.segments.length > 0 ? this.segments[0].firstSeq : this.emptyFirst }
  get lastSeq (): number {
    return this.segments.length > 0 ? this.segments[this.segments.length - 1].lastSeq : this.emptyFirst - 1
  }

  get bytes (): number { return this.total }

  /**
   * Appends one entry (synchronously). seq must be lastSeq + 1. On a write error the journal is
   * left exactly as before and DISK_FULL (ENOSPC) or STORE_CORRUPT is thrown.
   */
  /** `crc`: crc32 of `record`, if the caller has it (else it is computed here). */
  append (seq: number, record: Buffer, crc: number = crc32(record)): void {
    this.assertOpen()
    if (seq !== this.lastSeq + 1) {
      throw new ReplfsError('JOURNAL_SEQUENCE', `journal append of seq ${seq}, expected ${this.lastSeq + 1}`)
    }
    if (record.length > 0xffffffff) throw new ReplfsError('BAD_ARGUMENT', `journal record of ${record.length} bytes is too large`)
    let seg = this.segments.length > 0 ? this.segments[this.segments.length - 1] : null
    let fresh = false
    if (seg === null || (seg.count > 0 && seg.size >= this.segmentBytes)) {
      const created = new Segment(seq, join(this.dir, segmentName(seq)))
      try {
        created.fd = openSync(created.path, 'w+')
      } catch (err) {
        throw ioError(`cannot create journal segment ${created.path}`, err)
      }
      seg = created
      fresh = true
    }
    const header = Buffer.allocUnsafe(HEADER)
    header.writeUInt32BE(record.length, 0)
    const seqBuf = header.subarray(8, 16)
    seqBuf.writeBigUInt64BE(BigInt(seq))
    header.writeUInt32BE(crc32Combine(crc32(seqBuf), crc, record.length), 4)
    const len = HEADER + record.length
    const fd = seg.fd!
    try {
      let done = 0
      while (done < len) {
        const bufs = done < HEADER ? [header.subarray(done), record] : [record.subarray(done - HEADER)]
        const n = writevSync(fd, bufs, seg.size + done)
        if (n <= 0) throw new Error('write made no progress')
        done += n
      }
    } catch (err) {
      if (fresh) {
        try { closeSync(fd) } catch {}
        removeFile(seg.path, this.logger)
      } else {
        try {
          ftruncateSync(fd, seg.size)
        } catch (e) {
          // Readers never look past seg.size and the next append overwrites; reopen cuts the rest.
          this.logger?.warn({ err: e, path: seg.path }, 'journal: could not truncate a failed append')
        }
      }
      throw ioError(`journal append of seq ${seq} failed`, err)
    }
    if (fresh) {
      // The previous segment's writer descriptor stays open until sync() has flushed it.
      this.segments.push(seg)
      this.dirDirty = true
    }
    seg.push(seg.size)
    seg.size += len
    this.total += len
    this.remember(seq, record, crc)
    if (fresh) {
      const prev = this.segments.length > 1 ? this.segments[this.segments.length - 2] : null
      if (prev !== null) this.releaseWritten(prev, true)
      this.trim()
    }
    this.releaseWritten(seg, false)
  }

  /**
   * Journal pages are written once and read back only by a reader that fell over RECENT_BYTES
   * behind, so they should not pile up as page cache: each fresh page costs more CPU to fill
   * than its copy (2.3 s per GiB on the machines this is measured on, against ~0.1 s to
   * overwrite a page already owned), and a volume that writes 1 GiB would otherwise leave 1 GiB
   * of journal cached. Every RELEASE_CHUNK, the chunk written before the last one (its writeback
   * started then, so it is done by now) is dropped from the cache and the last chunk's
   * writeback starts. The pages freed are what the next writes get. `all`: a finished segment,
   * whose tail's writeback starts however short it is.
   */
  private releaseWritten (seg: Segment, all: boolean): void {
    if (this.releasePages === null || seg.fd === null) return
    const end = Math.floor(seg.size / PAGE) * PAGE
    if (!all && end - seg.started < RELEASE_CHUNK) return
    const fd = seg.fd
    const call = (from: number, to: number, wait: boolean): void => {
      if (to <= from || this.releasePages === null) return
      const res = this.releasePages(fd, from, to - from, wait)
      if (res !== 0) {
        this.releasePages = null
        this.logger?.warn({ path: seg.path, errno: -res }, 'journal: cannot hand written pages back to the kernel; they stay cached')
      }
    }
    call(seg.released, seg.started, true)
    seg.released = seg.started
    call(seg.started, end, false)
    seg.started = end
  }

  private remember (seq: number, record: Buffer, crc: number): void {
    if (this.recent.size === 0) this.recentFirst = seq
    this.recent.set(seq, { record, crc })
    this.recentBytes += record.length
    while (this.recentBytes > RECENT_BYTES && this.recent.size > 1) {
      const old = this.recent.get(this.recentFirst)
      this.recent.delete(this.recentFirst++)
      this.recentBytes -= old?.record.length ?? 0
    }
  }

  /** A kept record and its crc, if it is still in memory. */
  recentRecord (seq: number): { record: Buffer, crc: number } | undefined {
    return this.recent.get(seq)
  }

  private forgetAfter (seq: number): void {
    for (let s = Math.max(seq + 1, this.recentFirst); this.recent.has(s); s++) {
      this.recentBytes -= this.recent.get(s)!.record.length
      this.recent.delete(s)
    }
    if (this.recent.size === 0) this.recentBytes = 0
  }

  /** fdatasync of everything appended so far (older segments still unsynced too, and the directory). */
  async sync (): Promise<void> {
    this.assertOpen()
    const cur = this.segments.length > 0 ? this.segments[this.segments.length - 1] : null
    const older = this.segments.filter(s => s !== cur && s.fd !== null)
    for (const s of older) {
      await this.syncFd(s.fd!, s.path)
      // (Unless a truncateAfter made it the current segment again meanwhile.)
      if (s.fd !== null && s !== this.segments[this.segments.length - 1]) {
        this.closeFd(s.fd)
        s.fd = null
      }
    }
    if (cur !== null && cur.fd !== null) await this.syncFd(cur.fd, cur.path)
    if (this.dirDirty) {
      this.dirDirty = false
      let dfd: number | null = null
      try {
        dfd = openSync(this.dir, 'r')
        await fsyncP(dfd)
      } catch (err) {
        this.dirDirty = true
        throw ioError(`journal directory sync of ${this.dir} failed`, err)
      } finally {
        if (dfd !== null) closeSync(dfd)
      }
    }
  }

  /** Drops every entry with seq > `seq` (after a store write failed and the state rolled back). */
  truncateAfter (seq: number): void {
    this.assertOpen()
    if (seq >= this.lastSeq) return
    if (seq < this.firstSeq - 1) {
      this.reset(seq)
      return
    }
    const idx = this.segmentIndex(seq + 1)
    const seg = this.segments[idx]
    for (const s of this.segments.splice(idx + 1)) {
      this.total -= s.size
      this.removeSegment(s)
    }
    const cut = seg.offs[seq + 1 - seg.firstSeq]
    try {
      if (seg.fd === null) seg.fd = openSync(seg.path, 'r+')
      ftruncateSync(seg.fd, cut)
    } catch (err) {
      throw ioError(`journal truncate of ${seg.path} failed`, err)
    }
    this.total -= seg.size - cut
    seg.size = cut
    seg.started = Math.min(seg.started, Math.floor(cut / PAGE) * PAGE)
    seg.released = Math.min(seg.released, seg.started)
    seg.count = seq + 1 - seg.firstSeq
    this.dirDirty = true
    this.invalidateReaders(seq + 1)
  }

  /** Deletes everything and restarts empty at firstSeq = seq + 1 (after a full state copy). */
  reset (seq: number): void {
    this.assertOpen()
    for (const s of this.segments.splice(0)) this.removeSegment(s)
    this.recent.clear()
    this.recentBytes = 0
    this.total = 0
    this.emptyFirst = seq + 1
    this.dirDirty = true
    this.invalidateReaders(seq + 1)
  }

  /** Bytes (headers included) of the entries with seq in (afterSeq, lastSeq]. */
  bytesAfter (afterSeq: number): number {
    if (afterSeq >= this.lastSeq || this.segments.length === 0) return 0
    const from = Math.max(afterSeq + 1, this.firstSeq)
    const idx = this.segmentIndex(from)
    const seg = this.segments[idx]
    let sum = seg.size - seg.offs[from - seg.firstSeq]
    for (let i = idx + 1; i < this.segments.length; i++) sum += this.segments[i].size
    return sum
  }

  /** A cursor reading entries from `fromSeq` on. Throws JOURNAL_TRIMMED if fromSeq < firstSeq. */
  reader (fromSeq: number): JournalReader {
    this.assertOpen()
    if (fromSeq < this.firstSeq) {
      throw trimmed(`journal holds seq ${this.firstSeq}..${this.lastSeq}; seq ${fromSeq} was trimmed`)
    }
    if (fromSeq > this.lastSeq + 1) {
      throw new ReplfsError('BAD_ARGUMENT', `journal reader from seq ${fromSeq}, past the end (${this.lastSeq})`)
    }
    const r = new Reader(this, fromSeq)
    this.readers.add(r)
    return r
  }

  /** crc32 of the record bytes of entry `seq`, or undefined if it is not available. */
  recordCrc (seq: number): number | undefined {
    if (this.closed || seq < this.firstSeq || seq > this.lastSeq) return undefined
    const kept = this.recent.get(seq)
    if (kept !== undefined) return kept.crc
    const seg = this.segments[this.segmentIndex(seq)]
    const i = seq - seg.firstSeq
    const start = seg.offs[i]
    const buf = Buffer.allocUnsafe(seg.end(i) - start)
    let fd: number | null = null
    try {
      fd = openSync(seg.path, 'r')
      readFully(fd, buf, start)
    } catch (err) {
      this.logger?.warn({ err, seq, path: seg.path }, 'journal: cannot read entry for its crc')
      return undefined
    } finally {
      if (fd !== null) closeSync(fd)
    }
    const record = buf.subarray(HEADER)
    const seqCrc = crc32(seqBytes(seq))
    if (buf.readUInt32BE(0) !== record.length || buf.readUInt32BE(4) !== crc32(record, seqCrc) ||
        Number(buf.readBigUInt64BE(8)) !== seq) {
      this.logger?.warn({ seq, path: seg.path }, 'journal: entry fails its checksum')
      return undefined
    }
    return crc32Suffix(buf.readUInt32BE(4), seqCrc, record.length)
  }

  /** Flushes what was appended, closes the files and every reader. */
  async close (): Promise<void> {
    if (this.closed) return
    try {
      await this.sync()
    } finally {
      this.closed = true
      for (const r of [...this.readers]) r.close()
      for (const s of this.segments) {
        if (s.fd !== null) this.closeFd(s.fd)
        s.fd = null
      }
    }
  }

  // --- internals used by Reader ---------------------------------------------------------------

  /** @internal */
  segmentAt (seq: number): Segment { return this.segments[this.segmentIndex(seq)] }
  /** @internal */
  hasSegment (seg: Segment): boolean { return this.segments.includes(seg) }
  /** @internal */
  readerClosed (r: Reader): void {
    this.readers.delete(r)
    if (!this.closed) this.trim()
  }

  private assertOpen (): void {
    if (this.closed) throw new ReplfsError('BAD_ARGUMENT', `journal ${this.dir} is closed`)
  }

  /** Index of the segment holding seq (firstSeq <= seq <= lastSeq + 1 for the last one). */
  private segmentIndex (seq: number): number {
    let lo = 0
    let hi = this.segments.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (this.segments[mid].firstSeq <= seq) lo = mid
      else hi = mid - 1
    }
    return lo
  }

  /** Deletes the oldest whole segments while over maxBytes (see JournalFileOptions.maxBytes). */
  private trim (): void {
    while (this.segments.length > 1 && this.total > this.maxBytes) {
      const old = this.segments[0]
      const nextFirst = this.segments[1].firstSeq
      let pinned = false
      for (const r of this.readers) {
        if (r.position >= old.firstSeq && r.position < nextFirst) pinned = true
      }
      if (pinned && this.total <= 2 * this.maxBytes) break
      if (pinned) {
        this.logger?.warn({ path: old.path, bytes: this.total, maxBytes: this.maxBytes },
          'journal: over twice its size limit, trimming a segment a reader still needs')
      }
      this.segments.shift()
      this.total -= old.size
      this.removeSegment(old)
      this.dirDirty = true
    }
  }

  private removeSegment (seg: Segment): void {
    if (seg.fd !== null) this.closeFd(seg.fd)
    seg.fd = null
    removeFile(seg.path, this.logger)
  }

  private invalidateReaders (nextSeq: number): void {
    this.generation++
    this.forgetAfter(nextSeq - 1)
    for (const r of this.readers) {
      if (r.position > nextSeq) r.invalidate(`journal entries from seq ${nextSeq} were dropped after reader passed them`)
    }
  }

  private async syncFd (fd: number, path: string): Promise<void> {
    this.inflight.set(fd, (this.inflight.get(fd) ?? 0) + 1)
    try {
      await fdatasyncP(fd)
    } catch (err) {
      throw ioError(`journal sync of ${path} failed`, err)
    } finally {
      const n = this.inflight.get(fd)! - 1
      if (n > 0) this.inflight.set(fd, n)
      else {
        this.inflight.delete(fd)
        if (this.deferredClose.delete(fd)) closeSync(fd)
      }
    }
  }

  /** Closes a writer descriptor, or defers that until the fdatasync running on it is done. */
  private closeFd (fd: number): void {
    if (this.inflight.has(fd)) this.deferredClose.add(fd)
    else closeSync(fd)
  }
}

class Reader implements JournalReader {
  private pos: number
  private handle: FileHandle | null = null
  private handleSeg: Segment | null = null
  private invalid: string | null = null
  private closed = false

  constructor (private readonly j: JournalFile, from: number) {
    this.pos = from
  }

  get position (): number { return this.pos }

  invalidate (why: string): void { this.invalid ??= why }

  async next (maxBytes: number, uptoSeq: number): Promise<JournalEntry[]> {
    for (;;) {
      if (this.closed) throw new ReplfsError('BAD_ARGUMENT', 'journal reader is closed')
      if (this.invalid !== null) throw trimmed(this.invalid)
      const j = this.j
      if (this.pos < j.firstSeq) {
        throw trimmed(`journal holds seq ${j.firstSeq}..${j.lastSeq}; seq ${this.pos} was trimmed`)
      }
      const last = Math.min(uptoSeq, j.lastSeq)
      if (this.pos > last) return []
      const fromMemory = this.fromMemory(maxBytes, last)
      if (fromMemory.length > 0) return fromMemory
      const seg = j.segmentAt(this.pos)
      const i = this.pos - seg.firstSeq
      const start = seg.offs[i]
      let n = 1
      let end = seg.end(i)
      while (i + n < seg.count && seg.firstSeq + i + n <= last) {
        const e = seg.end(i + n)
        if (e - start - HEADER * (n + 1) > maxBytes) break
        end = e
        n++
      }
      const generation = j.generation
      const buf = Buffer.allocUnsafe(end - start)
      try {
        const fh = await this.handleFor(seg)
        let done = 0
        while (done < buf.length) {
          const { bytesRead } = await fh.read(buf, done, buf.length - done, start + done)
          if (bytesRead === 0) throw new Error(`short read at ${start + done}`)
          done += bytesRead
        }
      } catch (err) {
        if (j.generation !== generation || !j.hasSegment(seg)) continue
        throw ioError(`journal read of ${seg.path} failed`, err)
      }
      // A truncateAfter/reset during the read may have replaced what we read: look again.
      if (j.generation !== generation) continue
      if (this.closed) return []
      const out: JournalEntry[] = []
      let off = 0
      for (let k = 0; k < n; k++) {
        const seq = this.pos + k
        const len = buf.readUInt32BE(off)
        const crc = buf.readUInt32BE(off + 4)
        const s = Number(buf.readBigUInt64BE(off + 8))
        const record = buf.subarray(off + HEADER, off + HEADER + len)
        const seqCrc = crc32(buf.subarray(off + 8, off + 16))
        if (s !== seq || off + HEADER + len > buf.length || crc !== crc32(record, seqCrc)) {
          throw new ReplfsError('STORE_CORRUPT', `journal entry for seq ${seq} in ${seg.path} at offset ${start + off} fails its checksum`)
        }
        out.push({ seq, record, crc: crc32Suffix(crc, seqCrc, len) })
        off += HEADER + len
      }
      this.pos += n
      return out
    }
  }

  private fromMemory (maxBytes: number, last: number): JournalEntry[] {
    const out: JournalEntry[] = []
    let bytes = 0
    while (this.pos <= last && (out.length === 0 || bytes < maxBytes)) {
      const kept = this.j.recentRecord(this.pos)
      if (kept === undefined) break
      out.push({ seq: this.pos, record: kept.record, crc: kept.crc })
      bytes += kept.record.length
      this.pos++
    }
    return out
  }

  close (): void {
    if (this.closed) return
    this.closed = true
    this.dropHandle()
    this.j.readerClosed(this)
  }

  private async handleFor (seg: Segment): Promise<FileHandle> {
    if (this.handleSeg === seg && this.handle !== null) return this.handle
    this.dropHandle()
    let fh: FileHandle
    try {
      fh = await openFile(seg.path, 'r')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !this.j.hasSegment(seg)) {
        throw trimmed(`journal segment ${seg.path} was trimmed`)
      }
      throw err
    }
    if (this.closed) {
      void fh.close().catch(() => {})
      throw new ReplfsError('BAD_ARGUMENT', 'journal reader is closed')
    }
    this.handle = fh
    this.handleSeg = seg
    return fh
  }

  private dropHandle (): void {
    if (this.handle !== null) void this.handle.close().catch(() => {})
    this.handle = null
    this.handleSeg = null
  }
}

/**
 * Reads a segment, verifying every entry, and fills its index. Stops at the first torn or corrupt
 * entry, or at the first entry with seq > maxSeq; seg.size ends up at the cut.
 */
async function scanSegment (seg: Segment, maxSeq: number): Promise<Scanned> {
  let fh: FileHandle
  try {
    fh = await openFile(seg.path, 'r')
  } catch (err) {
    throw ioError(`cannot open journal segment ${seg.path}`, err)
  }
  try {
    const fileSize = (await fh.stat()).size
    let buf = Buffer.allocUnsafe(Math.min(SCAN_CHUNK, Math.max(fileSize, HEADER)))
    let bufStart = 0 // file offset of buf[0]
    let bufLen = 0
    let off = 0
    let damaged = false
    const fill = async (from: number, need: number): Promise<boolean> => {
      // Makes [from, from + need) available in buf; false if the file is shorter.
      if (from + need > fileSize) return false
      if (from >= bufStart && from + need <= bufStart + bufLen) return true
      if (buf.length < need) buf = Buffer.allocUnsafe(need)
      const want = Math.min(buf.length, fileSize - from)
      let done = 0
      while (done < want) {
        const { bytesRead } = await fh.read(buf, done, want - done, from + done)
        if (bytesRead === 0) break
        done += bytesRead
      }
      bufStart = from
      bufLen = done
      return done >= need
    }
    while (off < fileSize) {
      const seq = seg.firstSeq + seg.count
      if (seq > maxSeq) break
      if (!await fill(off, HEADER)) { damaged = true; break }
      const h = off - bufStart
      const len = buf.readUInt32BE(h)
      const crc = buf.readUInt32BE(h + 4)
      const s = Number(buf.readBigUInt64BE(h + 8))
      if (s !== seq || !await fill(off, HEADER + len)) { damaged = true; break }
      const b = off - bufStart
      if (crc !== crc32(buf.subarray(b + HEADER, b + HEADER + len), crc32(buf.subarray(b + 8, b + 16)))) {
        damaged = true
        break
      }
      seg.push(off)
      off += HEADER + len
      seg.size = off
    }
    return { seg, fileSize, damaged }
  } catch (err) {
    throw ioError(`journal scan of ${seg.path} failed`, err)
  } finally {
    await fh.close()
  }
}

function readFully (fd: number, buf: Buffer, position: number): void {
  let done = 0
  while (done < buf.length) {
    const n = readSync(fd, buf, done, buf.length - done, position + done)
    if (n === 0) throw new Error(`short read at ${position + done}`)
    done += n
  }
}

function removeFile (path: string, logger?: Logger): void {
  try {
    unlinkSync(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') logger?.warn({ err, path }, 'journal: cannot delete segment')
  }
}
