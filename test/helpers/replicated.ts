import { execFile, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import type { Test } from 'tap'
import { CLI, forceUnmount, isMounted, mountVolume, tempDir, type Mounted } from './mount.js'
import { startFaultProxy, type FaultProxy } from './fault-proxy.js'

interface T { teardown: (fn: () => unknown) => void, passing?: () => boolean, name?: string }

/** Where the logs of a failed test's nodes are kept (the temp dirs are removed). */
export const FAILED_LOGS = '/tmp/replfs-repl-failed-logs'

/** One side of a replicated pair: its current process and what is needed to start it again. */
export interface Node {
  role: 'primary' | 'secondary'
  store: string
  mnt: string
  runDir: string
  port: number
  args: string[]
  /** the current (last started) process */
  m: Mounted
  /** every log of this node so far (one per start), oldest first */
  logs: () => string
}

export interface Pair {
  base: string
  secret: string
  primary: Node
  secondary: Node
  proxy: FaultProxy | null
}

export interface PairOptions {
  mode?: 'sync' | 'async'
  /** put a fault proxy between the primary and the secondary */
  proxy?: boolean
  peerTimeout?: number
  /** the secondary reads a different secret file */
  secondarySecret?: string
  /** use this (already initialised) store for the secondary */
  secondaryStore?: string
  primaryArgs?: string[]
  secondaryArgs?: string[]
}

/**
 * A port nobody listens on right now, below the ephemeral range (32768 and up here): a peer that
 * dials an ephemeral-range port before anyone listens on it can be handed that very port as its
 * source and connect to itself, taking the port from the listener about to start.
 */
export async function freePort (): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    const free = await new Promise<boolean>(resolve => {
      const s = createServer()
      s.once('error', () => resolve(false))
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
    })
    if (free) return port
    if (attempt > 100) throw new Error('no free port in 20000-31999')
  }
}

export function writeSecret (path: string, value?: string): string {
  fs.writeFileSync(path, value ?? createHash('sha256').update(String(Math.random()) + String(Date.now())).digest('base64') + '\n', { mode: 0o600 })
  fs.chmodSync(path, 0o600)
  return path
}

/** The CLI, asynchronously (never blocks the event loop: a sync-mode primary may be waiting on us). */
export async function cliAsync (args: string[], env: Record<string, string> = {}, timeoutMs = 20_000): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return await new Promise(resolve => {
    execFile(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null
      resolve({ code, stdout, stderr })
    })
  })
}

export interface ReplStatus {
  role: string
  phase: string
  connected: boolean
  degraded?: boolean
  seq?: number
  ackedSeq?: number | null
  lagRecords: number | null
  lagBytes?: number | null
  appliedSeq?: number
  primarySeq?: number | null
  lastError: { code: string, message: string, at?: string } | null
  [k: string]: unknown
}

export async function status (n: Node): Promise<{ seq: number, replication: ReplStatus, [k: string]: unknown }> {
  const r = await cliAsync(['status', n.mnt, '--json'], { REPLFS_RUN_DIR: n.runDir })
  if (r.code !== 0) throw new Error(`status ${n.role} exited ${String(r.code)}: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

export const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

/** Polls until `pred` holds (returns its truthy value) or throws after timeoutMs with the last value seen. */
export async function waitFor<V> (what: string, fn: () => Promise<V>, pred: (v: V) => boolean, timeoutMs = 30_000, everyMs = 150): Promise<V> {
  const deadline = Date.now() + timeoutMs
  let last: V | undefined
  let lastErr: unknown
  for (;;) {
    try {
      last = await fn()
      if (pred(last)) return last
    } catch (err) { lastErr = err }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)} ${lastErr === undefined ? '' : String(lastErr)}`)
    await sleep(everyMs)
  }
}

/** Until the primary streams to the secondary and the secondary has acknowledged everything. */
export async function waitCaughtUp (primary: Node, timeoutMs = 30_000): Promise<ReplStatus> {
  const s = await waitFor('the secondary to catch up', async () => (await status(primary)).replication,
    r => r.phase === 'streaming' && r.lagRecords === 0, timeoutMs)
  return s
}

/** `replfs verify` on the primary. */
export async function verify (primary: Node): Promise<{ code: number | null, output: string }> {
  const r = await cliAsync(['verify', primary.mnt], { REPLFS_RUN_DIR: primary.runDir }, 60_000)
  return { code: r.code, output: r.stdout + r.stderr }
}

async function startNode (t: T, n: Omit<Node, 'm' | 'logs'>, prevLogs: string[]): Promise<Node> {
  const m = await mountVolume(t, { store: n.store, mnt: n.mnt, runDir: n.runDir, extraArgs: n.args, timeoutMs: 30_000 })
  const node = n as Node
  node.m = m
  // mountVolume's teardown removes the log with its temp dir; keep a copy for FAILED_LOGS
  // (tap runs teardowns last-registered first, so this one runs before it)
  let kept = ''
  t.teardown(() => { kept = m.stderr() })
  node.logs = () => prevLogs.join('') + (m.stderr() || kept)
  return node
}

/**
 * Starts a secondary and then a primary on free loopback ports, with a fresh 0600 secret.
 * The secondary mounts with --attr-timeout 0 so trees can be compared right after catch-up.
 */
export async function startPair (t: T, o: PairOptions = {}): Promise<Pair> {
  const base = tempDir()
  const secret = writeSecret(join(base, 'secret'))
  const peerTimeout = String(o.peerTimeout ?? 3)
  const pPort = await freePort()
  const sPort = await freePort()
  const secondarySecret = o.secondarySecret === undefined ? secret : writeSecret(join(base, 'secret2'), o.secondarySecret)
  const pair: Pair = { base, secret, primary: null as unknown as Node, secondary: null as unknown as Node, proxy: null }
  // Runs before or after mountVolume's own teardowns (whichever order tap uses): kill, detach, remove.
  t.teardown(async () => {
    if (t.passing?.() === false) {
      fs.mkdirSync(FAILED_LOGS, { recursive: true })
      const tag = base.split('/').pop() as string
      for (const n of [pair.primary, pair.secondary]) if (n !== null && n !== undefined) fs.writeFileSync(join(FAILED_LOGS, `${tag}-${n.role}.log`), n.logs())
      process.stderr.write(`# ${t.name ?? ''}: failed; the nodes' logs are in ${FAILED_LOGS}/${tag}-*.log\n`)
    }
    for (const n of [pair.primary, pair.secondary]) {
      if (n === null || n === undefined) continue
      forceUnmount(n.mnt)
      const c = n.m.child
      if (c.exitCode === null && c.signalCode === null) { c.kill('SIGKILL'); await n.m.exited }
      forceUnmount(n.mnt)
    }
    await pair.proxy?.close()
    if (![pair.primary?.mnt, pair.secondary?.mnt].some(m => m !== undefined && isMounted(m))) fs.rmSync(base, { recursive: true, force: true })
  })
  pair.secondary = await startNode(t, {
    role: 'secondary',
    store: o.secondaryStore ?? join(base, 'store-b'),
    mnt: join(base, 'mnt-b'),
    runDir: join(base, 'run-b'),
    port: sPort,
    args: ['--role', 'secondary', '--listen', `127.0.0.1:${sPort}`, '--peer', `127.0.0.1:${pPort}`, '--secret-file', secondarySecret,
      '--peer-timeout', peerTimeout, '--attr-timeout', '0', ...(o.secondaryArgs ?? [])]
  }, [])
  let target = sPort
  if (o.proxy === true) {
    pair.proxy = await startFaultProxy(t, sPort)
    target = pair.proxy.port
  }
  pair.primary = await startNode(t, {
    role: 'primary',
    store: join(base, 'store-a'),
    mnt: join(base, 'mnt-a'),
    runDir: join(base, 'run-a'),
    port: pPort,
    args: ['--role', 'primary', '--listen', `127.0.0.1:${pPort}`, '--peer', `127.0.0.1:${target}`, '--secret-file', secret,
      '--mode', o.mode ?? 'sync', '--peer-timeout', peerTimeout, ...(o.primaryArgs ?? [])]
  }, [])
  return pair
}

/** kill -9 the node's process and detach its (now dead) mount. */
export async function kill9 (n: Node): Promise<void> {
  const c = n.m.child
  if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  await n.m.exited
  forceUnmount(n.mnt)
}

/** Starts the node again on the same store, mount point, run dir and flags (after kill9 or stop). */
export async function restart (t: T, n: Node): Promise<Node> {
  const prev = n.logs()
  return await startNode(t, n, [prev])
}

// ---------------------------------------------------------------- tree snapshots

export interface Entry {
  type: 'file' | 'dir' | 'symlink' | 'other'
  mode: number
  size: number | null
  nlink: number
  sha256?: string
  target?: string
  xattrs: Record<string, string>
  /** every path (sorted) sharing this path's inode in this mount, when more than one */
  links?: string[]
}

/**
 * Walks a mount and records, per path relative to it: type, permission bits, size, content
 * hash, symlink target, user.* xattrs (hex, via getfattr) and which paths share an inode.
 */
export function treeSnapshot (dir: string): Record<string, Entry> {
  const out: Record<string, Entry> = {}
  const byIno = new Map<number, string[]>()
  const walk = (rel: string): void => {
    const abs = rel === '' ? dir : join(dir, rel)
    const st = fs.lstatSync(abs)
    const type: Entry['type'] = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other'
    const e: Entry = { type, mode: st.mode & 0o7777, size: type === 'dir' ? null : st.size, nlink: type === 'dir' ? 0 : st.nlink, xattrs: {} }
    if (type === 'file') e.sha256 = createHash('sha256').update(fs.readFileSync(abs)).digest('hex')
    if (type === 'symlink') e.target = fs.readlinkSync(abs)
    const key = rel === '' ? '.' : rel
    out[key] = e
    if (type !== 'dir') {
      const l = byIno.get(st.ino) ?? []
      l.push(key)
      byIno.set(st.ino, l)
    }
    if (type === 'dir') for (const name of fs.readdirSync(abs).sort()) walk(rel === '' ? name : join(rel, name))
  }
  walk('')
  for (const paths of byIno.values()) {
    if (paths.length > 1) for (const p of paths) out[p].links = [...paths].sort()
  }
  // user.* xattrs of every file and directory, in one getfattr run (symlinks themselves: -h)
  const r = spawnSync('getfattr', ['-R', '-h', '-d', '-m', '^user\\.', '-e', 'hex', '--absolute-names', dir], { encoding: 'utf8', maxBuffer: 64 << 20 })
  if (r.status !== 0 && r.stdout === '') throw new Error(`getfattr failed: ${r.stderr}`)
  let cur: string | null = null
  for (const line of r.stdout.split('\n')) {
    const f = /^# file: (.*)$/.exec(line)
    if (f !== null) {
      const abs = f[1].replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
      cur = abs === dir ? '.' : abs.startsWith(dir + '/') ? abs.slice(dir.length + 1) : abs
      continue
    }
    const kv = /^([^=]+)=(.*)$/.exec(line)
    if (kv !== null && cur !== null) {
      if (out[cur] === undefined) throw new Error(`getfattr reported ${cur}, which the walk did not see`)
      out[cur].xattrs[kv[1]] = kv[2]
    }
  }
  return out
}

/** A readable summary of the differences between two snapshots (empty when equal). */
export function diffSnapshots (a: Record<string, Entry>, b: Record<string, Entry>, limit = 20): string[] {
  const diffs: string[] = []
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const x = JSON.stringify(a[k]); const y = JSON.stringify(b[k])
    if (x !== y) diffs.push(`${k}: primary ${x ?? 'missing'} / secondary ${y ?? 'missing'}`)
    if (diffs.length >= limit) break
  }
  return diffs
}

/** The end of every replicated test: caught up, `replfs verify` exit 0, identical trees. */
export async function assertIdentical (t: Test, pair: Pair, timeoutMs = 30_000): Promise<void> {
  await waitCaughtUp(pair.primary, timeoutMs)
  const v = await verify(pair.primary)
  t.equal(v.code, 0, `replfs verify: ${v.output.trim().split('\n')[0]}`)
  t.ok(/seq \d+: identical/.test(v.output), 'verify says identical')
  // The secondary mounts with --attr-timeout 0; the primary keeps the default 1 s, and libfuse gives
  // each hard link its own kernel attribute cache (README "Known limit"): after a write or unlink
  // through one name, stat/read through another may see the old size/nlink for up to 1 s. Wait it out.
  await sleep(1100)
  const a = treeSnapshot(pair.primary.mnt)
  const b = treeSnapshot(pair.secondary.mnt)
  const d = diffSnapshots(a, b)
  t.same(d, [], `trees equal (${Object.keys(a).length} paths)`)
}
