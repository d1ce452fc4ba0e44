import { ReplfsError } from '../errors.js'
import { P_BLOCK, P_DIRENT, P_INODE, P_XATTR, baseOf, layerOf } from './keys.js'
import type { BatchOp, Store } from './store.js'

/**
 * Snapshots as layer chains (see docs/store-layout.md). A view is a chain of layers, newest
 * first; a write goes to the top layer of its view. Creating a snapshot freezes the live chain
 * for the snapshot and gives the live view a new empty top: O(1), nothing copied. Restoring
 * gives the live view a new empty top over the snapshot's chain; refreshing re-freezes the live
 * chain for the snapshot. Layer numbers only grow, so every chain is in descending order.
 */

export interface SnapshotMeta {
  name: string
  /** Small number naming the snapshot's inodes in the mount (st_ino). */
  id: number
  chain: number[]
  /** Seq of the record that made the snapshot what it is (create or refresh). */
  seq: number
  /** Time of that record, ns since the epoch (decimal string: JSON has no bigint). */
  time: string
  /** Live inode count when it was taken (a restore of a read-only snapshot sets the count back to it). */
  inodes: number
  /** A writable snapshot's chain starts with its own top layer, which takes its writes. */
  writable?: boolean
}

export interface LayerTable { nextLayer: number, live: number[], snapshots?: SnapshotMeta[], nextSnapshotId?: number }

export const MAX_SNAPSHOTS = 256
const MAX_SNAPSHOT_ID = 0xffff

export function snapshotsOf (t: LayerTable): SnapshotMeta[] { return t.snapshots ?? [] }

export function findSnapshot (t: LayerTable, name: string): SnapshotMeta | undefined {
  return snapshotsOf(t).find(s => s.name === name)
}

/** Names are directory names under .snapshots: no '/', not '.' or '..', 1..255 bytes, no NUL. */
export function checkSnapshotName (name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw bad('a snapshot needs a name')
  if (Buffer.byteLength(name) > 255) throw bad(`snapshot name longer than 255 bytes: ${name.slice(0, 40)}…`)
  if (name.includes('/') || name.includes('\0')) throw bad(`snapshot name may not contain '/' or NUL: ${JSON.stringify(name)}`)
  if (name === '.' || name === '..') throw bad(`'${name}' cannot name a snapshot`)
  return name
}

export function withSnapshotCreated (t: LayerTable, name: string, seq: number, time: bigint, inodes: number, writable = false): LayerTable {
  checkSnapshotName(name)
  const snaps = snapshotsOf(t)
  if (findSnapshot(t, name) !== undefined) throw new ReplfsError('SNAPSHOT_EXISTS', `snapshot ${name} exists`)
  if (snaps.length >= MAX_SNAPSHOTS) throw bad(`a volume holds at most ${MAX_SNAPSHOTS} snapshots; delete one first`)
  const id = nextId(t)
  const top = t.nextLayer
  const own = writable ? [top + 1] : []
  return {
    nextLayer: top + 1 + own.length,
    live: [top, ...t.live],
    snapshots: [...snaps, { name, id, chain: [...own, ...t.live], seq, time: time.toString(), inodes, ...(writable ? { writable } : {}) }],
    nextSnapshotId: id + 1
  }
}

export function withSnapshotDeleted (t: LayerTable, name: string): LayerTable {
  mustFind(t, name)
  return { ...t, snapshots: snapshotsOf(t).filter(s => s.name !== name) }
}

/**
 * The live view gets a new top over the snapshot's chain. A writable snapshot's top layer is
 * frozen by this (both views now share it), so the snapshot gets a new top of its own.
 */
export function withSnapshotRestored (t: LayerTable, name: string): LayerTable {
  const s = mustFind(t, name)
  const top = t.nextLayer
  if (s.writable !== true) return { ...t, nextLayer: top + 1, live: [top, ...s.chain] }
  return {
    ...t,
    nextLayer: top + 2,
    live: [top, ...s.chain],
    snapshots: snapshotsOf(t).map(x => x === s ? { ...s, chain: [top + 1, ...s.chain] } : x)
  }
}

export function withSnapshotRefreshed (t: LayerTable, name: string, seq: number, time: bigint, inodes: number): LayerTable {
  const s = mustFind(t, name)
  const top = t.nextLayer
  const own = s.writable === true ? [top + 1] : []
  return {
    ...t,
    nextLayer: top + 1 + own.length,
    live: [top, ...t.live],
    snapshots: snapshotsOf(t).map(x => x === s ? { ...s, chain: [...own, ...t.live], seq, time: time.toString(), inodes } : x)
  }
}

function nextId (t: LayerTable): number {
  const used = new Set(snapshotsOf(t).map(s => s.id))
  let id = t.nextSnapshotId ?? 1
  for (let i = 0; i < MAX_SNAPSHOT_ID && (used.has(id) || id < 1 || id > MAX_SNAPSHOT_ID); i++) id = id >= MAX_SNAPSHOT_ID ? 1 : id + 1
  return id
}

function mustFind (t: LayerTable, name: string): SnapshotMeta {
  const s = findSnapshot(t, name)
  if (s === undefined) throw new ReplfsError('SNAPSHOT_MISSING', `no snapshot named ${name}`, { hint: 'List them with: replfs snapshot list <mountpoint>' })
  return s
}

function bad (msg: string): ReplfsError {
  return new ReplfsError('BAD_ARGUMENT', msg)
}

export interface Garbage { ops: BatchOp[], freedBytes: number, keys: number }

/**
 * Finds every stored version no view can see under `table` (shadowed in every chain that holds
 * its layer, or in a layer no chain holds) and returns the ops that delete it. One scan of the
 * state keys: a logical key's versions are adjacent, newest layer first. Deterministic, so both
 * hosts free the same keys in the command's own batch.
 */
export async function collectGarbage (store: Store, table: LayerTable): Promise<Garbage> {
  const chains = [table.live, ...snapshotsOf(table).map(s => s.chain)].map(c => new Set(c))
  const out: Garbage = { ops: [], freedBytes: 0, keys: 0 }
  for (const prefix of [P_BLOCK, P_DIRENT, P_INODE, P_XATTR]) {
    for await (const group of versionGroups(store, prefix)) {
      // The version a chain sees is the first (newest) of the group in that chain.
      const seen = new Set<number>()
      for (const c of chains) {
        const v = group.find(g => c.has(g.layer))
        if (v !== undefined) seen.add(v.layer)
      }
      for (const g of group) {
        if (seen.has(g.layer)) continue
        out.ops.push({ type: 'del', key: g.key })
        out.keys++
        if (prefix === P_BLOCK) out.freedBytes += g.size
      }
    }
  }
  return out
}

interface StoredVersion { key: Buffer, layer: number, size: number }

/** The stored versions of each logical key under `prefix`, newest layer first, one group per key (sizes for blocks only). */
async function * versionGroups (store: Store, prefix: number): AsyncGenerator<StoredVersion[]> {
  let base: Buffer | null = null
  let group: StoredVersion[] = []
  // Only block sizes are ever counted: other keys' values need not be read.
  for await (const [k, v] of store.iterate(Buffer.from([prefix]), Buffer.from([prefix + 1]), { values: prefix === P_BLOCK })) {
    const b = baseOf(k)
    if (base === null || !b.equals(base)) {
      if (group.length > 0) yield group
      group = []
      base = b
    }
    group.push({ key: k, layer: layerOf(k), size: v.length })
  }
  if (group.length > 0) yield group
}

/**
 * Bytes of file data each snapshot alone holds: what deleting it would free. One scan of the
 * blocks (a version counts for a snapshot when that snapshot is the only view that sees it).
 */
export async function heldBytes (store: Store, table: LayerTable): Promise<Map<string, number>> {
  const snaps = snapshotsOf(table)
  const views = [{ name: '', chain: new Set(table.live) }, ...snaps.map(s => ({ name: s.name, chain: new Set(s.chain) }))]
  const held = new Map<string, number>(snaps.map(s => [s.name, 0]))
  for await (const group of versionGroups(store, P_BLOCK)) {
    const seenBy = new Map<number, string[]>()
    for (const v of views) {
      const g = group.find(x => v.chain.has(x.layer))
      if (g !== undefined) seenBy.set(g.layer, [...(seenBy.get(g.layer) ?? []), v.name])
    }
    for (const g of group) {
      const who = seenBy.get(g.layer)
      if (who?.length === 1 && who[0] !== '') held.set(who[0], (held.get(who[0]) ?? 0) + g.size)
    }
  }
  return held
}
