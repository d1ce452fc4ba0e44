// replfs benchmark: replfs mount vs plain directory vs fuse-native passthrough vs raw LevelDB.
// Env: BENCH_DIR (default /tmp), BENCH_BYTES (default 1G; suffix K/M/G), BENCH_FILES (default 10000).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import fsp from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { dropCaches, leveldb, MiB, seqRead, seqWrite, smallFiles, type SmallResult } from './fsbench.js'

const here = dirname(fileURLToPath(import.meta.url)) // dist/bench
const root = resolve(here, '..', '..')

function parseSize (s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(s.trim())
  if (m === null) throw new Error(`bad size: ${s}`)
  const mult = { '': 1, k: 1024, m: MiB, g: 1024 * MiB, t: 1024 * 1024 * MiB }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't']
  return Math.round(Number(m[1]) * mult)
}

const BYTES = parseSize(process.env.BENCH_BYTES ?? '1G')
const FILES = Number(process.env.BENCH_FILES ?? '10000')
const BASE = resolve(process.env.BENCH_DIR ?? '/tmp')

// ---- child processes and mounts, always cleaned up ----
const children = new Set<ChildProcess>()
const mounts = new Set<string>()
const stopping = new Set<ChildProcess>()

function isMounted (mnt: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some(l => l.split(' ')[4] === mnt)
}

async function waitExit (child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true
  return await new Promise(resolve => {
    const t = setTimeout(() => resolve(false), ms)
    child.once('exit', () => { clearTimeout(t); resolve(true) })
  })
}

interface Mounted { child: ChildProcess, mnt: string, stderr: () => string }

async function startMount (kind: 'replfs' | 'passthrough', mnt: string, src: string): Promise<Mounted> {
  const args = kind === 'replfs'
    ? [join(root, 'bin', 'replfs'), 'mount', mnt, '--store', src, '--foreground']
    : [join(here, 'passthrough.js'), mnt, src]
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  mounts.add(mnt)
  let out = ''
  let err = ''
  child.stdout!.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); if (err.length > 1e6) err = err.slice(-5e5) })
  child.once('exit', (code, sig) => {
    children.delete(child)
    if (!stopping.has(child)) console.error(`${kind} mount process ${child.pid} exited unexpectedly (${code ?? sig}); stderr tail:\n${err.slice(-3000)}`)
  })
  const t0 = Date.now()
  for (;;) {
    const ready = kind === 'replfs' ? err.includes('"msg":"mounted"') : out.includes('ready')
    if (ready && isMounted(mnt)) break
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${kind} mount process exited (${child.exitCode ?? child.signalCode}): ${err.slice(-2000)}`)
    if (Date.now() - t0 > 60000) throw new Error(`${kind} did not mount within 60 s: ${err.slice(-2000)}`)
    await new Promise(r => setTimeout(r, 50))
  }
  return { child, mnt, stderr: () => err }
}

async function stopMount (m: Mounted): Promise<void> {
  stopping.add(m.child)
  m.child.kill('SIGTERM')
  if (!await waitExit(m.child, 120000)) {
    console.error(`warning: ${m.mnt} process did not exit after SIGTERM; killing`)
    m.child.kill('SIGKILL')
    await waitExit(m.child, 5000)
  }
  if (isMounted(m.mnt)) { try { execFileSync('fusermount', ['-uz', m.mnt]) } catch {} }
  mounts.delete(m.mnt)
}

async function cleanupAll (): Promise<void> {
  for (const c of [...children]) {
    stopping.add(c)
    c.kill('SIGTERM')
    if (!await waitExit(c, 30000)) { c.kill('SIGKILL'); await waitExit(c, 5000) }
  }
  for (const m of mounts) if (isMounted(m)) { try { execFileSync('fusermount', ['-uz', m]) } catch {} }
  mounts.clear()
}

function vmHWM (pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? NaN : Number(m[1]) * 1024
}

// ---- the runs ----
interface FsResult { write: number, read: number, small: SmallResult }
type Results = {
  plain: FsResult, passthrough: FsResult, replfs: FsResult & { peakRssWriteBytes: number, peakRssReadBytes: number, peakRssEndBytes: number }, leveldb: { write: number, read: number }
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
  console.error(`work dir ${work}; ${BYTES} bytes, ${FILES} files`)
  const results: Partial<Results> = {}
  try {
    // (b) plain directory
    const plain = join(work, 'plain')
    await fsp.mkdir(plain)
    dropCaches()
    results.plain = await fsTarget('plain', plain)
    await fsp.rm(plain, { recursive: true, force: true })

    // (c) fuse-native passthrough in a child process
    const ptSrc = join(work, 'pt-src')
    const ptMnt = join(work, 'pt-mnt')
    await fsp.mkdir(ptSrc); await fsp.mkdir(ptMnt)
    dropCaches()
    let pt = await startMount('passthrough', ptMnt, ptSrc)
    results.passthrough = await fsTarget('passthrough', ptMnt, async () => { await stopMount(pt); pt = await startMount('passthrough', ptMnt, ptSrc) })
    await stopMount(pt)
    await fsp.rm(ptSrc, { recursive: true, force: true })

    // (a) replfs
    const store = join(work, 'replfs-store')
    const rMnt = join(work, 'replfs-mnt')
    await fsp.mkdir(rMnt)
    dropCaches()
    let rf = await startMount('replfs', rMnt, store)
    let peakWrite = NaN
    let peakRead = NaN
    const r = await fsTarget('replfs', rMnt,
      async () => { await stopMount(rf); rf = await startMount('replfs', rMnt, store) },
      () => { peakWrite = vmHWM(rf.child.pid!) },
      () => { peakRead = vmHWM(rf.child.pid!) })
    const peakEnd = vmHWM(rf.child.pid!)
    await stopMount(rf)
    results.replfs = { ...r, peakRssWriteBytes: peakWrite, peakRssReadBytes: peakRead, peakRssEndBytes: peakEnd }
    await fsp.rm(store, { recursive: true, force: true })

    // (d) raw LevelDB
    console.error('[leveldb] write + iterate')
    dropCaches()
    results.leveldb = await leveldb(join(work, 'leveldb'), BYTES)
  } finally {
    await cleanupAll()
    await fsp.rm(work, { recursive: true, force: true }).catch(e => console.error(`warning: cannot remove ${work}: ${(e as Error).message}`))
  }
  await report(results as Results)
}

async function report (r: Results): Promise<void> {
  const f = (x: number): string => x >= 100 ? x.toFixed(0) : x.toFixed(1)
  const rows: Array<[string, string, string, string, string]> = [
    ['', 'replfs', 'plain', 'passthrough', 'leveldb'],
    ['seq write MB/s', f(r.replfs.write), f(r.plain.write), f(r.passthrough.write), f(r.leveldb.write)],
    ['seq read MB/s', f(r.replfs.read), f(r.plain.read), f(r.passthrough.read), f(r.leveldb.read)],
    ['create 4K files/s', f(r.replfs.small.create), f(r.plain.small.create), f(r.passthrough.small.create), '-'],
    ['stat files/s', f(r.replfs.small.stat), f(r.plain.small.stat), f(r.passthrough.small.stat), '-'],
    ['delete files/s', f(r.replfs.small.delete), f(r.plain.small.delete), f(r.passthrough.small.delete), '-']
  ]
  const w = [0, 1, 2, 3, 4].map(i => Math.max(...rows.map(row => row[i].length)))
  console.log(`\nreplfs benchmark: ${BYTES / MiB} MiB sequential (1 MiB writes + fsync), ${FILES} x 4 KiB files, dir ${BASE} (MB = MiB)`)
  for (const row of rows) console.log(row.map((c, i) => i === 0 ? c.padEnd(w[i]) : c.padStart(w[i])).join('  '))
  const x = (a: number, b: number): string => `${(a / b).toFixed(2)}x`
  console.log('')
  console.log(`write: ${f(r.replfs.write)} MB/s = ${x(r.replfs.write, r.plain.write)} plain, ${x(r.replfs.write, r.passthrough.write)} passthrough, ${x(r.replfs.write, r.leveldb.write)} leveldb`)
  console.log(`read: ${f(r.replfs.read)} MB/s = ${x(r.replfs.read, r.plain.read)} plain, ${x(r.replfs.read, r.passthrough.read)} passthrough, ${x(r.replfs.read, r.leveldb.read)} leveldb`)
  for (const k of ['create', 'stat', 'delete'] as const) {
    console.log(`${k}: ${f(r.replfs.small[k])} files/s = ${x(r.replfs.small[k], r.plain.small[k])} plain, ${x(r.replfs.small[k], r.passthrough.small[k])} passthrough`)
  }
  console.log(`replfs mount process peak RSS (VmHWM): ${(r.replfs.peakRssWriteBytes / MiB).toFixed(0)} MiB after the write (first mount); remounted process: ${(r.replfs.peakRssReadBytes / MiB).toFixed(0)} MiB after the read, ${(r.replfs.peakRssEndBytes / MiB).toFixed(0)} MiB after the small files`)
  const json = { date: new Date().toISOString(), bytes: BYTES, files: FILES, dir: BASE, node: process.version, units: { write: 'MiB/s', read: 'MiB/s', small: 'files/s', rss: 'bytes' }, results: r }
  const outDir = join(root, 'bench', 'results')
  await fsp.mkdir(outDir, { recursive: true })
  await fsp.writeFile(join(outDir, 'latest.json'), JSON.stringify(json, null, 2) + '\n')
  console.log(`results written to ${join(outDir, 'latest.json')}`)
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
