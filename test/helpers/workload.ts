/**
 * Random workloads for property tests: the ops (files, xattrs, open handles, snapshot commands),
 * a fast-check generator whose op mix and sizes each test sets, the runner that applies an op to
 * a Volume, and the replay check (journaled records replayed on an empty store give the same store).
 */
import fc from 'fast-check'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openVolume } from '../../src/daemon/open-volume.js'
import { FsError, ReplfsError, type ReplfsErrorCode } from '../../src/errors.js'
import type { Volume } from '../../src/fs/volume.js'
import { decodeRecord } from '../../src/log/codec.js'
import type { LogRecord } from '../../src/log/records.js'
import { fsck } from '../../src/store/fsck.js'
import { journalKey } from '../../src/store/keys.js'
import { ROOT, quietLogger, stateDump, tempVolume, type TestVolume } from './volume.js'

export type FileOp =
  | { op: 'create' | 'mkdir' | 'unlink' | 'rmdir', path: string }
  | { op: 'write', path: string, offset: number, len: number, seed: number }
  | { op: 'truncate', path: string, size: number }
  | { op: 'rename' | 'link', path: string, to: string }
  | { op: 'symlink', path: string, to: string }
  | { op: 'chmod', path: string, mode: number }
  | { op: 'setxattr', path: string, name: string, value: Uint8Array }
  | { op: 'removexattr', path: string, name: string }

export interface SnapshotOp { op: 'snap-create' | 'snap-delete' | 'snap-restore' | 'snap-refresh', name: string }

/** A handle opened and held across the ops that follow (orphans when its file is unlinked). */
export interface KeepOpenOp { op: 'keep-open', path: string }

export type Op = FileOp | KeepOpenOp | SnapshotOp
export type OpKind = Op['op']

/** What a workload is made of; an op kind missing from `weights` is never generated. */
export interface OpMix {
  /** Relative weight of each op kind. */
  weights: Partial<Record<OpKind, number>>
  /** Path components, and the most of them in one path. */
  names: string[]
  depth: number
  /** Write offsets. */
  offset: fc.Arbitrary<number>
  /** The largest write and truncate size. */
  maxWrite: number
  maxTruncate: number
  /** xattr names, and the largest value. */
  xattrNames: string[]
  maxXattr: number
  /** Snapshot names (needed for snap-* ops). */
  snapshotNames?: string[]
}

/** Every file op (no handles held open, no snapshot commands), each as likely as the others. */
export const FILE_OPS: Partial<Record<OpKind, number>> = {
  create: 1, mkdir: 1, write: 1, truncate: 1, unlink: 1, rmdir: 1, rename: 1, link: 1, symlink: 1, chmod: 1, setxattr: 1, removexattr: 1
}

/**
 * The snapshot tests' workload: file writes, renames, links and xattrs, and the four snapshot
 * commands (creates twice as likely as the rest) on names s1..s3.
 */
export const SNAPSHOT_MIX: OpMix = {
  weights: { create: 3, mkdir: 1, write: 4, truncate: 1, unlink: 1, rmdir: 1, rename: 1, link: 1, setxattr: 1, 'snap-create': 2, 'snap-delete': 1, 'snap-restore': 1, 'snap-refresh': 1 },
  names: ['a', 'b', 'c'],
  depth: 2,
  offset: fc.integer({ min: 0, max: 200_000 }),
  maxWrite: 140_000,
  maxTruncate: 300_000,
  xattrNames: ['user.x'],
  maxXattr: 32,
  snapshotNames: ['s1', 's2', 's3']
}

export function pathArb (names: string[], depth: number): fc.Arbitrary<string> {
  return fc.array(fc.constantFrom(...names), { minLength: 1, maxLength: depth }).map(p => '/' + p.join('/'))
}

/** One random op drawn from `mix`. */
export function opArb (mix: OpMix): fc.Arbitrary<Op> {
  const path = pathArb(mix.names, mix.depth)
  const snap = (): fc.Arbitrary<string> => {
    if (mix.snapshotNames === undefined || mix.snapshotNames.length === 0) throw new Error('snapshot ops need snapshotNames')
    return fc.constantFrom(...mix.snapshotNames)
  }
  const xattrName = (): fc.Arbitrary<string> => fc.constantFrom(...mix.xattrNames)
  const kinds: Record<OpKind, () => fc.Arbitrary<Op>> = {
    create: () => fc.record({ op: fc.constant('create' as const), path }),
    mkdir: () => fc.record({ op: fc.constant('mkdir' as const), path }),
    write: () => fc.record({ op: fc.constant('write' as const), path, offset: mix.offset, len: fc.integer({ min: 1, max: mix.maxWrite }), seed: fc.integer({ min: 0, max: 255 }) }),
    truncate: () => fc.record({ op: fc.constant('truncate' as const), path, size: fc.integer({ min: 0, max: mix.maxTruncate }) }),
    unlink: () => fc.record({ op: fc.constant('unlink' as const), path }),
    rmdir: () => fc.record({ op: fc.constant('rmdir' as const), path }),
    rename: () => fc.record({ op: fc.constant('rename' as const), path, to: path }),
    link: () => fc.record({ op: fc.constant('link' as const), path, to: path }),
    symlink: () => fc.record({ op: fc.constant('symlink' as const), path, to: fc.string({ maxLength: 20 }) }),
    chmod: () => fc.record({ op: fc.constant('chmod' as const), path, mode: fc.integer({ min: 0, max: 0o7777 }) }),
    setxattr: () => fc.record({ op: fc.constant('setxattr' as const), path, name: xattrName(), value: fc.uint8Array({ maxLength: mix.maxXattr }) }),
    removexattr: () => fc.record({ op: fc.constant('removexattr' as const), path, name: xattrName() }),
    'keep-open': () => fc.record({ op: fc.constant('keep-open' as const), path }),
    'snap-create': () => fc.record({ op: fc.constant('snap-create' as const), name: snap() }),
    'snap-delete': () => fc.record({ op: fc.constant('snap-delete' as const), name: snap() }),
    'snap-restore': () => fc.record({ op: fc.constant('snap-restore' as const), name: snap() }),
    'snap-refresh': () => fc.record({ op: fc.constant('snap-refresh' as const), name: snap() })
  }
  const unknown = Object.keys(mix.weights).filter(k => !(k in kinds))
  if (unknown.length > 0) throw new Error(`unknown op kinds: ${unknown.join(', ')}`)
  const arbs = (Object.keys(kinds) as OpKind[])
    .filter(k => mix.weights[k] !== undefined)
    .map(k => ({ weight: mix.weights[k]!, arbitrary: kinds[k]() }))
  return fc.oneof(...arbs)
}

export function pattern (len: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(len)
  for (let i = 0; i < len; i++) b[i] = (seed * 31 + i * 7 + (i >> 9)) & 0xff
  return b
}

export interface RunOpOptions {
  /** Where keep-open ops leave their handles (the caller releases them). */
  open?: number[]
  /** The bytes a write op writes. Default `pattern`. */
  data?: (len: number, seed: number) => Buffer
  /** Refusals of snapshot commands that are part of a random workload. Default SNAPSHOT_EXISTS, SNAPSHOT_MISSING. */
  snapshotRefusals?: ReplfsErrorCode[]
}

/**
 * Runs one op on a volume. POSIX errors (ENOENT, EEXIST...) of file ops, and the expected
 * refusals of snapshot commands, are part of a random workload; anything else is thrown.
 */
export async function runOp (vol: Volume, o: Op, opts: RunOpOptions = {}): Promise<void> {
  try {
    switch (o.op) {
      case 'create': await vol.release(await vol.create(o.path, 0o644, ROOT)); break
      case 'mkdir': await vol.mkdir(o.path, 0o755, ROOT); break
      case 'write': {
        const fh = await vol.open(o.path, 2)
        try {
          await vol.write(fh, (opts.data ?? pattern)(o.len, o.seed), o.len, o.offset)
        } finally {
          await vol.release(fh)
        }
        break
      }
      case 'truncate': await vol.truncate(o.path, null, o.size); break
      case 'unlink': await vol.unlink(o.path); break
      case 'rmdir': await vol.rmdir(o.path); break
      case 'rename': await vol.rename(o.path, o.to); break
      case 'link': await vol.link(o.path, o.to); break
      case 'symlink': await vol.symlink(o.to, o.path, ROOT); break
      case 'chmod': await vol.chmod(o.path, o.mode); break
      case 'setxattr': await vol.setxattr(o.path, o.name, Buffer.from(o.value), 0); break
      case 'removexattr': await vol.removexattr(o.path, o.name); break
      case 'keep-open': {
        if (opts.open === undefined) throw new Error('keep-open needs opts.open')
        opts.open.push(await vol.open(o.path, 2))
        break
      }
      case 'snap-create': await vol.createSnapshot(o.name); break
      case 'snap-delete': await vol.deleteSnapshot(o.name); break
      case 'snap-restore': await vol.restoreSnapshot(o.name); break
      case 'snap-refresh': await vol.refreshSnapshot(o.name); break
    }
  } catch (err) {
    if (o.op.startsWith('snap-')) {
      const refusals = opts.snapshotRefusals ?? ['SNAPSHOT_EXISTS', 'SNAPSHOT_MISSING']
      if (err instanceof ReplfsError && refusals.includes(err.code)) return
    } else if (err instanceof FsError) return
    throw err
  }
}

/**
 * Runs `work` on a fresh volume that journals its records, then replays those records (from the
 * init record on) on an empty store. Throws unless both stores are fsck-clean and byte-identical.
 * Returns the records replayed after the init record.
 */
export async function replayGivesSameStore (work: (a: TestVolume) => Promise<void>): Promise<LogRecord[]> {
  const a = await tempVolume()
  a.state.journalPayloads = true
  const records: LogRecord[] = []
  // The init record was applied before we listened: replay starts from it, fetched from the journal.
  a.log.onRecord((_seq, rec) => records.push(rec))
  const dirB = mkdtempSync(join(tmpdir(), 'replfs-replay-'))
  try {
    await work(a)
    await a.log.settle()
    const reportA = await fsck(a.state)
    if (!reportA.ok) throw new Error('fsck of the original store: ' + reportA.problems.join('; '))
    const init = decodeRecord((await a.store.get(journalKey(1)))!)
    const b = await openVolume(dirB, { create: true, logger: quietLogger, replay: true })
    try {
      for (const rec of [init, ...records]) await b.log.apply(rec)
      await b.log.settle()
      const [da, db] = [await stateDump(a), await stateDump(b)]
      if (JSON.stringify(da) !== JSON.stringify(db)) {
        const ma = new Map(da); const mb = new Map(db)
        const diff = [...new Set([...ma.keys(), ...mb.keys()])].filter(k => ma.get(k) !== mb.get(k)).slice(0, 5)
        throw new Error(`stores differ after ${records.length} records; keys ${diff.join(', ')}`)
      }
      const reportB = await fsck(b.state)
      if (!reportB.ok) throw new Error('fsck of the replayed store: ' + reportB.problems.join('; '))
    } finally {
      await b.store.close()
    }
  } finally {
    await a.close()
    rmSync(dirB, { recursive: true, force: true })
  }
  return records
}
