// replfs benchmark: replfs mount vs plain directory vs fuse-native passthrough vs raw LevelDB.
// Env: BENCH_DIR (default /tmp), BENCH_BYTES (default 1G; suffix K/M/G), BENCH_FILES (default 10000),
// BENCH_LAG_SECONDS (default 15: the replication lag test), BENCH_PINNED (default 1; 0 skips the one-core-per-host replication runs), BENCH_SECTIONS (default all; comma list of
// plain,passthrough,replfs,replication,leveldb,writepairs,snapshots,failover,aging,sqlite,bindings — replication needs replfs, for quick partial runs;
// snapshots and failover stand alone: see bench/snapshots.ts and bench/failover.ts for their own BENCH_SNAPSHOT_* and
// BENCH_FAILOVER_* sizes; aging: bench/aging.ts, BENCH_AGING_*), BENCH_WRITE_PAIRS (default 3: writepairs).
import fsp from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { dropCaches, leveldb, leveldbWrite, MiB, parseSize, seqRead, seqWrite, smallFiles, type SmallResult } from './fsbench.js'
import { cleanupAll, root, startMount, stopMount, rssSampler, vmHWM, writeOnFreshMount } from './mounts.js'
import { pct, replicationBench, reportSyncVsAsync, type ReplicationResults } from './replication.js'
import { snapshotBench, type SnapshotResults } from './snapshots.js'
import { bindingsBench, reportBindings, type BindingsResults } from './bindings.js'
import { failoverBench, type FailoverResults } from './failover.js'
import { agingBench, reportAging, type AgingResults } from './aging.js'
import { reportSqlite, sqliteBench, type SqliteResults } from './sqlite.js'

const BYTES = parseSize(process.env.BENCH_BYTES ?? '1G')
const FILES = Number(process.env.BENCH_FILES ?? '10000')
const BASE = resolve(process.env.BENCH_DIR ?? '/tmp')
const LAG_SECONDS = Number(process.env.BENCH_LAG_SECONDS ?? '15')
const ALL_SECTIONS = ['plain', 'passthrough', 'replfs', 'replication', 'leveldb', 'writepairs', 'snapshots', 'failover', 'aging', 'sqlite', 'bindings'] as const
const SECTIONS = new Set((process.env.BENCH_SECTIONS ?? ALL_SECTIONS.join(',')).split(',').map(x => x.trim()).filter(x => x !== ''))
for (const x of SECTIONS) if (!(ALL_SECTIONS as readonly string[]).includes(x)) throw new Error(`BENCH_SECTIONS: unknown section ${x}`)
if (SECTIONS.has('replication') && !SECTIONS.has('replfs')) throw new Error('BENCH_SECTIONS: replication needs replfs (its ratios are to the unreplicated mount)')

// ---- the runs ----
interface FsResult { write: number, read: number, small: SmallResult }
type Results = {
  plain: FsResult, passthrough: FsResult, replfs: FsResult & { peakRssWriteBytes: number, peakRssReadBytes: number, peakRssEndBytes: number, writeRss?: { anonPeak: number, filePeak: number, samples: number } }, leveldb: { write: number, read: number }
  replication: ReplicationResults
  writepairs: WritePairs
  snapshots: SnapshotResults
  failover: FailoverResults
  aging: AgingResults
  sqlite: SqliteResults
  bindings: BindingsResults
}

/**
 * The write target (replfs >= 0.70x raw LevelDB) from alternating pairs: raw LevelDB, then replfs
 * on a fresh store, each writing the same bytes, BENCH_WRITE_PAIRS times. One pair's two figures
 * are seconds apart, so the machine's swings (raw LevelDB wrote 151 and 238 MiB/s in two runs of
 * the main sections) cancel better than between sections minutes apart; the median ratio is the figure.
 */
interface WritePairs { pairs: Array<{ leveldb: number, replfs: number, ratio: number }>, medianRatio: number }

async function writePairs (work: string, n: number): Promise<WritePairs> {
  const pairs: WritePairs['pairs'] = []
  for (let i = 0; i < n; i++) {
    const ldir = join(work, `pair-leveldb-${i}`)
    dropCaches()
    const lw = await leveldbWrite(ldir, BYTES)
    await fsp.rm(ldir, { recursive: true, force: true })
    const rw = await writeOnFreshMount(join(work, `pair-replfs-${i}`), BYTES, 'write pair')
    pairs.push({ leveldb: lw, replfs: rw, ratio: rw / lw })
    console.error(`[write pairs] ${i + 1}/${n}: raw LevelDB ${lw.toFixed(1)} MiB/s, replfs ${rw.toFixed(1)} MiB/s, ${(rw / lw).toFixed(2)}x`)
  }
  return { pairs, medianRatio: pct(pairs.map(p => p.ratio), 0.5) }
}

async function fsTarget (name: string, dir: string, remount?: () => Promise<void>, afterWrite?: () => void, afterRead?: () => void): Promise<FsResult> {
  const file = join(dir, 'big.bin')
  console.error(`[${name}] sequential write ${BYTES / MiB} MiB`)
  const write = await seqWrite(file, BYTES, afterWrite)
  if (remount !== undefined) await remount()
  dropCaches()
  console.error(`[${name}] sequential read`)
  const read = await seqRead(file, BYTES)
  afterRead?.()
  await fsp.unlink(file)
  console.error(`[${name}] ${FILES} small files`)
  const small = await smallFiles(join(dir, 'small'), FILES)
  return { write, read, small }
}

async function main (): Promise<void> {
  const work = await fsp.mkdtemp(join(BASE, 'replfs-bench-'))
  // Control sockets of the bench's mounts (mount processes, status and verify calls inherit it).
  process.env.REPLFS_RUN_DIR = join(work, 'run')
  console.error(`work dir ${work}; ${BYTES} bytes, ${FILES} files; sections ${[...SECTIONS].join(',')}`)
  const results: Partial<Results> = {}
  try {
    if (SECTIONS.has('plain')) {
    // (b) plain directory
    const plain = join(work, 'plain')
    await fsp.mkdir(plain)
    dropCaches()
    results.plain = await fsTarget('plain', plain)
    await fsp.rm(plain, { recursive: true, force: true })
    }
    if (SECTIONS.has('passthrough')) {

    // (c) fuse-native passthrough in a child process
    const ptSrc = join(work, 'pt-src')
    const ptMnt = join(work, 'pt-mnt')
    await fsp.mkdir(ptSrc); await fsp.mkdir(ptMnt)
    dropCaches()
    let pt = await startMount('passthrough', ptMnt, ptSrc)
    results.passthrough = await fsTarget('passthrough', ptMnt, async () => { await stopMount(pt); pt = await startMount('passthrough', ptMnt, ptSrc) })
    await stopMount(pt)
    await fsp.rm(ptSrc, { recursive: true, force: true })
    }
    if (SECTIONS.has('replfs')) {

    // (a) replfs
    const store = join(work, 'replfs-store')
    const rMnt = join(work, 'replfs-mnt')
    await fsp.mkdir(rMnt)
    dropCaches()
    let rf = await startMount('replfs', rMnt, store)
    let peakWrite = NaN
    let peakRead = NaN
    const sampler = rssSampler(rf.child.pid!)
    let writeRss = { anonPeak: NaN, filePeak: NaN, samples: 0 }
    const r = await fsTarget('replfs', rMnt,
      async () => { await stopMount(rf); rf = await startMount('replfs', rMnt, store) },
      () => { peakWrite = vmHWM(rf.child.pid!); writeRss = sampler.stop() },
      () => { peakRead = vmHWM(rf.child.pid!) })
    const peakEnd = vmHWM(rf.child.pid!)
    await stopMount(rf)
    results.replfs = { ...r, peakRssWriteBytes: peakWrite, peakRssReadBytes: peakRead, peakRssEndBytes: peakEnd, writeRss }
    await fsp.rm(store, { recursive: true, force: true })
    }
    // (e) replication: primary + secondary over loopback, against the unreplicated replfs write above
    if (SECTIONS.has('replication')) results.replication = await replicationBench(work, BYTES, results.replfs!.write, LAG_SECONDS)
    if (SECTIONS.has('leveldb')) {

    // (d) raw LevelDB
    console.error('[leveldb] write + iterate')
    dropCaches()
    results.leveldb = await leveldb(join(work, 'leveldb'), BYTES)
    }
    if (SECTIONS.has('writepairs')) results.writepairs = await writePairs(work, Number(process.env.BENCH_WRITE_PAIRS ?? '3'))
    // (f) snapshots: create on a small and a big standalone volume, restore on a replicated pair
    if (SECTIONS.has('snapshots')) results.snapshots = await snapshotBench(work)
    // (g) failover: resync after a partition (journal and digest paths), promote, switchover
    if (SECTIONS.has('failover')) results.failover = await failoverBench(work)
    // (h) aging: a churned store against fresh ones, interleaved
    if (SECTIONS.has('aging')) results.aging = await agingBench(work)
    // (i) sqlite (synchronous=FULL) on a sync pair against the unreplicated mount
    if (SECTIONS.has('sqlite')) results.sqlite = await sqliteBench(work)
    if (SECTIONS.has('bindings')) results.bindings = await bindingsBench(work, BYTES, FILES)
  } finally {
    await cleanupAll()
    await fsp.rm(work, { recursive: true, force: true }).catch(e => console.error(`warning: cannot remove ${work}: ${(e as Error).message}`))
  }
  await report(results)
}

async function report (r: Partial<Results>): Promise<void> {
  const f = (x: number | undefined): string => x === undefined || !Number.isFinite(x) ? '-' : x >= 100 ? x.toFixed(0) : x.toFixed(1)
  const x = (a: number | undefined, b: number | undefined): string => a === undefined || b === undefined ? '-' : `${(a / b).toFixed(2)}x`
  const rows: Array<[string, string, string, string, string]> = [
    ['', 'replfs', 'plain', 'passthrough', 'leveldb'],
    ['seq write MB/s', f(r.replfs?.write), f(r.plain?.write), f(r.passthrough?.write), f(r.leveldb?.write)],
    ['seq read MB/s', f(r.replfs?.read), f(r.plain?.read), f(r.passthrough?.read), f(r.leveldb?.read)],
    ['create 4K files/s', f(r.replfs?.small.create), f(r.plain?.small.create), f(r.passthrough?.small.create), '-'],
    ['stat files/s', f(r.replfs?.small.stat), f(r.plain?.small.stat), f(r.passthrough?.small.stat), '-'],
    ['delete files/s', f(r.replfs?.small.delete), f(r.plain?.small.delete), f(r.passthrough?.small.delete), '-']
  ]
  const w = [0, 1, 2, 3, 4].map(i => Math.max(...rows.map(row => row[i].length)))
  console.log(`\nreplfs benchmark: ${BYTES / MiB} MiB sequential (1 MiB writes + fsync), ${FILES} x 4 KiB files, dir ${BASE} (MB = MiB); sections ${[...SECTIONS].join(',')}`)
  if (r.replfs !== undefined || r.plain !== undefined || r.passthrough !== undefined || r.leveldb !== undefined) {
    for (const row of rows) console.log(row.map((c, i) => i === 0 ? c.padEnd(w[i]) : c.padStart(w[i])).join('  '))
    console.log('')
  }
  if (r.replfs !== undefined) {
    console.log(`write: ${f(r.replfs.write)} MB/s = ${x(r.replfs.write, r.plain?.write)} plain, ${x(r.replfs.write, r.passthrough?.write)} passthrough, ${x(r.replfs.write, r.leveldb?.write)} leveldb`)
    console.log(`read: ${f(r.replfs.read)} MB/s = ${x(r.replfs.read, r.plain?.read)} plain, ${x(r.replfs.read, r.passthrough?.read)} passthrough, ${x(r.replfs.read, r.leveldb?.read)} leveldb`)
    for (const k of ['create', 'stat', 'delete'] as const) {
      console.log(`${k}: ${f(r.replfs.small[k])} files/s = ${x(r.replfs.small[k], r.plain?.small[k])} plain, ${x(r.replfs.small[k], r.passthrough?.small[k])} passthrough`)
    }
    console.log(`replfs mount process peak RSS (VmHWM): ${(r.replfs.peakRssWriteBytes / MiB).toFixed(0)} MiB after the write (first mount); remounted process: ${(r.replfs.peakRssReadBytes / MiB).toFixed(0)} MiB after the read, ${(r.replfs.peakRssEndBytes / MiB).toFixed(0)} MiB after the small files`)
    const w = r.replfs.writeRss
    if (w !== undefined) console.log(`  during the write (sampled every 50 ms, ${w.samples} samples): anonymous memory peaked at ${(w.anonPeak / MiB).toFixed(0)} MiB, file-backed pages (LevelDB's memory-mapped table files, page cache) at ${(w.filePeak / MiB).toFixed(0)} MiB; target: RSS < 300 MiB`)
  }
  const wp = r.writepairs
  if (wp !== undefined) {
    console.log(`write, alternating pairs (raw LevelDB then replfs on a fresh store, ${BYTES / MiB} MiB each): ${wp.pairs.map(p => `${f(p.replfs)}/${f(p.leveldb)} = ${p.ratio.toFixed(2)}x`).join(', ')}; median ${wp.medianRatio.toFixed(2)}x (target >= 0.70x ${wp.medianRatio >= 0.7 ? 'ok' : 'MISSED'})`)
  }
  const rep = r.replication
  if (rep !== undefined) {
    const ok = (v: boolean): string => v ? 'ok' : 'MISSED'
    const ms = (v: number | null | undefined): string => v === null || v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(1)
    console.log(`\nreplication (primary -> secondary over loopback TCP, fresh stores per config; ratios to the unreplicated replfs write above, ${f(r.replfs?.write)} MB/s):`)
    const rr: string[][] = [['', 'write MB/s', 'x unrepl', 'target', 'wire B/B', 'lag at end', 'catch-up s', 'cpu s prim/sec', 'ack p50/p99 ms', 'sec durable p50/p99 ms']]
    for (const m of [rep.async, rep.sync]) {
      rr.push([`seq write ${m.mode}`, f(m.write), `${m.ratio.toFixed(2)}x`, `${m.mode === 'async' ? '>=0.80' : '>=0.50'} ${ok(m.ratio >= (m.mode === 'async' ? 0.8 : 0.5))}`,
        `${m.wireRatioOut.toFixed(3)} ${ok(m.wireRatioOut <= 1.4)}`, `${String(m.atWriteEnd.lagRecords)} rec/${((m.atWriteEnd.lagBytes ?? 0) / MiB).toFixed(0)} MiB`, m.catchUpSeconds.toFixed(2),
        `${m.cpuSeconds.primary.toFixed(1)}/${m.cpuSeconds.secondary.toFixed(1)}`, `${ms(m.ackLatencyMs.p50)}/${ms(m.ackLatencyMs.p99)}`, `${ms(m.secondaryDurableMs?.p50)}/${ms(m.secondaryDurableMs?.p99)}`])
    }
    const rw = rr[0].map((_c, i) => Math.max(...rr.map(row => row[i].length)))
    for (const row of rr) console.log(row.map((c, i) => i === 0 ? c.padEnd(rw[i]) : c.padStart(rw[i])).join('  '))
    if (rep.syncVsAsync !== undefined) reportSyncVsAsync(rep.syncVsAsync)
    const v = rep.async.verify
    console.log(`async: secondary caught up ${rep.async.catchUpSeconds.toFixed(2)} s after the write returned; replfs verify: ${v === undefined ? 'not run' : `${v.ok ? 'identical' : 'FAILED'} (${v.detail}, ${v.seconds.toFixed(1)} s)`}`)
    console.log(`wire bytes per byte written: async out ${rep.async.wireRatioOut.toFixed(3)} / in ${rep.async.wireRatioIn.toFixed(3)}, sync out ${rep.sync.wireRatioOut.toFixed(3)} / in ${rep.sync.wireRatioIn.toFixed(3)} (target <= 1.4)`)
    const l = rep.lag
    console.log(`lag under load (async, ${l.writeSize / 1024} KiB writes paced to ${f(l.targetMiBps)} MB/s = half the async write rate, achieved ${f(l.achievedMiBps)} MB/s, ${l.seconds} s):`)
    console.log(`  primary ackLatencyMs (commit -> secondary ack): p50 ${ms(l.ackLatencyMs.p50)} ms, p99 ${ms(l.ackLatencyMs.p99)} ms (${l.ackLatencyMs.samples} samples; worst p99 seen during the run ${ms(l.ackLatencyMs.maxP99Seen)} ms) target p99 < 100: ${ok((l.ackLatencyMs.maxP99Seen ?? Infinity) < 100)}`)
    console.log(`  end to end (marker file written on the primary every 50 ms until visible on the secondary mount): p50 ${ms(l.endToEndMs.p50)} ms, p99 ${ms(l.endToEndMs.p99)} ms, max ${ms(l.endToEndMs.max)} ms (${l.endToEndMs.samples} markers, ${l.endToEndMs.missing} not seen) target p99 < 100: ${ok(l.endToEndMs.p99 < 100)}`)
    console.log(`  marker write on the primary: p50 ${ms(l.markerLocalMs.p50)} ms, p99 ${ms(l.markerLocalMs.p99)} ms; status samples: max lagRecords ${l.maxLagRecords}, max lagBytes ${(l.maxLagBytes / MiB).toFixed(1)} MiB, max lagSeconds ${l.maxLagSeconds}; caught up ${l.catchUpSeconds.toFixed(2)} s after the load`)
    const oc = rep.oneCorePerHost
    if (oc !== undefined) {
      console.log(`one core per host (taskset: application + primary on CPU 0, secondary on CPU 1; unreplicated mount + application on CPU 0): unreplicated ${f(oc.unreplicated)} MB/s;` +
        ` async ${f(oc.async.write)} MB/s = ${oc.async.ratio.toFixed(2)}x (target >=0.80 ${ok(oc.async.ratio >= 0.8)}); sync ${f(oc.sync.write)} MB/s = ${oc.sync.ratio.toFixed(2)}x (target >=0.50 ${ok(oc.sync.ratio >= 0.5)})`)
    }
  }
  const sn = r.snapshots
  if (sn !== undefined) {
    const ms = (v: number): string => !Number.isFinite(v) ? '-' : v >= 100 ? v.toFixed(0) : v.toFixed(1)
    const mib = (v: number): string => `${(v / MiB).toFixed(0)} MiB`
    const ok = (v: boolean): string => v ? 'ok' : 'MISSED'
    const c = sn.create
    console.log('\nsnapshots (in-band snapshot commands):')
    console.log(`  create on a standalone mount (control-socket round trip, median of ${c.small.samplesMs.length}): ${mib(c.small.volumeBytes)} volume ${ms(c.small.medianMs)} ms [${c.small.samplesMs.map(ms).join(' ')}], ${mib(c.big.volumeBytes)} volume ${ms(c.big.medianMs)} ms [${c.big.samplesMs.map(ms).join(' ')}]; ratio ${c.ratio.toFixed(2)} (of the fastest ${c.minRatio.toFixed(2)}) target near 1: ${ok(c.ratio <= 2)}`)
    console.log(`  control, a mkdir (one durable record) before each create, median: ${ms(c.small.mkdirMedianMs)} ms / ${ms(c.big.mkdirMedianMs)} ms; create / mkdir: ${(c.small.medianMs / c.small.mkdirMedianMs).toFixed(2)} / ${(c.big.medianMs / c.big.mkdirMedianMs).toFixed(2)}`)
    console.log(`  create through the CLI (node start-up included): ${ms(c.small.cliMs)} ms / ${ms(c.big.cliMs)} ms`)
    const e = sn.restore
    console.log(`  restore, replicated pair (${e.mode}), ${mib(e.volumeBytes)} in ${e.files} files; after the snapshot: ${mib(e.overwrittenBytes)} overwritten in place, ${e.deletedFiles} files (${mib(e.deletedBytes)}) deleted, ${mib(e.addedBytes)} added:`)
    console.log(`    (a) replfs snapshot restore returned after ${ms(e.restoreCliMs)} ms on the primary (the CLI alone, snapshot list: ${ms(e.cliOverheadMs)} ms)`)
    console.log(`    (b) secondary applied it ${ms(e.secondaryAppliedMs)} ms after the start (${ms(e.secondaryAppliedMs - e.restoreCliMs)} ms after the command returned); primary saw the ack at ${ms(e.primaryAckedMs)} ms`)
    const idle = e.idleBytesOutPerSecond * e.secondaryAppliedMs / 1000
    console.log(`    (c) wire: ${e.wireBytesOut} B out of the primary, ${e.wireBytesIn} B into the secondary (of which ~${idle.toFixed(0)} B are idle pings at ${e.idleBytesOutPerSecond.toFixed(0)} B/s) target < 4096: ${ok(e.wireBytesOut < 4096)}; seq ${e.seqBefore} -> ${e.seqAfter}`)
    console.log(`    usedBytes ${mib(e.usedBytes.beforeRestore)} before, ${mib(e.usedBytes.afterRestore)} after (secondary ${mib(e.usedBytes.secondaryAfterRestore)}); longest stat() during the restore: primary ${ms(e.maxStatMs.primary)} ms, secondary ${ms(e.maxStatMs.secondary)} ms`)
    console.log(`    content: ${e.contentOk.primary && e.contentOk.secondary ? 'ok' : 'WRONG'} (${e.contentOk.detail}); replfs verify: ${e.verify.ok ? 'identical' : 'FAILED'} (${e.verify.detail}, ${e.verify.seconds.toFixed(1)} s); snapshot create on the pair's primary: ${ms(e.createMs)} ms`)
    console.log(`    the same restore again after overwriting the same bytes (control socket, no CLI): returned after ${ms(e.again.restoreMs)} ms, secondary applied at ${ms(e.again.secondaryAppliedMs)} ms`)
    console.log(`    writes during it: a 4 KiB file every 20 ms on the primary (${e.again.probeWrites} of them; ${e.again.probeRaces} found their file removed by the restore under them), longest ${ms(e.again.probeWriteMaxMs)} ms = ${(e.again.probeWriteMaxMs / e.again.probeWriteIdleMedianMs).toFixed(1)}x the idle median (${ms(e.again.probeWriteIdleMedianMs)} ms)`)
  }
  if (r.failover !== undefined) reportFailover(r.failover)
  if (r.aging !== undefined) reportAging(r.aging)
  if (r.sqlite !== undefined) { console.log(''); reportSqlite(r.sqlite) }
  if (r.bindings !== undefined) { console.log(''); reportBindings(r.bindings) }
  const outDir = join(root, 'bench', 'results')
  await fsp.mkdir(outDir, { recursive: true })
  // A run of some sections keeps the other sections' last results, each with the date of its run
  // (ratios are only ever computed within one run).
  const date = new Date().toISOString()
  let previous: { results?: Record<string, unknown>, sectionDates?: Record<string, string>, date?: string } = {}
  try { previous = JSON.parse(await fsp.readFile(join(outDir, 'latest.json'), 'utf8')) } catch { /* first run */ }
  const sectionDates: Record<string, string> = {}
  for (const k of Object.keys(previous.results ?? {})) sectionDates[k] = previous.sectionDates?.[k] ?? previous.date ?? 'unknown'
  for (const k of Object.keys(r)) sectionDates[k] = date
  const json = { date, bytes: BYTES, files: FILES, dir: BASE, node: process.version, sections: [...SECTIONS], sectionDates, units: { write: 'MiB/s', read: 'MiB/s', small: 'files/s', rss: 'bytes', latency: 'ms', wire: 'bytes on the wire per byte written', snapshots: 'ms (create, restore), bytes (wire, usedBytes)', failover: 'bytes (wire), seconds (resync), ms (promote, switchover)' }, results: { ...previous.results, ...r } }
  await fsp.writeFile(join(outDir, 'latest.json'), JSON.stringify(json, null, 2) + '\n')
  console.log(`results written to ${join(outDir, 'latest.json')}`)
}

/** The failover section's lines (bench/failover.ts); a part left out by BENCH_FAILOVER_PARTS is skipped. */
function reportFailover (fo: FailoverResults): void {
  const ok = (v: boolean): string => v ? 'ok' : 'MISSED'
  const ms = (v: number | null | undefined): string => v === null || v === undefined || !Number.isFinite(v) ? '-' : v >= 100 ? v.toFixed(0) : v.toFixed(1)
  const mib = (v: number): string => `${(v / MiB).toFixed(1)} MiB`
  const s = (v: number | null): string => v === null ? '-' : v.toFixed(2)
  const list = <T>(xs: T[], f: (x: T) => number): string => `[${xs.map(x => ms(f(x))).join(' ')}]`
  console.log(`\nfailover (pairs over loopback TCP, mode ${fo.mode}):`)
  if (fo.resync !== undefined) {
    const j = fo.resync.journal
    console.log(`  resync after a partition: ${mib(j.change.changedBytes)} changed on a ${mib(j.volumeBytes - j.padBytes)} volume while the secondary was stopped (${j.change.rewriteRegions} regions, ${mib(j.change.rewrittenBytes)}, rewritten in place; ${j.change.newFiles} new files, ${mib(j.change.newFileBytes)}):`)
    for (const p of [fo.resync.journal, fo.resync.digest]) {
      const rs = p.resync
      const how = p.path === 'journal'
        ? `journal path (--journal-size default, journal ${p.journalCovers ? 'covers' : 'does NOT cover'} the gap), ${p.startedAs}`
        : `digest path (--journal-size ${mib(p.journalSize ?? NaN)}, journal ${p.journalCovers ? 'still covers' : 'does not cover'} the gap${p.padBytes > 0 ? `; ${mib(p.padBytes)} pad written before the stop` : ''}), ${p.startedAs}`
      console.log(`    ${how}: ${p.wireBytes} B on the wire = ${(p.wireBytes / p.change.changedBytes).toFixed(3)}x changed (target <= 1.1x + 1 MiB = ${p.targetBytes.toFixed(0)} B: ${ok(p.met)})`)
      console.log(`      primary bytesOut ${p.bytesOut} B${rs === null ? '' : `, resync bytesSent ${rs.bytesSent} + bytesReceived ${rs.bytesReceived} = ${rs.bytesSent + rs.bytesReceived} B, ranges ${rs.rangesDiffering} differing of ${rs.ranges} compared`}; secondary bytesIn ${p.secondaryBytesIn} B`)
      console.log(`      took ${s(p.seconds.connectedToCaughtUp)} s from the reconnection to caught up${p.seconds.connectedToResyncDone === null ? '' : ` (resync by difference done at ${s(p.seconds.connectedToResyncDone)} s)`}; ${s(p.seconds.restartToCaughtUp)} s from the restart (connected after ${s(p.seconds.restartToConnected)} s); replfs verify: ${p.verify === undefined ? 'not run' : `${p.verify.ok ? 'identical' : 'FAILED'} (${p.verify.detail})`}`)
    }
  }
  const pr = fo.promote
  if (pr !== undefined) {
    console.log(`  promote --force after kill -9 of the primary (fresh pair each, ${mib(pr.dataBytes)} data), command start to a fsynced write on its mount: median ${ms(pr.medianMs)} ms, max ${ms(pr.maxMs)} ms ${list(pr.samples, x => x.writableMs)} target < 1000: ${ok(pr.maxMs < 1000)}`)
    console.log(`    CLI returned at ${list(pr.samples, x => x.cliMs)} ms (the CLI alone, replfs status: ${ms(pr.cliOverheadMs)} ms); the secondary saw the connection go ${list(pr.samples, x => x.noticedMs)} ms after the kill`)
    console.log(`    through the control socket (no CLI start-up): writable at median ${ms(pr.control.medianMs)} ms, max ${ms(pr.control.maxMs)} ms ${list(pr.control.samples, x => x.writableMs)}; answered at ${list(pr.control.samples, x => x.cliMs)} ms`)
  }
  const sw = fo.switchover
  if (sw !== undefined) {
    const sc = sw.control
    console.log(`  switchover on a connected pair with a 64 KiB + fsync writer every 20 ms, back and forth ${sw.samples.length} times: answered ms median ${ms(sw.medianMs)} ${list(sw.samples, x => x.ms)}; new primary took a write at median ${ms(sw.medianWritableMs)} ms, max ${ms(sw.maxWritableMs)} ms ${list(sw.samples, x => x.writableMs)}`)
    console.log(`    CLI ${list(sw.samples, x => x.cliMs)} ms (replfs status alone ${ms(sw.cliOverheadMs)} ms); writer gap old -> new primary ${list(sw.samples, x => x.writerGapMs)} ms; pair streaming again at ${list(sw.samples, x => x.pairStreamingMs)} ms`)
    console.log(`    through the control socket: answered ms median ${ms(sc.medianMs)} ${list(sc.samples, x => x.ms)}, new primary took a write at median ${ms(sc.medianWritableMs)} ms, max ${ms(sc.maxWritableMs)} ms ${list(sc.samples, x => x.writableMs)}; writer gap ${list(sc.samples, x => x.writerGapMs)} ms; pair streaming again at ${list(sc.samples, x => x.pairStreamingMs)} ms`)
    console.log(`    writer over all ${sw.samples.length + sc.samples.length} switchovers: ${sw.writer.writes} writes, failed: ${Object.entries(sw.writer.errors).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}`)
  }
}

let exiting = false
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (exiting) return
    exiting = true
    console.error(`${sig}: cleaning up`)
    void cleanupAll().finally(() => process.exit(130))
  })
}

main().catch(async err => {
  console.error(err)
  await cleanupAll()
  process.exitCode = 1
})
