import { ReplfsError } from '../errors.js'
import { SNAPSHOTS_DIR_INO, SNAPSHOT_INO_BASE } from '../store/volume-state.js'
import type { LogRecord } from './records.js'

/**
 * Which view a record changes. Records name inodes as the mount numbers them, so a change made
 * inside a writable snapshot carries that snapshot's numbers (id * SNAPSHOT_INO_BASE + ino): the
 * record says where it applies with no extra field, and every host reads it the same way.
 */

const INODE_FIELDS = ['ino', 'parent', 'srcParent', 'dstParent'] as const

/** The view's id (0 = live) and the record with store inode numbers. */
export function localizeRecord (rec: LogRecord): { id: number, rec: LogRecord } {
  if (rec.type === 'init' || rec.type.startsWith('snapshot-')) return { id: 0, rec }
  const fields = rec as unknown as Record<string, unknown>
  // The common case, every live write: nothing to translate, nothing to copy.
  if (!INODE_FIELDS.some(f => typeof fields[f] === 'number' && (fields[f] as number) >= SNAPSHOTS_DIR_INO && !(rec.type === 'mknod' && f === 'ino'))) return { id: 0, rec }
  let id: number | null = null
  const out: Record<string, unknown> = { ...rec }
  for (const f of INODE_FIELDS) {
    const v = fields[f]
    if (typeof v !== 'number') continue
    // A new inode's number comes from the shared counter: it is a store number already.
    if (rec.type === 'mknod' && f === 'ino') continue
    if (v === SNAPSHOTS_DIR_INO) throw invalid(`${rec.type}: the .snapshots directory cannot be changed`)
    const vid = Math.floor(v / SNAPSHOT_INO_BASE)
    if (id !== null && vid !== id) throw invalid(`${rec.type}: inodes of two views in one record`)
    id = vid
    out[f] = v - vid * SNAPSHOT_INO_BASE
  }
  return { id: id ?? 0, rec: out as unknown as LogRecord }
}

function invalid (msg: string): ReplfsError {
  return new ReplfsError('RECORD_INVALID', msg)
}
