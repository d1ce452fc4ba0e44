import type { LogRecord } from '../log/records.js'
import { SNAPSHOTS_DIR_INO } from '../store/volume-state.js'

/**
 * What the kernel holds of this volume through the low-level interface: each inode it looked up
 * (with the count `forget` pays back) and the names it resolved to it. Changes that do not come
 * through this mount's kernel requests (every record on a secondary, snapshot commands on a
 * primary) change files under those caches; `invalidations` says what the kernel must drop.
 */
export class KernelNames {
  /** ino -> lookups not yet forgotten */
  private readonly counts = new Map<number, number>()
  /** ino -> "parent/name" keys the kernel resolved to it */
  private readonly names = new Map<number, Map<string, { parent: number, name: string }>>()
  /** "parent/name" -> the inodes the kernel resolved it to (the reverse of `names`) */
  private readonly byName = new Map<string, Set<number>>()

  /** The kernel now holds one more reference to `ino`, reached as `name` in `parent`. */
  looked (parent: number, name: string, ino: number): void {
    this.counts.set(ino, (this.counts.get(ino) ?? 0) + 1)
    let m = this.names.get(ino)
    if (m === undefined) this.names.set(ino, m = new Map())
    const key = `${parent}/${name}`
    m.set(key, { parent, name })
    let inos = this.byName.get(key)
    if (inos === undefined) this.byName.set(key, inos = new Set())
    inos.add(ino)
  }

  forget (ino: number, nlookup: number): void {
    const left = (this.counts.get(ino) ?? 0) - nlookup
    if (left > 0) { this.counts.set(ino, left); return }
    this.counts.delete(ino)
    for (const key of this.names.get(ino)?.keys() ?? []) {
      const inos = this.byName.get(key)
      inos?.delete(ino)
      if (inos?.size === 0) this.byName.delete(key)
    }
    this.names.delete(ino)
  }

  /** How many inodes the kernel holds. */
  get size (): number { return this.counts.size }

  /** Every name the kernel may have cached, for a change that can touch any of them. */
  all (): Array<{ parent: number, name: string, ino: number }> {
    const out: Array<{ parent: number, name: string, ino: number }> = []
    for (const [ino, m] of this.names) for (const e of m.values()) out.push({ ...e, ino })
    return out
  }

  known (ino: number): boolean { return this.counts.has(ino) }

  /**
   * What a record applied behind the kernel's back invalidates: inodes whose data or attributes
   * changed, and names that appeared, went, or now lead elsewhere. `everything`: a change of the
   * whole view (a snapshot restore or refresh), for which every cached name and inode is dropped.
   */
  invalidations (rec: LogRecord): { inodes: number[], entries: Array<{ parent: number, name: string }>, everything: boolean } {
    switch (rec.type) {
      case 'write': case 'setattr': case 'setxattr': case 'removexattr': case 'purge':
        return { inodes: [rec.ino], entries: [], everything: false }
      case 'mknod':
        return { inodes: [rec.parent], entries: [{ parent: rec.parent, name: rec.name }], everything: false }
      case 'link':
        return { inodes: [rec.ino, rec.parent], entries: [{ parent: rec.parent, name: rec.name }], everything: false }
      case 'unlink': case 'rmdir':
        return { inodes: [rec.parent, ...this.inodesNamed(rec.parent, rec.name)], entries: [{ parent: rec.parent, name: rec.name }], everything: false }
      case 'rename':
        return {
          inodes: [rec.srcParent, rec.dstParent, ...this.inodesNamed(rec.srcParent, rec.srcName), ...this.inodesNamed(rec.dstParent, rec.dstName)],
          entries: [{ parent: rec.srcParent, name: rec.srcName }, { parent: rec.dstParent, name: rec.dstName }],
          everything: false
        }
      case 'snapshot-create': case 'snapshot-delete': case 'snapshot-diverged':
        return { inodes: [SNAPSHOTS_DIR_INO], entries: [{ parent: SNAPSHOTS_DIR_INO, name: rec.name }], everything: false }
      case 'snapshot-restore': case 'snapshot-refresh':
        return { inodes: [], entries: [], everything: true }
      default:
        return { inodes: [], entries: [], everything: false }
    }
  }

  private inodesNamed (parent: number, name: string): number[] {
    return [...this.byName.get(`${parent}/${name}`) ?? []]
  }
}
