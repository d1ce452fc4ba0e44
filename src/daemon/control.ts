import { createHash } from 'node:crypto'
import { chmodSync, chownSync, mkdirSync, mkdtempSync, realpathSync, renameSync, rmSync } from 'node:fs'
import { createConnection, createServer, type Server, type Socket } from 'node:net'
import { basename, dirname, join, resolve } from 'node:path'
import split2 from 'split2'
import type { Logger } from 'pino'
import { ReplfsError } from '../errors.js'
import { type PeerCredentials, peerCredentials, peerGroups, socketFd } from './peer-credentials.js'

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

/** A group whose members may use the control socket besides root and the daemon's own user. */
export interface ControlGroup { name: string, gid: number }

/**
 * Serves the control socket. Only root and the user this process runs as (and members of
 * `group`, if given) may use it: the socket is 0600 (0660 with a group) from the moment it can be
 * reached, and each connection is checked against the kernel's record of its peer (SO_PEERCRED)
 * before a byte of it is read.
 */
export async function serveControl (path: string, handler: ControlHandler, logger: Logger, opts: { group?: ControlGroup } = {}): Promise<Server> {
  mkdirSync(runDir(), { recursive: true, mode: 0o755 })
  const log = logger.child({ component: 'control' })
  const server = createServer(sock => {
    sock.on('error', () => {})
    const denied = refusal(sock, opts.group)
    if (denied !== null) {
      log.warn({ peerUid: denied.uid, peerGid: denied.gid, peerPid: denied.pid }, `control connection refused: ${denied.message}`)
      sock.end(JSON.stringify({ ok: false, error: { code: 'CONTROL_DENIED', message: denied.message, hint: denied.hint } }) + '\n')
      // Unread, the peer's end of the stream would keep the connection (and server.close) open.
      sock.resume()
      return
    }
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
  })
  // Bound in a fresh 0700 directory, given its mode there, then renamed into place: whatever the
  // umask, nobody else can reach the socket before it has its final mode. The rename also
  // replaces a stale socket of a process that died.
  const stage = mkdtempSync(join(runDir(), '.control-'))
  const staged = join(stage, 'socket')
  try {
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(staged, () => resolve()))
    if (opts.group !== undefined) chownSync(staged, process.getuid?.() ?? 0, opts.group.gid)
    chmodSync(staged, opts.group === undefined ? 0o600 : 0o660)
    renameSync(staged, path)
  } catch (err) {
    server.close()
    throw new ReplfsError('MOUNT_FAILED', `cannot create the control socket ${path}: ${(err as Error).message}`, { cause: err })
  } finally {
    rmSync(stage, { recursive: true, force: true })
  }
  return server
}

interface Refusal { uid: number | null, gid: number | null, pid: number | null, message: string, hint: string }

/** Why the peer of `sock` may not use the control socket, or null when it may. */
function refusal (sock: Socket, group: ControlGroup | undefined): Refusal | null {
  const own = process.getuid?.() ?? 0
  const hint = `Run the command as root or as the user the volume process runs as (uid ${own})${group === undefined ? '' : `, or as a member of group ${group.name}`}`
  const fd = socketFd(sock)
  let cred: PeerCredentials
  try {
    if (fd === null) throw new Error('the connection has no file descriptor')
    cred = peerCredentials(fd)
  } catch (err) {
    return { uid: null, gid: null, pid: null, message: `the credentials of the connecting process cannot be read (${(err as Error).message})`, hint }
  }
  if (cred.uid === 0 || cred.uid === own) return null
  if (group !== undefined && fd !== null && (cred.gid === group.gid || peerGroups(fd).includes(group.gid))) return null
  return { ...cred, message: `uid ${cred.uid} (pid ${cred.pid}) may not control this volume`, hint }
}

export async function callControl (mountpoint: string, req: { cmd: string, [k: string]: unknown }, timeoutMs = 600_000): Promise<unknown> {
  const path = controlSocketPath(mountpoint)
  return await new Promise((resolve, reject) => {
    const sock = createConnection(path)
    const timer = setTimeout(() => { sock.destroy(); reject(new ReplfsError('NOT_MOUNTED', `no answer from the replfs process of ${mountpoint}`)) }, timeoutMs)
    sock.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      if (err.code === 'EACCES') {
        reject(new ReplfsError('CONTROL_DENIED', `this user (uid ${process.getuid?.() ?? '?'}) may not control ${mountpoint}: its control socket ${path} is private`, {
          hint: 'Run the command as root or as the user the volume process runs as (or mount it with --control-group)'
        }))
        return
      }
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
