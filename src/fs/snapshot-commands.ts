import { ReplfsError } from '../errors.js'
import { isDir } from '../store/inode.js'
import { MAX_SNAPSHOTS, type SnapshotMeta, checkSnapshotName, heldBytes } from '../store/snapshots.js'
import { nowNs } from './clock.js'
import { type InodeVolume, SNAPSHOTS_DIR, checkName } from './inode-volume.js'
import { lookupPath } from './path-lookup.js'

/** `diverged`: holds the other host's writes from a split brain (read-only; see docs/snapshots.md). */
export interface SnapshotInfo { name: string, seq: number, created: string, writable: boolean, diverged?: true, layers: number, heldBytes?: number }

/**
 * The snapshot commands of a volume. Each travels in the record stream (see docs/snapshots.md)
 * and answers once durable, so a secondary applies it at the same point of the stream.
 */
export class SnapshotCommands {
  constructor (private readonly fs: InodeVolume) {}

  async create (name: string, opts: { writable?: boolean } = {}): Promise<SnapshotInfo> {
    checkSnapshotName(name)
    const state = this.fs.state
    await this.fs.submit(() => {
      if (state.snapshot(name) !== undefined) throw new ReplfsError('SNAPSHOT_EXISTS', `snapshot ${name} exists`, { hint: `Refresh it with: replfs snapshot refresh <mountpoint> ${name}` })
      if (state.snapshots.length >= MAX_SNAPSHOTS) throw new ReplfsError('BAD_ARGUMENT', `a volume holds at most ${MAX_SNAPSHOTS} snapshots; delete one first`)
      return opts.writable === true ? { type: 'snapshot-create', name, time: nowNs(), writable: true } : { type: 'snapshot-create', name, time: nowNs() }
    }, { durable: true })
    return this.info(name)
  }

  /** Deletes the snapshot; resolves once the space only it held is freed, with the bytes freed. */
  async delete (name: string): Promise<{ freedBytes: number }> {
    await this.fs.submit(() => { this.must(name); return { type: 'snapshot-delete', name } }, { durable: true })
    return { freedBytes: await this.fs.collectGarbage() }
  }

  /**
   * Restores the whole volume, or with `path` only that file or tree (what is there now is
   * replaced, including what did not exist when the snapshot was taken; the rest is untouched).
   */
  async restore (name: string, path?: string): Promise<SnapshotInfo> {
    const restored = await this.fs.submit(async () => {
      this.must(name)
      if (path === undefined) return { type: 'snapshot-restore', name, time: nowNs() }
      const parts = path.split('/').filter(c => c.length > 0)
      if (parts.length === 0) throw new ReplfsError('BAD_ARGUMENT', '--path names nothing: leave it out to restore the whole volume')
      if (parts[0] === SNAPSHOTS_DIR) throw new ReplfsError('BAD_ARGUMENT', '--path cannot point into .snapshots')
      for (const p of parts) checkName(p)
      try {
        await lookupPath(this.fs, [SNAPSHOTS_DIR, name, ...parts])
      } catch {
        throw new ReplfsError('BAD_ARGUMENT', `${parts.join('/')} is not in snapshot ${name}`, { hint: `Look with: ls <mountpoint>/${SNAPSHOTS_DIR}/${name}/` })
      }
      const parent = await lookupPath(this.fs, parts.slice(0, -1)).catch(() => undefined)
      if (parent === undefined || !isDir(parent)) {
        throw new ReplfsError('BAD_ARGUMENT', `the directory that holds ${parts.join('/')} does not exist in the volume now`, { hint: 'Restore that directory first (a --path one level up)' })
      }
      return { type: 'snapshot-restore', name, time: nowNs(), path: parts }
    }, { durable: true })
    // Files the snapshot caught open but unlinked are orphans again; free those not open here.
    if (restored?.path === undefined) await this.fs.purgeOrphans()
    await this.fs.collectGarbage()
    return this.info(name)
  }

  async refresh (name: string): Promise<SnapshotInfo> {
    await this.fs.submit(() => { this.must(name); return { type: 'snapshot-refresh', name, time: nowNs() } }, { durable: true })
    await this.fs.collectGarbage()
    return this.info(name)
  }

  /** The snapshots; with `space`, also the data bytes each alone holds (one scan of the blocks). */
  async list (opts: { space?: boolean } = {}): Promise<SnapshotInfo[]> {
    const infos = this.fs.state.snapshots.map(s => this.info(s.name))
    if (opts.space !== true) return infos
    const held = await heldBytes(this.fs.state.store, this.fs.state.layers)
    return infos.map(i => ({ ...i, heldBytes: held.get(i.name) ?? 0 }))
  }

  private info (name: string): SnapshotInfo {
    const s = this.must(name)
    return {
      name: s.name,
      seq: s.seq,
      created: new Date(Number(BigInt(s.time) / 1_000_000n)).toISOString(),
      writable: s.writable === true,
      ...(s.diverged === true ? { diverged: true as const } : {}),
      layers: s.chain.length
    }
  }

  private must (name: string): SnapshotMeta {
    const s = this.fs.state.snapshot(name)
    if (s === undefined) throw new ReplfsError('SNAPSHOT_MISSING', `no snapshot named ${name}`, { hint: 'List them with: replfs snapshot list <mountpoint>' })
    return s
  }
}
