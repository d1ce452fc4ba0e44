import { fork } from 'node:child_process'
import { mkdirSync, openSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import type { Command } from 'commander'
import { MountDaemon } from '../daemon/mount-daemon.js'
import { ReplfsError } from '../errors.js'
import { createLogger } from '../util/logger.js'
import { parseSize } from './util.js'

interface MountFlags {
  store: string
  size?: string
  foreground?: boolean
  create: boolean
  allowOther?: boolean
  attrTimeout: string
  logFile?: string
}

export function registerMount (program: Command): void {
  program.command('mount')
    .description('mount a volume; returns once it is mounted (the volume process stays in the background)')
    .argument('<mountpoint>', 'an empty directory')
    .requiredOption('--store <dir>', 'the volume\'s LevelDB store (created if missing, unless --no-create)')
    .option('--size <bytes>', 'how much data the volume may hold, e.g. 10G (default: what the store\'s disk can take)')
    .option('--foreground', 'stay in the foreground (for systemd); logs go to stderr')
    .option('--no-create', 'fail if the store does not exist yet')
    .option('--allow-other', 'let other users use the mount (permissions still apply, as on ext4)')
    .option('--attr-timeout <seconds>', 'how long the kernel may cache attributes and names', '1')
    .option('--log-file <file>', 'where a background volume process logs (default /var/log/replfs/<mountpoint>.log)')
    .action(async (mnt: string, o: MountFlags) => {
      if (o.foreground === true) await runForeground(mnt, o)
      else await runBackground(mnt, o)
    })
}

async function runForeground (mnt: string, o: MountFlags): Promise<void> {
  const logger = createLogger()
  const daemon = new MountDaemon({
    store: resolve(o.store),
    mountpoint: resolve(mnt),
    create: o.create,
    sizeLimit: o.size === undefined ? undefined : parseSize(o.size),
    allowOther: o.allowOther,
    attrTimeout: Number(o.attrTimeout),
    logger
  })
  try {
    await daemon.start()
  } catch (err) {
    if (process.send !== undefined) {
      process.send({ error: { message: (err as Error).message, hint: (err as ReplfsError).hint, code: (err as ReplfsError).code } })
      process.disconnect()
      process.exitCode = 1
      return
    }
    throw err
  }
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(sig, () => { logger.info({ signal: sig }, 'stopping'); void daemon.stop() })
  }
  if (process.send !== undefined) {
    process.send({ ready: true, pid: process.pid })
    process.disconnect()
  }
  await daemon.stopped
  // fuse-native keeps a libuv handle after unmount; nothing is left to do, so leave.
  process.exit(process.exitCode ?? 0)
}

async function runBackground (mnt: string, o: MountFlags): Promise<void> {
  const logFile = o.logFile ?? `/var/log/replfs/${resolve(mnt).replace(/^\//, '').replace(/\//g, '-') || 'root'}.log`
  mkdirSync(dirname(logFile), { recursive: true })
  const fd = openSync(logFile, 'a')
  const args = process.argv.slice(2).concat(['--foreground'])
  const child = fork(process.argv[1], args, { detached: true, stdio: ['ignore', fd, fd, 'ipc'] })
  const msg = await new Promise<{ ready?: boolean, error?: { message: string, hint?: string, code?: string } }>((resolve) => {
    child.once('message', m => resolve(m as never))
    child.once('exit', code => resolve({ error: { message: `volume process exited (code ${String(code)}) before mounting; see ${logFile}` } }))
  })
  if (msg.error !== undefined) {
    throw new ReplfsError((msg.error.code ?? 'MOUNT_FAILED') as never, msg.error.message, { hint: msg.error.hint })
  }
  child.unref()
  child.disconnect?.()
  process.stdout.write(`mounted ${resolve(mnt)} (store ${resolve(o.store)}, pid ${String(child.pid)}, log ${logFile})\n`)
}
