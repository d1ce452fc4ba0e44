import type { Logger } from 'pino'
import { constants } from 'node:os'
import { FsError, fsError, toErrno } from '../errors.js'
import type { Caller, Stat, Volume } from '../fs/volume.js'

/** What fuse-native (as patched in patches/) exposes that the adapter needs. */
export interface FuseBinding {
  UTIME_NOW: unknown
  UTIME_OMIT: unknown
}

export type ContextOf = () => Caller

type Cb = (code: number, ...rest: unknown[]) => void

/**
 * Maps kernel calls (fuse-native's path-based ops) to Volume methods, and errors to errno.
 * Unexpected errors are logged here, once, and reach the application as EIO.
 */
export function fuseOps (vol: Volume, fuse: FuseBinding, caller: ContextOf, logger: Logger, counts?: Map<string, number>, errors?: Map<string, Map<string, number>>): Record<string, unknown> {
  const log = logger.child({ component: 'fuse' })

  function fail (op: string, cb: Cb, err: unknown, ...defaults: unknown[]): void {
    if (!(err instanceof FsError)) log.error({ err, op }, 'operation failed unexpectedly')
    const errno = toErrno(err)
    if (errors !== undefined) {
      const name = err instanceof FsError ? err.code : ERRNO_NAMES.get(-errno) ?? String(-errno)
      let byErrno = errors.get(op)
      if (byErrno === undefined) errors.set(op, byErrno = new Map())
      byErrno.set(name, (byErrno.get(name) ?? 0) + 1)
    }
    cb(errno, ...defaults)
  }

  /** Runs an async op and answers the kernel with its result (or its errno). */
  function run<T> (op: string, cb: Cb, fn: () => Promise<T>, reply: (v: T) => unknown[] = () => []): void {
    fn().then(v => cb(0, ...reply(v)), err => fail(op, cb, err))
  }

  /**
   * For ops the kernel sends only on paths its dentry cache says exist: ENOENT means the cache
   * is stale (a restore, or on a secondary the primary's changes, removed the name under it).
   * ESTALE makes the VFS look the path up afresh and retry once, so open(O_CREAT) creates the
   * file and the others get the true answer, instead of an ENOENT no local filesystem gives.
   */
  function onKnownPath<T> (op: string, cb: Cb, fn: () => Promise<T>, reply?: (v: T) => unknown[]): void {
    run(op, cb, async () => await fn().catch((err: unknown) => {
      throw err instanceof FsError && err.code === 'ENOENT' ? fsError('ESTALE', err.message) : err
    }), reply)
  }

  const time = (t: unknown): bigint | 'now' | 'omit' => t === fuse.UTIME_NOW ? 'now' : t === fuse.UTIME_OMIT ? 'omit' : BigInt(t as bigint)

  const ops: Record<string, unknown> = {
    init (cb: Cb) { cb(0) },
    statfs (_path: string, cb: Cb) { try { cb(0, vol.statfs()) } catch (err) { fail('statfs', cb, err) } },
    getattr (path: string, cb: Cb) { run('getattr', cb, async () => await vol.getattr(path), s => [toFuseStat(s)]) },
    fgetattr (path: string | null, fd: number, cb: Cb) {
      // fd 0 means "no handle"; then only the path can say which file.
      run('fgetattr', cb, async () => {
        if (fd !== 0) return await vol.fgetattr(fd)
        if (path === null) throw fsError('EBADF', 'fgetattr with neither handle nor path')
        return await vol.getattr(path)
      }, s => [toFuseStat(s)])
    },
    access (path: string, mode: number, cb: Cb) { const c = caller(); run('access', cb, async () => await vol.access(path, mode, c)) },
    readdir (path: string, cb: Cb) {
      run('readdir', cb, async () => await vol.readdir(path), entries => [
        entries.map(e => e.name),
        entries.map(e => ({ ino: e.ino, mode: e.type }))
      ])
    },
    opendir (path: string, _flags: number, cb: Cb) { onKnownPath('opendir', cb, async () => await vol.opendir(path), fd => [fd]) },
    releasedir (_path: string, _fd: number, cb: Cb) { cb(0) },
    open (path: string, flags: number, cb: Cb) { onKnownPath('open', cb, async () => await vol.open(path, flags), fd => [fd]) },
    create (path: string, mode: number, flags: number, cb: Cb) {
      const c = caller()
      onKnownPath('create', cb, async () => await vol.create(path, mode, c, flags), fd => [fd])
    },
    release (_path: string | null, fd: number, cb: Cb) { run('release', cb, async () => await vol.release(fd)) },
    flush (_path: string | null, fd: number, cb: Cb) { try { vol.flush(fd); cb(0) } catch (err) { fail('flush', cb, err) } },
    fsync (_path: string | null, _datasync: number, fd: number, cb: Cb) { run('fsync', cb, async () => await vol.fsync(fd)) },
    fsyncdir (_path: string | null, _datasync: number, _fd: number, cb: Cb) { run('fsyncdir', cb, async () => await vol.fsync()) },
    read (_path: string | null, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) {
      vol.read(fd, buf, len, pos).then(n => cb(n), err => fail('read', cb, err))
    },
    write (_path: string | null, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) {
      vol.write(fd, buf, len, pos).then(n => cb(n), err => fail('write', cb, err))
    },
    truncate (path: string, size: number, cb: Cb) { onKnownPath('truncate', cb, async () => await vol.truncate(path, null, size)) },
    ftruncate (path: string | null, fd: number, size: number, cb: Cb) { run('ftruncate', cb, async () => await vol.truncate(path, fd, size)) },
    utimens (path: string, atime: unknown, mtime: unknown, cb: Cb) {
      onKnownPath('utimens', cb, async () => await vol.utimens(path, null, time(atime), time(mtime)))
    },
    readlink (path: string, cb: Cb) { onKnownPath('readlink', cb, async () => await vol.readlink(path), t => [t]) },
    chown (path: string, uid: number, gid: number, cb: Cb) { onKnownPath('chown', cb, async () => await vol.chown(path, uid, gid)) },
    chmod (path: string, mode: number, cb: Cb) { onKnownPath('chmod', cb, async () => await vol.chmod(path, mode)) },
    mknod (path: string, mode: number, dev: number, cb: Cb) { const c = caller(); onKnownPath('mknod', cb, async () => await vol.mknod(path, mode, dev, c)) },
    mkdir (path: string, mode: number, cb: Cb) { const c = caller(); onKnownPath('mkdir', cb, async () => await vol.mkdir(path, mode, c)) },
    symlink (target: string, path: string, cb: Cb) { const c = caller(); onKnownPath('symlink', cb, async () => await vol.symlink(target, path, c)) },
    link (existing: string, path: string, cb: Cb) { onKnownPath('link', cb, async () => await vol.link(existing, path)) },
    unlink (path: string, cb: Cb) { onKnownPath('unlink', cb, async () => await vol.unlink(path)) },
    rmdir (path: string, cb: Cb) { onKnownPath('rmdir', cb, async () => await vol.rmdir(path)) },
    rename (from: string, to: string, cb: Cb) { onKnownPath('rename', cb, async () => await vol.rename(from, to)) },
    setxattr (path: string, name: string, value: Buffer, _position: number, flags: number, cb: Cb) {
      onKnownPath('setxattr', cb, async () => await vol.setxattr(path, name, value, flags))
    },
    getxattr (path: string, name: string, _position: number, cb: Cb) {
      onKnownPath('getxattr', cb, async () => await vol.getxattr(path, null, name), v => [v])
    },
    listxattr (path: string, cb: Cb) { onKnownPath('listxattr', cb, async () => await vol.listxattr(path), names => [names]) },
    removexattr (path: string, name: string, cb: Cb) { onKnownPath('removexattr', cb, async () => await vol.removexattr(path, name)) }
  }
  if (counts !== undefined) {
    // How many calls of each kind reached us (`status` shows them: a round trip into JavaScript
    // is the cost that matters on this path).
    for (const [name, op] of Object.entries(ops)) {
      const fn = op as (...args: unknown[]) => unknown
      const counted = (...args: unknown[]): unknown => { counts.set(name, (counts.get(name) ?? 0) + 1); return fn(...args) }
      // fuse-native reads the arity of some handlers to pick their signature.
      Object.defineProperty(counted, 'length', { value: fn.length })
      ops[name] = counted
    }
  }
  return ops
}

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]))

function toFuseStat (s: Stat): Record<string, unknown> {
  return {
    mode: s.mode, uid: s.uid, gid: s.gid, size: s.size, nlink: s.nlink, ino: s.ino, rdev: s.rdev,
    blksize: s.blksize, blocks: s.blocks, atime: s.atime, mtime: s.mtime, ctime: s.ctime, dev: 0
  }
}
