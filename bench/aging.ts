// Aging section of the benchmark: a store that has lived (random overwrites, truncates, many small
// files made and deleted, big files written and deleted) against a fresh one, in the same run.
//  1. churn a mount (BENCH_AGING_WRITES random writes on BENCH_AGING_FILES files, plus rounds of small
//     files and big files made and deleted), then let it idle until the store's size settles;
//  2. interleaved, BENCH_AGING_REPEATS times: the sequential write, read and small-file figures on a
//     fresh store, then the same on the aged one (each time on a new file, deleted after);
//  3. store bytes (du of the store directory) per live byte, after the churn and after idling, and
//     after deleting everything (an emptied volume).
import { randomFillSync } from 'node:crypto'
import fsp from 'node:fs/promises'
import { join } from 'node:path'
import { dropCaches, MiB, now, parseSize, seqRead, seqWrite, smallFiles, type SmallResult } from './fsbench.js'
import { startMount, stopMount, type Mounted } from './mounts.js'
import { cpuSeconds, pct, sleep } from './replication.js'

export interface AgingFigures { write: number, read: number, small: SmallResult }
export interface AgingResults {
  churn: { writes: number, bytesWritten: number, smallFilesMade: number, bigFilesMade: number, seconds: number, cpuSeconds: number }
  /** Bytes of file data still live after the churn (the volume's statfs: stored blocks). */
  liveBytes: number
  /** du of the store directory (LevelDB and the replication journal, if any). */
  storeBytes: { afterChurn: number, afterIdle: number, idleSeconds: number, emptied: number, emptiedIdleSeconds: number }
  storePerLive: { afterChurn: number, afterIdle: number }
  fresh: AgingFigures[]
  aged: AgingFigures[]
  /** Medians of aged / fresh of each pair. */
  ratio: { write: number, read: number, create: number, stat: number, delete: number }
  bytes: number
  smallFiles: number
}

/** Bytes under `dir` as du counts them (allocated blocks). */
export async function duBytes (dir: string): Promise<number> {
  let total = 0
  for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) total += await duBytes(p)
    else { try { total += (await fsp.stat(p)).blocks * 512 } catch { /* removed meanwhile (a compaction) */ } }
  }
  return total
}

/** Polls the store's size until it has not fallen for `quietMs` (reclaim has run or has nothing to do). */
async function settle (store: string, quietMs: number, maxMs: number): Promise<{ bytes: number, seconds: number }> {
  const t0 = now()
  let best = await duBytes(store)
  let since = now()
  while ((now() - since) * 1000 < quietMs && (now() - t0) * 1000 < maxMs) {
    await sleep(500)
    const b = await duBytes(store)
    if (b < best * 0.99) { best = b; since = now() }
  }
  return { bytes: await duBytes(store), seconds: now() - t0 }
}

/** A small seeded generator, so every run churns the same way. */
function rng (seed: number): () => number {
  let s = seed >>> 0
  return () => { s = (s + 0x6d2b79f5) >>> 0; let t = s; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296 }
}

/**
 * The churn: `files` files of `fileBytes` overwritten at random offsets (1 B to 128 KiB, now and
 * then truncated and regrown), with rounds of small files (most deleted again) and big files
 * (written, then deleted) in between. Leaves the files and the kept small files live.
 */
export async function churn (mnt: string, o: { writes: number, files: number, fileBytes: number, rounds: number, smallPerRound: number, bigBytes: number }): Promise<{ writes: number, bytesWritten: number, smallFilesMade: number, bigFilesMade: number }> {
  const rand = rng(17)
  const buf = randomFillSync(Buffer.alloc(128 * 1024))
  let bytesWritten = 0
  let smallFilesMade = 0
  let bigFilesMade = 0
  const fhs = []
  for (let i = 0; i < o.files; i++) {
    const fh = await fsp.open(join(mnt, `fsx-${i}`), 'w+')
    for (let pos = 0; pos < o.fileBytes; pos += buf.length) { await fh.write(buf, 0, Math.min(buf.length, o.fileBytes - pos), pos); bytesWritten += buf.length }
    fhs.push(fh)
  }
  const perRound = Math.ceil(o.writes / o.rounds)
  let writes = 0
  try {
    for (let r = 0; r < o.rounds; r++) {
      for (let w = 0; w < perRound && writes < o.writes; w++, writes++) {
        const fh = fhs[Math.floor(rand() * fhs.length)]
        if (rand() < 0.01) { await fh.truncate(Math.floor(rand() * o.fileBytes)); continue }
        const len = 1 + Math.floor(rand() * rand() * buf.length)
        const pos = Math.floor(rand() * (o.fileBytes - len))
        buf.writeUInt32LE(writes, 0)
        await fh.write(buf, 0, len, pos)
        bytesWritten += len
      }
      const dir = join(mnt, `round-${r}`)
      await fsp.mkdir(dir)
      for (let i = 0; i < o.smallPerRound; i++) {
        const len = 1 + Math.floor(rand() * 16384)
        await fsp.writeFile(join(dir, `f${i}`), buf.subarray(0, len))
        bytesWritten += len
        smallFilesMade++
      }
      // Keep one small file in ten.
      for (let i = 0; i < o.smallPerRound; i++) if (i % 10 !== 0) await fsp.unlink(join(dir, `f${i}`))
      if (o.bigBytes > 0 && r % 4 === 3) {
        await seqWrite(join(mnt, 'big-churn.bin'), o.bigBytes)
        bytesWritten += o.bigBytes
        bigFilesMade++
        await fsp.unlink(join(mnt, 'big-churn.bin'))
      }
    }
  } finally {
    for (const fh of fhs) await fh.close()
  }
  return { writes, bytesWritten, smallFilesMade, bigFilesMade }
}

/** The volume's stored data bytes (statfs: what its blocks hold, holes not counted). */
async function liveBytesOf (mnt: string): Promise<number> {
  const st = await fsp.statfs(mnt)
  return (st.blocks - st.bfree) * st.bsize
}

async function figures (mnt: string, label: string, bytes: number, files: number): Promise<AgingFigures> {
  const file = join(mnt, 'seq.bin')
  dropCaches()
  const write = await seqWrite(file, bytes)
  dropCaches()
  const read = await seqRead(file, bytes)
  await fsp.unlink(file)
  const small = await smallFiles(join(mnt, 'small'), files)
  console.error(`[aging] ${label}: write ${write.toFixed(1)} MiB/s, read ${read.toFixed(1)} MiB/s, create ${small.create.toFixed(0)}/s`)
  return { write, read, small }
}

export async function agingBench (work: string): Promise<AgingResults> {
  const bytes = parseSize(process.env.BENCH_AGING_BYTES ?? '512M')
  const nSmall = Number(process.env.BENCH_AGING_SMALL_FILES ?? '2000')
  const repeats = Number(process.env.BENCH_AGING_REPEATS ?? '3')
  const churnOpts = {
    writes: Number(process.env.BENCH_AGING_WRITES ?? '60000'),
    files: Number(process.env.BENCH_AGING_FILES ?? '4'),
    fileBytes: parseSize(process.env.BENCH_AGING_FILE_BYTES ?? '32M'),
    rounds: 40,
    smallPerRound: Number(process.env.BENCH_AGING_SMALL_PER_ROUND ?? '500'),
    bigBytes: parseSize(process.env.BENCH_AGING_BIG_BYTES ?? '64M')
  }
  const quietMs = Number(process.env.BENCH_AGING_QUIET_MS ?? '12000')
  const agedDir = join(work, 'aging-aged')
  const agedMnt = join(agedDir, 'mnt')
  const agedStore = join(agedDir, 'store')
  await fsp.mkdir(agedMnt, { recursive: true })
  let aged: Mounted = await startMount('replfs', agedMnt, agedStore, [], 'aged')
  try {
    console.error(`[aging] churn: ${churnOpts.writes} random writes on ${churnOpts.files} x ${churnOpts.fileBytes / MiB} MiB, ${churnOpts.rounds} rounds of ${churnOpts.smallPerRound} small files, a ${churnOpts.bigBytes / MiB} MiB file every 4 rounds`)
    const cpu0 = cpuSeconds(aged.child.pid!)
    const t0 = now()
    const c = await churn(agedMnt, churnOpts)
    const seconds = now() - t0
    const cpu = cpuSeconds(aged.child.pid!) - cpu0
    const liveBytes = await liveBytesOf(agedMnt)
    const afterChurn = await duBytes(agedStore)
    const idle = await settle(agedStore, quietMs, 300_000)
    console.error(`[aging] churn took ${seconds.toFixed(1)} s: live ${(liveBytes / MiB).toFixed(0)} MiB, store ${(afterChurn / MiB).toFixed(0)} MiB after it, ${(idle.bytes / MiB).toFixed(0)} MiB after ${idle.seconds.toFixed(0)} s idle`)
    const fresh: AgingFigures[] = []
    const agedF: AgingFigures[] = []
    for (let i = 0; i < repeats; i++) {
      const fdir = join(work, `aging-fresh-${i}`)
      await fsp.mkdir(join(fdir, 'mnt'), { recursive: true })
      const m = await startMount('replfs', join(fdir, 'mnt'), join(fdir, 'store'), [], 'fresh')
      try { fresh.push(await figures(join(fdir, 'mnt'), `fresh ${i + 1}/${repeats}`, bytes, nSmall)) } finally { await stopMount(m); await fsp.rm(fdir, { recursive: true, force: true }) }
      // Remount the aged store too, so both are measured from a freshly opened store.
      await stopMount(aged)
      aged = await startMount('replfs', agedMnt, agedStore, [], 'aged')
      agedF.push(await figures(agedMnt, `aged ${i + 1}/${repeats}`, bytes, nSmall))
      // Its reclaim runs once idle: let it finish before the next fresh store is measured.
      await settle(agedStore, quietMs, 300_000)
    }
    for (const e of await fsp.readdir(agedMnt)) await fsp.rm(join(agedMnt, e), { recursive: true, force: true })
    const emptied = await settle(agedStore, quietMs, 300_000)
    console.error(`[aging] emptied volume: store ${(emptied.bytes / MiB).toFixed(1)} MiB after ${emptied.seconds.toFixed(0)} s idle`)
    const med = (f: (x: AgingFigures) => number): number => pct(fresh.map((x, i) => f(agedF[i]) / f(x)), 0.5)
    return {
      churn: { ...c, seconds, cpuSeconds: cpu },
      liveBytes,
      storeBytes: { afterChurn, afterIdle: idle.bytes, idleSeconds: idle.seconds, emptied: emptied.bytes, emptiedIdleSeconds: emptied.seconds },
      storePerLive: { afterChurn: afterChurn / liveBytes, afterIdle: idle.bytes / liveBytes },
      fresh,
      aged: agedF,
      ratio: { write: med(x => x.write), read: med(x => x.read), create: med(x => x.small.create), stat: med(x => x.small.stat), delete: med(x => x.small.delete) },
      bytes,
      smallFiles: nSmall
    }
  } finally {
    await stopMount(aged)
    await fsp.rm(agedDir, { recursive: true, force: true })
  }
}

/** The aging section's lines of the report. */
export function reportAging (a: AgingResults): void {
  const f = (x: number): string => !Number.isFinite(x) ? '-' : x >= 100 ? x.toFixed(0) : x.toFixed(1)
  const mib = (x: number): string => `${(x / MiB).toFixed(1)} MiB`
  const ok = (v: boolean): string => v ? 'ok' : 'MISSED'
  const c = a.churn
  console.log(`\naging (churn: ${c.writes} random writes, ${c.smallFilesMade} small files made (9 in 10 deleted), ${c.bigFilesMade} big files written and deleted; ${mib(c.bytesWritten)} written in ${c.seconds.toFixed(0)} s, mount CPU ${c.cpuSeconds.toFixed(1)} s):`)
  console.log(`  store ${mib(a.storeBytes.afterChurn)} for ${mib(a.liveBytes)} live = ${a.storePerLive.afterChurn.toFixed(2)}x right after; ${mib(a.storeBytes.afterIdle)} = ${a.storePerLive.afterIdle.toFixed(2)}x after ${a.storeBytes.idleSeconds.toFixed(0)} s idle (target <= 1.5x ${ok(a.storePerLive.afterIdle <= 1.5)})`)
  console.log(`  emptied (every file deleted): store ${mib(a.storeBytes.emptied)} after ${a.storeBytes.emptiedIdleSeconds.toFixed(0)} s idle`)
  const row = (label: string, g: (x: AgingFigures) => number, r: number): string =>
    `  ${label}: aged ${a.aged.map(x => f(g(x))).join('/')} vs fresh ${a.fresh.map(x => f(g(x))).join('/')}; median ratio ${r.toFixed(2)}x (target >= 0.80 ${ok(r >= 0.8)})`
  console.log(`  interleaved fresh/aged, ${a.fresh.length} pairs (${a.bytes / MiB} MiB sequential, ${a.smallFiles} x 4 KiB files):`)
  console.log(row('seq write MB/s', x => x.write, a.ratio.write))
  console.log(row('seq read MB/s', x => x.read, a.ratio.read))
  console.log(row('create files/s', x => x.small.create, a.ratio.create))
  console.log(row('stat files/s', x => x.small.stat, a.ratio.stat))
  console.log(row('delete files/s', x => x.small.delete, a.ratio.delete))
}
