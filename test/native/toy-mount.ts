import { execFile, spawnSync } from 'node:child_process'
import { mkdtempSync, rmdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import type { Fuse3Ops } from '../../src/fuse3/ops.js'
import { mountFuse3, type Fuse3MountOptions, type Fuse3Session } from '../../src/fuse3/session.js'
import { isMounted } from '../helpers/mount.js'
import { ToyFs } from './toy-fs.js'

interface T { teardown: (fn: () => unknown) => void }

export interface ToyMount { mnt: string, toy: ToyFs, session: Fuse3Session, logs: string[] }

/**
 * Mounts a ToyFs in a fresh temp dir; teardown unmounts (falling back to umount -l) and removes
 * the dir. The test process serves the mount, so it must only touch it asynchronously (fs
 * promises run on the thread pool) or from child processes, never with *Sync calls.
 */
export async function mountToy (t: T, opts: { timeouts?: { attr: number, entry: number }, mount?: Partial<Fuse3MountOptions>, ops?: (base: Fuse3Ops) => Fuse3Ops } = {}): Promise<ToyMount> {
  const mnt = mkdtempSync(join(tmpdir(), 'replfs-fuse3-'))
  const toy = new ToyFs(opts.timeouts)
  const logs: string[] = []
  const log = pino({ level: 'warn' }, { write: (line: string) => { logs.push(line) } })
  const session = mountFuse3(mnt, opts.ops?.(toy.ops()) ?? toy.ops(), { log, ...opts.mount })
  t.teardown(() => {
    session.unmount()
    if (isMounted(mnt)) spawnSync('umount', ['-l', mnt])
    rmdirSync(mnt)
  })
  await session.conn
  return { mnt, toy, session, logs }
}

export interface Ran { code: number, stdout: string, stderr: string }

/** Runs a shell command in a child process; never throws, so tests can assert on failures. */
export async function sh (cmd: string, env: NodeJS.ProcessEnv = process.env): Promise<Ran> {
  return await new Promise(resolve => {
    execFile('sh', ['-c', cmd], { env, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1
      resolve({ code, stdout, stderr })
    })
  })
}

/** renameat2(2) through python3's ctypes: the errno name it failed with, or 'OK'. */
export async function renameat2 (from: string, to: string, flags: number): Promise<string> {
  const py = 'import ctypes,errno,sys\n' +
    'libc = ctypes.CDLL(None, use_errno=True)\n' +
    'r = libc.renameat2(-100, sys.argv[1].encode(), -100, sys.argv[2].encode(), int(sys.argv[3]))\n' +
    'print("OK" if r == 0 else errno.errorcode[ctypes.get_errno()])'
  const r = await new Promise<string>(resolve => execFile('python3', ['-c', py, from, to, String(flags)], (err, out, errOut) => resolve(err === null ? out.trim() : `python3 failed: ${errOut}`)))
  return r
}
