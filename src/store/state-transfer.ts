import { createHash } from 'node:crypto'
import { ReplfsError } from '../errors.js'
import { JOURNAL_RANGE, STATE_RANGES, localKey } from './keys.js'
import type { BatchOp, Store, StoreSnapshot } from './store.js'

/**
 * Whole-state operations on a store: a digest that proves two stores hold the same volume, and
 * the export/import used when a replica must be copied from scratch. The replicated state is
 * every inode, dirent, block, xattr and meta key; the journal and local keys are per host.
 */

export interface StateDigest { digest: string, entries: number, bytes: number }

/** Hashes entries in key order: (u32 key length, key, u32 value length, value) each. */
export class DigestBuilder {
  private readonly h = createHash('sha256')
  private readonly len = Buffer.allocUnsafe(4)
  entries = 0
  bytes = 0
  add (k: Buffer, v: Buffer): void {
    this.len.writeUInt32BE(k.length); this.h.update(this.len); this.h.update(k)
    this.len.writeUInt32BE(v.length); this.h.update(this.len); this.h.update(v)
    this.entries++
    this.bytes += k.length + v.length
  }

  finish (): StateDigest { return { digest: this.h.digest('hex'), entries: this.entries, bytes: this.bytes } }
}

/** Every replicated key and value as of `snapshot`, in key order. */
export async function * stateEntriesAt (store: Store, snapshot: StoreSnapshot): AsyncGenerator<[Buffer, Buffer]> {
  for (const [gte, lt] of STATE_RANGES) yield * store.iterate(gte, lt, { snapshot })
}

export async function digestAt (store: Store, snapshot: StoreSnapshot): Promise<StateDigest> {
  const d = new DigestBuilder()
  for await (const [k, v] of stateEntriesAt(store, snapshot)) d.add(k, v)
  return d.finish()
}

/** Chunks of about `chunkBytes` of the state as of `snapshot`, for a full copy to a replica. */
export async function * exportState (store: Store, snapshot: StoreSnapshot, chunkBytes = 1 << 20): AsyncGenerator<Array<[Buffer, Buffer]>> {
  let chunk: Array<[Buffer, Buffer]> = []
  let size = 0
  for await (const e of stateEntriesAt(store, snapshot)) {
    chunk.push(e)
    size += e[0].length + e[1].length + 8
    if (size >= chunkBytes) { yield chunk; chunk = []; size = 0 }
  }
  if (chunk.length > 0) yield chunk
}

const COPY_MARKER = localKey('copy-in-progress')

/**
 * Receives a full copy into a store, replacing whatever it held. A marker key says a copy is
 * under way: if the process dies half-way, `discardPartialCopy` at the next open empties the
 * store again rather than leaving a mix of two states that would pass for a volume.
 */
export class StateImport {
  private readonly digest = new DigestBuilder()
  private constructor (private readonly store: Store, readonly seq: number) {}

  static async begin (store: Store, seq: number): Promise<StateImport> {
    await store.write([{ type: 'put', key: COPY_MARKER, value: Buffer.from(String(seq)) }], { sync: true })
    await wipeState(store)
    return new StateImport(store, seq)
  }

  async add (entries: Array<[Buffer, Buffer]>): Promise<void> {
    const ops: BatchOp[] = []
    for (const [k, v] of entries) {
      if (!isReplicatedKey(k)) throw new ReplfsError('RECORD_INVALID', `copy holds a key outside the replicated state (prefix 0x${k[0]?.toString(16) ?? '??'})`)
      this.digest.add(k, v)
      ops.push({ type: 'put', key: k, value: v })
    }
    await this.store.write(ops)
  }

  /** Checks the copy against the sender's digest, then makes it the store's state. */
  async finish (expected: StateDigest): Promise<void> {
    const got = this.digest.finish()
    if (got.digest !== expected.digest || got.entries !== expected.entries) {
      throw new ReplfsError('RECORD_INVALID', `full copy does not match the primary's digest (${got.entries} entries ${got.digest.slice(0, 12)}, expected ${expected.entries} ${expected.digest.slice(0, 12)})`)
    }
    await this.store.write([{ type: 'del', key: COPY_MARKER }], { sync: true })
  }
}

function isReplicatedKey (k: Buffer): boolean {
  return STATE_RANGES.some(([gte, lt]) => k.compare(gte) >= 0 && k.compare(lt) < 0)
}

async function wipeState (store: Store): Promise<void> {
  for (const [gte, lt] of [...STATE_RANGES, JOURNAL_RANGE]) await store.clearRange(gte, lt)
}

/** Empties a store whose last full copy never finished. Returns whether it had to. */
export async function discardPartialCopy (store: Store): Promise<boolean> {
  if (await store.get(COPY_MARKER) === undefined) return false
  await wipeState(store)
  await store.write([{ type: 'del', key: COPY_MARKER }], { sync: true })
  return true
}
