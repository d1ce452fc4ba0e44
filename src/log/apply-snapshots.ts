import { ReplfsError } from '../errors.js'
import { type Inode, decodeDirent, decodeInode, isDir } from '../store/inode.js'
import { checkFillEntries } from '../store/diverged.js'
import { P_BLOCK, P_INODE, ROOT_INO, direntBase, readU64, withLayer } from '../store/keys.js'
import { LayerView } from '../store/store.js'
import {
  GARBAGE_START, GARBAGE_STEP, type LayerTable, type SnapshotMeta, collectGarbageStep, findSnapshot, mergeableLayers, snapshotsOf,
  withDivergedSnapshot, withMergesDone, withSnapshotCreated, withSnapshotDeleted, withSnapshotRefreshed, withSnapshotRestored
} from '../store/snapshots.js'
import { SNAPSHOT_INO_BASE, type Tx, inSnapshot } from '../store/volume-state.js'
import { type Handlers, dirInode, dropLink, invalid, touchDir } from './apply-common.js'

type SnapshotRecordType = 'snapshot-create' | 'snapshot-delete' | 'snapshot-restore' | 'snapshot-refresh' | 'snapshot-diverged' | 'snapshot-fill' | 'collect-garbage'

/**
 * The snapshot commands and the garbage collection steps they leave pending (docs/snapshots.md).
 * They change the layer table, and only the diverged snapshot's fills write data.
 */
export const SNAPSHOT_HANDLERS: Pick<Handlers, SnapshotRecordType> = {
  async 'snapshot-create' (rec, tx) {
    const seq = tx.counters.seq + 1
    tx.layers = tableChange(() => withSnapshotCreated(tx.state.layers, rec.name, seq, rec.time, tx.counters.inodes, rec.writable === true))
  },

  async 'snapshot-delete' (rec, tx) {
    dropSnapshotOrphans(tx, findSnapshot(tx.state.layers, rec.name)?.id)
    tx.layers = tableChange(() => withSnapshotDeleted(tx.state.layers, rec.name))
    garbageLeft(tx)
  },

  async 'snapshot-restore' (rec, tx) {
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
  },

  async 'snapshot-refresh' (rec, tx) {
    dropSnapshotOrphans(tx, findSnapshot(tx.state.layers, rec.name)?.id)
    const seq = tx.counters.seq + 1
    tx.layers = tableChange(() => withSnapshotRefreshed(tx.state.layers, rec.name, seq, rec.time, tx.counters.inodes))
    garbageLeft(tx)
  },

  /**
   * A split brain's resync, on the host that survives: a snapshot to receive the other host's
   * live view, made like a writable one (its own empty top; the live view's old top freezes
   * under both) and filled by the snapshot-fill records that follow.
   */
  async 'snapshot-diverged' (rec, tx) {
    // The resync that sends it may be retried: an existing name must be told apart from a bad record.
    if (findSnapshot(tx.state.layers, rec.name) !== undefined) throw new ReplfsError('SNAPSHOT_EXISTS', `snapshot-diverged: snapshot ${rec.name} exists`)
    if (!Number.isSafeInteger(rec.inodes) || rec.inodes < 0) throw invalid(`snapshot-diverged: inode count ${String(rec.inodes)} is not a count`)
    if (typeof rec.time !== 'bigint') throw invalid('snapshot-diverged: time must be a bigint')
    const seq = tx.counters.seq + 1
    tx.layers = tableChange(() => withDivergedSnapshot(tx.state.layers, rec.name, seq, rec.time, rec.inodes))
  },

  /**
   * Puts overlay entries into a diverged snapshot's own top layer, as given: the sender worked
   * them out from the logical content of both views (src/store/diverged.ts), so the snapshot
   * ends up showing the other host's view. Block bytes are counted as any write counts them.
   */
  async 'snapshot-fill' (rec, tx) {
    const snap = findSnapshot(tx.state.layers, rec.name)
    if (snap === undefined) throw invalid(`snapshot-fill: no snapshot named ${String(rec.name)}`)
    if (snap.diverged !== true) throw invalid(`snapshot-fill: snapshot ${rec.name} is not a diverged snapshot`)
    const top = snap.chain[0]
    // By construction no other view holds it (see ownsTop); a fill must never show through elsewhere.
    const table = tx.state.layers
    if (table.live.includes(top) || snapshotsOf(table).some(s => s !== snap && s.chain.includes(top))) {
      throw invalid(`snapshot-fill: layer ${top} of snapshot ${rec.name} is shared with another view`)
    }
    const entries = checkFillEntries(rec.entries, tx.state.blockSize)
    const keys = entries.map(([base]) => withLayer(base, top))
    const blocks = keys.flatMap((k, i) => k[0] === P_BLOCK ? [i] : [])
    const replaced = await tx.state.store.getMany(blocks.map(i => keys[i]))
    blocks.forEach((i, j) => { tx.counters.usedBytes += entries[i][1].length - (replaced[j]?.length ?? 0) })
    entries.forEach(([base, value], i) => {
      tx.ops.push({ type: 'put', key: keys[i], value })
      // The snapshot's inode numbers were handed out on the other host: new numbers here must
      // stay above them, or a restore from the snapshot would meet them again.
      if (base[0] === P_INODE && value.length > 0) tx.counters.nextIno = Math.max(tx.counters.nextIno, readU64(base, 1) + 1)
    })
  },

  async 'collect-garbage' (rec, tx) {
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
