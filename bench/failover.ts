// Failover section of the benchmark (generations, resync by difference, promote, switchover).
//  1. resync after a partition, by both paths. A pair (primary -> secondary over loopback, mode
//     BENCH_FAILOVER_MODE) holds VOLUME bytes as 64 MiB files; the secondary is stopped (SIGTERM),
//     CHANGE bytes are written on the primary (half rewrites of non-overlapping regions of the existing
//     files: 64 KiB, 256 KiB and 1 MiB, each at an offset aligned to BENCH_FAILOVER_ALIGN inside a
//     1 MiB slot of its own; half new files of 64 KiB to 8 MiB; random data, fsync per file), and the
//     secondary is started again.
//     journal path: the primary with the default --journal-size (1G), which still holds the change:
//       the secondary resumes from it. Bytes: the primary's bytesOut over the reconnection.
//     digest path: the primary mounted with --journal-size 64M, the least the CLI takes (one journal
//       segment: the journal keeps just the segment being written; before the stop the primary writes
//       pad files, if needed, so that the change is sure to fill that segment and start the next, which
//       trims it): the journal cannot cover the change and the resync by difference runs. Bytes: the primary's bytesOut over the reconnection
//       (the resync's RANGES and RANGE_DELTA, the records after its seq, handshake and pings) plus what
//       the secondary sent in the resync (resync.bytesReceived on the primary: its RANGE_KEYS).
//     Either way the secondary's acks and pings to the primary are not counted (a few bytes each).
//     Target: bytes <= 1.1 x changed + 1 MiB. Also the seconds each took (from the reconnection, and
//     from the restart, which includes the primary's redial backoff of up to 5 s) and the ranges.
//  2. promote: on a fresh pair per run, the primary is killed (kill -9), and `replfs promote --force`
//     runs on the secondary once it has seen the connection go; timed from just before the command
//     until a small file (create + write 4 KiB + fsync, retried every 5 ms from the same moment) is
//     written on its mount. Target < 1 s. RUNS runs: median and max; then RUNS more with the promote
//     sent straight to the control socket (the CLI's request without node's start-up, ~0.4 s here).
//  3. switchover: `replfs switchover` on the primary of a connected pair while a light writer runs
//     (64 KiB + fsync every 20 ms, to whichever node takes writes: on an error it tries the other);
//     the `ms` it answers and the time until the new primary's mount takes a write (probed as in 2).
//     RUNS switchovers back and forth on one pair through the CLI, each after the pair streams again,
//     then RUNS through the control socket; medians.
// Env: BENCH_FAILOVER_VOLUME (2G), BENCH_FAILOVER_CHANGE (64M), BENCH_FAILOVER_JOURNAL (64M: the
//      digest path's --journal-size), BENCH_FAILOVER_MODE (sync|async, sync), BENCH_FAILOVER_ALIGN (64K: offsets
//      of the rewrites; 4K makes them straddle 64 KiB blocks), BENCH_FAILOVER_RUNS (3),
//      BENCH_FAILOVER_SMALL (64M: data in the promote and switchover pairs), BENCH_FAILOVER_VERIFY (1; 0 skips replfs verify),
//      BENCH_FAILOVER_PARTS (resync,promote,switchover: a comma list, for quick partial runs), BENCH_FAILOVER_LOGS (a directory:
//      each node's log is written there when its pair stops).
import { execFile } from 'node:child_process'
import { randomBytes, randomFillSync } from 'node:crypto'
import fsp from 'node:fs/promises'
import { join } from 'node:path'
import { callControl } from '../src/daemon/control.js'
import { JOURNAL_SEGMENT_BYTES } from '../src/log/journal-file.js'
import { MiB, now, parseSize, seqWrite } from './fsbench.js'
import { killMount, root, startMount, stopMount, type Mounted } from './mounts.js'
import { pairLayout, pct, runVerify, sleep, status, type Status } from './replication.js'
import { cli } from './snapshots.js'

export interface ChangeInfo {
  changedBytes: number
  rewrittenBytes: number
  rewriteRegions: number
  newFileBytes: number
  newFiles: number
  seconds: number
}

export interface ResyncPathResult {
  path: 'journal' | 'digest'
  /** The primary's --journal-size (null: the default, 1 GiB). */
  journalSize: number | null
  /** File data on the volume when the secondary stopped (the fill, plus the pad of the digest path). */
  volumeBytes: number
  padBytes: number
  change: ChangeInfo
  /** The primary's journal once the change was written, and what the secondary held. */
  journalAfterChange: { firstSeq: number, lastSeq: number, bytes: number }
  secondarySeq: number
  /** The journal still held the record after the secondary's last one. */
  journalCovers: boolean
  /** What the primary's log said it did when the secondary came back. */
  startedAs: 'resume' | 'diff' | 'unknown'
  /** Primary bytesOut after the reconnection caught up, minus before (after the old session ended). */
  bytesOut: number
  /** The restarted secondary's bytesIn (its counter starts at the restart). */
  secondaryBytesIn: number
  /** The primary's replication.resync after the digest path (null on the journal path). */
  resync: { phase: string, ranges: number, rangesDiffering: number, bytesReceived: number, bytesSent: number } | null
  /** The figure the target is checked on: bytesOut (+ resync.bytesReceived on the digest path). */
  wireBytes: number
  targetBytes: number
  met: boolean
  /** Seconds from the secondary's restart until the primary saw it connect, until the resync by
   *  difference was done (digest path), and until it was streaming with everything acknowledged. */
  seconds: { restartToConnected: number, connectedToResyncDone: number | null, connectedToCaughtUp: number, restartToCaughtUp: number }
  /** Resyncs by difference the primary ran before the stop (the first pairing of fresh stores may be one, of an empty volume). */
  resyncsBefore: number
  fillMiBps: number
  verify?: { ok: boolean, seconds: number, seq?: number, detail: string }
}

export interface PromoteSample {
  /** ms from the kill until the secondary's status showed the connection gone. */
  noticedMs: number
  /** Wall ms of `replfs promote --force` (node start-up included), or of the control request. */
  cliMs: number
  /** ms from just before the command until the probe write had been fsynced on the mount. */
  writableMs: number
  probeAttempts: number
  /** What the failed probe attempts got (EROFS while still a secondary). */
  probeError: string
  seq: number | null
}

export interface SwitchoverSample {
  via: 'cli' | 'control'
  from: 'a' | 'b'
  /** `ms` in the switchover's answer (measured in the old primary's process). */
  ms: number
  cliMs: number
  /** ms from just before the command until the new primary's mount took a probe write. */
  writableMs: number
  probeAttempts: number
  /** The application writer: from its last write on the old primary to its first on the new one. */
  writerGapMs: number
  /** ms until the new primary streamed to the old one with everything acknowledged. */
  pairStreamingMs: number
  seq: number | null
}

/** A part left out by BENCH_FAILOVER_PARTS is missing. */
export interface FailoverResults {
  mode: 'sync' | 'async'
  resync?: { journal: ResyncPathResult, digest: ResyncPathResult }
  /** samples, medianMs, maxMs: through the CLI (the figure); control: the same through the control socket (no node start-up). */
  promote?: { samples: PromoteSample[], medianMs: number, maxMs: number, control: { samples: PromoteSample[], medianMs: number, maxMs: number }, cliOverheadMs: number, dataBytes: number }
  /** The first RUNS switchovers through the CLI, then RUNS through the control socket (control). */
  switchover?: {
    samples: SwitchoverSample[], medianMs: number, medianWritableMs: number, maxWritableMs: number
    control: { samples: SwitchoverSample[], medianMs: number, medianWritableMs: number, maxWritableMs: number }
    cliOverheadMs: number, writer: { writes: number, errors: Record<string, number> }, dataBytes: number
  }
}

const VOLUME = parseSize(process.env.BENCH_FAILOVER_VOLUME ?? '2G')
const CHANGE = parseSize(process.env.BENCH_FAILOVER_CHANGE ?? '64M')
const JOURNAL_SMALL = parseSize(process.env.BENCH_FAILOVER_JOURNAL ?? String(JOURNAL_SEGMENT_BYTES))
const MODE = (process.env.BENCH_FAILOVER_MODE ?? 'sync') as 'async' | 'sync'
const ALIGN = parseSize(process.env.BENCH_FAILOVER_ALIGN ?? '64K')
const RUNS = Number(process.env.BENCH_FAILOVER_RUNS ?? '3')
const SMALL = parseSize(process.env.BENCH_FAILOVER_SMALL ?? '64M')
const VERIFY = process.env.BENCH_FAILOVER_VERIFY !== '0'
const LOGS = process.env.BENCH_FAILOVER_LOGS
const ALL_PARTS = ['resync', 'promote', 'switchover'] as const
type Part = typeof ALL_PARTS[number]
const PARTS = new Set((process.env.BENCH_FAILOVER_PARTS ?? ALL_PARTS.join(',')).split(',').map(x => x.trim()).filter(x => x !== ''))
for (const x of PARTS) if (!(ALL_PARTS as readonly string[]).includes(x)) throw new Error(`BENCH_FAILOVER_PARTS: unknown part ${x}`)
const part = (x: Part): boolean => PARTS.has(x)
if (MODE !== 'async' && MODE !== 'sync') throw new Error(`BENCH_FAILOVER_MODE: async or sync, not ${String(MODE)}`)

const FILE_BYTES = 64 * MiB
const SLOT = MiB
const PROBE_EVERY_MS = 5

const median = (xs: number[]): number => pct(xs, 0.5)
type Via = 'cli' | 'control'

// ---- a pair whose nodes can be stopped, killed and started again ------------------------------

/** logs: the stderr of the node's earlier processes (it was restarted or killed). */
interface Node { m: Mounted, mnt: string, store: string, args: string[], label: string, logs: string[] }
interface FPair { dir: string, a: Node, b: Node }

async function startNode (n: Omit<Node, 'm' | 'logs'>): Promise<Node> {
  return Object.assign(n, { m: await startMount('replfs', n.mnt, n.store, n.args, n.label), logs: [] })
}

async function restartNode (n: Node): Promise<void> {
  n.logs.push(n.m.stderr())
  n.m = await startMount('replfs', n.mnt, n.store, n.args, n.label)
}

async function startFPair (work: string, name: string, secret: string, primaryExtra: string[] = []): Promise<FPair> {
  const { dir, mntA, mntB, storeA, storeB, argsA, argsB } = await pairLayout(work, name, secret)
  // Both with the same --mode: after a switchover the other node is the primary.
  const b = await startNode({ mnt: mntB, store: storeB, label: `${name} b`, args: [...argsB, '--mode', MODE] })
  const a = await startNode({ mnt: mntA, store: storeA, label: `${name} a`, args: [...argsA, '--mode', MODE, ...primaryExtra] })
  const p = { dir, a, b }
  await untilStreaming(a.mnt, `${name}: primary streaming`, 60)
  return p
}

async function stopFPair (p: FPair): Promise<void> {
  // Also after a kill (stopMount on an exited process only makes sure the mount is gone).
  await stopMount(p.a.m)
  await stopMount(p.b.m)
  if (LOGS !== undefined) {
    await fsp.mkdir(LOGS, { recursive: true })
    for (const n of [p.a, p.b]) await fsp.writeFile(join(LOGS, `${n.label.replace(/ /g, '-')}.log`), n.logs.join('') + n.m.stderr())
  }
  await fsp.rm(p.dir, { recursive: true, force: true })
}

async function statusOrNull (mnt: string): Promise<Status | null> {
  return await status(mnt).catch(() => null)
}

/** The primary at `mnt` streams with everything acknowledged; returns now() when first seen. */
async function untilStreaming (mnt: string, what: string, timeoutS = 600): Promise<number> {
  const t0 = now()
  let last = ''
  for (;;) {
    const s = await statusOrNull(mnt)
    if (s !== null) {
      const r = s.replication
      last = JSON.stringify(r)
      if (r.role === 'primary' && r.phase === 'streaming' && r.lagRecords === 0 && r.ackedSeq === s.seq) return now()
    }
    if (now() - t0 > timeoutS) throw new Error(`${what}: not after ${timeoutS} s: ${last}`)
    await sleep(10)
  }
}


/**
 * A role command through the CLI (`replfs promote|switchover <mnt> --json`, node's start-up
 * included) or straight through the control socket (the request the CLI sends).
 */
async function roleCommand (via: Via, cmd: 'promote' | 'switchover', mnt: string): Promise<{ ms: number, answer: Record<string, unknown> }> {
  if (via === 'cli') {
    const c = await cli(cmd === 'promote' ? ['promote', mnt, '--force', '--json'] : ['switchover', mnt, '--json'])
    return { ms: c.ms, answer: JSON.parse(c.stdout) }
  }
  const t0 = now()
  const answer = await callControl(mnt, cmd === 'promote' ? { cmd, force: true } : { cmd }, 60_000) as Record<string, unknown>
  return { ms: (now() - t0) * 1000, answer }
}

/** Creates `name` on `mnt`, writes 4 KiB and fsyncs, retrying every 5 ms until it works. */
async function writeProbe (mnt: string, name: string, timeoutS = 30): Promise<{ t: number, attempts: number, error: string }> {
  const buf = randomBytes(4096)
  const t0 = now()
  let attempts = 0
  const errors = new Set<string>()
  for (;;) {
    attempts++
    try {
      const fh = await fsp.open(join(mnt, name), 'w')
      try {
        await fh.write(buf, 0, buf.length, 0)
        await fh.sync()
      } finally { await fh.close() }
      return { t: now(), attempts, error: [...errors].join(',') }
    } catch (err) {
      errors.add((err as NodeJS.ErrnoException).code ?? (err as Error).message)
    }
    if (now() - t0 > timeoutS) throw new Error(`${mnt}: no write succeeded within ${timeoutS} s (${[...errors].join(', ')})`)
    await sleep(PROBE_EVERY_MS)
  }
}

async function writeFileSynced (file: string, bytes: number): Promise<void> {
  const buf = Buffer.alloc(Math.min(bytes, MiB))
  const fh = await fsp.open(file, 'w')
  try {
    for (let pos = 0; pos < bytes;) {
      const len = Math.min(buf.length, bytes - pos)
      randomFillSync(buf, 0, len)
      await fh.write(buf, 0, len, pos)
      pos += len
    }
    await fh.sync()
  } finally { await fh.close() }
}

// ---- 1. resync after a partition -----------------------------------------------------------------

/** A small deterministic generator (mulberry32): the same regions every run. */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Half of `bytes` rewritten in place in the existing files, half as new files (see the header). */
async function applyChange (mnt: string, files: Array<{ name: string, size: number }>, bytes: number): Promise<ChangeInfo> {
  const t0 = now()
  const rnd = prng(16)
  const rewriteTarget = Math.floor(bytes / 2)
  const regionSizes = [64 * 1024, 256 * 1024, MiB]
  // Every region in a 1 MiB slot of its own: no two overlap, so every byte written is a byte changed.
  const slots: Array<{ file: number, slot: number }> = []
  files.forEach((f, i) => { for (let s = 0; (s + 1) * SLOT <= f.size; s++) slots.push({ file: i, slot: s }) })
  const regions: Array<{ file: number, off: number, len: number }> = []
  let rewritten = 0
  for (let k = 0; rewritten < rewriteTarget; k++) {
    if (k >= slots.length) throw new Error(`BENCH_FAILOVER_CHANGE too large for the volume: ${slots.length} slots of 1 MiB, all used`)
    const j = k + Math.floor(rnd() * (slots.length - k))
    ;[slots[k], slots[j]] = [slots[j], slots[k]]
    const len = Math.min(regionSizes[k % regionSizes.length], rewriteTarget - rewritten)
    const room = Math.floor((SLOT - len) / ALIGN)
    const off = slots[k].slot * SLOT + Math.floor(rnd() * (room + 1)) * ALIGN
    regions.push({ file: slots[k].file, off, len })
    rewritten += len
  }
  regions.sort((x, y) => x.file - y.file || x.off - y.off)
  const buf = Buffer.alloc(MiB)
  for (let i = 0; i < regions.length;) {
    const file = regions[i].file
    const fh = await fsp.open(join(mnt, files[file].name), 'r+')
    try {
      for (; i < regions.length && regions[i].file === file; i++) {
        randomFillSync(buf, 0, regions[i].len)
        await fh.write(buf, 0, regions[i].len, regions[i].off)
      }
      await fh.sync()
    } finally { await fh.close() }
  }
  const newSizes = [64 * 1024, 512 * 1024, 2 * MiB, 8 * MiB]
  const newTarget = bytes - rewritten
  await fsp.mkdir(join(mnt, 'new'), { recursive: true })
  let added = 0
  let n = 0
  for (; added < newTarget; n++) {
    const len = Math.min(newSizes[n % newSizes.length], newTarget - added)
    await writeFileSynced(join(mnt, 'new', `n${n}.bin`), len)
    added += len
  }
  return { changedBytes: rewritten + added, rewrittenBytes: rewritten, rewriteRegions: regions.length, newFileBytes: added, newFiles: n, seconds: now() - t0 }
}

/** Polls the primary while the secondary comes back: when it connected, finished the resync, caught up. */
async function timeline (mnt: string, t0: number, timeoutS = 1800): Promise<{ connected: number, resyncDone: number | null, caughtUp: number }> {
  let connected: number | null = null
  let resyncDone: number | null = null
  let resyncing = false
  let last = ''
  for (;;) {
    const s = await statusOrNull(mnt)
    const t = now()
    if (s !== null) {
      const r = s.replication
      last = JSON.stringify(r)
      if (connected === null && r.phase !== 'disconnected') connected = t
      // (replication.resync stays from the last resync by difference: only a new one that ran counts)
      if (r.phase === 'resyncing') resyncing = true
      if (resyncDone === null && resyncing && r.resync?.phase === 'done') resyncDone = t
      if (r.phase === 'streaming' && r.lagRecords === 0 && r.ackedSeq === s.seq) return { connected: connected ?? t, resyncDone, caughtUp: t }
    }
    if (t - t0 > timeoutS) throw new Error(`secondary not caught up ${timeoutS} s after its restart: ${last}`)
    await sleep(10)
  }
}

const MSG_DIFF = '"msg":"secondary connected; resyncing by difference"'
const MSG_RESUME = '"msg":"secondary connected; resuming"'
const count = (s: string, x: string): number => s.split(x).length - 1

/**
 * With a --journal-size of one segment the journal keeps just the segment being written (it trims
 * whole segments while it holds more than its size, and never the one being written). The change trims the segment holding the secondary's next record only if it makes the journal
 * start another segment after that one: so before the stop the newest segment is brought to
 * between 64 MiB - CHANGE/2 and 64 MiB (pad files, replicated like the rest). Returns the pad bytes.
 */
async function padSegment (mnt: string, name: string): Promise<number> {
  let pad = 0
  for (let k = 0; k < 4; k++) {
    const j = (await status(mnt)).replication.journal as { bytes: number }
    // A full segment: the next record starts a new one, which is then the segment to fill.
    const n = j.bytes >= JOURNAL_SEGMENT_BYTES ? MiB : Math.floor((JOURNAL_SEGMENT_BYTES - j.bytes - CHANGE / 2) / MiB) * MiB
    if (n <= 0) break
    await seqWrite(join(mnt, `pad-${k}.bin`), n)
    await untilStreaming(mnt, `${name}: caught up after the pad`)
    pad += n
  }
  return pad
}

async function resyncPath (work: string, secret: string, path: 'journal' | 'digest'): Promise<ResyncPathResult> {
  const journalSize = path === 'digest' ? JOURNAL_SMALL : null
  const name = `failover-${path}`
  const p = await startFPair(work, name, secret, journalSize === null ? [] : ['--journal-size', String(journalSize)])
  try {
    const files: Array<{ name: string, size: number }> = []
    for (let pos = 0, i = 0; pos < VOLUME; i++) {
      files.push({ name: `f${i}.bin`, size: Math.min(FILE_BYTES, VOLUME - pos) })
      pos += FILE_BYTES
    }
    console.error(`[failover ${path}] filling ${(VOLUME / MiB).toFixed(0)} MiB as ${files.length} files through the primary (${MODE}${journalSize === null ? '' : `, --journal-size ${journalSize}`})`)
    const tf = now()
    for (const f of files) await seqWrite(join(p.a.mnt, f.name), f.size)
    const fillMiBps = VOLUME / MiB / (now() - tf)
    await untilStreaming(p.a.mnt, `${name}: caught up after the fill`)
    let padBytes = 0
    if (path === 'digest') padBytes = await padSegment(p.a.mnt, name)
    const resyncsBefore = count(p.a.m.stderr(), MSG_DIFF)
    const secondarySeq = Number((await status(p.b.mnt)).seq)
    console.error(`[failover ${path}] filled at ${fillMiBps.toFixed(1)} MiB/s${padBytes > 0 ? ` (+ ${padBytes / MiB} MiB pad)` : ''}; stopping the secondary at seq ${secondarySeq}`)
    await stopMount(p.b.m)
    for (const t = now(); ;) {
      if ((await status(p.a.mnt)).replication.phase === 'disconnected') break
      if (now() - t > 30) throw new Error(`${name}: the primary still sees its peer 30 s after it stopped`)
      await sleep(20)
    }
    const out0 = Number((await status(p.a.mnt)).replication.bytesOut)
    const logMark = p.a.m.stderr().length

    console.error(`[failover ${path}] writing the change on the primary: ${(CHANGE / MiB).toFixed(0)} MiB, half rewrites in place, half new files`)
    const change = await applyChange(p.a.mnt, files, CHANGE)
    const sc = await status(p.a.mnt)
    const journalAfterChange = sc.replication.journal as { firstSeq: number, lastSeq: number, bytes: number }
    const journalCovers = journalAfterChange.firstSeq <= secondarySeq + 1
    console.error(`[failover ${path}] ${change.rewriteRegions} regions (${(change.rewrittenBytes / MiB).toFixed(1)} MiB) rewritten, ${change.newFiles} new files (${(change.newFileBytes / MiB).toFixed(1)} MiB) in ${change.seconds.toFixed(1)} s; primary at seq ${sc.seq}, journal ${journalAfterChange.firstSeq}..${journalAfterChange.lastSeq} (${(journalAfterChange.bytes / MiB).toFixed(1)} MiB): ${journalCovers ? 'covers' : 'does not cover'} seq ${secondarySeq + 1}`)

    console.error(`[failover ${path}] starting the secondary again`)
    const t0 = now()
    const tl = timeline(p.a.mnt, t0)
    tl.catch(() => {})
    await restartNode(p.b)
    const { connected, resyncDone, caughtUp } = await tl
    const s1 = await status(p.a.mnt)
    const sb1 = await status(p.b.mnt)
    const bytesOut = Number(s1.replication.bytesOut) - out0
    const log = p.a.m.stderr().slice(logMark)
    const startedAs = log.includes(MSG_DIFF) ? 'diff' : log.includes(MSG_RESUME) ? 'resume' : 'unknown'
    // replication.resync is the last resync by difference (the first pairing of a fresh store can be one).
    const resync = startedAs === 'diff' ? s1.replication.resync as ResyncPathResult['resync'] : null
    const wireBytes = bytesOut + (resync?.bytesReceived ?? 0)
    const targetBytes = 1.1 * change.changedBytes + MiB
    const res: ResyncPathResult = {
      path,
      journalSize,
      volumeBytes: VOLUME + padBytes,
      padBytes,
      change,
      journalAfterChange,
      secondarySeq,
      journalCovers,
      startedAs,
      bytesOut,
      secondaryBytesIn: Number(sb1.replication.bytesIn),
      resync,
      wireBytes,
      targetBytes,
      met: wireBytes <= targetBytes,
      seconds: { restartToConnected: connected - t0, connectedToResyncDone: resyncDone === null ? null : resyncDone - connected, connectedToCaughtUp: caughtUp - connected, restartToCaughtUp: caughtUp - t0 },
      resyncsBefore,
      fillMiBps
    }
    const expected = path === 'digest' ? 'diff' : 'resume'
    if (startedAs !== expected) console.error(`[failover ${path}] WARNING: the primary's log says ${startedAs}, not ${expected}`)
    console.error(`[failover ${path}] ${startedAs}: ${wireBytes} B on the wire for ${change.changedBytes} B changed (${(wireBytes / change.changedBytes).toFixed(3)}x; bytesOut ${bytesOut}${resync === null ? '' : `, resync sent ${resync.bytesSent} received ${resync.bytesReceived}, ${resync.rangesDiffering}/${resync.ranges} ranges differing`}); caught up ${res.seconds.connectedToCaughtUp.toFixed(2)} s after it connected (${res.seconds.restartToCaughtUp.toFixed(2)} s after the restart)`)
    if (VERIFY) {
      res.verify = await runVerify(p.a.mnt)
      console.error(`[failover ${path}] verify: ${res.verify.detail} (${res.verify.seconds.toFixed(1)} s)`)
    }
    return res
  } finally {
    await stopFPair(p)
  }
}

// ---- 2. promote after the primary died ---------------------------------------------------------

async function promoteOnce (work: string, secret: string, i: number, via: Via): Promise<{ sample: PromoteSample, cliOverheadMs: number }> {
  const name = `failover-promote-${via}-${i}`
  const p = await startFPair(work, name, secret)
  try {
    await seqWrite(join(p.a.mnt, 'data.bin'), SMALL)
    await untilStreaming(p.a.mnt, `${name}: caught up`)
    const cliOverheadMs = (await cli(['status', p.b.mnt, '--json'])).ms
    await killMount(p.a.m)
    const tKill = now()
    for (;;) {
      const r = (await status(p.b.mnt)).replication
      if (r.connected === false) break
      if (now() - tKill > 30) throw new Error(`${name}: the secondary still sees its primary 30 s after the kill: ${JSON.stringify(r)}`)
      await sleep(5)
    }
    const noticedMs = (now() - tKill) * 1000
    const t0 = now()
    const probe = writeProbe(p.b.mnt, 'after-promote.bin')
    probe.catch(() => {})
    const c = await roleCommand(via, 'promote', p.b.mnt)
    const w = await probe
    const answer = c.answer as { seq?: number, role?: string }
    if (answer.role !== 'primary') throw new Error(`${name}: promote answered ${JSON.stringify(answer)}`)
    const st = await fsp.stat(join(p.b.mnt, 'data.bin'))
    if (st.size !== SMALL) throw new Error(`${name}: data.bin on the promoted node has ${st.size} bytes, not ${SMALL}`)
    const sample: PromoteSample = { noticedMs, cliMs: c.ms, writableMs: (w.t - t0) * 1000, probeAttempts: w.attempts, probeError: w.error, seq: answer.seq ?? null }
    console.error(`[failover promote ${via}] ${i + 1}/${RUNS}: writable ${sample.writableMs.toFixed(0)} ms after the command started (${via === 'cli' ? 'CLI' : 'control socket'} returned at ${sample.cliMs.toFixed(0)} ms; ${w.attempts} probe writes, failed ones: ${w.error || '-'}); the secondary saw the connection go ${noticedMs.toFixed(0)} ms after the kill`)
    return { sample, cliOverheadMs }
  } finally {
    await stopFPair(p)
  }
}

// ---- 3. switchover ---------------------------------------------------------------------------------

async function switchoverBench (work: string, secret: string): Promise<NonNullable<FailoverResults['switchover']>> {
  const name = 'failover-switchover'
  const p = await startFPair(work, name, secret)
  const nodes = [p.a, p.b]
  try {
    await seqWrite(join(p.a.mnt, 'data.bin'), SMALL)
    await fsp.mkdir(join(p.a.mnt, 'w'))
    await untilStreaming(p.a.mnt, `${name}: caught up`)
    const cliOverheadMs = (await cli(['status', p.a.mnt, '--json'])).ms

    // the light writer: 64 KiB + fsync every 20 ms, to whichever node takes it
    let writing = true
    let target = 0
    const ok: Array<{ t: number, node: number }> = []
    const errors: Record<string, number> = {}
    const buf = randomBytes(64 * 1024)
    const writer = (async () => {
      for (let k = 0; writing; k++) {
        const node = target
        try {
          const fh = await fsp.open(join(nodes[node].mnt, 'w', `w${k % 1000}`), 'w')
          try { await fh.write(buf, 0, buf.length, 0); await fh.sync() } finally { await fh.close() }
          ok.push({ t: now(), node })
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message
          errors[code] = (errors[code] ?? 0) + 1
          target = 1 - node
          await sleep(PROBE_EVERY_MS)
          continue
        }
        await sleep(20)
      }
    })()
    writer.catch(() => {})

    const samples: SwitchoverSample[] = []
    let cur = 0
    try {
      await sleep(1000)
      for (let i = 0; i < 2 * RUNS; i++) {
        const via: Via = i < RUNS ? 'cli' : 'control'
        const from = nodes[cur]
        const to = nodes[1 - cur]
        await untilStreaming(from.mnt, `${name}: streaming before switchover ${i + 1}`, 60)
        await sleep(500)
        const t0 = now()
        const probe = writeProbe(to.mnt, `after-switchover-${i}.bin`)
        probe.catch(() => {})
        const c = await roleCommand(via, 'switchover', from.mnt)
        const w = await probe
        const answer = c.answer as { ms?: number, seq?: number, role?: string }
        if (answer.role !== 'secondary') throw new Error(`${name}: switchover answered ${JSON.stringify(answer)}`)
        const tStreaming = await untilStreaming(to.mnt, `${name}: the new primary streaming to the old one`, 60)
        const fromRole = (await status(from.mnt)).replication.role
        if (fromRole !== 'secondary') throw new Error(`${name}: the old primary is ${String(fromRole)} after the switchover`)
        await sleep(500) // let the writer land a few writes on the new primary
        const firstNew = ok.find(x => x.t > t0 && x.node === 1 - cur)
        const lastOld = firstNew === undefined ? undefined : [...ok].reverse().find(x => x.t < firstNew.t && x.node === cur)
        const sample: SwitchoverSample = {
          via,
          from: cur === 0 ? 'a' : 'b',
          ms: Number(answer.ms),
          cliMs: c.ms,
          writableMs: (w.t - t0) * 1000,
          probeAttempts: w.attempts,
          writerGapMs: firstNew === undefined || lastOld === undefined ? NaN : (firstNew.t - lastOld.t) * 1000,
          pairStreamingMs: (tStreaming - t0) * 1000,
          seq: answer.seq ?? null
        }
        samples.push(sample)
        console.error(`[failover switchover ${via}] ${i % RUNS + 1}/${RUNS} (${sample.from} -> ${cur === 0 ? 'b' : 'a'}): answered ms ${sample.ms}, ${via === 'cli' ? 'CLI' : 'control socket'} ${sample.cliMs.toFixed(0)} ms, new primary took a write at ${sample.writableMs.toFixed(0)} ms (${w.attempts} probe writes), writer gap ${sample.writerGapMs.toFixed(0)} ms, pair streaming again at ${sample.pairStreamingMs.toFixed(0)} ms`)
        cur = 1 - cur
      }
    } finally {
      writing = false
      await writer
    }
    const cliRuns = samples.filter(s => s.via === 'cli')
    const ctlRuns = samples.filter(s => s.via === 'control')
    const writable = cliRuns.map(s => s.writableMs)
    return {
      samples: cliRuns,
      medianMs: median(cliRuns.map(s => s.ms)),
      medianWritableMs: median(writable),
      maxWritableMs: Math.max(...writable),
      control: { samples: ctlRuns, medianMs: median(ctlRuns.map(s => s.ms)), medianWritableMs: median(ctlRuns.map(s => s.writableMs)), maxWritableMs: Math.max(...ctlRuns.map(s => s.writableMs)) },
      cliOverheadMs,
      writer: { writes: ok.length, errors },
      dataBytes: SMALL
    }
  } finally {
    await stopFPair(p)
  }
}

async function promoteBench (work: string, secret: string): Promise<NonNullable<FailoverResults['promote']>> {
  const runs: Record<Via, PromoteSample[]> = { cli: [], control: [] }
  const overheads: number[] = []
  for (const via of ['cli', 'control'] as const) {
    for (let i = 0; i < RUNS; i++) {
      const r = await promoteOnce(work, secret, i, via)
      runs[via].push(r.sample)
      overheads.push(r.cliOverheadMs)
    }
  }
  const w = (v: Via): number[] => runs[v].map(s => s.writableMs)
  return {
    samples: runs.cli,
    medianMs: median(w('cli')),
    maxMs: Math.max(...w('cli')),
    control: { samples: runs.control, medianMs: median(w('control')), maxMs: Math.max(...w('control')) },
    cliOverheadMs: median(overheads),
    dataBytes: SMALL
  }
}

export async function failoverBench (work: string): Promise<FailoverResults> {
  const secret = join(work, 'failover.secret')
  await fsp.writeFile(secret, randomBytes(32).toString('base64') + '\n', { mode: 0o600 })
  const res: FailoverResults = { mode: MODE }
  if (part('resync')) res.resync = { journal: await resyncPath(work, secret, 'journal'), digest: await resyncPath(work, secret, 'digest') }
  if (part('promote')) res.promote = await promoteBench(work, secret)
  if (part('switchover')) res.switchover = await switchoverBench(work, secret)
  return res
}
