import t from 'tap'
t.setTimeout(180_000)
import type { Test } from 'tap'
import fc from 'fast-check'
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { assertIdentical, startPair, status, waitCaughtUp } from '../helpers/replicated.js'

// A random workload through node:fs on the primary's mount, then both mounts must hold the same
// tree (content, modes, symlinks, xattrs, hard-link groups) and `replfs verify` must agree.

type Op =
  | { k: 'create', d: number, name: string, size: number, seed: number }
  | { k: 'write', f: number, off: number, len: number, seed: number }
  | { k: 'truncate', f: number, len: number }
  | { k: 'rename', src: number, dir: boolean, d: number, name: string }
  | { k: 'link', f: number, d: number, name: string }
  | { k: 'unlink', f: number }
  | { k: 'mkdir', d: number, name: string }
  | { k: 'rmdir', d: number }
  | { k: 'symlink', d: number, name: string, target: string }
  | { k: 'chmod', p: number, mode: number }
  | { k: 'setxattr', p: number, name: string, size: number, seed: number }
  | { k: 'rmxattr', p: number, name: string }
  | { k: 'fsync', f: number }

const name = fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', 'g', 'long-name-' + 'x'.repeat(40))
const idx = fc.nat(1000)
const size = fc.oneof({ weight: 5, arbitrary: fc.nat(5000) }, { weight: 2, arbitrary: fc.nat(70_000) }, { weight: 1, arbitrary: fc.nat(300_000) })
const seed = fc.nat()
const xname = fc.constantFrom('user.a', 'user.b', 'user.comment')

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 12, arbitrary: fc.record({ k: fc.constant('create' as const), d: idx, name, size, seed }) },
  { weight: 14, arbitrary: fc.record({ k: fc.constant('write' as const), f: idx, off: size, len: fc.nat(20_000), seed }) },
  { weight: 5, arbitrary: fc.record({ k: fc.constant('truncate' as const), f: idx, len: size }) },
  { weight: 7, arbitrary: fc.record({ k: fc.constant('rename' as const), src: idx, dir: fc.boolean(), d: idx, name }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('link' as const), f: idx, d: idx, name }) },
  { weight: 5, arbitrary: fc.record({ k: fc.constant('unlink' as const), f: idx }) },
  { weight: 6, arbitrary: fc.record({ k: fc.constant('mkdir' as const), d: idx, name }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('rmdir' as const), d: idx }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('symlink' as const), d: idx, name, target: fc.constantFrom('a', '../b', '/etc/hostname', 'no/such/' + 'y'.repeat(30), '.') }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('chmod' as const), p: idx, mode: fc.constantFrom(0o644, 0o600, 0o755, 0o700, 0o444, 0o4755, 0o1777, 0o2750) }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('setxattr' as const), p: idx, name: xname, size: fc.nat(300), seed }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('rmxattr' as const), p: idx, name: xname }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('fsync' as const), f: idx }) }
)

/** Deterministic pseudo-random bytes (xorshift), so a seed reproduces a workload exactly. */
function bytes (n: number, s: number): Buffer {
  const b = Buffer.allocUnsafe(n)
  let x = (s | 0) || 0x9e3779b9
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5
    b[i] = x & 0xff
  }
  return b
}

interface Paths { files: string[], dirs: string[], all: string[] }

function scan (root: string): Paths {
  const p: Paths = { files: [], dirs: [''], all: [] }
  const walk = (rel: string): void => {
    for (const d of fs.readdirSync(join(root, rel), { withFileTypes: true })) {
      const r = rel === '' ? d.name : `${rel}/${d.name}`
      p.all.push(r)
      if (d.isDirectory()) { p.dirs.push(r); walk(r) } else if (d.isFile()) p.files.push(r)
    }
  }
  walk('')
  p.files.sort(); p.dirs.sort(); p.all.sort()
  return p
}

const pick = <X>(l: X[], i: number): X | undefined => l.length === 0 ? undefined : l[i % l.length]

/** Runs the ops; errors a real filesystem gives for an impossible op (EEXIST, ENOTEMPTY...) are expected. */
function runWorkload (root: string, ops: Op[]): { done: Record<string, number>, failed: Record<string, number> } {
  const done: Record<string, number> = {}
  const failed: Record<string, number> = {}
  let p = scan(root)
  const abs = (rel: string): string => rel === '' ? root : join(root, rel)
  for (const op of ops) {
    let changedNames = false
    try {
      switch (op.k) {
        case 'create': {
          const d = pick(p.dirs, op.d)!
          fs.writeFileSync(join(abs(d), op.name), bytes(op.size, op.seed), { flag: 'wx' })
          changedNames = true
          break
        }
        case 'write': {
          const f = pick(p.files, op.f)
          if (f === undefined) throw Object.assign(new Error('no file'), { code: 'NOFILE' })
          const fd = fs.openSync(abs(f), 'r+')
          try { fs.writeSync(fd, bytes(op.len, op.seed), 0, op.len, op.off) } finally { fs.closeSync(fd) }
          break
        }
        case 'truncate': {
          const f = pick(p.files, op.f)
          if (f === undefined) throw Object.assign(new Error('no file'), { code: 'NOFILE' })
          fs.truncateSync(abs(f), op.len)
          break
        }
        case 'rename': {
          const src = op.dir ? pick(p.dirs.slice(1), op.src) : pick(p.files, op.src)
          if (src === undefined) throw Object.assign(new Error('no source'), { code: 'NOFILE' })
          fs.renameSync(abs(src), join(abs(pick(p.dirs, op.d)!), op.name))
          changedNames = true
          break
        }
        case 'link': {
          const f = pick(p.files, op.f)
          if (f === undefined) throw Object.assign(new Error('no file'), { code: 'NOFILE' })
          fs.linkSync(abs(f), join(abs(pick(p.dirs, op.d)!), op.name))
          changedNames = true
          break
        }
        case 'unlink': {
          const f = pick(p.all.filter(x => !p.dirs.includes(x)), op.f)
          if (f === undefined) throw Object.assign(new Error('no file'), { code: 'NOFILE' })
          fs.unlinkSync(abs(f))
          changedNames = true
          break
        }
        case 'mkdir':
          fs.mkdirSync(join(abs(pick(p.dirs, op.d)!), op.name))
          changedNames = true
          break
        case 'rmdir': {
          const d = pick(p.dirs.slice(1), op.d)
          if (d === undefined) throw Object.assign(new Error('no dir'), { code: 'NOFILE' })
          fs.rmdirSync(abs(d))
          changedNames = true
          break
        }
        case 'symlink':
          fs.symlinkSync(op.target, join(abs(pick(p.dirs, op.d)!), op.name))
          changedNames = true
          break
        case 'chmod': {
          const x = pick([...p.files, ...p.dirs], op.p)!
          fs.chmodSync(abs(x), op.mode)
          break
        }
        case 'setxattr':
        case 'rmxattr': {
          const x = pick([...p.files, ...p.dirs], op.p)!
          const args = op.k === 'setxattr'
            ? ['-n', op.name, '-v', '0x' + bytes(op.size, op.seed).toString('hex'), abs(x)]
            : ['-x', op.name, abs(x)]
          if (op.k === 'setxattr' && op.size === 0) args.splice(2, 2)
          const r = spawnSync('setfattr', args, { encoding: 'utf8' })
          if (r.status !== 0) {
            const code = /No such attribute/.test(r.stderr) ? 'ENODATA' : /Permission denied/.test(r.stderr) ? 'EACCES' : 'SETFATTR'
            throw Object.assign(new Error(r.stderr), { code })
          }
          break
        }
        case 'fsync': {
          const f = pick(p.files, op.f)
          if (f === undefined) throw Object.assign(new Error('no file'), { code: 'NOFILE' })
          const fd = fs.openSync(abs(f), 'r')
          try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
          break
        }
      }
      done[op.k] = (done[op.k] ?? 0) + 1
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'unknown'
      // anything but the errors a POSIX filesystem answers impossible requests with is a failure
      if (!['EEXIST', 'ENOENT', 'ENOTEMPTY', 'EINVAL', 'EISDIR', 'ENOTDIR', 'ENODATA', 'NOFILE', 'EACCES', 'EPERM'].includes(code)) {
        throw new Error(`${JSON.stringify(op)}: ${(err as Error).message}`)
      }
      failed[`${op.k}:${code}`] = (failed[`${op.k}:${code}`] ?? 0) + 1
    }
    if (changedNames) p = scan(root)
  }
  return { done, failed }
}

async function workloadTest (t: Test, mode: 'sync' | 'async'): Promise<void> {
  const s = Number(process.env.REPLFS_SEED ?? Math.floor(Math.random() * 2 ** 31))
  const nOps = Number(process.env.REPLFS_OPS ?? 450)
  t.comment(`seed ${s} (rerun with REPLFS_SEED=${s}), ${nOps} ops`)
  const [ops] = fc.sample(fc.array(opArb, { minLength: nOps, maxLength: nOps }), { numRuns: 1, seed: s })
  const pair = await startPair(t, { mode })
  await waitCaughtUp(pair.primary)
  const started = Date.now()
  const r = runWorkload(pair.primary.mnt, ops)
  const ms = Date.now() - started
  t.comment(`${mode}: workload took ${ms} ms; done ${JSON.stringify(r.done)}; refused ${JSON.stringify(r.failed)}`)
  const ok = Object.values(r.done).reduce((a, b) => a + b, 0)
  t.ok(ok >= nOps / 2, `${ok} of ${nOps} ops took effect`)
  const st = await status(pair.primary)
  t.equal(st.replication.mode, mode, `primary runs ${mode}`)
  if (mode === 'sync') t.equal(st.replication.lagRecords, 0, 'sync mode: nothing unacknowledged once the writes returned')
  await assertIdentical(t, pair)

  // reads on the secondary see what the primary wrote
  const content = bytes(123_457, s)
  fs.writeFileSync(join(pair.primary.mnt, 'fresh'), content)
  await waitCaughtUp(pair.primary)
  const got = fs.readFileSync(join(pair.secondary.mnt, 'fresh'))
  t.equal(createHash('sha256').update(got).digest('hex'), createHash('sha256').update(content).digest('hex'), 'a file written on the primary reads back on the secondary')

  // the secondary is read-only
  const b = pair.secondary.mnt
  const erofs = (what: string, fn: () => unknown): void => {
    let code: string | undefined
    try { fn() } catch (e) { code = (e as NodeJS.ErrnoException).code }
    t.equal(code, 'EROFS', `secondary: ${what} fails with EROFS`)
  }
  erofs('create', () => fs.writeFileSync(join(b, 'nope'), 'x'))
  erofs('write to an existing file', () => fs.openSync(join(b, 'fresh'), 'r+'))
  erofs('truncate', () => fs.truncateSync(join(b, 'fresh'), 0))
  erofs('unlink', () => fs.unlinkSync(join(b, 'fresh')))
  erofs('mkdir', () => fs.mkdirSync(join(b, 'nodir')))
  erofs('rename', () => fs.renameSync(join(b, 'fresh'), join(b, 'fresh2')))
  erofs('chmod', () => fs.chmodSync(join(b, 'fresh'), 0o600))
  erofs('symlink', () => fs.symlinkSync('x', join(b, 'sl')))
  erofs('link', () => fs.linkSync(join(b, 'fresh'), join(b, 'hl')))
  const x = spawnSync('setfattr', ['-n', 'user.no', '-v', '1', join(b, 'fresh')], { encoding: 'utf8' })
  t.match(x.stderr, /Read-only file system/, 'secondary: setxattr fails with EROFS')
  await assertIdentical(t, pair)
}

t.test('sync mode: a random workload on the primary ends identical on the secondary', async t => { await workloadTest(t, 'sync') })
t.test('async mode: a random workload on the primary ends identical on the secondary', async t => { await workloadTest(t, 'async') })
