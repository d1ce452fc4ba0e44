import { ReplfsError } from '../errors.js'
import { decodeInode } from './inode.js'
import { LAYERED_PREFIXES, P_BLOCK, P_DIRENT, P_XATTR, layeredBaseProblem, prefixEnd, readU64 } from './keys.js'
import { LayerView, type Store } from './store.js'
import { SNAPSHOTS_DIR_INO } from './volume-state.js'

/**
 * After a split brain the yielding host's live view becomes a diverged snapshot on the host that
 * survives (docs/snapshots.md, "Diverged snapshots"). The survivor compares logical content, not
 * stored keys: the two stores number their layers differently, and a base's value is whatever
 * the top-most layer of a view holding it says. The differences become an overlay, written by
 * snapshot-fill records into the snapshot's own top layer.
 */

/**
 * Logical entries (base, value) of a view given by `chain` (newest layer first) in [start,end) of
 * the layered prefixes, in base order; tombstones (empty values) omitted. The bounds compare with
 * bases (null: unbounded) and may be any bytes but a base followed by more (a key with its layer
 * suffix): such a bound would split one base's versions, and the range could not resolve them.
 */
export async function * logicalEntries (store: Store, chain: readonly number[], start: Buffer | null, end: Buffer | null): AsyncIterable<[Buffer, Buffer]> {
  const view = new LayerView(store, chain)
  for (const prefix of LAYERED_PREFIXES) {
    const pEnd = prefixEnd(prefix)
    const gte = start !== null && start.compare(prefix) > 0 ? start : prefix
    const lt = end !== null && end.compare(pEnd) < 0 ? end : pEnd
    if (gte.compare(lt) >= 0) continue
    for await (const { base, value } of view.scan(prefix, { gte, lt })) {
      if (start !== null && base.compare(start) < 0) continue
      yield [base, value]
    }
  }
}

/**
 * The overlay entries for one range: survivor's and victim's logical entries of the same range,
 * both sorted by base. For every base whose victim value differs from the survivor's: the
 * victim's value, or an empty tombstone where the victim lacks it. Put over the survivor's view,
 * they give exactly the victim's. Sorted by base, as snapshot-fill wants them.
 */
export function divergedOverlay (survivor: Array<[Buffer, Buffer]>, victim: Array<[Buffer, Buffer]>): Array<[Buffer, Buffer]> {
  const out: Array<[Buffer, Buffer]> = []
  const s = survivor.filter(e => e[1].length > 0)
  const v = victim.filter(e => e[1].length > 0)
  let i = 0
  let j = 0
  while (i < s.length || j < v.length) {
    const c = i >= s.length ? 1 : j >= v.length ? -1 : s[i][0].compare(v[j][0])
    if (c < 0) {
      out.push([s[i][0], Buffer.alloc(0)])
      i++
    } else if (c > 0) {
      out.push(v[j])
      j++
    } else {
      if (!s[i][1].equals(v[j][1])) out.push(v[j])
      i++
      j++
    }
  }
  return out
}

/**
 * The most entry bytes one snapshot-fill record may carry (fillEntryBytes summed): a record is
 * applied in one batch, and a writer queued behind it waits for that batch.
 */
export const FILL_MAX_BYTES = 1 << 20

/** What an entry adds to a snapshot-fill record's payload: two lengths, the base, the value. */
export function fillEntryBytes (e: readonly [Buffer, Buffer]): number {
  return 8 + e[0].length + e[1].length
}

/** Splits an overlay, in order, into the entries of successive snapshot-fill records. */
export function fillChunks (overlay: Array<[Buffer, Buffer]>, maxBytes = FILL_MAX_BYTES): Array<Array<[Buffer, Buffer]>> {
  const chunks: Array<Array<[Buffer, Buffer]>> = []
  let chunk: Array<[Buffer, Buffer]> = []
  let size = 0
  for (const e of overlay) {
    const n = fillEntryBytes(e)
    if (chunk.length > 0 && size + n > maxBytes) { chunks.push(chunk); chunk = []; size = 0 }
    chunk.push(e)
    size += n
  }
  if (chunk.length > 0) chunks.push(chunk)
  return chunks
}

/**
 * Checks a snapshot-fill record's entries: an array of [base, value] Buffers, strictly ascending
 * by base (so no base twice), each base a well-formed layered base, each value a tombstone or a
 * value of its kind (a block of at most `blockSize` bytes, an inode that decodes, a dirent, a
 * marked xattr), FILL_MAX_BYTES at most in all. Throws RECORD_INVALID naming the first problem.
 */
export function checkFillEntries (entries: unknown, blockSize: number): Array<[Buffer, Buffer]> {
  if (!Array.isArray(entries)) throw invalid('entries must be an array of [base, value]')
  let bytes = 0
  let prev: Buffer | null = null
  entries.forEach((e: unknown, i) => {
    if (!Array.isArray(e) || e.length !== 2 || !Buffer.isBuffer(e[0]) || !Buffer.isBuffer(e[1])) throw invalid(`entry ${i} is not a [base, value] pair of Buffers`)
    const [base, value] = e as [Buffer, Buffer]
    const problem = baseProblem(base) ?? valueProblem(base, value, blockSize)
    if (problem !== null) throw invalid(`entry ${i} (base ${base.subarray(0, 40).toString('hex')}): ${problem}`)
    if (prev !== null && prev.compare(base) >= 0) throw invalid(`entry ${i}: bases must be strictly ascending`)
    prev = base
    bytes += fillEntryBytes([base, value])
  })
  if (bytes > FILL_MAX_BYTES) throw invalid(`entries hold ${bytes} bytes, more than ${FILL_MAX_BYTES}`)
  return entries as Array<[Buffer, Buffer]>
}

/**
 * Why a base is not a layered state base (null: it is one): shaped as keys.ts lays it out, and
 * its inode number (or parent) a store number, below those the mount gives snapshots.
 */
function baseProblem (base: Buffer): string | null {
  const shape = layeredBaseProblem(base)
  if (shape !== null) return shape
  const ino = readU64(base, 1)
  if (ino < 1 || ino >= SNAPSHOTS_DIR_INO) return `inode number ${ino} is not a store inode number`
  return null
}

function valueProblem (base: Buffer, value: Buffer, blockSize: number): string | null {
  if (value.length === 0) return null
  switch (base[0]) {
    case P_BLOCK: return value.length > blockSize ? `block of ${value.length} bytes, more than ${blockSize}` : null
    case P_DIRENT: {
      if (value.length !== 12) return `a dirent value is 12 bytes, not ${value.length}`
      const ino = readU64(value, 0)
      return ino < 1 || ino >= SNAPSHOTS_DIR_INO ? `dirent points at inode number ${ino}` : null
    }
    case P_XATTR: return value[0] !== 1 ? 'an xattr value starts with its 0x01 marker' : null
    default: {
      try { decodeInode(readU64(base, 1), value) } catch (err) { return (err as Error).message }
      return null
    }
  }
}

function invalid (msg: string): ReplfsError {
  return new ReplfsError('RECORD_INVALID', `snapshot-fill: ${msg}`)
}
