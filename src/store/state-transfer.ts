import { createHash } from 'node:crypto'
import { JOURNAL_RANGE, STATE_RANGES, localKey } from './keys.js'
import type { Store, StoreSnapshot } from './store.js'

/**
 * Whole-state digests: proof that two stores hold the same volume. The replicated state is every
 * inode, dirent, block, xattr and meta key; the journal and local keys are per host. (Bringing a
 * replica up to date is range-sync.ts's.)
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

/** Marker a full copy of protocol 1 left while it ran: a store it cut short is emptied at open. */
const COPY_MARKER = localKey('copy-in-progress')

async function wipeState (store: Store): Promise<void> {
  for (const [gte, lt] of [...STATE_RANGES, JOURNAL_RANGE]) await store.clearRange(gte, lt)
}

/** Empties a store whose last full copy (protocol 1, before resync by difference) never finished. Returns whether it had to. */
export async function discardPartialCopy (store: Store): Promise<boolean> {
  if (await store.get(COPY_MARKER) === undefined) return false
  await wipeState(store)
  await store.write([{ type: 'del', key: COPY_MARKER }], { sync: true })
  return true
}
