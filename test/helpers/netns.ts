import { spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { callControl } from '../../src/daemon/control.js'
import { forceUnmount, isMounted, spawnMount, tempDir, type Mounted } from './mount.js'
import { cliAsync, FAILED_LOGS, kill9, sleep, writeSecret, type Node, type Pair } from './replicated.js'

// Two "hosts" on this machine: a network namespace each, joined by a veth pair with link-local
// addresses, so a test can cut the link for real (`ip link set ... down`). A replfs node runs in a
// host's namespace through `nsenter --net`, which enters only the network namespace: its FUSE
// mount lives in the test's own mount namespace (visible to the test and to scripts/run-tests.mjs),
// and its control socket is a path in the file system, so `replfs status/verify` reach it from here.
// (`ip netns exec` would also unshare the mount namespace and hide the mount.)

interface T { teardown: (fn: () => unknown) => void, passing?: () => boolean, name?: string }

export interface ExecResult { code: number | null, stdout: string, stderr: string }

export interface Host {
  /** 'a' or 'b' */
  name: 'a' | 'b'
  /** the network namespace's name (`ip netns list`), unique per run */
  ns: string
  /** /run/netns/<ns>, for nsenter --net= */
  nsPath: string
  /** this host's end of the veth pair (an interface inside ns) */
  veth: string
  /** this host's address on the link (link-local, /30) */
  addr: string
  /** a directory of this host's own (stores, mount points, run dirs, logs) */
  dir: string
  /** runs a command inside this host's network namespace (synchronously) */
  exec: (cmd: string[]) => ExecResult
  /** the argv that runs cmd inside this host's network namespace */
  wrap: (cmd: string[]) => string[]
}

export interface TwoHosts {
  a: Host
  b: Host
  /** the temp dir holding both hosts' dirs and the secret */
  base: string
  /** a fresh 0600 secret file for the pair */
  secret: string
  /** the link's prefix, e.g. 169.254.213.8/30 */
  prefix: string
  /** sets both ends of the veth pair down */
  cut: () => void
  /** sets both ends up again and waits until each has its carrier and its route back */
  heal: () => Promise<void>
  /** each end's operstate as `ip link` reports it ('UP', 'DOWN', 'LOWERLAYERDOWN'...) */
  linkState: () => { a: string, b: string }
  /** every node started on these hosts so far (teardown kills and unmounts each) */
  nodes: HostNode[]
}

export interface HostNodeOptions {
  role: 'primary' | 'secondary'
  /** the port this node listens on, on its host's address (default 7410: each host has its own stack) */
  port?: number
  /** the port of the peer (default 7410) */
  peerPort?: number
  /** a primary's mode (default sync) */
  mode?: 'sync' | 'async'
  /** --peer-timeout in seconds (default 3) */
  peerTimeout?: number
  /** default: the pair's secret */
  secretFile?: string
  /** more mount flags; a secondary gets --attr-timeout 0 unless these give one */
  args?: string[]
}

/** A replfs node in one host's namespace; also a `Node`, so status/verify/waitCaughtUp of replicated.ts take it. */
export interface HostNode extends Node {
  host: Host
  peerHost: Host
  opts: HostNodeOptions
  /** the log of the current process only */
  log: () => string
  /** kill -9 the process and detach its dead mount */
  kill9: () => Promise<void>
  /** SIGTERM and wait for a clean exit (falls back to kill -9 after 10 s) */
  stop: () => Promise<void>
  /** starts it again on the same store, mount point and run dir, with the same options unless changed */
  restart: (change?: Partial<HostNodeOptions>) => Promise<HostNode>
  /** the CLI addressed to this node's mount (status, verify, snapshot...) with its REPLFS_RUN_DIR */
  cli: (args: string[], timeoutMs?: number) => Promise<ExecResult>
}

const NS_PREFIX = 'replfs-'
const NS_RE = /^replfs-(\d+)-[0-9a-f]+-[ab]$/

function run (argv: string[]): ExecResult {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', maxBuffer: 16 << 20 })
  if (r.error !== undefined) return { code: null, stdout: '', stderr: String(r.error) }
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

function must (argv: string[], what: string): string {
  const r = run(argv)
  if (r.code !== 0) throw new Error(`netns: ${what} failed (${argv.join(' ')} exited ${String(r.code)}): ${r.stderr.trim()}`)
  return r.stdout
}

/** Throws, with the fix, unless ip (iproute2) and nsenter (util-linux) are there. */
function checkTools (): void {
  const ip = spawnSync('ip', ['-V'], { encoding: 'utf8' })
  if (ip.error !== undefined || ip.status !== 0) throw new Error(`netns: 'ip' (iproute2) is not usable (${String(ip.error ?? ip.stderr)}). Try: apt-get install iproute2 (scripts/setup.sh does)`)
  const ns = spawnSync('nsenter', ['--version'], { encoding: 'utf8' })
  if (ns.error !== undefined || ns.status !== 0) throw new Error(`netns: 'nsenter' (util-linux) is not usable (${String(ns.error ?? ns.stderr)}). Try: apt-get install util-linux`)
}

/** The names `ip netns list` shows. */
export function netnsList (): string[] {
  const r = run(['ip', 'netns', 'list'])
  if (r.code !== 0) throw new Error(`netns: ip netns list exited ${String(r.code)}: ${r.stderr.trim()}`)
  return r.stdout.split('\n').map(l => l.split(' ')[0]).filter(n => n !== '')
}

const ourNamespaces = (): string[] => netnsList().filter(n => n.startsWith(NS_PREFIX))

const alive = (pid: number): boolean => {
  try { process.kill(pid, 0); return true } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM' }
}

/** Removes namespaces that a killed earlier run left (its pid is in the name), when no process is inside. */
function sweepStale (): void {
  for (const ns of ourNamespaces()) {
    const m = NS_RE.exec(ns)
    if (m === null || alive(Number(m[1]))) continue
    if (run(['ip', 'netns', 'pids', ns]).stdout.trim() === '') run(['ip', 'netns', 'del', ns])
  }
}

// A safety net for an exit that skips the teardowns (an uncaught error): detach, kill, delete.
const live = new Set<TwoHosts>()
process.once('exit', () => { for (const h of live) destroySync(h) })

function destroySync (h: TwoHosts): void {
  for (const n of h.nodes) {
    forceUnmount(n.mnt)
    const c = n.m.child
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  }
  for (const host of [h.a, h.b]) run(['ip', 'netns', 'del', host.ns])
  live.delete(h)
}

function makeHost (name: 'a' | 'b', ns: string, veth: string, addr: string, base: string): Host {
  const nsPath = `/run/netns/${ns}`
  const wrap = (cmd: string[]): string[] => ['nsenter', `--net=${nsPath}`, '--', ...cmd]
  const dir = join(base, name)
  fs.mkdirSync(dir, { recursive: true })
  return { name, ns, nsPath, veth, addr, dir, wrap, exec: cmd => run(wrap(cmd)) }
}

/**
 * Creates two network namespaces joined by a veth pair (169.254.X.Y/30, random per run), lo up in
 * each. A t.teardown kills and unmounts every node started on them, then deletes both namespaces
 * (and with them the veth pair), and throws if either is still listed.
 */
export async function twoHosts (t: T): Promise<TwoHosts> {
  checkTools()
  sweepStale()
  const tag = `${process.pid}-${randomBytes(3).toString('hex')}`
  const third = [1 + Math.floor(Math.random() * 253)].map(x => x === 169 ? 170 : x)[0]
  const fourth = 4 * Math.floor(Math.random() * 63)
  const net = `169.254.${third}`
  const base = tempDir()
  const a = makeHost('a', `${NS_PREFIX}${tag}-a`, `rf${tag.slice(-6)}a`, `${net}.${fourth + 1}`, base)
  const b = makeHost('b', `${NS_PREFIX}${tag}-b`, `rf${tag.slice(-6)}b`, `${net}.${fourth + 2}`, base)
  const operstate = (h: Host): string => /state (\S+)/.exec(h.exec(['ip', '-o', 'link', 'show', 'dev', h.veth]).stdout)?.[1] ?? 'MISSING'
  const hosts: TwoHosts = {
    a,
    b,
    base,
    secret: writeSecret(join(base, 'secret')),
    prefix: `${net}.${fourth}/30`,
    nodes: [],
    cut: () => { for (const h of [a, b]) must(h.wrap(['ip', 'link', 'set', 'dev', h.veth, 'down']), `setting ${h.veth} down`) },
    heal: async () => {
      for (const h of [a, b]) must(h.wrap(['ip', 'link', 'set', 'dev', h.veth, 'up']), `setting ${h.veth} up`)
      // veth gets its carrier at once, but wait for it (and the prefix route) before saying healed
      const deadline = Date.now() + 5000
      const ready = (h: Host): boolean => operstate(h) === 'UP' && h.exec(['ip', 'route', 'get', h === a ? b.addr : a.addr]).code === 0
      while (!(ready(a) && ready(b))) {
        if (Date.now() > deadline) throw new Error(`netns: the link did not come back up: ${JSON.stringify(hosts.linkState())}`)
        await sleep(20)
      }
    },
    linkState: () => ({ a: operstate(a), b: operstate(b) })
  }
  // registered before anything is created, so a failure halfway is cleaned up too
  t.teardown(async () => {
    const failed = t.passing?.() === false
    for (const n of hosts.nodes) {
      forceUnmount(n.mnt)
      const c = n.m.child
      if (c.exitCode === null && c.signalCode === null) { c.kill('SIGKILL'); await n.m.exited }
      forceUnmount(n.mnt)
    }
    if (failed && hosts.nodes.length > 0) {
      fs.mkdirSync(FAILED_LOGS, { recursive: true })
      const tag = base.split('/').pop() as string
      for (const n of hosts.nodes) fs.writeFileSync(join(FAILED_LOGS, `${tag}-${n.host.name}-${n.role}.log`), n.logs())
      process.stderr.write(`# ${t.name ?? ''}: failed; the nodes' logs are in ${FAILED_LOGS}/${tag}-*.log\n`)
    }
    for (const h of [a, b]) run(['ip', 'netns', 'del', h.ns])
    live.delete(hosts)
    if (!hosts.nodes.some(n => isMounted(n.mnt))) fs.rmSync(base, { recursive: true, force: true })
    const left = ourNamespaces().filter(ns => ns === a.ns || ns === b.ns)
    if (left.length > 0) throw new Error(`netns: namespaces left behind: ${left.join(', ')}`)
  })
  live.add(hosts)

  for (const h of [a, b]) {
    const r = run(['ip', 'netns', 'add', h.ns])
    if (r.code !== 0) throw new Error(`netns: cannot create a network namespace (ip netns add ${h.ns}: ${r.stderr.trim()}). This harness needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)`)
  }
  must(['ip', 'link', 'add', a.veth, 'netns', a.ns, 'type', 'veth', 'peer', 'name', b.veth, 'netns', b.ns], 'creating the veth pair')
  for (const h of [a, b]) {
    must(h.wrap(['ip', 'link', 'set', 'dev', 'lo', 'up']), `lo up in ${h.ns}`)
    must(h.wrap(['ip', 'addr', 'add', `${h.addr}/30`, 'dev', h.veth]), `addressing ${h.veth}`)
  }
  await hosts.heal()
  return hosts
}

function nodeArgs (host: Host, peer: Host, secret: string, o: HostNodeOptions): string[] {
  const args = ['--role', o.role, '--listen', `${host.addr}:${o.port ?? 7410}`, '--peer', `${peer.addr}:${o.peerPort ?? 7410}`,
    '--secret-file', o.secretFile ?? secret, '--peer-timeout', String(o.peerTimeout ?? 3)]
  if (o.role === 'primary') args.push('--mode', o.mode ?? 'sync')
  if (o.role === 'secondary' && !(o.args ?? []).includes('--attr-timeout')) args.push('--attr-timeout', '0')
  return [...args, ...(o.args ?? [])]
}

/**
 * Mounts with the real CLI in the foreground inside host's netns. Returns the process at once
 * (so a teardown can always reap it) and `ready`, which resolves once it logged "mounted".
 */
function spawnMounted (host: Host, store: string, mnt: string, runDir: string, args: string[], logFile: string, timeoutMs = 30_000): { m: Mounted, ready: Promise<void> } {
  // nsenter execs the command (no fork), so the child's pid is the node's
  const m = spawnMount({ mnt, store, runDir, logFile, args, wrap: host.wrap, killAfterMs: 10_000, afterStop: () => forceUnmount(mnt) })
  const { child, stderr: readLog } = m
  const ready = (async () => {
    const deadline = Date.now() + timeoutMs
    while (!readLog().includes('"msg":"mounted"')) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${host.ns}: mount exited (${String(child.exitCode ?? child.signalCode)}) before ready; log:\n${readLog()}`)
      if (Date.now() > deadline) throw new Error(`${host.ns}: mount did not become ready in ${timeoutMs} ms; log:\n${readLog()}`)
      await sleep(25)
    }
  })()
  return { m, ready }
}

/**
 * Starts a replfs node inside host's network namespace, listening on host.addr and dialing
 * peer.addr, with its own store, mount point, run dir and log under host.dir/<role>. The pair's
 * teardown kills and unmounts it whatever happens in the test.
 */
export async function startHostNode (hosts: TwoHosts, host: Host, opts: HostNodeOptions): Promise<HostNode> {
  const peerHost = host === hosts.a ? hosts.b : hosts.a
  const dir = join(host.dir, opts.role)
  if (hosts.nodes.some(n => n.mnt === join(dir, 'mnt'))) throw new Error(`${host.ns}: a ${opts.role} was started on this host already; restart() it (a role change included) instead`)
  fs.mkdirSync(dir, { recursive: true })
  const logs: string[] = []
  const node = {
    role: opts.role,
    store: join(dir, 'store'),
    mnt: join(dir, 'mnt'),
    runDir: join(dir, 'run'),
    port: opts.port ?? 7410,
    args: [] as string[],
    host,
    peerHost,
    opts,
    logs: () => logs.map(f => { try { return fs.readFileSync(f, 'utf8') } catch { return '' } }).join(''),
    log: () => node.m.stderr(),
    kill9: async () => await kill9(node),
    stop: async () => await node.m.stop(),
    restart: async (change: Partial<HostNodeOptions> = {}) => {
      const c = node.m.child
      if (c.exitCode === null && c.signalCode === null) throw new Error(`${host.ns}: restart of a ${node.role} that is still running; kill9() or stop() it first`)
      return await start({ ...node.opts, ...change })
    },
    cli: async (args: string[], timeoutMs?: number) => await cliAsync(args, { REPLFS_RUN_DIR: node.runDir }, timeoutMs)
  } as unknown as HostNode
  const start = async (o: HostNodeOptions): Promise<HostNode> => {
    node.opts = o
    node.role = o.role
    node.port = o.port ?? 7410
    node.args = nodeArgs(host, peerHost, hosts.secret, o)
    const logFile = join(dir, `mount-${logs.length}.log`)
    logs.push(logFile)
    const { m, ready } = spawnMounted(host, node.store, node.mnt, node.runDir, node.args, logFile)
    node.m = m
    await ready
    return node
  }
  const started = start(opts)
  // node.m is set by now (start ran up to its first await), so teardown can reap even a node that never came up
  if (node.m !== undefined) hosts.nodes.push(node)
  return await started
}

/** A primary on host a and a secondary on host b (started first), as a `Pair` for assertIdentical. */
export async function startHostPair (hosts: TwoHosts, o: { mode?: 'sync' | 'async', peerTimeout?: number, primaryArgs?: string[], secondaryArgs?: string[] } = {}): Promise<Pair & { primary: HostNode, secondary: HostNode }> {
  const secondary = await startHostNode(hosts, hosts.b, { role: 'secondary', peerTimeout: o.peerTimeout, args: o.secondaryArgs })
  const primary = await startHostNode(hosts, hosts.a, { role: 'primary', mode: o.mode, peerTimeout: o.peerTimeout, args: o.primaryArgs })
  return { base: hosts.base, secret: hosts.secret, primary, secondary, proxy: null }
}

/** Writes files (path under `mnt` -> content), making their directories; returns each one's sha256. */
export function writeFiles (mnt: string, files: Record<string, Buffer>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, c] of Object.entries(files)) {
    fs.mkdirSync(join(mnt, name, '..'), { recursive: true })
    fs.writeFileSync(join(mnt, name), c)
    out[name] = createHash('sha256').update(c).digest('hex')
  }
  return out
}

/** Deterministic pseudo-random bytes (xorshift): file contents that neither compress nor repeat. */
export function noise (n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n)
  let x = (seed * 2654435761) | 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5
    b[i] = x & 0xff
  }
  return b
}

/**
 * Status straight over the control socket (no CLI process per call), for a tight poll that must
 * catch a resync under way. controlSocketPath reads REPLFS_RUN_DIR synchronously, before any await.
 */
export async function controlStatus (n: HostNode): Promise<unknown> {
  const prev = process.env.REPLFS_RUN_DIR
  process.env.REPLFS_RUN_DIR = n.runDir
  let p: Promise<unknown>
  try {
    p = callControl(n.mnt, { cmd: 'status' }, 5000)
  } finally {
    if (prev === undefined) delete process.env.REPLFS_RUN_DIR
    else process.env.REPLFS_RUN_DIR = prev
  }
  return await p
}
