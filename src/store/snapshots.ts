import { ReplfsError } from '../errors.js'
import { P_BLOCK, P_DIRENT, P_INODE, P_XATTR, STATE_RANGES, baseOf, layerOf, withLayer } from './keys.js'
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
  /** Live inode count when it was taken, the other host's for a diverged snapshot (a restore of a read-only snapshot sets the count back to it). */
  inodes: number
  /** A writable snapshot's chain starts with its own top layer, which takes its writes. */
  writable?: boolean
  /**
   * Made by a split brain's resync (snapshot-diverged): read-only to users, its chain starts with
   * a layer of its own that snapshot-fill records write the yielding host's content into.
   */
  diverged?: true
}

export interface LayerTable {
  nextLayer: number
  live: number[]
  snapshots?: SnapshotMeta[]
  nextSnapshotId?: number
  /**
   * Layers being merged into the layer below them, as [from, into] pairs sorted by `from`: set
   * with the garbage cursor, carried out by the collection steps, dropped from every chain when
   * the collection's pass ends.
   */
  merging?: Array<[number, number]>
}

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
  if (findSnapshot(t, name) === undefined && snapshotsOf(t).length >= MAX_SNAPSHOTS) throw bad(`a volume holds at most ${MAX_SNAPSHOTS} snapshots; delete one first`)
  return withNewSnapshot(t, name, seq, time, inodes, writable ? { writable } : {})
}

/**
 * A diverged snapshot (see docs/snapshots.md): taken like a writable one, with a top layer of its
 * own for the fills, and the other host's inode count. It is not held to MAX_SNAPSHOTS: the
 * resync that makes it must not fail, or the diverged writes would be lost.
 */
export function withDivergedSnapshot (t: LayerTable, name: string, seq: number, time: bigint, inodes: number): LayerTable {
  return withNewSnapshot(t, name, seq, time, inodes, { diverged: true })
}

/** The live chain is frozen for the new snapshot and gets a new top; a snapshot that owns its top gets one too. */
function withNewSnapshot (t: LayerTable, name: string, seq: number, time: bigint, inodes: number, kind: Pick<SnapshotMeta, 'writable' | 'diverged'>): LayerTable {
  checkSnapshotName(name)
  if (findSnapshot(t, name) !== undefined) throw new ReplfsError('SNAPSHOT_EXISTS', `snapshot ${name} exists`)
  const id = nextId(t)
  const top = t.nextLayer
  const own = ownsTop(kind) ? [top + 1] : []
  return {
    ...t,
    nextLayer: top + 1 + own.length,
    live: [top, ...t.live],
    snapshots: [...snapshotsOf(t), { name, id, chain: [...own, ...t.live], seq, time: time.toString(), inodes, ...kind }],
    nextSnapshotId: id + 1
  }
}

/**
 * Whether a snapshot's chain starts with a layer no other view holds, which takes its writes: a
 * writable snapshot's (user writes) and a diverged one's (fills). Such a layer never merges, and a
 * restore from the snapshot gives it a new one, since the live view then holds the old one too.
 */
export function ownsTop (s: Pick<SnapshotMeta, 'writable' | 'diverged'>): boolean {
  return s.writable === true || s.diverged === true
}

export function withSnapshotDeleted (t: LayerTable, name: string): LayerTable {
  mustFind(t, name)
  return { ...t, snapshots: snapshotsOf(t).filter(s => s.name !== name) }
}

/**
 * The live view gets a new top over the snapshot's chain. The top layer of a snapshot that owns
 * one is frozen by this (both views now share it), so the snapshot gets a new top of its own.
 */
export function withSnapshotRestored (t: LayerTable, name: string): LayerTable {
  const s = mustFind(t, name)
  const top = t.nextLayer
  if (!ownsTop(s)) return { ...t, nextLayer: top + 1, live: [top, ...s.chain] }
  return {
    ...t,
    nextLayer: top + 2,
    live: [top, ...s.chain],
    snapshots: snapshotsOf(t).map(x => x === s ? { ...s, chain: [top + 1, ...s.chain] } : x)
  }
}

/**
 * The snapshot takes the live view's content. A diverged snapshot no longer holds the other
 * host's writes then: it becomes a plain read-only one (and takes no more fills).
 */
export function withSnapshotRefreshed (t: LayerTable, name: string, seq: number, time: bigint, inodes: number): LayerTable {
  const s = mustFind(t, name)
  const top = t.nextLayer
  const own = s.writable === true ? [top + 1] : []
  const { diverged: _gone, ...plain } = s
  return {
    ...t,
    nextLayer: top + 1 + own.length,
    live: [top, ...t.live],
    snapshots: snapshotsOf(t).map(x => x === s ? { ...plain, chain: [...own, ...t.live], seq, time: time.toString(), inodes } : x)
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

/**
 * The layers that can be merged into the one below them, with their final target. A frozen layer
 * U can go into the layer D right below it when exactly the same chains hold U and D: no view can
 * tell them apart, so each key's newest version among them is all any view sees. Without this,
 * every create would lengthen the live chain for good (a lookup reads one key per layer), however
 * many snapshots are deleted since. Layers that take writes (the top of the live chain and of a
 * snapshot that owns its top) never merge. Once mergeable, a pair stays so: new chains are built by
 * putting layers on top of existing ones.
 */
export function mergeableLayers (t: LayerTable): Array<[number, number]> {
  const snaps = snapshotsOf(t)
  const chains = [t.live, ...snaps.map(s => s.chain)]
  const holders = new Map<number, string>()
  chains.forEach((c, i) => { for (const l of c) holders.set(l, `${holders.get(l) ?? ''}${i},`) })
  const takesWrites = new Set([t.live[0], ...snaps.filter(ownsTop).map(s => s.chain[0])])
  const into = new Map<number, number>()
  for (const c of chains) {
    // Bottom up, so the layer below already knows its own final target.
    for (let i = c.length - 2; i >= 0; i--) {
      const u = c[i]
      const d = c[i + 1]
      if (takesWrites.has(u) || holders.get(u) !== holders.get(d)) continue
      into.set(u, into.get(d) ?? d)
    }
  }
  return [...into.entries()].sort((a, b) => a[0] - b[0])
}

/** The table once the pending merges are done: merged layers leave every chain. */
export function withMergesDone (t: LayerTable): LayerTable {
  const gone = new Set((t.merging ?? []).map(([from]) => from))
  const { merging: _done, ...rest } = t
  return {
    ...rest,
    live: t.live.filter(l => !gone.has(l)),
    snapshots: snapshotsOf(t).map(s => ({ ...s, chain: s.chain.filter(l => !gone.has(l)) }))
  }
}

export interface Garbage { ops: BatchOp[], freedBytes: number, keys: number, moved: number, next: Buffer | null }

/** How much one garbage-collection step may do: keys scanned, and garbage blocks read (for their sizes). */
export interface GarbageLimits { maxKeys: number, maxBlocks: number }

/**
 * The standard step (part of the record format: both hosts must take the same one): keys scanned,
 * and garbage blocks read for their sizes (16 MiB of 64 KiB blocks). Small enough that a write
 * queued behind a step waits tens of milliseconds, not the seconds a whole-store scan takes.
 */
export const GARBAGE_STEP: GarbageLimits = { maxKeys: 65_536, maxBlocks: 256 }

/** Where a collection that covers the whole state begins. */
export const GARBAGE_START = STATE_RANGES[0][0]

/**
 * One bounded step of garbage collection: from `from` on, finds the stored versions no view can
 * see under `table` (shadowed in every chain that holds their layer, or in a layer no chain holds)
 * and returns the ops that delete them, with `next`, the key the following step starts at (null
 * when the state's end is reached). Stops at a logical key's boundary, because a key's versions
 * (adjacent, newest layer first) are judged together. Deterministic: both hosts run the same steps
 * at the same place in the stream. A version that is garbage stays garbage (layers only shrink out
 * of chains), so a collection may be spread over many steps with writes between them.
 */
export async function collectGarbageStep (store: Store, table: LayerTable, from: Buffer, limits: GarbageLimits): Promise<Garbage> {
  const chains = [table.live, ...snapshotsOf(table).map(s => s.chain)].map(c => new Set(c))
  const into = new Map(table.merging ?? [])
  const out: Garbage = { ops: [], freedBytes: 0, keys: 0, moved: 0, next: null }
  const garbageBlocks: Buffer[] = []
  const moves: Array<{ from: Buffer, to: Buffer }> = []
  let scanned = 0
  const judge = (group: StoredVersion[]): void => {
    // The version a chain sees is the first (newest) of the group in that chain.
    const seen = new Set<number>()
    for (const c of chains) {
      const v = group.find(g => c.has(g.layer))
      if (v !== undefined) seen.add(v.layer)
    }
    for (const g of group) {
      if (seen.has(g.layer)) {
        // A survivor in a layer being merged goes down to its target. Whatever the target held
        // is shadowed by it in every chain (they hold the same chains), so it is garbage above.
        const target = into.get(g.layer)
        if (target !== undefined) moves.push({ from: g.key, to: withLayer(baseOf(g.key), target) })
        continue
      }
      out.ops.push({ type: 'del', key: g.key })
      out.keys++
      if (g.key[0] === P_BLOCK) garbageBlocks.push(g.key)
    }
  }
  scan: for (const [start, end] of GARBAGE_RANGES) {
    if (from.compare(end) >= 0) continue
    for await (const group of versionGroups(store, from.compare(start) > 0 ? from : start, end, { sizes: false })) {
      if (scanned >= limits.maxKeys || garbageBlocks.length + moves.length >= limits.maxBlocks) {
        out.next = group[0].key
        break scan
      }
      judge(group)
      scanned += group.length
    }
  }
  // Only the garbage blocks' values are read, for the bytes they free, and the moved versions'.
  if (garbageBlocks.length > 0) {
    for (const v of await store.getMany(garbageBlocks)) out.freedBytes += v?.length ?? 0
  }
  if (moves.length > 0) {
    const values = await store.getMany(moves.map(m => m.from))
    moves.forEach((m, i) => {
      const v = values[i]
      if (v === undefined) throw new ReplfsError('STORE_CORRUPT', `a version to merge vanished during the step: ${m.from.toString('hex')}`)
      // After the deletes above: a put of the target key must win over its delete.
      out.ops.push({ type: 'put', key: m.to, value: v }, { type: 'del', key: m.from })
    })
    out.moved = moves.length
  }
  return out
}

/** The ranges of versioned keys (the state ranges less the unversioned metadata), in key order. */
const GARBAGE_RANGES = STATE_RANGES.filter(([start]) => [P_BLOCK, P_DIRENT, P_INODE, P_XATTR].includes(start[0]))

interface StoredVersion { key: Buffer, layer: number, size: number }

/**
 * The stored versions of each logical key in [gte, lt), newest layer first, one group per key.
 * With `sizes`, block versions carry their value's length (reading the values).
 */
async function * versionGroups (store: Store, gte: Buffer, lt: Buffer, opts: { sizes: boolean }): AsyncGenerator<StoredVersion[]> {
  let base: Buffer | null = null
  let group: StoredVersion[] = []
  for await (const [k, v] of store.iterate(gte, lt, { values: opts.sizes })) {
    const b = baseOf(k)
    if (base === null || !b.equals(base)) {
      if (group.length > 0) yield group
      group = []
      base = b
    }
    group.push({ key: k, layer: layerOf(k), size: opts.sizes ? v.length : 0 })
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
  for await (const group of versionGroups(store, Buffer.from([P_BLOCK]), Buffer.from([P_BLOCK + 1]), { sizes: true })) {
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
