// Snapshots section of the benchmark (in-band snapshot commands, see docs/snapshots.md).
//  1. create: `snapshot create` on a standalone replfs mount (no replication) holding SMALL bytes
//     (default 100 MiB) and on a fresh one holding BIG bytes (default 2 GiB); CREATES creates each
//     (a 1 MiB file is written and fsynced, untimed, before each so every create freezes a non-empty
//     layer; a mkdir, one durable record too, is timed right before each create as a control), after
//     a pause of BENCH_SNAPSHOT_SETTLE_MS (3000) once the data is written. Timed through the control socket (the request the CLI sends), so node's start-up is
//     not in the figure; one extra create per volume goes through the real `replfs snapshot create`
//     CLI for comparison. Target: the BIG/SMALL ratio of the medians near 1 (O(1) create).
//  2. restore on a replicated pair (primary -> secondary over loopback, mode async by default): fill
//     RESTORE bytes as 8 files, snapshot, overwrite CHANGE bytes in place (whole files from f0 on),
//     delete the last 2 files and add a new one, then `replfs snapshot restore` (the CLI) on the
//     primary. Measures (a) the CLI's wall time, (b) time until the secondary has applied the restore
//     record (its status appliedSeq >= the primary's seq; also the primary's ackedSeq), (c) bytes on
//     the wire for it (primary bytesOut / secondary bytesIn, after minus before; pings every 2 s when
//     idle are included, and an idle rate measured just before is given to judge them); then checks
//     the content on both mounts and runs `replfs verify`.
// Env: BENCH_SNAPSHOT_SMALL (100M), BENCH_SNAPSHOT_BIG (2G), BENCH_SNAPSHOT_CREATES (9), BENCH_SNAPSHOT_SETTLE_MS (3000),
//      BENCH_SNAPSHOT_RESTORE (1G), BENCH_SNAPSHOT_CHANGE (256M), BENCH_SNAPSHOT_MODE (async|sync).
import { execFile } from 'node:child_process'
import { createHash, randomBytes, randomFillSync } from 'node:crypto'
import fsp from 'node:fs/promises'
import { join } from 'node:path'
import { callControl } from '../src/daemon/control.js'
import { MiB, now, parseSize, seqWrite } from './fsbench.js'
import { root, startMount, stopMount } from './mounts.js'
import { pct, runVerify, sleep, startPair, status, stopPair, type Pair } from './replication.js'

export interface CreateResult {
  /** Bytes of file data in the volume when the creates ran. */
  volumeBytes: number
  /** ms per create through the control socket, in order. */
  samplesMs: number[]
  medianMs: number
  minMs: number
  /** Control: ms of a mkdir on the mount (also one durable record) right before each create. */
  mkdirSamplesMs: number[]
  mkdirMedianMs: number
  /** One more create through the CLI (`replfs snapshot create`), node start-up included. */
  cliMs: number
  /** Time to write the data (MiB/s), for reference. */
  fillMiBps: number
}

export interface RestoreResult {
  mode: 'async' | 'sync'
  volumeBytes: number
  files: number
  overwrittenBytes: number
  deletedFiles: number
  deletedBytes: number
  addedBytes: number
  /** ms of the snapshot create (control socket) on the primary of the pair, before the changes. */
  createMs: number
  /** (a) wall ms of `replfs snapshot restore` on the primary (CLI; node start-up included). */
  restoreCliMs: number
  /** Wall ms of `replfs snapshot list` on the same mount: the CLI's own overhead, for comparison. */
  cliOverheadMs: number
  /** (b) ms from the start of the restore until the secondary's appliedSeq reached the primary's seq. */
  secondaryAppliedMs: number
  /** ms from the start of the restore until the primary's ackedSeq reached its seq. */
  primaryAckedMs: number
  /** (c) bytes the primary sent / the secondary received from just before the restore until it was applied. */
  wireBytesOut: number
  wireBytesIn: number
  /** Over that same window, at the idle rate measured just before (pings): what of (c) is not the restore's. */
  idleBytesOutPerSecond: number
  seqBefore: number
  seqAfter: number
  usedBytes: { beforeRestore: number, afterRestore: number, secondaryAfterRestore: number }
  /** Longest stat() on each mount while the restore ran (a probe every 20 ms). */
  maxStatMs: { primary: number, secondary: number }
  /** Content after the restore matches the snapshot on both mounts (hash of the overwritten file, deleted files back, added one gone). */
  contentOk: { primary: boolean, secondary: boolean, detail: string }
  verify: { ok: boolean, seconds: number, seq?: number, detail: string }
  /**
   * After the verify: the same CHANGE bytes overwritten again, then the same restore through the
   * control socket (no CLI start-up) while a 4 KiB file is written (open+write+close, no fsync) on
   * the primary every 20 ms: the longest of those writes against the median of the same probe
   * while idle just before, i.e. how long writes wait behind a restore that frees CHANGE bytes.
   * Not in (c).
   */
  again: { restoreMs: number, secondaryAppliedMs: number, probeWrites: number, probeRaces: number, probeWriteMaxMs: number, probeWriteIdleMedianMs: number }
}

export interface SnapshotResults {
  /** ratio: median create ms big / small; minRatio: the same of the fastest creates. */
  create: { small: CreateResult, big: CreateResult, ratio: number, minRatio: number }
  restore: RestoreResult
}

const CREATES = Number(process.env.BENCH_SNAPSHOT_CREATES ?? '9')
const SMALL = parseSize(process.env.BENCH_SNAPSHOT_SMALL ?? '100M')
const BIG = parseSize(process.env.BENCH_SNAPSHOT_BIG ?? '2G')
const RESTORE = parseSize(process.env.BENCH_SNAPSHOT_RESTORE ?? '1G')
const CHANGE = parseSize(process.env.BENCH_SNAPSHOT_CHANGE ?? '256M')
const SETTLE_MS = Number(process.env.BENCH_SNAPSHOT_SETTLE_MS ?? '3000')
const MODE = (process.env.BENCH_SNAPSHOT_MODE ?? 'async') as 'async' | 'sync'
if (MODE !== 'async' && MODE !== 'sync') throw new Error(`BENCH_SNAPSHOT_MODE: async or sync, not ${String(MODE)}`)

const median = (xs: number[]): number => pct(xs, 0.5)

async function snap (mnt: string, op: 'create' | 'delete' | 'restore' | 'refresh', name: string): Promise<number> {
  const t0 = now()
  await callControl(mnt, { cmd: 'snapshot', op, name })
  return (now() - t0) * 1000
}

/** Runs the replfs CLI; its wall time in ms and its stdout. */
export async function cli (args: string[]): Promise<{ ms: number, stdout: string }> {
  const t0 = now()
  return await new Promise((resolve, reject) => {
    execFile(process.execPath, [join(root, 'bin', 'replfs'), ...args], { maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const ms = (now() - t0) * 1000
      if (err !== null) reject(new Error(`replfs ${args.join(' ')}: ${err.message} ${stdout} ${stderr}`))
      else resolve({ ms, stdout })
    })
  })
}

async function sha256 (file: string): Promise<string> {
  const h = createHash('sha256')
  const fh = await fsp.open(file, 'r')
  try {
    const buf = Buffer.alloc(MiB)
    for (let pos = 0; ;) {
      const { bytesRead } = await fh.read(buf, 0, MiB, pos)
      if (bytesRead === 0) break
      h.update(buf.subarray(0, bytesRead))
      pos += bytesRead
    }
  } finally { await fh.close() }
  return h.digest('hex')
}

/** Overwrites the file in place (no truncation) with new data, 1 MiB writes + fsync. */
async function overwrite (file: string, bytes: number): Promise<void> {
  const buf = randomFillSync(Buffer.alloc(MiB))
  const fh = await fsp.open(file, 'r+')
  try {
    for (let pos = 0, i = 0; pos < bytes; i++) {
      const len = Math.min(MiB, bytes - pos)
      buf.writeUInt32LE(i, 0)
      await fh.write(buf, 0, len, pos)
      pos += len
    }
    await fh.sync()
  } finally { await fh.close() }
}

async function createBench (work: string, label: string, bytes: number): Promise<CreateResult> {
  const store = join(work, `snap-${label}-store`)
  const mnt = join(work, `snap-${label}-mnt`)
  await fsp.mkdir(mnt, { recursive: true })
  const m = await startMount('replfs', mnt, store, [], `snapshots ${label}`)
  try {
    console.error(`[snapshots create ${label}] writing ${(bytes / MiB).toFixed(0)} MiB to a standalone mount`)
    const fillMiBps = await seqWrite(join(mnt, 'big.bin'), bytes)
    await sleep(SETTLE_MS) // the same pause for both sizes: LevelDB compacts in the background after a big write
    const samplesMs: number[] = []
    const mkdirSamplesMs: number[] = []
    for (let i = 1; i <= CREATES; i++) {
      await seqWrite(join(mnt, `between-${i}.bin`), MiB)
      const t = now()
      await fsp.mkdir(join(mnt, `dir-${i}`))
      mkdirSamplesMs.push((now() - t) * 1000)
      samplesMs.push(await snap(mnt, 'create', `s${i}`))
    }
    await seqWrite(join(mnt, 'between-cli.bin'), MiB)
    const { ms: cliMs } = await cli(['snapshot', 'create', mnt, 'scli'])
    // sanity: the first snapshot holds the data file, and not what was written after it
    const st = await fsp.stat(join(mnt, '.snapshots', 's1', 'big.bin'))
    if (st.size !== bytes) throw new Error(`.snapshots/s1/big.bin: size ${st.size}, expected ${bytes}`)
    if (await fsp.stat(join(mnt, '.snapshots', 's1', 'between-2.bin')).then(() => true, () => false)) throw new Error('.snapshots/s1 holds a file written after it')
    const res = { volumeBytes: bytes, samplesMs, medianMs: median(samplesMs), minMs: Math.min(...samplesMs), mkdirSamplesMs, mkdirMedianMs: median(mkdirSamplesMs), cliMs, fillMiBps }
    console.error(`[snapshots create ${label}] create ms: ${samplesMs.map(x => x.toFixed(1)).join(' ')} (median ${res.medianMs.toFixed(1)}); mkdir ms: ${mkdirSamplesMs.map(x => x.toFixed(1)).join(' ')}; through the CLI ${cliMs.toFixed(0)} ms`)
    return res
  } finally {
    await stopMount(m)
    await fsp.rm(store, { recursive: true, force: true })
    await fsp.rm(mnt, { recursive: true, force: true })
  }
}

/** Polls until `done` holds; returns the time (now()) it was first seen. */
async function until (what: string, done: () => Promise<boolean>, timeoutS = 600): Promise<number> {
  const t0 = now()
  for (;;) {
    if (await done()) return now()
    if (now() - t0 > timeoutS) throw new Error(`${what}: not after ${timeoutS} s`)
    await sleep(10)
  }
}

async function restoreBench (work: string): Promise<RestoreResult> {
  const secret = join(work, 'snap.secret')
  await fsp.writeFile(secret, randomBytes(32).toString('base64') + '\n', { mode: 0o600 })
  const p: Pair = await startPair(work, 'snap-restore', MODE, secret)
  const FILES = 8
  const per = Math.floor(RESTORE / FILES / MiB) * MiB
  if (per <= 0) throw new Error(`BENCH_SNAPSHOT_RESTORE too small: ${RESTORE} (at least 8 MiB)`)
  const f = (i: number): string => `f${i}.bin`
  try {
    console.error(`[snapshots restore] filling ${(per * FILES / MiB).toFixed(0)} MiB as ${FILES} files through the primary (${MODE})`)
    const t0 = now()
    for (let i = 0; i < FILES; i++) await seqWrite(join(p.mntA, f(i)), per)
    console.error(`[snapshots restore] filled at ${(per * FILES / MiB / (now() - t0)).toFixed(1)} MiB/s`)
    const hash0 = await sha256(join(p.mntA, f(0)))
    const createMs = await snap(p.mntA, 'create', 'base')

    // the changes: overwrite CHANGE bytes in place (whole files from f0), delete the last 2 files, add one
    const overFiles = Math.min(FILES - 2, Math.max(1, Math.ceil(CHANGE / per)))
    let overwritten = 0
    console.error(`[snapshots restore] overwriting ${(CHANGE / MiB).toFixed(0)} MiB in ${overFiles} files, deleting 2 files, adding one`)
    for (let i = 0; i < overFiles; i++) {
      const n = Math.min(per, CHANGE - overwritten)
      await overwrite(join(p.mntA, f(i)), n)
      overwritten += n
    }
    await fsp.unlink(join(p.mntA, f(FILES - 1)))
    await fsp.unlink(join(p.mntA, f(FILES - 2)))
    const added = Math.min(64 * MiB, per)
    await seqWrite(join(p.mntA, 'added.bin'), added)
    if (await sha256(join(p.mntA, f(0))) === hash0) throw new Error('f0 unchanged by the overwrite')

    // settle, then the idle wire rate (pings) over ~4.5 s
    await until('caught up before the restore', async () => (await status(p.mntA)).replication.lagRecords === 0)
    const cliOverheadMs = (await cli(['snapshot', 'list', p.mntA, '--json', '--no-space'])).ms
    const idle0 = Number((await status(p.mntA)).replication.bytesOut); const ti0 = now()
    await sleep(4500)
    const idleBytesOutPerSecond = (Number((await status(p.mntA)).replication.bytesOut) - idle0) / (now() - ti0)

    const sa0 = await status(p.mntA)
    const sb0 = await status(p.mntB)
    const out0 = Number(sa0.replication.bytesOut)
    const in0 = Number(sb0.replication.bytesIn)
    const seqBefore = sa0.seq

    // stat probes on both mounts while the restore runs
    let probing = true
    const maxStat = { primary: 0, secondary: 0 }
    const probe = async (mnt: string, k: 'primary' | 'secondary'): Promise<void> => {
      while (probing) {
        const t = now()
        await fsp.stat(join(mnt, f(2))).catch(() => {})
        maxStat[k] = Math.max(maxStat[k], (now() - t) * 1000)
        await sleep(20)
      }
    }
    const probes = [probe(p.mntA, 'primary'), probe(p.mntB, 'secondary')]

    console.error(`[snapshots restore] replfs snapshot restore (seq ${seqBefore})`)
    const tR = now()
    let restoreCliMs = NaN
    let seqAfter = -1
    let secondaryAppliedMs = NaN
    let primaryAckedMs = NaN
    try {
      restoreCliMs = (await cli(['snapshot', 'restore', p.mntA, 'base'])).ms
      seqAfter = (await status(p.mntA)).seq
      const tApplied = await until('secondary applied the restore', async () => Number((await status(p.mntB)).replication.appliedSeq) >= seqAfter)
      const tAcked = await until('primary saw the ack', async () => Number((await status(p.mntA)).replication.ackedSeq) >= seqAfter)
      secondaryAppliedMs = (tApplied - tR) * 1000
      primaryAckedMs = (tAcked - tR) * 1000
    } finally {
      probing = false
      await Promise.all(probes)
    }
    const sa1 = await status(p.mntA)
    const sb1 = await status(p.mntB)
    const wireBytesOut = Number(sa1.replication.bytesOut) - out0
    const wireBytesIn = Number(sb1.replication.bytesIn) - in0
    console.error(`[snapshots restore] CLI returned after ${restoreCliMs.toFixed(0)} ms (CLI overhead ~${cliOverheadMs.toFixed(0)} ms); secondary applied at ${secondaryAppliedMs.toFixed(0)} ms; wire ${wireBytesOut} B out / ${wireBytesIn} B in (idle ${idleBytesOutPerSecond.toFixed(0)} B/s); seq ${seqBefore} -> ${seqAfter}`)

    // content: f0 as in the snapshot, deleted files back, added file gone, on both mounts
    const check = async (mnt: string): Promise<[boolean, string]> => {
      const problems: string[] = []
      if (await sha256(join(mnt, f(0))) !== hash0) problems.push(`${f(0)} differs from the snapshot`)
      for (const i of [FILES - 1, FILES - 2]) {
        const st = await fsp.stat(join(mnt, f(i))).catch(() => null)
        if (st?.size !== per) problems.push(`${f(i)}: ${st === null ? 'missing' : `size ${st.size}`}`)
      }
      if (await fsp.stat(join(mnt, 'added.bin')).then(() => true, () => false)) problems.push('added.bin still there')
      return [problems.length === 0, problems.join('; ')]
    }
    const [okA, dA] = await check(p.mntA)
    const [okB, dB] = await check(p.mntB)
    const contentOk = { primary: okA, secondary: okB, detail: okA && okB ? 'f0 hash = snapshot, deleted files back, added file gone' : `primary: ${dA || 'ok'}; secondary: ${dB || 'ok'}` }
    console.error('[snapshots restore] replfs verify')
    const verify = await runVerify(p.mntA)
    console.error(`[snapshots restore] content ${contentOk.detail}; verify: ${verify.detail} (${verify.seconds.toFixed(1)} s)`)

    console.error(`[snapshots restore] overwriting ${(CHANGE / MiB).toFixed(0)} MiB again, then the same restore with a 4 KiB write on the primary every 20 ms`)
    let over2 = 0
    for (let i = 0; i < overFiles; i++) {
      const n = Math.min(per, CHANGE - over2)
      await overwrite(join(p.mntA, f(i)), n)
      over2 += n
    }
    await until('caught up before the second restore', async () => (await status(p.mntA)).replication.lagRecords === 0)
    const probeBuf = randomBytes(4096)
    // A write racing the whole-volume restore itself may find its file gone under it (the open
    // happened before the restore record, the truncate or write after): counted, not fatal.
    let probeRaces = 0
    const writeProbe = async (): Promise<number> => {
      const t = now()
      try {
        await fsp.writeFile(join(p.mntA, 'probe.bin'), probeBuf)
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code !== 'ENOENT' && code !== 'EBADF' && code !== 'ESTALE') throw err
        probeRaces++
      }
      return (now() - t) * 1000
    }
    const idleWrites: number[] = []
    for (let i = 0; i < 25; i++) { idleWrites.push(await writeProbe()); await sleep(20) }
    let writing = true
    const during: number[] = []
    const writer = (async () => {
      while (writing) { during.push(await writeProbe()); await sleep(20) }
    })()
    // Awaited below; until then a failed probe must not crash the run (the pair would stay mounted).
    writer.catch(() => {})
    const tR2 = now()
    let again2 = NaN
    try {
      again2 = await snap(p.mntA, 'restore', 'base')
    } finally {
      writing = false
      await writer
    }
    const seq2 = (await status(p.mntA)).seq
    const tApplied2 = await until('secondary applied the second restore', async () => Number((await status(p.mntB)).replication.appliedSeq) >= seq2)
    const again = {
      restoreMs: again2,
      secondaryAppliedMs: (tApplied2 - tR2) * 1000,
      probeWrites: during.length,
      probeRaces,
      probeWriteMaxMs: Math.max(...during),
      probeWriteIdleMedianMs: pct(idleWrites, 0.5)
    }
    console.error(`[snapshots restore] again: control socket ${again.restoreMs.toFixed(0)} ms, secondary applied at ${again.secondaryAppliedMs.toFixed(0)} ms; ${during.length} probe writes, longest ${again.probeWriteMaxMs.toFixed(0)} ms (idle median ${again.probeWriteIdleMedianMs.toFixed(1)} ms)`)
    return {
      again,
      mode: MODE,
      volumeBytes: per * FILES,
      files: FILES,
      overwrittenBytes: overwritten,
      deletedFiles: 2,
      deletedBytes: 2 * per,
      addedBytes: added,
      createMs,
      restoreCliMs,
      cliOverheadMs,
      secondaryAppliedMs,
      primaryAckedMs,
      wireBytesOut,
      wireBytesIn,
      idleBytesOutPerSecond,
      seqBefore,
      seqAfter,
      usedBytes: { beforeRestore: Number(sa0.usedBytes), afterRestore: Number(sa1.usedBytes), secondaryAfterRestore: Number(sb1.usedBytes) },
      maxStatMs: maxStat,
      contentOk,
      verify
    }
  } finally {
    await stopPair(p)
    await fsp.rm(join(work, 'snap-restore'), { recursive: true, force: true })
  }
}

export async function snapshotBench (work: string): Promise<SnapshotResults> {
  const small = await createBench(work, 'small', SMALL)
  const big = await createBench(work, 'big', BIG)
  const restore = await restoreBench(work)
  return { create: { small, big, ratio: big.medianMs / small.medianMs, minRatio: big.minMs / small.minMs }, restore }
}
