// Child processes and mounts for the benchmark, always cleaned up (also on failure and on signals).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import fsp from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { dropCaches, seqWrite } from './fsbench.js'

const here = dirname(fileURLToPath(import.meta.url)) // dist/bench
export const root = resolve(here, '..', '..')

const children = new Set<ChildProcess>()
const mounts = new Set<string>()
const stopping = new Set<ChildProcess>()

export function isMounted (mnt: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some(l => l.split(' ')[4] === mnt)
}

export async function waitExit (child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true
  return await new Promise(resolve => {
    const t = setTimeout(() => resolve(false), ms)
    child.once('exit', () => { clearTimeout(t); resolve(true) })
  })
}

export interface Mounted { child: ChildProcess, mnt: string, stderr: () => string }

/** Starts a mount process and waits until it is mounted. `extra`: more replfs mount flags (replication, attr timeout). */
export async function startMount (kind: 'replfs' | 'passthrough', mnt: string, src: string, extra: string[] = [], label: string = kind): Promise<Mounted> {
  const args = kind === 'replfs'
    ? [join(root, 'bin', 'replfs'), 'mount', mnt, '--store', src, '--foreground', ...extra]
    : [join(here, 'passthrough.js'), mnt, src]
  // BENCH_NODE_ARGS: extra node flags for the mount processes, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" (not allowed in NODE_OPTIONS)
  const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(a => a !== '')
  const child = spawn(process.execPath, [...nodeArgs, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  mounts.add(mnt)
  let out = ''
  let err = ''
  child.stdout!.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); if (err.length > 1e6) err = err.slice(-5e5) })
  child.once('exit', (code, sig) => {
    children.delete(child)
    if (!stopping.has(child)) console.error(`${label} mount process ${child.pid} exited unexpectedly (${code ?? sig}); stderr tail:\n${err.slice(-3000)}`)
  })
  const t0 = Date.now()
  for (;;) {
    const ready = kind === 'replfs' ? err.includes('"msg":"mounted"') : out.includes('ready')
    if (ready && isMounted(mnt)) break
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${label} mount process exited (${child.exitCode ?? child.signalCode}): ${err.slice(-2000)}`)
    if (Date.now() - t0 > 60000) throw new Error(`${label} did not mount within 60 s: ${err.slice(-2000)}`)
    await new Promise(r => setTimeout(r, 50))
  }
  return { child, mnt, stderr: () => err }
}

/**
 * The sequential write on a replfs mount of a fresh store under `dir` (both removed after):
 * MiB/s. `onMounted` runs before the write (to pin the mount process, say).
 */
export async function writeOnFreshMount (dir: string, bytes: number, label: string, onMounted: (m: Mounted) => void = () => {}): Promise<number> {
  const mnt = join(dir, 'mnt')
  await fsp.mkdir(mnt, { recursive: true })
  try {
    const m = await startMount('replfs', mnt, join(dir, 'store'), [], label)
    try {
      onMounted(m)
      dropCaches()
      return await seqWrite(join(mnt, 'big.bin'), bytes)
    } finally { await stopMount(m) }
  } finally {
    await fsp.rm(dir, { recursive: true, force: true })
  }
}

export async function stopMount (m: Mounted, timeoutMs = 120000): Promise<void> {
  stopping.add(m.child)
  m.child.kill('SIGTERM')
  if (!await waitExit(m.child, timeoutMs)) {
    console.error(`warning: ${m.mnt} process did not exit after SIGTERM; killing; stderr tail:\n${m.stderr().slice(-3000)}`)
    m.child.kill('SIGKILL')
    await waitExit(m.child, 5000)
  }
  if (isMounted(m.mnt)) { try { execFileSync('fusermount', ['-uz', m.mnt]) } catch {} }
  mounts.delete(m.mnt)
}

/** kill -9 the mount process (a crashed host), then detach its dead mount. */
export async function killMount (m: Mounted): Promise<void> {
  stopping.add(m.child)
  m.child.kill('SIGKILL')
  await waitExit(m.child, 10000)
  if (isMounted(m.mnt)) { try { execFileSync('fusermount', ['-uz', m.mnt]) } catch {} }
  mounts.delete(m.mnt)
}

export async function cleanupAll (): Promise<void> {
  for (const c of [...children]) {
    stopping.add(c)
    c.kill('SIGTERM')
    if (!await waitExit(c, 30000)) { c.kill('SIGKILL'); await waitExit(c, 5000) }
  }
  for (const m of mounts) if (isMounted(m)) { try { execFileSync('fusermount', ['-uz', m]) } catch {} }
  mounts.clear()
}

/**
 * Samples a process's resident memory every `everyMs` until stopped: the peaks of its anonymous
 * pages (its own heap, LevelDB's memtables and caches) and of file-backed pages (chiefly
 * LevelDB's memory-mapped table files, which are page cache the kernel can drop).
 */
export function rssSampler (pid: number, everyMs = 50): { stop: () => { anonPeak: number, filePeak: number, samples: number } } {
  let anonPeak = 0
  let filePeak = 0
  let samples = 0
  const sample = (): void => {
    try {
      const st = readFileSync(`/proc/${pid}/status`, 'utf8')
      const anon = Number(/RssAnon:\s+(\d+) kB/.exec(st)?.[1] ?? NaN) * 1024
      const file = Number(/RssFile:\s+(\d+) kB/.exec(st)?.[1] ?? NaN) * 1024
      if (anon > anonPeak) anonPeak = anon
      if (file > filePeak) filePeak = file
      samples++
    } catch { /* the process is gone */ }
  }
  sample()
  const timer = setInterval(sample, everyMs)
  return { stop: () => { clearInterval(timer); sample(); return { anonPeak, filePeak, samples } } }
}

export function vmHWM (pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? NaN : Number(m[1]) * 1024
}
