import { crc32 } from 'node:zlib'
import type { Logger } from 'pino'
import { ReplfsError } from '../errors.js'
import type { StoreSnapshot } from '../store/store.js'
import type { VolumeState } from '../store/volume-state.js'
import { applyRecord } from './apply.js'
import { encodeRecord, encodeRecordParts } from './codec.js'
import { localizeRecord } from './views.js'
import { type LogRecord, isCommand } from './records.js'

export interface Committed { seq: number, durable: Promise<void> }

/**
 * A record's encoding and its crc32, when the caller has them already (a secondary receives
 * both): they must be exactly what encodeRecord and crc32 give for the record.
 */
export interface EncodedRecord { bytes: Buffer, crc: number }

/** One Buffer (a payload with headroom needs no copy) and one checksum pass. */
function encodeWhole (rec: LogRecord): EncodedRecord {
  const parts = encodeRecordParts(rec)
  const bytes = parts.length === 1 ? parts[0] : Buffer.concat(parts)
  return { bytes, crc: crc32(bytes) }
}

/** Where whole records (payload included) are kept for a peer: see journal-file.ts. */
export interface RecordJournal {
  /** `crc`: crc32 of `record`, known already. */
  append: (seq: number, record: Buffer, crc: number) => void
  sync: () => Promise<void>
  truncateAfter: (seq: number) => void
}

/**
 * The ordered stream of records of one volume. Records are made, applied and given their
 * sequence number one at a time, under one lock, so the order they are journaled in is the
 * order their effects happened in; LevelDB commits then proceed in groups behind the lock.
 */
export class RecordLog {
  private tail: Promise<unknown> = Promise.resolve()
  private readonly listeners = new Set<(seq: number, rec: LogRecord) => void>()
  private readonly commitListeners = new Set<(seq: number) => void>()
  /** Whole records go here too when a peer may need them. */
  journal: RecordJournal | null = null
  /**
   * Sync replication: resolves once the peer holds `seq` durably. `sync()` (fsync) and the
   * `durable` of a command wait for it.
   */
  replicated: ((seq: number) => Promise<void>) | null = null
  /** Highest seq whose batch LevelDB has taken: only these may leave the host. */
  committedSeq: number

  constructor (readonly state: VolumeState, private readonly logger: Logger) {
    this.committedSeq = state.counters.seq
  }

  /**
   * Runs `make` under the lock: it checks the current state and returns the record to apply
   * (null: nothing to do; or throws, changing nothing). Resolves with the record's seq once it is applied, with
   * `durable` resolving once LevelDB holds it (on disk if `sync`).
   */
  submit<T extends LogRecord> (make: () => Promise<T | null> | T | null, opts: { sync?: boolean } = {}): Promise<(Committed & { record: T }) | null> {
    return this.locked(async () => {
      // Checks must see the state as stored: wait out any recovery from a failed write first.
      await this.state.store.ready()
      const rec = await make()
      if (rec === null) return null
      return { ...this.applyLocked(rec, opts.sync ?? false, await this.prepare(rec)), record: rec }
    })
  }

  /**
   * Applies a record made elsewhere (a replica's stream, or a test replaying a journal).
   * `seq`: the number the record had where it was made; anything but the next one is refused.
   */
  apply (rec: LogRecord, opts: { sync?: boolean, seq?: number, encoded?: EncodedRecord } = {}): Promise<Committed> {
    return this.locked(async () => {
      const next = this.state.counters.seq + 1
      if (opts.seq !== undefined && opts.seq !== next) {
        throw new ReplfsError('RECORD_INVALID', `record ${opts.seq} is out of sequence: the next one here is ${next}`)
      }
      return this.applyLocked(rec, opts.sync ?? false, await this.prepare(rec), opts.encoded)
    })
  }

  /** Runs `fn` with no record being made or applied meanwhile (consistent snapshots, bulk imports). */
  exclusive<T> (fn: () => Promise<T>): Promise<T> {
    return this.locked(fn)
  }

  /**
   * A frozen view of the store at exactly the last applied record (taken under the lock, so no
   * record is half-way): for digests and full copies while writes go on. Close it when done.
   */
  async snapshotAt (): Promise<{ seq: number, snap: StoreSnapshot }> {
    return await this.locked(async () => ({ seq: this.state.counters.seq, snap: await this.state.store.snapshot() }))
  }

  /** Waits until everything submitted so far is applied and in LevelDB. */
  async settle (): Promise<void> {
    await this.tail
    await this.state.store.settle()
  }

  /** fsync: everything so far on disk here, and at the peer too when replication is synchronous. */
  async sync (): Promise<void> {
    await this.settle()
    // After a failed write the store reopens first; until it can, fsync fails with that error.
    await this.state.store.ready()
    await this.journal?.sync()
    await this.state.store.sync()
    await this.replicated?.(this.state.counters.seq)
  }

  onRecord (fn: (seq: number, rec: LogRecord) => void): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  /** Called with each new committedSeq. */
  onCommitted (fn: (seq: number) => void): () => void {
    this.commitListeners.add(fn)
    return () => this.commitListeners.delete(fn)
  }

  /** After a failed write rolled the state back: forget journaled records that never landed. */
  rolledBack (): void {
    this.journal?.truncateAfter(this.state.counters.seq)
    this.committedSeq = Math.min(this.committedSeq, this.state.counters.seq)
  }

  /** Jumps to a state installed wholesale (a full copy from the primary). */
  resetTo (seq: number): void {
    this.committedSeq = seq
  }

  private locked<T> (run: () => Promise<T>): Promise<T> {
    const p = this.tail.then(run, run)
    this.tail = p.catch(() => {})
    return p
  }

  private async prepare (rec: LogRecord): Promise<ReturnType<VolumeState['begin']>> {
    await this.state.store.ready()
    const local = localizeRecord(rec)
    const tx = this.state.begin(local.id)
    await applyRecord(local.rec, tx)
    return tx
  }

  private applyLocked (rec: LogRecord, sync: boolean, tx: ReturnType<VolumeState['begin']>, encoded?: EncodedRecord): Committed {
    const seq = this.state.counters.seq + 1
    const { bytes, crc } = encoded ?? encodeWhole(rec)
    // The journal first: if it cannot take the record (disk full), nothing is applied.
    this.journal?.append(seq, bytes, crc)
    tx.setLastRecord(seq, crc)
    const local = this.state.commit(tx, this.state.journalPayloads ? bytes : encodeRecord(rec, { omitPayload: true }), { sync })
    local.then(() => {
      if (seq > this.committedSeq) {
        this.committedSeq = seq
        for (const fn of this.commitListeners) fn(seq)
      }
    }, err => this.logger.error({ err, seq, type: rec.type }, 'record not committed'))
    // Sync replication waits for the peer where the application asks for durability (fsync,
    // O_SYNC, see sync()) and for every command, as DRBD's protocol C with flushes does; a plain
    // write returns once applied here while its record streams.
    const durable = this.replicated === null || !isCommand(rec) ? local : Promise.all([local, this.replicated(seq)]).then(() => {})
    for (const fn of this.listeners) fn(seq, rec)
    return { seq, durable }
  }
}
