import { randomUUID } from 'node:crypto'
import { ReplfsError } from '../errors.js'
import {
  BLOCK_SIZE, ROOT_INO, baseOf, blockBase, blockInodePrefix, direntBase, direntDirPrefix, inodeBase,
  isStateKey, journalKey, layerOf, localKey, metaKey, prefixEnd, readU64, withLayer, xattrBase, xattrInodePrefix
} from './keys.js'
import { type Inode, decodeDirent, decodeInode, encodeDirent, encodeInode } from './inode.js'
import { type BatchOp, LayerView, type Store, type StoreSnapshot, type Version } from './store.js'
import { type LayerTable, type SnapshotMeta, snapshotsOf } from './snapshots.js'

export interface FormatMeta { formatVersion: 1, volumeId: string, blockSize: number }

/** Largest file (in blocks) whose removal lists its block keys instead of iterating them. */
const DIRECT_DROP_MAX = 64

/** Counters every record may change; stored in the record's own batch. */
export interface Counters {
  /** Sequence number of the last applied record. */
  seq: number
  nextIno: number
  /** Bytes of block data stored across all layers. */
  usedBytes: number
  inodes: number
  /** Hex key where pending garbage collection goes on (absent when none is pending). */
  garbageFrom?: string
}

export type { LayerTable }

/**
 * Inode numbers as the mount shows them: a snapshot's inodes are numbered apart from the live
 * volume's (id * SNAPSHOT_INO_BASE + ino), so tools never take a file and its snapshot copy for
 * hard links of each other. Live inode numbers stay below SNAPSHOT_INO_BASE.
 */
export const SNAPSHOT_INO_BASE = 2 ** 36
/** The .snapshots directory itself. */
export const SNAPSHOTS_DIR_INO = SNAPSHOT_INO_BASE - 1
export function snapshotIno (id: number, ino: number): number { return id * SNAPSHOT_INO_BASE + ino }
/** Whether an inode number is in a snapshot (or is the .snapshots directory): such inodes are read-only. */
export function inSnapshot (ino: number): boolean { return ino >= SNAPSHOTS_DIR_INO }

interface SnapshotView { meta: SnapshotMeta, view: LayerView }

export interface DirEntry { name: string, ino: number, type: number }

const MAX_CACHE = 200_000
const LAST_RECORD = localKey('last-record')

/**
 * The volume as stored: metadata, the live view's layers, and read paths with write-through
 * caches. Changes go only through a Tx built by applyRecord and handed to `commit`.
 */
export class VolumeState {
  format: FormatMeta | null = null
  counters: Counters = { seq: 0, nextIno: ROOT_INO + 1, usedBytes: 0, inodes: 0 }
  layers: LayerTable = { nextLayer: 2, live: [1] }
  orphans = new Set<number>()
  live: LayerView
  private snapViews = new Map<number, SnapshotView>()
  /** How many journal entries to keep, and whether they keep write payloads (a peer reads them). */
  journalRetain = 1024
  journalPayloads = false
  private readonly inodeCache = new Map<number, Inode>()
  /**
   * Bumped by every commit that changes cached inodes (entries). A read from LevelDB caches what
   * it got only if no such commit came while it was in flight: otherwise a lookup that started
   * before a create would cache "no such name" after the create had cached the new entry.
   */
  private inodeGen = 0
  private direntGen = 0
  private readonly direntCache = new Map<string, { ino: number, type: number } | null>()

  constructor (readonly store: Store) {
    this.live = new LayerView(store, this.layers.live)
  }

  static async load (store: Store): Promise<VolumeState> {
    const s = new VolumeState(store)
    await s.reload()
    return s
  }

  /** Rereads metadata and drops caches (after open, or after a failed write reset the store). */
  async reload (): Promise<void> {
    this.dropCaches()
    const [format, counters, layers, orphans] = await this.store.getMany(
      ['format', 'counters', 'layers', 'orphans'].map(metaKey))
    this.format = format === undefined ? null : parseMeta<FormatMeta>('format', format)
    if (this.format !== null && this.format.formatVersion !== 1) {
      throw new ReplfsError('STORE_FORMAT', `store format ${String(this.format.formatVersion)} is not supported by this replfs`)
    }
    if (counters !== undefined) this.counters = parseMeta<Counters>('counters', counters)
    if (layers !== undefined) this.layers = parseMeta<LayerTable>('layers', layers)
    this.orphans = new Set(orphans === undefined ? [] : parseMeta<number[]>('orphans', orphans))
    this.installLayers(this.layers)
  }

  private installLayers (t: LayerTable): void {
    this.layers = t
    this.live = new LayerView(this.store, t.live)
    this.snapViews = new Map(snapshotsOf(t).map(meta => [meta.id, { meta, view: new LayerView(this.store, meta.chain) }]))
  }

  get snapshots (): SnapshotMeta[] { return snapshotsOf(this.layers) }

  /** The view of a snapshot by name, for reading (undefined: no such snapshot). */
  snapshot (name: string): SnapshotMeta | undefined {
    return this.snapshots.find(s => s.name === name)
  }

  /** Splits a mount inode number into the view it lives in and its number in the store. */
  private where (ino: number): { view: LayerView, ino: number, id: number } | undefined {
    if (ino < SNAPSHOT_INO_BASE) return { view: this.live, ino, id: 0 }
    const id = Math.floor(ino / SNAPSHOT_INO_BASE)
    const v = this.snapViews.get(id)
    return v === undefined ? undefined : { view: v.view, ino: ino - id * SNAPSHOT_INO_BASE, id }
  }

  get blockSize (): number { return this.format?.blockSize ?? BLOCK_SIZE }

  async inode (ino: number): Promise<Inode | undefined> {
    if (ino >= SNAPSHOT_INO_BASE) return await this.snapshotInode(ino)
    const hit = this.inodeCache.get(ino)
    if (hit !== undefined) return hit
    const base = inodeBase(ino)
    const gen = this.inodeGen
    const v = await this.live.get(l => withLayer(base, l))
    if (v === undefined) return undefined
    const n = decodeInode(ino, v)
    if (gen === this.inodeGen) this.cacheInode(n)
    return n
  }

  /** A snapshot's inode, numbered as the mount shows it (uncached: snapshots are read rarely). */
  private async snapshotInode (vino: number): Promise<Inode | undefined> {
    const w = this.where(vino)
    if (w === undefined) return undefined
    const base = inodeBase(w.ino)
    const v = await w.view.get(l => withLayer(base, l))
    if (v === undefined) return undefined
    const n = decodeInode(w.ino, v)
    return { ...n, ino: vino, parent: n.parent === 0 ? 0 : snapshotIno(w.id, n.parent) }
  }

  async lookup (parent: number, name: string): Promise<{ ino: number, type: number } | undefined> {
    if (parent >= SNAPSHOT_INO_BASE) {
      const w = this.where(parent)
      if (w === undefined) return undefined
      const base = direntBase(w.ino, Buffer.from(name))
      const v = await w.view.get(l => withLayer(base, l))
      if (v === undefined) return undefined
      const e = decodeDirent(v)
      return { ino: snapshotIno(w.id, e.ino), type: e.type }
    }
    const ck = `${parent}/${name}`
    const hit = this.direntCache.get(ck)
    if (hit !== undefined) return hit ?? undefined
    const base = direntBase(parent, Buffer.from(name))
    const gen = this.direntGen
    const v = await this.live.get(l => withLayer(base, l))
    const e = v === undefined ? null : decodeDirent(v)
    if (gen === this.direntGen) this.cacheDirent(ck, e)
    return e ?? undefined
  }

  async * readdir (dir: number, view: LayerView = this.live): AsyncGenerator<DirEntry> {
    let id = 0
    if (dir >= SNAPSHOT_INO_BASE) {
      const w = this.where(dir)
      if (w === undefined) return
      ;({ view, ino: dir, id } = w)
    }
    const prefix = direntDirPrefix(dir)
    for await (const { base, value } of view.scan(prefix)) {
      const name = base.subarray(prefix.length, base.length - 1).toString()
      const e = decodeDirent(value)
      yield { name, ino: id === 0 ? e.ino : snapshotIno(id, e.ino), type: e.type }
    }
  }

  async isEmptyDir (dir: number, view: LayerView = this.live): Promise<boolean> {
    for await (const _ of this.readdir(dir, view)) return false
    return true
  }

  /** Reads file bytes [offset, offset+len) clipped to the inode's size into `out`; returns the count. */
  async readInto (n: Inode, offset: number, out: Buffer, len: number): Promise<number> {
    const w = this.where(n.ino)
    if (w === undefined) return 0
    const { view, ino } = w
    const BS = this.blockSize
    const end = Math.min(n.size, offset + len)
    if (end <= offset) return 0
    const first = Math.floor(offset / BS)
    const last = Math.floor((end - 1) / BS)
    const vals = await view.getMany(last - first + 1, (i, l) => withLayer(blockBase(ino, first + i), l))
    for (let i = 0; i < vals.length; i++) {
      const bStart = (first + i) * BS
      const lo = Math.max(offset, bStart)
      const hi = Math.min(end, bStart + BS)
      const dst = lo - offset
      const v = vals[i]
      const have = v === undefined ? 0 : Math.max(0, Math.min(v.length, hi - bStart) - (lo - bStart))
      if (have > 0) v!.copy(out, dst, lo - bStart, lo - bStart + have)
      if (have < hi - lo) out.fill(0, dst + have, dst + (hi - lo))
    }
    return end - offset
  }

  async getxattr (vino: number, name: string): Promise<Buffer | undefined> {
    const w = this.where(vino)
    if (w === undefined) return undefined
    const base = xattrBase(w.ino, Buffer.from(name))
    const v = await w.view.get(l => withLayer(base, l))
    return v === undefined ? undefined : v.subarray(1)
  }

  async listxattr (vino: number): Promise<string[]> {
    const w = this.where(vino)
    if (w === undefined) return []
    const prefix = xattrInodePrefix(w.ino)
    const names: string[] = []
    for await (const { base } of w.view.scan(prefix)) names.push(base.subarray(prefix.length, base.length - 1).toString())
    return names
  }

  /** A transaction on the live view, or on snapshot `id`'s view (writable snapshots). */
  begin (id = 0): Tx {
    if (id === 0) return new Tx(this, this.live, 0)
    const v = this.snapViews.get(id)
    if (v === undefined) throw new ReplfsError('RECORD_INVALID', `no snapshot with id ${id}`)
    if (v.meta.writable !== true) throw new ReplfsError('RECORD_INVALID', `snapshot ${v.meta.name} is read-only`)
    return new Tx(this, v.view, id)
  }

  /** Reads an inode of any view by its number in the store (uncached unless live). */
  async inodeIn (view: LayerView, ino: number): Promise<Inode | undefined> {
    if (view === this.live) return await this.inode(ino)
    const v = await view.get(l => withLayer(inodeBase(ino), l))
    return v === undefined ? undefined : decodeInode(ino, v)
  }

  async lookupIn (view: LayerView, parent: number, name: string): Promise<{ ino: number, type: number } | undefined> {
    if (view === this.live) return await this.lookup(parent, name)
    const v = await view.get(l => withLayer(direntBase(parent, Buffer.from(name)), l))
    return v === undefined ? undefined : decodeDirent(v)
  }

  /**
   * Hands a finished Tx to the store as one atomic batch: its effects, the journal entry for
   * `record`, and the new counters. Caches are updated at once (the store's overlay makes the
   * same ops readable at once), so the next record sees this one.
   */
  commit (tx: Tx, journalEntry: Buffer, opts: { sync?: boolean } = {}): Promise<void> {
    if (tx.epoch !== this.store.epoch) return Promise.reject(new ReplfsError('STORE_CORRUPT', 'store was reset while the record was applied'))
    this.counters = tx.counters
    this.orphans = tx.orphans
    if (tx.format !== null) this.format = tx.format
    if (tx.layers !== null) {
      tx.putMeta('layers', tx.layers)
      this.installLayers(tx.layers)
      // The live view now shows other data: nothing cached about it holds.
      if (tx.liveReplaced) this.dropCaches()
    }
    const seq = this.counters.seq + 1
    this.counters.seq = seq
    tx.ops.push({ type: 'put', key: journalKey(seq), value: journalEntry })
    if (seq > this.journalRetain) tx.ops.push({ type: 'del', key: journalKey(seq - this.journalRetain) })
    tx.ops.push({ type: 'put', key: metaKey('counters'), value: Buffer.from(JSON.stringify(this.counters)) })
    if (tx.orphansChanged) tx.ops.push({ type: 'put', key: metaKey('orphans'), value: Buffer.from(JSON.stringify([...this.orphans].sort((a, b) => a - b))) })
    if (tx.snapshotId === 0) {
      if (tx.inodes.size > 0) this.inodeGen++
      if (tx.dirents.size > 0) this.direntGen++
      for (const [ino, n] of tx.inodes) {
        if (n === null) this.inodeCache.delete(ino)
        else this.cacheInode(n)
      }
      for (const [ck, e] of tx.dirents) this.cacheDirent(ck, e)
    }
    return this.store.write(tx.ops, { sync: opts.sync, epoch: tx.epoch })
  }

  private dropCaches (): void {
    this.inodeCache.clear()
    this.direntCache.clear()
    this.inodeGen++
    this.direntGen++
  }

  private cacheInode (n: Inode): void {
    if (this.inodeCache.size >= MAX_CACHE) this.inodeCache.clear()
    this.inodeCache.set(n.ino, n)
  }

  private cacheDirent (ck: string, e: { ino: number, type: number } | null): void {
    if (this.direntCache.size >= MAX_CACHE) this.direntCache.clear()
    this.direntCache.set(ck, e)
  }

  /**
   * The seq and crc32 of the last record applied here, so two hosts can tell whether they hold
   * the same history at a seq (null after a full copy, until the next record).
   */
  async lastRecord (): Promise<{ seq: number, crc: number } | null> {
    const v = await this.store.get(LAST_RECORD)
    if (v === undefined || v.length !== 12) return null
    return { seq: readU64(v, 0), crc: v.readUInt32BE(8) }
  }

  /** Lists every state key and value (for digests and the determinism tests). */
  async * stateEntries (): AsyncGenerator<[Buffer, Buffer]> {
    for await (const [k, v] of this.store.iterate(Buffer.from([0]), Buffer.from([0xff]))) {
      if (isStateKey(k)) yield [k, v]
    }
  }
}

function parseMeta<T> (name: string, v: Buffer): T {
  try {
    return JSON.parse(v.toString()) as T
  } catch (err) {
    throw new ReplfsError('STORE_CORRUPT', `metadata '${name}' is unreadable`, { cause: err })
  }
}

export function newVolumeId (): string { return randomUUID() }

/** The lineage key's value as of a store snapshot (what lastRecord said at that point). */
export async function lastRecordAt (store: Store, snapshot: StoreSnapshot): Promise<{ seq: number, crc: number } | null> {
  for await (const [, v] of store.iterate(LAST_RECORD, Buffer.concat([LAST_RECORD, Buffer.of(0)]), { snapshot })) {
    return v.length === 12 ? { seq: readU64(v, 0), crc: v.readUInt32BE(8) } : null
  }
  return null
}

/** Sets the lineage key outright: a state installed by a resync continues the source's lineage. */
export function lastRecordOp (seq: number, crc: number): BatchOp {
  const v = Buffer.allocUnsafe(12)
  v.writeUInt32BE(Math.floor(seq / 0x100000000), 0)
  v.writeUInt32BE(seq >>> 0, 4)
  v.writeUInt32BE(crc >>> 0, 8)
  return { type: 'put', key: LAST_RECORD, value: v }
}

/**
 * The changes one record makes, collected as LevelDB ops against the top layer of a view, with
 * the reads it needs resolved through the view (and through its own earlier writes).
 */
export class Tx {
  readonly ops: BatchOp[] = []
  readonly inodes = new Map<number, Inode | null>()
  readonly dirents = new Map<string, { ino: number, type: number } | null>()
  readonly epoch: number
  /** Working copies: installed by VolumeState.commit, dropped if applying fails half-way. */
  readonly counters: Counters
  readonly orphans: Set<number>
  orphansChanged = false
  format: FormatMeta | null = null
  /** A snapshot command's new layer table; `liveReplaced` when the live view's content changes with it. */
  layers: LayerTable | null = null
  liveReplaced = false

  /** `snapshotId`: 0 for the live view, else the writable snapshot this Tx changes. */
  constructor (readonly state: VolumeState, readonly view: LayerView, readonly snapshotId = 0) {
    this.epoch = state.store.epoch
    this.counters = { ...state.counters }
    this.orphans = new Set(state.orphans)
  }

  private get top (): number { return this.view.top }
  private get layered (): boolean { return this.view.chain.length > 1 }

  /** Host-local lineage (see VolumeState.lastRecord): written in the record's own batch. */
  setLastRecord (seq: number, crc: number): void {
    this.ops.push(lastRecordOp(seq, crc))
  }

  putMeta (name: string, value: unknown): void {
    this.ops.push({ type: 'put', key: metaKey(name), value: Buffer.from(JSON.stringify(value)) })
  }

  /** Whether this Tx changes the live view (whose inode count the counters keep). */
  get isLive (): boolean { return this.snapshotId === 0 }

  /** Orphans are kept by the number the mount shows (a snapshot's inodes are numbered apart). */
  addOrphan (ino: number): void {
    this.orphans.add(this.isLive ? ino : snapshotIno(this.snapshotId, ino))
    this.orphansChanged = true
  }

  async inode (ino: number): Promise<Inode | undefined> {
    const staged = this.inodes.get(ino)
    if (staged !== undefined) return staged ?? undefined
    const n = await this.state.inodeIn(this.view, ino)
    // Hand out a copy: the cached object must not change before commit.
    return n === undefined ? undefined : { ...n }
  }

  async mustInode (ino: number, what: string): Promise<Inode> {
    const n = await this.inode(ino)
    if (n === undefined) throw new ReplfsError('RECORD_INVALID', `${what}: inode ${ino} does not exist`)
    return n
  }

  putInode (n: Inode): void {
    this.inodes.set(n.ino, n)
    this.ops.push({ type: 'put', key: withLayer(inodeBase(n.ino), this.top), value: encodeInode(n) })
  }

  private removeKey (key: Buffer): void {
    // A tombstone hides lower layers' versions; with no lower layer there is nothing to hide.
    if (this.layered) this.ops.push({ type: 'put', key, value: Buffer.alloc(0) })
    else this.ops.push({ type: 'del', key })
  }

  async dirent (parent: number, name: string): Promise<{ ino: number, type: number } | undefined> {
    const staged = this.dirents.get(`${parent}/${name}`)
    if (staged !== undefined) return staged ?? undefined
    return await this.state.lookupIn(this.view, parent, name)
  }

  putDirent (parent: number, name: string, ino: number, mode: number): void {
    this.dirents.set(`${parent}/${name}`, { ino, type: mode & 0o170000 })
    this.ops.push({ type: 'put', key: withLayer(direntBase(parent, Buffer.from(name)), this.top), value: encodeDirent(ino, mode) })
  }

  deleteDirent (parent: number, name: string): void {
    this.dirents.set(`${parent}/${name}`, null)
    this.removeKey(withLayer(direntBase(parent, Buffer.from(name)), this.top))
  }

  async isEmptyDir (dir: number): Promise<boolean> {
    for (const [ck, e] of this.dirents) if (e !== null && ck.startsWith(`${dir}/`)) return false
    for await (const e of this.state.readdir(dir, this.view)) {
      if (this.dirents.get(`${dir}/${e.name}`) !== null) return false
    }
    return true
  }

  setXattr (ino: number, name: string, value: Buffer): void {
    // A leading marker byte keeps an empty value distinct from a tombstone.
    this.ops.push({ type: 'put', key: withLayer(xattrBase(ino, Buffer.from(name)), this.top), value: Buffer.concat([XATTR_MARK, value]) })
  }

  removeXattr (ino: number, name: string): void {
    this.removeKey(withLayer(xattrBase(ino, Buffer.from(name)), this.top))
  }

  /**
   * Copies the tree at `srcIno` of another view (a snapshot) to dstParent/name in this view, as
   * new inodes (the old numbers may still be in use elsewhere in this view): attributes, data,
   * xattrs, and hard links inside the tree. Times are kept, ctime becomes `time`. Returns the new
   * number of the tree's root.
   */
  async copyTreeFrom (src: LayerView, srcIno: number, dstParent: number, name: string, time: bigint): Promise<number> {
    const made = new Map<number, Inode>()
    const links = new Map<number, number>()
    const copy = async (ino: number, parent: number, entry: string): Promise<Inode> => {
      const known = made.get(ino)
      if (known !== undefined) {
        this.putDirent(parent, entry, known.ino, known.mode)
        links.set(known.ino, (links.get(known.ino) ?? 1) + 1)
        return known
      }
      const raw = await src.get(l => withLayer(inodeBase(ino), l))
      if (raw === undefined) throw new ReplfsError('RECORD_INVALID', `snapshot inode ${ino} is missing`)
      const old = decodeInode(ino, raw)
      const n: Inode = { ...old, ino: this.counters.nextIno++, ctime: time, parent: (old.mode & 0o170000) === 0o040000 ? parent : 0 }
      made.set(ino, n)
      links.set(n.ino, 1)
      if (this.isLive) this.counters.inodes++
      this.putDirent(parent, entry, n.ino, n.mode)
      for await (const { base, value } of src.scan(blockInodePrefix(ino))) {
        this.ops.push({ type: 'put', key: withLayer(blockBase(n.ino, readU64(base, 9)), this.top), value })
        this.counters.usedBytes += value.length
      }
      const xp = xattrInodePrefix(ino)
      for await (const { base, value } of src.scan(xp)) {
        this.ops.push({ type: 'put', key: withLayer(xattrBase(n.ino, base.subarray(xp.length, base.length - 1)), this.top), value })
      }
      if ((n.mode & 0o170000) === 0o040000) {
        const dp = direntDirPrefix(ino)
        let subdirs = 0
        for await (const { base, value } of src.scan(dp)) {
          const child = decodeDirent(value)
          const c = await copy(child.ino, n.ino, base.subarray(dp.length, base.length - 1).toString())
          if ((c.mode & 0o170000) === 0o040000) subdirs++
        }
        n.nlink = 2 + subdirs
      }
      return n
    }
    const root = await copy(srcIno, dstParent, name)
    for (const n of made.values()) {
      if ((n.mode & 0o170000) !== 0o040000) n.nlink = links.get(n.ino) ?? 1
      this.putInode(n)
    }
    return root.ino
  }

  /** Frees an inode: its record, and its blocks and xattrs in the top layer (lower layers keep theirs). */
  async freeInode (n: Inode): Promise<void> {
    await this.dropBlocks(n, 0)
    if (n.xattrs) await this.dropXattrs(n.ino)
    this.inodes.set(n.ino, null)
    this.removeKey(withLayer(inodeBase(n.ino), this.top))
    if (this.isLive) this.counters.inodes--
    if (this.orphans.delete(this.isLive ? n.ino : snapshotIno(this.snapshotId, n.ino))) this.orphansChanged = true
  }

  private async dropXattrs (ino: number): Promise<void> {
    for await (const [k] of this.state.store.iteratePrefix(xattrInodePrefix(ino), { values: false })) {
      if (layerOf(k) === this.top) this.ops.push({ type: 'del', key: k })
    }
    // Lower layers (snapshots) keep theirs; tombstones hide them from this view, so they are
    // freed once no snapshot needs them.
    if (this.layered) {
      for await (const { base } of this.view.scan(xattrInodePrefix(ino))) {
        this.ops.push({ type: 'put', key: withLayer(base, this.top), value: Buffer.alloc(0) })
      }
    }
  }

  /**
   * Writes `data` at `offset`. Invariant kept for every stored block: its length is
   * min(BLOCK_SIZE, size - blockStart), so lengths are known without reading blocks.
   */
  async writeData (n: Inode, offset: number, data: Buffer): Promise<void> {
    const BS = this.state.blockSize
    const end = offset + data.length
    const oldSize = n.size
    const newSize = Math.max(oldSize, end)
    const oldBlocks = Math.ceil(oldSize / BS)
    const first = Math.floor(offset / BS)
    const last = Math.floor((end - 1) / BS)
    if (data.length > 0) {
      // Only blocks inside the old size can exist; appends read nothing.
      const lookFrom = first
      const lookTo = Math.min(last, oldBlocks - 1)
      const old = lookTo >= lookFrom ? await this.blocks(n.ino, lookFrom, lookTo - lookFrom + 1) : []
      for (let idx = first; idx <= last; idx++) {
        const bStart = idx * BS
        const newLen = Math.min(BS, newSize - bStart)
        const lo = Math.max(offset, bStart) - bStart
        const hi = Math.min(end, bStart + BS) - bStart
        const prev = idx <= lookTo ? old[idx - lookFrom] : undefined
        let content: Buffer
        if (lo === 0 && hi === newLen) {
          content = data.subarray(bStart + lo - offset, bStart + hi - offset)
        } else {
          content = Buffer.alloc(newLen)
          if (prev?.value !== undefined) prev.value.copy(content, 0, 0, Math.min(prev.value.length, newLen))
          data.copy(content, lo, bStart + lo - offset, bStart + hi - offset)
        }
        this.putBlock(n, idx, content, prev)
      }
    }
    // Growing past a partial last block: pad it to full length to keep the invariant.
    if (newSize > oldSize) await this.padLastBlock(n, oldSize, newSize, first)
    n.size = newSize
  }

  /** Sets the size: drops or trims blocks past a shrink, pads the last block before a growth. */
  async truncateData (n: Inode, size: number): Promise<void> {
    const BS = this.state.blockSize
    const oldSize = n.size
    if (size < oldSize) {
      await this.dropBlocks(n, Math.ceil(size / BS))
      const tail = size % BS
      const idx = Math.floor(size / BS)
      if (tail !== 0) {
        const [prev] = await this.blocks(n.ino, idx, 1)
        if (prev.value !== undefined && prev.value.length > tail) this.putBlock(n, idx, Buffer.from(prev.value.subarray(0, tail)), prev)
      }
    } else if (size > oldSize) {
      await this.padLastBlock(n, oldSize, size, Infinity)
    }
    n.size = size
  }

  private async padLastBlock (n: Inode, oldSize: number, newSize: number, firstWritten: number): Promise<void> {
    const BS = this.state.blockSize
    if (oldSize % BS === 0) return
    const idx = Math.floor(oldSize / BS)
    if (idx >= firstWritten) return // the write itself rewrote that block at its new length
    const [prev] = await this.blocks(n.ino, idx, 1)
    if (prev.value === undefined) return
    const content = Buffer.alloc(Math.min(BS, newSize - idx * BS))
    prev.value.copy(content)
    this.putBlock(n, idx, content, prev)
  }

  private putBlock (n: Inode, idx: number, content: Buffer, prev: Version | undefined): void {
    this.ops.push({ type: 'put', key: withLayer(blockBase(n.ino, idx), this.top), value: content })
    const prevLen = prev?.value?.length ?? 0
    n.bytes += content.length - prevLen
    this.counters.usedBytes += content.length - (prev?.depth === 0 ? prevLen : 0)
  }

  /** Removes blocks from index `from` on, as seen in this view (size tells the lengths). */
  private async dropBlocks (n: Inode, from: number): Promise<void> {
    const BS = this.state.blockSize
    const lenOf = (idx: number): number => Math.max(0, Math.min(BS, n.size - idx * BS))
    const gte = blockBase(n.ino, from)
    const lt = prefixEnd(blockInodePrefix(n.ino))
    if (!this.layered) {
      // Every stored block has the length the size implies, and the inode counts its bytes: when
      // the count says there is no hole (or no block at all), the keys are known without an
      // iterator (a file's removal is then one LevelDB read fewer).
      const blocks = Math.ceil(n.size / BS)
      if (from === 0 && (n.bytes === 0 || (n.bytes === n.size && blocks <= DIRECT_DROP_MAX))) {
        for (let idx = 0; idx < blocks && n.bytes > 0; idx++) {
          this.ops.push({ type: 'del', key: withLayer(blockBase(n.ino, idx), this.top) })
          n.bytes -= lenOf(idx)
          this.counters.usedBytes -= lenOf(idx)
        }
        return
      }
      for await (const [k] of this.state.store.iterate(gte, lt, { values: false })) {
        if (layerOf(k) !== this.top) continue
        const idx = blockIndexOf(k)
        this.ops.push({ type: 'del', key: k })
        n.bytes -= lenOf(idx)
        this.counters.usedBytes -= lenOf(idx)
      }
      return
    }
    // Layered: tombstone what lower layers show, delete what the top layer holds.
    const topHas = new Set<number>()
    for await (const [k, v] of this.state.store.iterate(gte, lt)) {
      if (layerOf(k) !== this.top) continue
      const idx = blockIndexOf(k)
      topHas.add(idx)
      if (v.length > 0) this.counters.usedBytes -= v.length
    }
    for await (const { base, value } of this.view.scan(blockInodePrefix(n.ino), { gte, lt })) {
      const idx = blockIndexOf(base, false)
      n.bytes -= value.length
      topHas.delete(idx)
      this.ops.push({ type: 'put', key: withLayer(base, this.top), value: Buffer.alloc(0) })
    }
    for (const idx of topHas) this.ops.push({ type: 'put', key: withLayer(blockBase(n.ino, idx), this.top), value: Buffer.alloc(0) })
  }

  private async blocks (ino: number, first: number, count: number): Promise<Version[]> {
    return await this.view.versions(count, (i, l) => withLayer(blockBase(ino, first + i), l))
  }
}



const XATTR_MARK = Buffer.from([1])

function blockIndexOf (key: Buffer, layered = true): number {
  const b = layered ? baseOf(key) : key
  return b.readUInt32BE(9) * 0x100000000 + b.readUInt32BE(13)
}

