// Replication section of the benchmark: a primary replfs mount replicating to a secondary over
// loopback TCP, measured against the unreplicated replfs mount of the same run.
//  1. sequential write (same seqWrite as the replfs figure) in mode async and in mode sync, each on
//     fresh stores; for async also the time until the secondary has caught up, and `replfs verify`;
//  2. lag under a steady paced load at half the async write rate (async mode): the primary's
//     ackLatencyMs and an end-to-end figure of our own (marker files seen on the secondary mount);
//  3. wire bytes (primary bytesOut, secondary bytesIn) per byte the application wrote.
import { execFile, execFileSync } from 'node:child_process'
import { availableParallelism } from 'node:os'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import fsp from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { callControl } from '../src/daemon/control.js'
import { nearestRank } from '../src/repl/latency.js'
import { dropCaches, MiB, now, seqWrite } from './fsbench.js'
import { root, startMount, stopMount, vmHWM, writeOnFreshMount, type Mounted } from './mounts.js'

export interface SeqReplResult {
  mode: 'async' | 'sync'
  /** MiB/s of the application's write (1 MiB writes + fsync). */
  write: number
  /** write / unreplicated replfs write of the same run. */
  ratio: number
  /** Primary status right after the write's fsync+close returned. */
  atWriteEnd: { lagRecords: number | null, lagBytes: number | null, lagSeconds: number }
  /** Seconds from the end of the write until the primary reports lagRecords == 0. */
  catchUpSeconds: number
  /** Replication bytes during the write (and catch-up) per byte written. */
  wireBytesOut: number
  wireBytesIn: number
  wireRatioOut: number
  wireRatioIn: number
  ackLatencyMs: { p50: number | null, p99: number | null, samples: number }
  /** From the secondary's status: a record's arrival there to its durable apply (what the ack waits for). */
  secondaryDurableMs?: { p50: number | null, p99: number | null, samples: number }
  /** CPU seconds (user+sys) of each mount process from the start of the write until caught up. */
  cpuSeconds: { primary: number, secondary: number }
  /** CPU seconds per GiB written, and disk bytes written (/proc/PID/io write_bytes) per byte written, of each host's mount process. */
  cpuSecondsPerGiB: { primary: number, secondary: number }
  diskBytesPerByte: { primary: number, secondary: number }
  wallSeconds: number
  peakRssBytes: { primary: number, secondary: number }
  verify?: { ok: boolean, seconds: number, seq?: number, detail: string }
}

export interface LagResult {
  targetMiBps: number
  achievedMiBps: number
  seconds: number
  writeSize: number
  /** From the primary's status: time from local commit to the secondary's ack. */
  ackLatencyMs: { p50: number | null, p99: number | null, samples: number, maxP99Seen: number | null }
  /** Marker file written on the primary every 50 ms until it is visible on the secondary mount (attr-timeout 0). */
  endToEndMs: { p50: number, p99: number, max: number, samples: number, missing: number }
  /** Time the marker's writeFile took on the primary (open+write+close). */
  markerLocalMs: { p50: number, p99: number }
  /** From periodic status samples (every 100 ms). */
  maxLagRecords: number
  maxLagBytes: number
  maxLagSeconds: number
  catchUpSeconds: number
}

/**
 * The same sequential writes with each "host" on a core of its own (taskset): the benchmark
 * process (the application) and the primary on CPU 0, the secondary on CPU 1, and the
 * unreplicated baseline again on CPU 0 alone. On this 2-core machine the main figures make the
 * two replfs processes share both cores with each other and the application, which no pair of
 * hosts does; these show what replication costs a host that has its own CPU.
 */
export interface OneCorePerHost { unreplicated: number, async: { write: number, ratio: number }, sync: { write: number, ratio: number } }

/**
 * Sync against async from alternating rounds on fresh pairs (async first in odd rounds, sync
 * first in even ones), so the machine's swings fall on both: the median of the rounds' ratios.
 */
export interface SyncVsAsync { rounds: Array<{ async: SeqReplResult, sync: SeqReplResult, ratio: number }>, medianRatio: number }

export interface ReplicationResults { async: SeqReplResult, sync: SeqReplResult, syncVsAsync: SyncVsAsync, lag: LagResult, oneCorePerHost?: OneCorePerHost }

const STOP_TIMEOUT_MS = Number(process.env.BENCH_STOP_TIMEOUT_MS ?? '120000')
export { sleep, pct, freePort, cpuSeconds, diskWriteBytes, type Status, status, type Pair, type PairLayout, pairLayout, startPair, stopPair, waitCaughtUp, runVerify } from './pair.js'
import { cpuSeconds, diskWriteBytes, freePort, pairLayout, pct, runVerify, sleep, startPair, status, stopPair, waitCaughtUp, type Pair } from './pair.js'

function pin (pid: number, mask: number): void {
  execFileSync('taskset', ['-a', '-p', mask.toString(16), String(pid)], { stdio: 'ignore' })
}
const ALL_CPUS = 0xffff

async function oneCorePerHost (work: string, secret: string, bytes: number): Promise<OneCorePerHost> {
  pin(process.pid, 1)
  try {
    const unreplicated = await writeOnFreshMount(join(work, 'pinned-unrepl'), bytes, 'pinned unreplicated', m => pin(m.child.pid!, 1))
    console.error(`[one core per host] unreplicated, mount and writer on CPU 0: ${unreplicated.toFixed(1)} MiB/s`)
    const out: Partial<OneCorePerHost> = { unreplicated }
    for (const mode of ['async', 'sync'] as const) {
      const name = `pinned-${mode}`
      const p = await startPair(work, name, mode, secret)
      try {
        pin(p.a.child.pid!, 1)
        pin(p.b.child.pid!, 2)
        dropCaches()
        const write = await seqWrite(join(p.mntA, 'big.bin'), bytes)
        await waitCaughtUp(p.mntA, now())
        out[mode] = { write, ratio: write / unreplicated }
        console.error(`[one core per host] ${mode}: primary and writer on CPU 0, secondary on CPU 1: ${write.toFixed(1)} MiB/s (${(write / unreplicated).toFixed(2)}x)`)
      } finally {
        await stopPair(p)
        await fsp.rm(join(work, name), { recursive: true, force: true })
      }
    }
    return out as OneCorePerHost
  } finally {
    pin(process.pid, ALL_CPUS)
  }
}

async function seqConfig (work: string, secret: string, bytes: number, mode: 'async' | 'sync', baseline: number, verify = true, round = 0): Promise<SeqReplResult> {
  const name = `repl-${mode}-${round}`
  const p = await startPair(work, name, mode, secret)
  try {
    const before = (await status(p.mntA)).replication
    const beforeIn = (await status(p.mntB)).replication
    dropCaches()
    const cpu0 = { a: cpuSeconds(p.a.child.pid!), b: cpuSeconds(p.b.child.pid!) }
    const io0 = { a: diskWriteBytes(p.a.child.pid!), b: diskWriteBytes(p.b.child.pid!) }
    console.error(`[replfs ${mode}] sequential write ${bytes / MiB} MiB through the primary (pid ${String(p.a.child.pid)}; secondary pid ${String(p.b.child.pid)})`)
    const t0 = now()
    const write = await seqWrite(join(p.mntA, 'big.bin'), bytes)
    const tEnd = now()
    const end = (await status(p.mntA)).replication
    const catchUpSeconds = await waitCaughtUp(p.mntA, tEnd)
    const wall = now() - t0
    const cpu1 = { a: cpuSeconds(p.a.child.pid!), b: cpuSeconds(p.b.child.pid!) }
    // The write-back of what the write left dirty is counted when dirtied, so this is complete once caught up.
    const io1 = { a: diskWriteBytes(p.a.child.pid!), b: diskWriteBytes(p.b.child.pid!) }
    const gib = bytes / (1024 * MiB)
    const after = (await status(p.mntA)).replication
    const afterIn = (await status(p.mntB)).replication
    const wireBytesOut = Number(after.bytesOut) - Number(before.bytesOut)
    const wireBytesIn = Number(afterIn.bytesIn) - Number(beforeIn.bytesIn)
    const res: SeqReplResult = {
      mode,
      write,
      ratio: write / baseline,
      atWriteEnd: { lagRecords: end.lagRecords, lagBytes: end.lagBytes, lagSeconds: end.lagSeconds },
      catchUpSeconds,
      wireBytesOut,
      wireBytesIn,
      wireRatioOut: wireBytesOut / bytes,
      wireRatioIn: wireBytesIn / bytes,
      ackLatencyMs: after.ackLatencyMs,
      secondaryDurableMs: afterIn.durableLatencyMs,
      cpuSeconds: { primary: cpu1.a - cpu0.a, secondary: cpu1.b - cpu0.b },
      cpuSecondsPerGiB: { primary: (cpu1.a - cpu0.a) / gib, secondary: (cpu1.b - cpu0.b) / gib },
      diskBytesPerByte: { primary: (io1.a - io0.a) / bytes, secondary: (io1.b - io0.b) / bytes },
      wallSeconds: wall,
      peakRssBytes: { primary: vmHWM(p.a.child.pid!), secondary: vmHWM(p.b.child.pid!) }
    }
    console.error(`[replfs ${mode}] ${write.toFixed(1)} MiB/s (${res.ratio.toFixed(2)}x unreplicated); caught up ${catchUpSeconds.toFixed(2)} s after the write; wire ${res.wireRatioOut.toFixed(3)} B/B`)
    if (mode === 'async' && verify) {
      console.error(`[replfs ${mode}] replfs verify`)
      res.verify = await runVerify(p.mntA)
      console.error(`[replfs ${mode}] verify: ${res.verify.detail} (${res.verify.seconds.toFixed(1)} s)`)
    }
    return res
  } finally {
    await stopPair(p)
    await fsp.rm(join(work, name), { recursive: true, force: true })
  }
}

async function lagTest (work: string, secret: string, rateMiBps: number, seconds: number): Promise<LagResult> {
  const name = 'repl-lag'
  const p = await startPair(work, name, 'async', secret, ['--attr-timeout', '0'])
  const W = 128 * 1024
  try {
    // As before the sequential runs: the gigabytes those left dirty are written back first, not
    // under this test's load (on two real hosts nobody else's write-back shares the disk).
    dropCaches()
    await fsp.mkdir(join(p.mntA, 'm'))
    await waitCaughtUp(p.mntA, now(), 30)
    console.error(`[replfs lag] ${seconds} s of ${W / 1024} KiB writes paced to ${rateMiBps.toFixed(1)} MiB/s, a marker file every 50 ms`)
    const buf = randomBytes(W)
    let stop = false
    const t0 = now()
    const tStop = t0 + seconds

    // the paced writer
    const writer = (async () => {
      const fh = await fsp.open(join(p.mntA, 'load.bin'), 'w')
      let off = 0
      try {
        for (let k = 0; ; k++) {
          const due = t0 + k * W / (rateMiBps * MiB)
          if (due >= tStop) break
          const wait = due - now()
          if (wait > 0.001) await sleep(wait * 1000)
          buf.writeUInt32LE(k, 0)
          await fh.write(buf, 0, W, off)
          off += W
        }
        await fh.sync()
      } finally { await fh.close() }
      return off
    })()

    // markers: written on the primary every 50 ms, polled on the secondary
    const issued: number[] = []
    const local: number[] = []
    const seen: number[] = []
    const markers = (async () => {
      for (let i = 0; ; i++) {
        const due = t0 + i * 0.05
        if (due >= tStop) break
        const wait = due - now()
        if (wait > 0.001) await sleep(wait * 1000)
        const ts = now()
        issued[i] = ts
        await fsp.writeFile(join(p.mntA, 'm', `m${i}`), String(ts))
        local[i] = now() - ts
      }
    })()
    const poller = (async () => {
      let next = 0
      for (;;) {
        if (next >= issued.length) {
          if (stop) break
          await sleep(1)
          continue
        }
        try {
          await fsp.stat(join(p.mntB, 'm', `m${next}`))
          seen[next] = now()
          next++
          continue
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
        }
        if (stop && now() - issued[next] > 30) break
        await sleep(2)
      }
    })()

    // status samples
    let maxLagRecords = 0; let maxLagBytes = 0; let maxLagSeconds = 0; let maxP99: number | null = null
    const sampler = (async () => {
      let n = 0
      while (!stop) {
        const r = (await status(p.mntA)).replication
        maxLagRecords = Math.max(maxLagRecords, r.lagRecords ?? 0)
        maxLagBytes = Math.max(maxLagBytes, r.lagBytes ?? 0)
        maxLagSeconds = Math.max(maxLagSeconds, r.lagSeconds ?? 0)
        if (++n % 20 === 0 && r.ackLatencyMs?.p99 != null) maxP99 = Math.max(maxP99 ?? 0, r.ackLatencyMs.p99)
        await sleep(100)
      }
    })()

    const written = await writer
    await markers
    const tWriteEnd = now()
    const achieved = written / MiB / (tWriteEnd - t0)
    const catchUpSeconds = await waitCaughtUp(p.mntA, tWriteEnd)
    stop = true
    await Promise.all([poller, sampler])
    const r = (await status(p.mntA)).replication
    if (r.ackLatencyMs?.p99 != null) maxP99 = Math.max(maxP99 ?? 0, r.ackLatencyMs.p99)
    const e2e: number[] = []
    for (let i = 0; i < issued.length; i++) if (seen[i] !== undefined) e2e.push((seen[i] - issued[i]) * 1000)
    const res: LagResult = {
      targetMiBps: rateMiBps,
      achievedMiBps: achieved,
      seconds,
      writeSize: W,
      ackLatencyMs: { ...r.ackLatencyMs, maxP99Seen: maxP99 },
      endToEndMs: { p50: pct(e2e, 0.5), p99: pct(e2e, 0.99), max: Math.max(...e2e), samples: e2e.length, missing: issued.length - e2e.length },
      markerLocalMs: { p50: pct(local, 0.5) * 1000, p99: pct(local, 0.99) * 1000 },
      maxLagRecords,
      maxLagBytes,
      maxLagSeconds,
      catchUpSeconds
    }
    console.error(`[replfs lag] achieved ${achieved.toFixed(1)} MiB/s; ack latency p50 ${String(res.ackLatencyMs.p50)} ms p99 ${String(res.ackLatencyMs.p99)} ms; end-to-end p50 ${res.endToEndMs.p50.toFixed(1)} ms p99 ${res.endToEndMs.p99.toFixed(1)} ms`)
    return res
  } finally {
    await stopPair(p)
    await fsp.rm(join(work, name), { recursive: true, force: true })
  }
}

export async function replicationBench (work: string, bytes: number, baselineWrite: number, lagSeconds: number): Promise<ReplicationResults> {
  const secret = join(work, 'repl.secret')
  await fsp.writeFile(secret, randomBytes(32).toString('base64') + '\n', { mode: 0o600 })
  const rounds: SyncVsAsync['rounds'] = []
  const n = Number(process.env.BENCH_SYNC_ROUNDS ?? '3')
  for (let i = 0; i < n; i++) {
    const order = i % 2 === 0 ? ['async', 'sync'] as const : ['sync', 'async'] as const
    const got: Partial<Record<'async' | 'sync', SeqReplResult>> = {}
    for (const mode of order) got[mode] = await seqConfig(work, secret, bytes, mode, baselineWrite, i === 0, i)
    rounds.push({ async: got.async!, sync: got.sync!, ratio: got.sync!.write / got.async!.write })
    console.error(`[replfs sync vs async] round ${i + 1}/${n}: sync ${got.sync!.write.toFixed(1)} / async ${got.async!.write.toFixed(1)} MiB/s = ${rounds[i].ratio.toFixed(2)}x`)
  }
  const { async, sync } = rounds[0]
  const syncVsAsync = { rounds, medianRatio: pct(rounds.map(r => r.ratio), 0.5) }
  // BENCH_LAG_MIBPS fixes the pace (to compare runs); by default it is half the async rate just measured.
  const lag = await lagTest(work, secret, Number(process.env.BENCH_LAG_MIBPS ?? async.write / 2), lagSeconds)
  // BENCH_PINNED=0 leaves this out (it needs taskset and two CPUs).
  const pinned = process.env.BENCH_PINNED !== '0' && availableParallelism() >= 2 ? await oneCorePerHost(work, secret, bytes) : undefined
  return { async, sync, syncVsAsync, lag, ...(pinned === undefined ? {} : { oneCorePerHost: pinned }) }
}

/** The sync-against-async lines of the report, with each host's CPU and disk figures. */
export function reportSyncVsAsync (v: SyncVsAsync): void {
  const med = (f: (r: SeqReplResult) => number, mode: 'async' | 'sync'): string => pct(v.rounds.map(r => f(r[mode])), 0.5).toFixed(2)
  console.log(`sync vs async sequential write, ${v.rounds.length} alternating rounds on fresh pairs: ${v.rounds.map(r => `${r.sync.write.toFixed(0)}/${r.async.write.toFixed(0)} = ${r.ratio.toFixed(2)}x`).join(', ')};` +
    ` median ${v.medianRatio.toFixed(2)}x (target >= 0.90 ${v.medianRatio >= 0.9 ? 'ok' : 'MISSED'})`)
  for (const mode of ['async', 'sync'] as const) {
    console.log(`  ${mode} (medians): CPU s/GiB primary ${med(r => r.cpuSecondsPerGiB.primary, mode)}, secondary ${med(r => r.cpuSecondsPerGiB.secondary, mode)};` +
      ` disk bytes written per byte primary ${med(r => r.diskBytesPerByte.primary, mode)}, secondary ${med(r => r.diskBytesPerByte.secondary, mode)}`)
  }
}
