/**
 * In-process replication harness: a primary (store + JournalFile + ReplicationPrimary) and a
 * secondary (store + JournalFile + ReplicationSecondary) joined by an in-memory duplex pair, with
 * fault injection on the primary->secondary direction and a stall switch on either direction.
 */
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Duplex } from 'node:stream'
import { makeVolume, openVolume, type OpenedVolume } from '../../src/daemon/open-volume.js'
import type { Volume } from '../../src/fs/volume.js'
import { nowNs } from '../../src/fs/clock.js'
import { releasePages } from '../../src/util/process-addon.js'
import { decodeRecord } from '../../src/log/codec.js'
import { JournalFile } from '../../src/log/journal-file.js'
import { BLOCK_SIZE } from '../../src/store/keys.js'
import { newVolumeId } from '../../src/store/volume-state.js'
import { fsck } from '../../src/store/fsck.js'
import type { ChannelOptions } from '../../src/repl/channel.js'
import { FRAME_HEADER_LENGTH, FrameType } from '../../src/repl/frames.js'
import { NodeGenerations } from '../../src/repl/node-state.js'
import { ReplicationPrimary, type ReplicationMode } from '../../src/repl/primary.js'
import { ReplicationSecondary } from '../../src/repl/secondary.js'
import { ROOT, quietLogger, stateDump } from './volume.js'
import { pattern } from './workload.js'

// The workload helpers live in workload.ts; `pattern` is also offered here, beside writeFile.
export { pattern }

export interface Teardown { teardown: (fn: () => unknown) => void }

export const SECRET = Buffer.from('0123456789abcdef0123456789abcdef')

export interface Node extends OpenedVolume {
  dir: string
  journal: JournalFile
  vol: Volume
}

export interface PrimaryNode extends Node { repl: ReplicationPrimary }
export interface SecondaryNode extends Node { repl: ReplicationSecondary }

/** A temp dir; the caller registers its removal (after closing what lives in it). */
function tempDir (): string {
  return mkdtempSync(join(tmpdir(), 'replfs-test-'))
}

/** Registers closing the node (replication, journal, store), then removing its dir, in teardown. */
function closer (t: Teardown, n: { dir: string, repl?: { close: () => Promise<void> }, journal: JournalFile, store: OpenedVolume['store'], log: OpenedVolume['log'] }): void {
  let closed = false
  t.teardown(async () => {
    if (closed) return
    closed = true
    try {
      await n.repl?.close().catch(() => {})
      await n.log.settle().catch(() => {})
      n.log.journal = null
      await n.journal.close().catch(() => {})
      await n.store.close().catch(() => {})
    } finally {
      rmSync(n.dir, { recursive: true, force: true })
    }
  })
}

/** A Teardown whose functions run, newest first, when `run` is called (scopes one property run). */
export function scope (): Teardown & { run: () => Promise<void> } {
  const fns: Array<() => unknown> = []
  return {
    teardown: fn => { fns.push(fn) },
    run: async () => { for (const fn of fns.splice(0).reverse()) await fn() }
  }
}

export interface PrimaryOpts {
  mode?: ReplicationMode
  secret?: Buffer | null
  /** Journal the init record too (journal from seq 1), so a fresh secondary can resume from 0. Default true. */
  journalFromInit?: boolean
  journalMaxBytes?: number
  segmentBytes?: number
  channel?: Partial<ChannelOptions>
}

/** A primary volume with its journal attached and a ReplicationPrimary (not connected). */
export async function makePrimary (t: Teardown, opts: PrimaryOpts = {}): Promise<PrimaryNode> {
  const dir = tempDir()
  const fromInit = opts.journalFromInit ?? true
  const opened = await openVolume(dir, { create: true, logger: quietLogger, replay: fromInit })
  const journal = await JournalFile.open({ dir: join(dir, 'journal'), maxBytes: opts.journalMaxBytes, segmentBytes: opts.segmentBytes, releasePages, logger: quietLogger }, opened.state.counters.seq)
  opened.log.journal = journal
  if (fromInit) {
    // What openVolume does for a new store, but with the journal already attached.
    const r = await opened.log.submit(() => ({
      type: 'init' as const, volumeId: newVolumeId(), blockSize: BLOCK_SIZE, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, mode: 0o755, time: nowNs()
    }))
    await r?.durable
  }
  const generations = await NodeGenerations.load(opened.store, { role: 'primary', volumeId: opened.state.format?.volumeId ?? null, fresh: true })
  const repl = new ReplicationPrimary({ log: opened.log, journal, secret: opts.secret === undefined ? SECRET : opts.secret, mode: opts.mode ?? 'async', logger: quietLogger, channel: opts.channel, node: generations })
  const node: PrimaryNode = { ...opened, dir, journal, repl, vol: makeVolume(opened, { sizeLimit: 2 ** 40, logger: quietLogger }) }
  closer(t, node)
  return node
}

export interface SecondaryOpts {
  secret?: Buffer | null
  channel?: Partial<ChannelOptions>
  /** Initialise the store as its own volume (for VOLUME_MISMATCH tests). */
  ownVolume?: boolean
}

export async function makeSecondary (t: Teardown, opts: SecondaryOpts = {}): Promise<SecondaryNode> {
  const dir = tempDir()
  const opened = await openVolume(dir, { create: true, logger: quietLogger, replay: opts.ownVolume !== true })
  const journal = await JournalFile.open({ dir: join(dir, 'journal'), releasePages, logger: quietLogger }, opened.state.counters.seq)
  opened.log.journal = journal
  const generations = await NodeGenerations.load(opened.store, { role: 'secondary', volumeId: opened.state.format?.volumeId ?? null })
  const repl = new ReplicationSecondary({ log: opened.log, journal, secret: opts.secret === undefined ? SECRET : opts.secret, logger: quietLogger, channel: opts.channel, node: generations })
  const node: SecondaryNode = { ...opened, dir, journal, repl, vol: makeVolume(opened, { sizeLimit: 2 ** 40, readOnly: true, logger: quietLogger }) }
  closer(t, node)
  return node
}

/** A third store with the primary's journaled records 1..seq replayed: the primary's state at seq. */
export async function replayTo (t: Teardown, p: PrimaryNode, seq: number): Promise<OpenedVolume> {
  if (p.journal.firstSeq !== 1) throw new Error('replayTo needs a journal from seq 1')
  const dir = tempDir()
  const ref = await openVolume(dir, { create: true, logger: quietLogger, replay: true })
  t.teardown(async () => {
    await ref.store.close().catch(() => {})
    rmSync(dir, { recursive: true, force: true })
  })
  const r = p.journal.reader(1)
  try {
    while (ref.state.counters.seq < seq) {
      const got = await r.next(4 << 20, seq)
      if (got.length === 0) break
      for (const e of got) await ref.log.apply(decodeRecord(e.record), { seq: e.seq })
    }
  } finally {
    r.close()
  }
  await ref.log.settle()
  if (ref.state.counters.seq !== seq) throw new Error(`replayed to ${ref.state.counters.seq}, wanted ${seq}`)
  return ref
}

// ---- the in-memory wire ------------------------------------------------------------------------

/** One whole frame as the primary wrote it (header + body), for a fault hook. */
export interface RawFrame { type: number, typeName: string | undefined, raw: Buffer, body: Buffer, index: number }

/**
 * What to do with each frame going primary -> secondary: return the buffers to deliver in its
 * place ([] drops it, [f.raw, f.raw] duplicates it, [junk, f.raw] injects before it), or 'cut'
 * to drop the connection before it.
 */
export type FrameFault = (f: RawFrame) => Buffer[] | 'cut'

export interface PairOptions {
  fault?: FrameFault
  /** Drop the connection once this many bytes went primary -> secondary (the rest is lost). */
  cutAfterBytes?: number
}

export interface DuplexPair {
  /** The primary's end. */
  a: Duplex
  /** The secondary's end. */
  b: Duplex
  /** Bytes delivered primary -> secondary, and back. */
  readonly bytesToSecondary: number
  readonly bytesToPrimary: number
  /** Holds everything sent in one direction until released (a stalled peer or network). */
  hold: (dir: 'toPrimary' | 'toSecondary') => void
  release: (dir: 'toPrimary' | 'toSecondary') => void
  /** Drops the connection, as a reset would: both ends are destroyed. */
  destroy: () => void
}

const FRAME_NAMES = new Map<number, string>(Object.entries(FrameType).map(([k, v]) => [v, k]))

/** Two Duplex ends joined in memory, with backpressure, fault injection and stall switches. */
export function duplexPair (opts: PairOptions = {}): DuplexPair {
  let toS = 0
  let toP = 0
  const held = { toPrimary: null as Buffer[] | null, toSecondary: null as Buffer[] | null }
  let pendingA: (() => void) | null = null // a's write callback waiting for b to read
  let pendingB: (() => void) | null = null
  let frameBuf: Buffer = Buffer.alloc(0)
  let frameIndex = 0
  let cut = false

  const kill = (): void => {
    cut = true
    a.destroy()
    b.destroy()
  }

  const deliverToS = (chunks: Buffer[]): boolean => {
    let ok = true
    for (const c of chunks) {
      if (b.destroyed) return true
      if (opts.cutAfterBytes !== undefined && toS + c.length >= opts.cutAfterBytes) {
        const part = c.subarray(0, opts.cutAfterBytes - toS)
        toS += part.length
        if (part.length > 0) b.push(part)
        // Let the secondary see what arrived before the connection drops.
        setImmediate(kill)
        cut = true
        return true
      }
      toS += c.length
      ok = b.push(c)
    }
    return ok
  }

  /** Splits the primary's byte stream into frames for the fault hook. */
  const filterToS = (chunk: Buffer): Buffer[] | 'cut' => {
    if (opts.fault === undefined) return [chunk]
    frameBuf = frameBuf.length === 0 ? chunk : Buffer.concat([frameBuf, chunk])
    const out: Buffer[] = []
    while (frameBuf.length >= FRAME_HEADER_LENGTH) {
      const len = frameBuf.readUInt32BE(0)
      if (frameBuf.length < FRAME_HEADER_LENGTH + len) break
      const raw = frameBuf.subarray(0, FRAME_HEADER_LENGTH + len)
      frameBuf = frameBuf.subarray(FRAME_HEADER_LENGTH + len)
      const type = raw[4]
      const r = opts.fault({ type, typeName: FRAME_NAMES.get(type), raw, body: raw.subarray(FRAME_HEADER_LENGTH), index: frameIndex++ })
      if (r === 'cut') {
        if (out.length > 0) deliverToS(out)
        return 'cut'
      }
      out.push(...r)
    }
    return out
  }

  const a: Duplex = new Duplex({
    read () {
      const p = pendingB
      pendingB = null
      p?.()
    },
    write (chunk: Buffer, _enc, cb) {
      if (cut) { cb(); return }
      const out = filterToS(chunk)
      if (out === 'cut') { setImmediate(kill); cb(); return }
      if (held.toSecondary !== null) { held.toSecondary.push(...out); cb(); return }
      if (deliverToS(out)) cb()
      else pendingA = cb
    },
    final (cb) {
      if (!b.destroyed) b.push(null)
      cb()
    },
    destroy (err, cb) {
      if (!b.destroyed) setImmediate(() => b.destroy())
      const p = pendingA
      pendingA = null
      p?.()
      cb(err)
    }
  })

  const deliverToP = (chunks: Buffer[]): boolean => {
    let ok = true
    for (const c of chunks) {
      if (a.destroyed) return true
      toP += c.length
      ok = a.push(c)
    }
    return ok
  }

  const b: Duplex = new Duplex({
    read () {
      const p = pendingA
      pendingA = null
      p?.()
    },
    write (chunk: Buffer, _enc, cb) {
      if (cut) { cb(); return }
      if (held.toPrimary !== null) { held.toPrimary.push(chunk); cb(); return }
      if (deliverToP([chunk])) cb()
      else pendingB = cb
    },
    final (cb) {
      if (!a.destroyed) a.push(null)
      cb()
    },
    destroy (err, cb) {
      if (!a.destroyed) setImmediate(() => a.destroy())
      const p = pendingB
      pendingB = null
      p?.()
      cb(err)
    }
  })

  return {
    a,
    b,
    get bytesToSecondary () { return toS },
    get bytesToPrimary () { return toP },
    hold (dir) { held[dir] ??= [] },
    release (dir) {
      const q = held[dir]
      held[dir] = null
      if (q === null) return
      if (dir === 'toSecondary') deliverToS(q)
      else deliverToP(q)
    },
    destroy: kill
  }
}

export interface Connection {
  pair: DuplexPair
  /** Settle with why each side's serve() ended (never reject). */
  primaryEnded: Promise<Error>
  secondaryEnded: Promise<Error>
  /** Both sides ended. */
  ended: Promise<[Error, Error]>
  cut: () => void
}

/** Starts primary.serve(a) and secondary.serve(b) on a fresh pair. */
export function connect (p: PrimaryNode, s: SecondaryNode, opts: PairOptions = {}): Connection {
  const pair = duplexPair(opts)
  const why = (x: Promise<void>): Promise<Error> => x.then(() => new Error('serve() returned without an error'), (err: Error) => err)
  const primaryEnded = why(p.repl.serve(pair.a, 'test-secondary'))
  const secondaryEnded = why(s.repl.serve(pair.b, 'test-primary'))
  return { pair, primaryEnded, secondaryEnded, ended: Promise.all([primaryEnded, secondaryEnded]), cut: () => pair.destroy() }
}

// ---- waiting and comparing -------------------------------------------------------------------

export async function waitFor (cond: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 5))
  }
}

/** Waits until the secondary has applied and acknowledged everything the primary committed. */
export async function caughtUp (p: PrimaryNode, s: SecondaryNode, timeoutMs = 20_000): Promise<void> {
  await p.log.settle()
  await waitFor(() => p.repl.streaming && s.state.counters.seq === p.log.committedSeq && p.repl.ackedSeq === p.log.committedSeq,
    `secondary to catch up (primary ${p.log.committedSeq}, secondary ${s.state.counters.seq}, acked ${p.repl.ackedSeq}, phase ${p.repl.phase})`, timeoutMs)
  await s.log.settle()
}

export async function dumpsEqual (x: OpenedVolume, y: OpenedVolume): Promise<boolean> {
  return JSON.stringify(await stateDump(x)) === JSON.stringify(await stateDump(y))
}

export async function fsckProblems (v: OpenedVolume): Promise<string[]> {
  const r = await fsck(v.state)
  return r.ok ? [] : r.problems
}

// ---- files ------------------------------------------------------------------------------

/** Writes `count` records of `size` bytes each into `path` (created), sequentially. */
export async function writeFile (vol: Volume, path: string, count: number, size: number, seed = 1): Promise<void> {
  const fh = await vol.create(path, 0o644, ROOT)
  try {
    for (let i = 0; i < count; i++) await vol.write(fh, pattern(size, seed + i), size, i * size)
  } finally {
    await vol.release(fh)
  }
}

/** Reads a whole file through a Volume. */
export async function readFile (vol: Volume, path: string): Promise<Buffer> {
  const st = await vol.getattr(path)
  const fh = await vol.open(path, 0)
  try {
    const buf = Buffer.alloc(Number(st.size))
    let off = 0
    while (off < buf.length) {
      const n = await vol.read(fh, buf.subarray(off), Math.min(1 << 20, buf.length - off), off)
      if (n <= 0) break
      off += n
    }
    return buf.subarray(0, off)
  } finally {
    await vol.release(fh)
  }
}

export interface TreeEntry { type: string, mode: number, size: number, nlink: number, uid: number, gid: number, mtime: string, sha?: string, target?: string, xattrs: Record<string, string> }

/** A logical dump of the tree under `root` through the Volume API (no inode numbers: views number them apart). */
export async function treeDump (vol: Volume, root: string): Promise<Record<string, TreeEntry>> {
  const out: Record<string, TreeEntry> = {}
  const walk = async (rel: string): Promise<void> => {
    const abs = rel === '' ? root : `${root === '/' ? '' : root}/${rel}`
    const st = await vol.getattr(abs)
    const fmt = st.mode & 0o170000
    const type = fmt === 0o040000 ? 'dir' : fmt === 0o100000 ? 'file' : fmt === 0o120000 ? 'symlink' : 'other'
    const e: TreeEntry = { type, mode: st.mode, size: st.size, nlink: st.nlink, uid: st.uid, gid: st.gid, mtime: st.mtime.toString(), xattrs: {} }
    if (type === 'file') e.sha = createHash('sha256').update(await readFile(vol, abs)).digest('hex')
    if (type === 'symlink') e.target = await vol.readlink(abs)
    if (type === 'file' || type === 'dir') {
      for (const x of (await vol.listxattr(abs)).sort()) e.xattrs[x] = (await vol.getxattr(abs, null, x)).toString('hex')
    }
    out[rel === '' ? '.' : rel] = e
    if (type === 'dir') {
      const names = (await vol.readdir(abs)).map(d => d.name).filter(n => n !== '.' && n !== '..').sort()
      for (const n of names) await walk(rel === '' ? n : `${rel}/${n}`)
    }
  }
  await walk('')
  return out
}
