import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export const REPO = new URL('../../..', import.meta.url).pathname
export const CLI = join(REPO, 'bin/replfs')

interface T { teardown: (fn: () => unknown) => void }

export interface MountOpts {
  size?: string
  allowOther?: boolean
  store?: string
  mnt?: string
  runDir?: string
  timeoutMs?: number
  /** More CLI flags, e.g. replication's --role/--listen/--peer. */
  extraArgs?: string[]
}

export interface Mounted {
  mnt: string
  store: string
  runDir: string
  child: ChildProcess
  stderr: () => string
  exited: Promise<number | null>
  /** SIGTERM the foreground process and wait until it has exited (store closed). */
  stop: () => Promise<void>
}

export function tempDir (): string {
  return mkdtempSync(join(tmpdir(), 'replfs-test-'))
}

export function isMounted (mnt: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some(l => l.split(' ')[4] === mnt)
}

export function forceUnmount (mnt: string): void {
  spawnSync('fusermount', ['-uz', mnt], { stdio: 'ignore' })
}

/** Runs the CLI synchronously (for fsck etc.). */
export function cli (args: string[], env: Record<string, string> = {}): { code: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env } })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** Paths, flags and the way of stopping of one foreground `replfs mount` (see spawnMount). */
export interface MountSpawn {
  mnt: string
  store: string
  runDir: string
  /** Takes the process's stderr. */
  logFile: string
  /** CLI flags after `mount <mnt> --store <store> --foreground`. */
  args: string[]
  /** Wraps the command line (e.g. in nsenter, which execs it: the child's pid stays the node's). */
  wrap?: (argv: string[]) => string[]
  /** stop(): SIGKILL if it has not exited this long after the SIGTERM (default: wait). */
  killAfterMs?: number
  /** stop(): runs once the process has exited. */
  afterStop?: () => void
}

/**
 * Spawns the real CLI's `mount --foreground` as a child process, with stderr to a file, not a
 * pipe: a test blocked in a sync fs call must never leave the volume process stuck writing to a
 * full pipe (that would deadlock both). Returns at once; the caller waits for "mounted".
 */
export function spawnMount (o: MountSpawn): Mounted {
  const { mnt, store, runDir, logFile } = o
  // (a stale mount point left by a killed process answers ENOTCONN; the CLI must deal with it)
  try { mkdirSync(mnt, { recursive: true }) } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'ENOTCONN') throw e }
  const argv = [process.execPath, CLI, 'mount', mnt, '--store', store, '--foreground', ...o.args]
  const [cmd, ...cmdArgs] = o.wrap === undefined ? argv : o.wrap(argv)
  const logFd = openSync(logFile, 'a')
  const child = spawn(cmd, cmdArgs, { stdio: ['ignore', 'ignore', logFd], env: { ...process.env, REPLFS_RUN_DIR: runDir } })
  closeSync(logFd)
  const readLog = (): string => { try { return readFileSync(logFile, 'utf8') } catch { return '' } }
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  return {
    mnt,
    store,
    runDir,
    child,
    stderr: readLog,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      const timer = o.killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), o.killAfterMs)
      await exited
      clearTimeout(timer)
      o.afterStop?.()
    }
  }
}

/**
 * Mounts a volume with the real CLI in the foreground as a child process. A t.teardown always
 * detaches the mount and kills the child, whatever happened in the test.
 */
export async function mountVolume (t: T, opts: MountOpts = {}): Promise<Mounted> {
  const base = tempDir()
  mkdirSync(base, { recursive: true })
  const mnt = opts.mnt ?? join(base, 'mnt')
  const args: string[] = []
  if (opts.size !== undefined) args.push('--size', opts.size)
  if (opts.allowOther === true) args.push('--allow-other')
  if (opts.extraArgs !== undefined) args.push(...opts.extraArgs)
  let done = false
  const m = spawnMount({
    mnt,
    store: opts.store ?? join(base, 'store'),
    runDir: opts.runDir ?? join(base, 'run'),
    logFile: join(base, `mount-${Date.now()}.log`),
    args,
    afterStop: () => { done = !isMounted(mnt) }
  })
  const { child, exited } = m
  t.teardown(async () => {
    if (!done) {
      forceUnmount(mnt)
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM')
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
        await exited
        clearTimeout(timer)
      }
      forceUnmount(mnt)
    }
    // base holds this mount's log, and the store and mount point unless the caller gave its own
    if (!isMounted(mnt)) rmSync(base, { recursive: true, force: true })
  })
  await new Promise<void>((resolve, reject) => {
    const deadline = Date.now() + (opts.timeoutMs ?? 20000)
    const poll = setInterval(() => {
      if (m.stderr().includes('"msg":"mounted"')) { clearInterval(poll); resolve() }
      else if (child.exitCode !== null || child.signalCode !== null) { clearInterval(poll); reject(new Error(`mount exited (${String(child.exitCode ?? child.signalCode)}) before ready; stderr:\n${m.stderr()}`)) }
      else if (Date.now() > deadline) { clearInterval(poll); reject(new Error(`mount did not become ready in time; stderr:\n${m.stderr()}`)) }
    }, 25)
  })
  return m
}

/** Shell command with output; throws on nonzero exit. */
export function sh (cmd: string, opts: { cwd?: string } = {}): string {
  const r = spawnSync('bash', ['-c', cmd], { encoding: 'utf8', cwd: opts.cwd, maxBuffer: 64 << 20 })
  if (r.status !== 0) throw new Error(`${cmd} exited ${String(r.status)}: ${r.stderr}`)
  return r.stdout
}

/** Like sh, but returns the exit code and outputs. */
export function shr (cmd: string, opts: { cwd?: string } = {}): { code: number | null, stdout: string, stderr: string } {
  const r = spawnSync('bash', ['-c', cmd], { encoding: 'utf8', cwd: opts.cwd, maxBuffer: 64 << 20 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}
