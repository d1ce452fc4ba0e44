// Minimal fuse-native passthrough of a plain directory, for benchmarking the FUSE overhead alone.
// Usage (as its own process): node dist/bench/passthrough.js <mountpoint> <source-dir>
// Prints "ready" on stdout once mounted; unmounts and exits on SIGTERM/SIGINT.
import fs from 'node:fs'
import { constants } from 'node:os'
import { createRequire } from 'node:module'
import { join } from 'node:path'

const require = createRequire(import.meta.url)
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const Fuse: any = require('fuse-native')

type Cb = (err: number, ...rest: unknown[]) => void

function errno (err: NodeJS.ErrnoException | null): number {
  if (err === null) return 0
  const n = err.code !== undefined ? (constants.errno as Record<string, number>)[err.code] : undefined
  return n !== undefined ? -n : -5 // EIO
}

export function passthroughOps (src: string): Record<string, unknown> {
  const p = (path: string): string => join(src, path)
  const done = (cb: Cb) => (err: NodeJS.ErrnoException | null) => cb(errno(err))
  return {
    getattr (path: string, cb: Cb) { fs.lstat(p(path), (err, st) => err !== null ? cb(errno(err)) : cb(0, st)) },
    fgetattr (_path: string | null, fd: number, cb: Cb) { fs.fstat(fd, (err, st) => err !== null ? cb(errno(err)) : cb(0, st)) },
    access (path: string, mode: number, cb: Cb) { fs.access(p(path), mode, done(cb)) },
    statfs (path: string, cb: Cb) {
      fs.statfs(p(path), (err, s) => err !== null
        ? cb(errno(err))
        : cb(0, { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, fsid: 0, flag: 0, namemax: 255 }))
    },
    readdir (path: string, cb: Cb) { fs.readdir(p(path), (err, names) => err !== null ? cb(errno(err)) : cb(0, names)) },
    open (path: string, flags: number, cb: Cb) { fs.open(p(path), flags, (err, fd) => err !== null ? cb(errno(err)) : cb(0, fd)) },
    create (path: string, mode: number, flags: number, cb: Cb) {
      fs.open(p(path), flags | fs.constants.O_CREAT, mode, (err, fd) => err !== null ? cb(errno(err)) : cb(0, fd))
    },
    read (_path: string | null, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) {
      fs.read(fd, buf, 0, len, pos, (err, n) => cb(err !== null ? errno(err) : n))
    },
    write (_path: string | null, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) {
      fs.write(fd, buf, 0, len, pos, (err, n) => cb(err !== null ? errno(err) : n))
    },
    flush (_path: string | null, _fd: number, cb: Cb) { cb(0) },
    release (_path: string | null, fd: number, cb: Cb) { fs.close(fd, done(cb)) },
    // fuse-native passes (path, datasync, fd, cb) here, unlike the other handle ops.
    fsync (_path: string | null, datasync: boolean | number, fd: number, cb: Cb) {
      if (datasync !== 0 && datasync !== false) fs.fdatasync(fd, done(cb))
      else fs.fsync(fd, done(cb))
    },
    truncate (path: string, size: number, cb: Cb) { fs.truncate(p(path), size, done(cb)) },
    ftruncate (_path: string | null, fd: number, size: number, cb: Cb) { fs.ftruncate(fd, size, done(cb)) },
    unlink (path: string, cb: Cb) { fs.unlink(p(path), done(cb)) },
    mkdir (path: string, mode: number, cb: Cb) { fs.mkdir(p(path), { mode }, done(cb)) },
    rmdir (path: string, cb: Cb) { fs.rmdir(p(path), done(cb)) },
    rename (from: string, to: string, cb: Cb) { fs.rename(p(from), p(to), done(cb)) },
    chmod (path: string, mode: number, cb: Cb) { fs.chmod(p(path), mode, done(cb)) },
    chown (path: string, uid: number, gid: number, cb: Cb) { fs.chown(p(path), uid, gid, done(cb)) },
    utimens (path: string, atime: unknown, mtime: unknown, cb: Cb) {
      const t = (v: unknown): number => typeof v === 'bigint' && v >= 0n ? Number(v) / 1e9 : Date.now() / 1000
      fs.utimes(p(path), t(atime), t(mtime), done(cb))
    }
  }
}

async function main (): Promise<void> {
  const [mnt, src] = process.argv.slice(2)
  if (mnt === undefined || src === undefined) throw new Error('usage: passthrough <mountpoint> <source-dir>')
  const fuse = new Fuse(mnt, passthroughOps(src), { bigWrites: true, useIno: true, nullPathOk: true, timeout: false, force: true })
  await new Promise<void>((resolve, reject) => fuse.mount((err: Error | null) => err ? reject(err) : resolve()))
  process.stdout.write('ready\n')
  let stopping = false
  const stop = (): void => {
    if (stopping) return
    stopping = true
    fuse.unmount(() => process.exit(0))
    setTimeout(() => process.exit(1), 10000).unref()
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  main().catch(err => { console.error(err); process.exit(1) })
}
