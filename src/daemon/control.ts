import { createHash } from 'node:crypto'
import { mkdirSync, realpathSync, rmSync } from 'node:fs'
import { createConnection, createServer, type Server } from 'node:net'
import { basename, dirname, join, resolve } from 'node:path'
import split2 from 'split2'
import type { Logger } from 'pino'
import { ReplfsError } from '../errors.js'

/**
 * The "ioctl" of a replfs mount: a unix socket per mount point that the CLI talks to with one
 * JSON request per line. The socket's name is derived from the mount point, so commands address
 * a volume by where it is mounted.
 */

export function runDir (): string {
  return process.env.REPLFS_RUN_DIR ?? '/run/replfs'
}

export function controlSocketPath (mountpoint: string): string {
  // Resolve only the parent: touching the mount point itself from the process that serves it
  // would wait on its own FUSE thread forever (and a stale mount cannot be resolved at all).
  const abs = resolve(mountpoint)
  let real = abs
  try { real = join(realpathSync(dirname(abs)), basename(abs)) } catch { /* use the plain path */ }
  const id = createHash('sha256').update(real).digest('hex').slice(0, 20)
  return join(runDir(), `${id}.sock`)
}

export type ControlHandler = (req: { cmd: string, [k: string]: unknown }) => Promise<unknown>

export async function serveControl (path: string, handler: ControlHandler, logger: Logger): Promise<Server> {
  mkdirSync(runDir(), { recursive: true, mode: 0o755 })
  rmSync(path, { force: true })
  const log = logger.child({ component: 'control' })
  const server = createServer(sock => {
    sock.pipe(split2()).on('data', (line: string) => {
      let req: { cmd: string }
      try {
        req = JSON.parse(line)
        if (typeof req?.cmd !== 'string') throw new Error('no cmd')
      } catch {
        sock.end(JSON.stringify({ ok: false, error: { code: 'BAD_ARGUMENT', message: 'malformed control request' } }) + '\n')
        return
      }
      handler(req).then(
        result => sock.end(JSON.stringify({ ok: true, result }) + '\n'),
        (err: Error & { code?: string, hint?: string }) => {
          log.warn({ err, cmd: req.cmd }, 'control command failed')
          sock.end(JSON.stringify({ ok: false, error: { code: err.code ?? 'EIO', message: err.message, hint: err.hint } }) + '\n')
        })
    })
    sock.on('error', () => {})
  })
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(path, () => resolve()))
  return server
}

export async function callControl (mountpoint: string, req: { cmd: string, [k: string]: unknown }, timeoutMs = 600_000): Promise<unknown> {
  const path = controlSocketPath(mountpoint)
  return await new Promise((resolve, reject) => {
    const sock = createConnection(path)
    const timer = setTimeout(() => { sock.destroy(); reject(new ReplfsError('NOT_MOUNTED', `no answer from the replfs process of ${mountpoint}`)) }, timeoutMs)
    sock.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      reject(new ReplfsError('NOT_MOUNTED', `${mountpoint} is not a replfs mount served by a running process (${err.code ?? err.message})`, {
        hint: `Mount it with: replfs mount ${mountpoint} --store DIR`
      }))
    })
    let answered = false
    // The process can die mid-command (killed, crashed): say so instead of waiting out the timeout.
    sock.once('close', () => {
      clearTimeout(timer)
      if (!answered) {
        reject(new ReplfsError('NOT_MOUNTED', `the replfs process of ${mountpoint} closed the connection without answering (did it exit?)`, {
          hint: 'Look at its log; after a crash, mount the volume again (a stale mount point is recovered).'
        }))
      }
    })
    sock.pipe(split2()).once('data', (line: string) => {
      answered = true
      clearTimeout(timer)
      sock.destroy()
      const res = JSON.parse(line) as { ok: boolean, result?: unknown, error?: { code: string, message: string, hint?: string } }
      if (res.ok) resolve(res.result)
      else reject(new ReplfsError((res.error?.code ?? 'BAD_ARGUMENT') as never, res.error?.message ?? 'failed', { hint: res.error?.hint }))
    })
    sock.write(JSON.stringify(req) + '\n')
  })
}
