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

export interface ReplicationResults { async: SeqReplResult, sync: SeqReplResult, lag: LagResult, oneCorePerHost?: OneCorePerHost }

const STOP_TIMEOUT_MS = Number(process.env.BENCH_STOP_TIMEOUT_MS ?? '120000')
export const sleep = async (ms: number): Promise<void> => await new Promise(r => setTimeout(r, ms))

export function pct (xs: number[], p: number): number {
  return nearestRank([...xs].sort((a, b) => a - b), p)
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port
      srv.close(() => resolve(port))
    })
  })
}

export function cpuSeconds (pid: number): number {
  // /proc/PID/stat: fields after the ")" — utime is field 14, stime 15 (1-based), in clock ticks (100/s).
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / 100
}

export type Status = Record<string, unknown> & { seq: number, replication: Record<string, any> }
export async function status (mnt: string): Promise<Status> { return await callControl(mnt, { cmd: 'status' }, 30_000) as Status }

export interface Pair { a: Mounted, b: Mounted, mntA: string, mntB: string }

/** Where a loopback pair lives: node a (the primary) and b, their mounts, stores and replication flags. */
export interface PairLayout { dir: string, mntA: string, mntB: string, storeA: string, storeB: string, argsA: string[], argsB: string[] }

export async function pairLayout (work: string, name: string, secret: string): Promise<PairLayout> {
  const dir = join(work, name)
  const mntA = join(dir, 'mnt-a'); const mntB = join(dir, 'mnt-b')
  await fsp.mkdir(mntA, { recursive: true }); await fsp.mkdir(mntB, { recursive: true })
  const pa = await freePort()
  let pb = await freePort()
  while (pb === pa) pb = await freePort()
  return {
    dir, mntA, mntB, storeA: join(dir, 'store-a'), storeB: join(dir, 'store-b'),
    argsA: ['--role', 'primary', '--listen', `127.0.0.1:${pa}`, '--peer', `127.0.0.1:${pb}`, '--secret-file', secret],
    argsB: ['--role', 'secondary', '--listen', `127.0.0.1:${pb}`, '--peer', `127.0.0.1:${pa}`, '--secret-file', secret]
  }
}

export async function startPair (work: string, name: string, mode: 'async' | 'sync', secret: string, secondaryExtra: string[] = []): Promise<Pair> {
  const { mntA, mntB, storeA, storeB, argsA, argsB } = await pairLayout(work, name, secret)
  const b = await startMount('replfs', mntB, storeB, [...argsB, ...secondaryExtra], `${name} secondary`)
  const a = await startMount('replfs', mntA, storeA, [...argsA, '--mode', mode], `${name} primary`)
  const pair = { a, b, mntA, mntB }
  const t0 = Date.now()
  let last = ''
  let failures = 0
  for (;;) {
    // status can fail while the initial full copy runs (see the report: JournalFile.bytesAfter on an empty journal)
    const s = await status(mntA).catch((err: Error) => { failures++; last = `status failed: ${err.message}`; return null })
    if (s !== null) last = JSON.stringify(s.replication)
    if (s?.replication?.phase === 'streaming' && s.replication.lagRecords === 0) break
    if (Date.now() - t0 > 60_000) throw new Error(`${name}: primary not streaming after 60 s: ${last}`)
    await sleep(50)
  }
  if (failures > 0) console.error(`[${name}] note: primary status failed ${failures} times while the secondary connected (${last})`)
  return pair
}

export async function stopPair (p: Pair): Promise<void> {
  await stopMount(p.a, STOP_TIMEOUT_MS)
  await stopMount(p.b, STOP_TIMEOUT_MS)
}

/** Polls the primary until the secondary has acknowledged everything; returns seconds waited. */
export async function waitCaughtUp (mnt: string, t0: number, timeoutS = 600): Promise<number> {
  for (;;) {
    const r = (await status(mnt)).replication
    if (r.lagRecords === 0) return now() - t0
    if (now() - t0 > timeoutS) throw new Error(`secondary not caught up after ${timeoutS} s: ${JSON.stringify(r)}`)
    await sleep(10)
  }
}

export async function runVerify (mnt: string): Promise<{ ok: boolean, seconds: number, seq?: number, detail: string }> {
  const t0 = now()
  return await new Promise(resolve => {
    execFile(process.execPath, [join(root, 'bin', 'replfs'), 'verify', mnt, '--json'], { maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const seconds = now() - t0
      let parsed: { seq?: number, identical?: boolean, primary?: unknown, secondary?: unknown } = {}
      try { parsed = JSON.parse(stdout) } catch {}
      const exit = err === null ? 0 : (err as { code?: number }).code ?? 1
      resolve({ ok: exit === 0 && parsed.identical === true, seconds, seq: parsed.seq, detail: exit === 0 ? `exit 0, identical at seq ${String(parsed.seq)}` : `exit ${String(exit)}: ${stdout.trim()} ${stderr.trim()}`.slice(0, 2000) })
    })
  })
}

/** Pins every thread of `pid` to the CPUs in `mask` (threads started later inherit it). */
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

async function seqConfig (work: string, secret: string, bytes: number, mode: 'async' | 'sync', baseline: number): Promise<SeqReplResult> {
  const name = `repl-${mode}`
  const p = await startPair(work, name, mode, secret)
  try {
    const before = (await status(p.mntA)).replication
    const beforeIn = (await status(p.mntB)).replication
    dropCaches()
    const cpu0 = { a: cpuSeconds(p.a.child.pid!), b: cpuSeconds(p.b.child.pid!) }
    console.error(`[replfs ${mode}] sequential write ${bytes / MiB} MiB through the primary (pid ${String(p.a.child.pid)}; secondary pid ${String(p.b.child.pid)})`)
    const t0 = now()
    const write = await seqWrite(join(p.mntA, 'big.bin'), bytes)
    const tEnd = now()
    const end = (await status(p.mntA)).replication
    const catchUpSeconds = await waitCaughtUp(p.mntA, tEnd)
    const wall = now() - t0
    const cpu1 = { a: cpuSeconds(p.a.child.pid!), b: cpuSeconds(p.b.child.pid!) }
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
      wallSeconds: wall,
      peakRssBytes: { primary: vmHWM(p.a.child.pid!), secondary: vmHWM(p.b.child.pid!) }
    }
    console.error(`[replfs ${mode}] ${write.toFixed(1)} MiB/s (${res.ratio.toFixed(2)}x unreplicated); caught up ${catchUpSeconds.toFixed(2)} s after the write; wire ${res.wireRatioOut.toFixed(3)} B/B`)
    if (mode === 'async') {
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
  const async = await seqConfig(work, secret, bytes, 'async', baselineWrite)
  const sync = await seqConfig(work, secret, bytes, 'sync', baselineWrite)
  // BENCH_LAG_MIBPS fixes the pace (to compare runs); by default it is half the async rate just measured.
  const lag = await lagTest(work, secret, Number(process.env.BENCH_LAG_MIBPS ?? async.write / 2), lagSeconds)
  // BENCH_PINNED=0 leaves this out (it needs taskset and two CPUs).
  const pinned = process.env.BENCH_PINNED !== '0' && availableParallelism() >= 2 ? await oneCorePerHost(work, secret, bytes) : undefined
  return { async, sync, lag, ...(pinned === undefined ? {} : { oneCorePerHost: pinned }) }
}
