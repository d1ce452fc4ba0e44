import { ReplfsError } from '../errors.js'
import { type Inode, S_IFDIR, S_IFMT, decodeDirent, decodeInode, isDir } from '../store/inode.js'
import { P_INODE, ROOT_INO, direntBase, readU64, withLayer } from '../store/keys.js'
import { LayerView } from '../store/store.js'
import {
  GARBAGE_START, GARBAGE_STEP, type LayerTable, type SnapshotMeta, collectGarbageStep, findSnapshot, mergeableLayers, withMergesDone, withSnapshotCreated, withSnapshotDeleted, withSnapshotRefreshed, withSnapshotRestored
} from '../store/snapshots.js'
import { SNAPSHOT_INO_BASE, type Tx, inSnapshot } from '../store/volume-state.js'
import type { LogRecord } from './records.js'

/**
 * The one state transition: turns a record into LevelDB ops on `tx`. Used unchanged by the
 * primary (right after it makes a record) and by a replica (when it receives one), so the same
 * records give the same store. It trusts nothing: a record that does not fit the state it is
 * applied to is refused with RECORD_INVALID and changes nothing.
 */
export async function applyRecord (rec: LogRecord, tx: Tx): Promise<void> {
  switch (rec.type) {
    case 'init': {
      if (tx.state.format !== null) throw invalid('init: volume already initialised')
      const root: Inode = {
        ino: ROOT_INO, mode: S_IFDIR | (rec.mode & 0o7777), uid: rec.uid, gid: rec.gid, nlink: 2, size: 0, bytes: 0, rdev: 0,
        atime: rec.time, mtime: rec.time, ctime: rec.time, btime: rec.time, parent: ROOT_INO, target: Buffer.alloc(0), xattrs: false
      }
      tx.format = { formatVersion: 1, volumeId: rec.volumeId, blockSize: rec.blockSize }
      tx.putMeta('format', tx.format)
      tx.putMeta('layers', tx.state.layers)
      tx.putInode(root)
      tx.counters.inodes = 1
      tx.counters.nextIno = ROOT_INO + 1
      return
    }
    case 'mknod': {
      const parent = await dirInode(tx, rec.parent, 'mknod')
      if (await tx.dirent(rec.parent, rec.name) !== undefined) throw invalid(`mknod: ${rec.parent}/${rec.name} exists`)
      // Inode numbers are handed out from nextIno up and never reused (fsck checks that none in use
      // is at or above it), so a number at or above it is free without reading the store.
      if (!Number.isSafeInteger(rec.ino) || rec.ino < tx.counters.nextIno) throw invalid(`mknod: inode ${rec.ino} is not free`)
      const dir = (rec.mode & S_IFMT) === S_IFDIR
      const target = rec.target === undefined ? Buffer.alloc(0) : Buffer.from(rec.target)
      tx.putInode({
        ino: rec.ino, mode: rec.mode, uid: rec.uid, gid: rec.gid, nlink: dir ? 2 : 1, size: target.length, bytes: 0,
        rdev: rec.rdev, atime: rec.time, mtime: rec.time, ctime: rec.time, btime: rec.time, parent: dir ? rec.parent : 0, target, xattrs: false
      })
      tx.putDirent(rec.parent, rec.name, rec.ino, rec.mode)
      if (dir) parent.nlink++
      touchDir(parent, rec.time)
      tx.putInode(parent)
      tx.counters.nextIno = rec.ino + 1
      if (tx.isLive) tx.counters.inodes++
      return
    }
    case 'link': {
      const parent = await dirInode(tx, rec.parent, 'link')
      const n = await tx.mustInode(rec.ino, 'link')
      if (isDir(n)) throw invalid('link: cannot hard-link a directory')
      if (await tx.dirent(rec.parent, rec.name) !== undefined) throw invalid(`link: ${rec.parent}/${rec.name} exists`)
      tx.putDirent(rec.parent, rec.name, rec.ino, n.mode)
      n.nlink++
      n.ctime = rec.time
      tx.putInode(n)
      touchDir(parent, rec.time)
      tx.putInode(parent)
      return
    }
    case 'unlink': {
      const parent = await dirInode(tx, rec.parent, 'unlink')
      const e = await tx.dirent(rec.parent, rec.name)
      if (e === undefined) throw invalid(`unlink: ${rec.parent}/${rec.name} does not exist`)
      const n = await tx.mustInode(e.ino, 'unlink')
      if (isDir(n)) throw invalid('unlink: is a directory')
      tx.deleteDirent(rec.parent, rec.name)
      touchDir(parent, rec.time)
      tx.putInode(parent)
      await dropLink(tx, n, rec.time, rec.keep)
      return
    }
    case 'rmdir': {
      const parent = await dirInode(tx, rec.parent, 'rmdir')
      const e = await tx.dirent(rec.parent, rec.name)
      if (e === undefined) throw invalid(`rmdir: ${rec.parent}/${rec.name} does not exist`)
      const n = await dirInode(tx, e.ino, 'rmdir')
      if (!await tx.isEmptyDir(n.ino)) throw invalid('rmdir: directory not empty')
      tx.deleteDirent(rec.parent, rec.name)
      parent.nlink--
      touchDir(parent, rec.time)
      tx.putInode(parent)
      await tx.freeInode(n)
      return
    }
    case 'rename': {
      const src = await dirInode(tx, rec.srcParent, 'rename')
      const e = await tx.dirent(rec.srcParent, rec.srcName)
      if (e === undefined) throw invalid(`rename: ${rec.srcParent}/${rec.srcName} does not exist`)
      const moving = await tx.mustInode(e.ino, 'rename')
      const replaced = await tx.dirent(rec.dstParent, rec.dstName)
      if (replaced?.ino === moving.ino) return // both names are links to one inode: POSIX says do nothing
      if (isDir(moving) && await isInside(tx, rec.dstParent, moving.ino)) throw invalid('rename: directory into itself')
      const sameDir = rec.srcParent === rec.dstParent
      const dst = sameDir ? src : await dirInode(tx, rec.dstParent, 'rename')
      if (replaced !== undefined) {
        const old = await tx.mustInode(replaced.ino, 'rename')
        if (isDir(old) !== isDir(moving)) throw invalid('rename: file and directory cannot replace each other')
        if (isDir(old)) {
          if (!await tx.isEmptyDir(old.ino)) throw invalid('rename: target directory not empty')
          dst.nlink--
          await tx.freeInode(old)
        } else {
          await dropLink(tx, old, rec.time, rec.keep)
        }
      }
      tx.deleteDirent(rec.srcParent, rec.srcName)
      tx.putDirent(rec.dstParent, rec.dstName, moving.ino, moving.mode)
      if (isDir(moving) && !sameDir) { src.nlink--; dst.nlink++; moving.parent = rec.dstParent }
      moving.ctime = rec.time
      tx.putInode(moving)
      touchDir(src, rec.time)
      tx.putInode(src)
      if (!sameDir) { touchDir(dst, rec.time); tx.putInode(dst) }
      return
    }
    case 'setattr': {
      const n = await tx.mustInode(rec.ino, 'setattr')
      if (rec.size !== undefined) {
        if (isDir(n)) throw invalid('setattr: size of a directory')
        await tx.truncateData(n, rec.size)
      }
      if (rec.mode !== undefined) n.mode = (n.mode & S_IFMT) | (rec.mode & 0o7777)
      if (rec.uid !== undefined) n.uid = rec.uid
      if (rec.gid !== undefined) n.gid = rec.gid
      if (rec.atime !== undefined) n.atime = rec.atime
      if (rec.mtime !== undefined) n.mtime = rec.mtime
      n.ctime = rec.time
      tx.putInode(n)
      return
    }
    case 'write': {
      const n = await tx.mustInode(rec.ino, 'write')
      if ((n.mode & S_IFMT) !== 0o100000) throw invalid('write: not a regular file')
      await tx.writeData(n, rec.offset, rec.data)
      n.mtime = rec.time
      n.ctime = rec.time
      tx.putInode(n)
      return
    }
    case 'setxattr': {
      const n = await tx.mustInode(rec.ino, 'setxattr')
      tx.setXattr(rec.ino, rec.name, rec.value)
      n.ctime = rec.time
      n.xattrs = true
      tx.putInode(n)
      return
    }
    case 'removexattr': {
      const n = await tx.mustInode(rec.ino, 'removexattr')
      tx.removeXattr(rec.ino, rec.name)
      n.ctime = rec.time
      tx.putInode(n)
      return
    }
    case 'purge': {
      const n = await tx.mustInode(rec.ino, 'purge')
      if (n.nlink !== 0) throw invalid(`purge: inode ${rec.ino} still has ${n.nlink} links`)
      await tx.freeInode(n)
      return
    }
    case 'snapshot-create': {
      const seq = tx.counters.seq + 1
      tx.layers = tableChange(() => withSnapshotCreated(tx.state.layers, rec.name, seq, rec.time, tx.counters.inodes, rec.writable === true))
      return
    }
    case 'snapshot-delete': {
      dropSnapshotOrphans(tx, findSnapshot(tx.state.layers, rec.name)?.id)
      tx.layers = tableChange(() => withSnapshotDeleted(tx.state.layers, rec.name))
      garbageLeft(tx)
      return
    }
    case 'snapshot-restore': {
      const snap = findSnapshot(tx.state.layers, rec.name)
      if (rec.path !== undefined) {
        if (snap === undefined) throw invalid(`no snapshot named ${rec.name}`)
        await restorePath(tx, snap, rec.path, rec.time)
        return
      }
      tx.layers = tableChange(() => withSnapshotRestored(tx.state.layers, rec.name))
      tx.liveReplaced = true
      // The live view's orphans are now those of the restored content: files the snapshot caught
      // open but unlinked (the volume frees those that are not open here any more).
      const restored = await scanInodes(tx, tx.layers.live)
      for (const o of [...tx.orphans]) if (!inSnapshot(o)) tx.orphans.delete(o)
      for (const o of restored.orphans) tx.orphans.add(o)
      tx.orphansChanged = true
      tx.counters.inodes = restored.count
      garbageLeft(tx)
      return
    }
    case 'snapshot-refresh': {
      dropSnapshotOrphans(tx, findSnapshot(tx.state.layers, rec.name)?.id)
      const seq = tx.counters.seq + 1
      tx.layers = tableChange(() => withSnapshotRefreshed(tx.state.layers, rec.name, seq, rec.time, tx.counters.inodes))
      garbageLeft(tx)
      return
    }
    case 'collect-garbage': {
      const limits = { maxKeys: rec.maxKeys ?? GARBAGE_STEP.maxKeys, maxBlocks: rec.maxBlocks ?? GARBAGE_STEP.maxBlocks }
      if (!Number.isSafeInteger(limits.maxKeys) || limits.maxKeys < 1 || !Number.isSafeInteger(limits.maxBlocks) || limits.maxBlocks < 1) {
        throw invalid(`collect-garbage: limits must be positive integers (maxKeys ${String(rec.maxKeys)}, maxBlocks ${String(rec.maxBlocks)})`)
      }
      const from = tx.counters.garbageFrom
      // Nothing pending: the step is a no-op (it was queued before an earlier step finished).
      if (from === undefined) return
      const g = await collectGarbageStep(tx.state.store, tx.state.layers, Buffer.from(from, 'hex'), limits)
      for (const op of g.ops) tx.ops.push(op)
      tx.counters.usedBytes -= g.freedBytes
      if (g.next !== null) {
        tx.counters.garbageFrom = g.next.toString('hex')
        return
      }
      delete tx.counters.garbageFrom
      // The pass is over: every version of a merged layer has moved down, so it leaves the chains.
      if ((tx.state.layers.merging ?? []).length > 0) tx.layers = withMergesDone(tx.state.layers)
      return
    }
    default: {
      const unknown: never = rec
      throw invalid(`unknown record type ${String((unknown as { type: unknown }).type)}`)
    }
  }
}

async function dirInode (tx: Tx, ino: number, what: string): Promise<Inode> {
  const n = await tx.mustInode(ino, what)
  if (!isDir(n)) throw invalid(`${what}: inode ${ino} is not a directory`)
  return n
}

function touchDir (d: Inode, time: bigint): void {
  d.mtime = time
  d.ctime = time
}

async function dropLink (tx: Tx, n: Inode, time: bigint, keep: boolean): Promise<void> {
  n.nlink--
  n.ctime = time
  if (n.nlink > 0) { tx.putInode(n); return }
  if (keep) {
    tx.putInode(n)
    tx.addOrphan(n.ino)
    return
  }
  await tx.freeInode(n)
}

/** Is directory `dir` the directory `ancestor` or below it? Walks up the parent links. */
export async function isInside (tx: Tx, dir: number, ancestor: number): Promise<boolean> {
  for (let ino = dir, hops = 0; ; hops++) {
    if (ino === ancestor) return true
    if (ino === ROOT_INO) return false
    if (hops > 1_000_000) throw invalid('directory parent links form a cycle')
    ino = (await dirInode(tx, ino, 'rename')).parent
  }
}

/**
 * Restores one file or tree: removes what the live volume has at the path, then copies the
 * snapshot's version there as new inodes (its old inode numbers may live on elsewhere).
 */
async function restorePath (tx: Tx, snap: SnapshotMeta, path: string[], time: bigint): Promise<void> {
  if (path.length === 0) throw invalid('snapshot-restore: empty path (a whole-volume restore has none)')
  const view = new LayerView(tx.state.store, snap.chain)
  let srcIno = ROOT_INO
  for (const name of path) {
    const v = await view.get(l => withLayer(direntBase(srcIno, Buffer.from(name)), l))
    if (v === undefined) throw invalid(`snapshot-restore: ${path.join('/')} is not in snapshot ${snap.name}`)
    srcIno = decodeDirent(v).ino
  }
  let parent = await dirInode(tx, ROOT_INO, 'snapshot-restore')
  for (const name of path.slice(0, -1)) {
    const e = await tx.dirent(parent.ino, name)
    if (e === undefined) throw invalid(`snapshot-restore: ${path.join('/')}: parent directory ${name} is missing`)
    parent = await dirInode(tx, e.ino, 'snapshot-restore')
  }
  const name = path[path.length - 1]
  if (await tx.dirent(parent.ino, name) !== undefined) await removeTree(tx, parent, name, time)
  const ino = await tx.copyTreeFrom(view, srcIno, parent.ino, name, time)
  const n = await tx.mustInode(ino, 'snapshot-restore')
  if (isDir(n)) parent.nlink++
  touchDir(parent, time)
  tx.putInode(parent)
}

/** Removes parent/name and, for a directory, everything under it (files open meanwhile lose their data). */
async function removeTree (tx: Tx, parent: Inode, name: string, time: bigint): Promise<void> {
  const e = await tx.dirent(parent.ino, name)
  if (e === undefined) return
  const n = await tx.mustInode(e.ino, 'snapshot-restore')
  if (isDir(n)) {
    const children: string[] = []
    for await (const c of tx.state.readdir(n.ino)) children.push(c.name)
    for (const c of children) await removeTree(tx, n, c, time)
    tx.deleteDirent(parent.ino, name)
    parent.nlink--
    await tx.freeInode(n)
  } else {
    tx.deleteDirent(parent.ino, name)
    await dropLink(tx, n, time, false)
  }
  touchDir(parent, time)
  tx.putInode(parent)
}

/** A writable snapshot that is deleted or refreshed takes its unlinked-but-open files with it. */
function dropSnapshotOrphans (tx: Tx, id: number | undefined): void {
  if (id === undefined) return
  for (const o of [...tx.orphans]) {
    if (Math.floor(o / SNAPSHOT_INO_BASE) === id) { tx.orphans.delete(o); tx.orphansChanged = true }
  }
}

/** Inodes visible in a chain, and those with no links (a writable snapshot's count moves with its writes, so it is counted). */
async function scanInodes (tx: Tx, chain: number[]): Promise<{ count: number, orphans: number[] }> {
  let count = 0
  const orphans: number[] = []
  for await (const { base, value } of new LayerView(tx.state.store, chain).scan(Buffer.from([P_INODE]))) {
    count++
    const n = decodeInode(readU64(base, 1), value)
    if (n.nlink === 0 && !isDir(n)) orphans.push(n.ino)
  }
  return { count, orphans }
}

/** A table change that does not fit the state (missing or duplicate name) is an invalid record. */
function tableChange (change: () => LayerTable): LayerTable {
  try {
    return change()
  } catch (err) {
    throw invalid(`${(err as Error).message}`)
  }
}

/**
 * The command left versions no view can see, and maybe layers that can merge: the collection
 * (re)starts from the beginning of the state, in collect-garbage steps the writable host queues
 * after it, and its pass carries out the merges.
 */
function garbageLeft (tx: Tx): void {
  tx.counters.garbageFrom = GARBAGE_START.toString('hex')
  const table = tx.layers!
  const merging = mergeableLayers(table)
  const { merging: _old, ...rest } = table
  tx.layers = merging.length > 0 ? { ...rest, merging } : rest
}

function invalid (msg: string): ReplfsError {
  return new ReplfsError('RECORD_INVALID', msg)
}
