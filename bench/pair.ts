// A replicated pair for the benchmarks: its layout, start and stop, status, and the per-process
// CPU and disk figures read from /proc.
import { execFile, execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import fsp from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { callControl } from '../src/daemon/control.js'
import { nearestRank } from '../src/repl/latency.js'
import { now } from './fsbench.js'
import { root, startMount, stopMount, type Mounted } from './mounts.js'

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

/** Bytes the process caused to be written to storage so far (/proc/PID/io write_bytes). */
export function diskWriteBytes (pid: number): number {
  const m = /^write_bytes:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))
  return m === null ? NaN : Number(m[1])
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
