import type { Logger } from 'pino'
import type { VolumeState } from '../store/volume-state.js'
import { applyRecord } from './apply.js'
import { encodeRecord } from './codec.js'
import type { LogRecord } from './records.js'

export interface Committed { seq: number, durable: Promise<void> }

/**
 * The ordered stream of records of one volume. Records are made, applied and given their
 * sequence number one at a time, under one lock, so the order they are journaled in is the
 * order their effects happened in; LevelDB commits then proceed in groups behind the lock.
 */
export class RecordLog {
  private tail: Promise<unknown> = Promise.resolve()
  private readonly listeners = new Set<(seq: number, rec: LogRecord) => void>()

  constructor (readonly state: VolumeState, private readonly logger: Logger) {}

  /**
   * Runs `make` under the lock: it checks the current state and returns the record to apply
   * (null: nothing to do; or throws, changing nothing). Resolves with the record's seq once it is applied, with
   * `durable` resolving once LevelDB holds it (on disk if `sync`).
   */
  submit<T extends LogRecord> (make: () => Promise<T | null> | T | null, opts: { sync?: boolean } = {}): Promise<(Committed & { record: T }) | null> {
    const run = async (): Promise<(Committed & { record: T }) | null> => {
      // Checks must see the state as stored: wait out any recovery from a failed write first.
      await this.state.store.ready()
      const rec = await make()
      if (rec === null) return null
      return { ...this.applyLocked(rec, opts.sync ?? false, await this.prepare(rec)), record: rec }
    }
    const p = this.tail.then(run, run)
    this.tail = p.catch(() => {})
    return p
  }

  /** Applies a record made elsewhere (a replica's stream, or a test replaying a journal). */
  apply (rec: LogRecord, opts: { sync?: boolean } = {}): Promise<Committed> {
    const run = async (): Promise<Committed> => this.applyLocked(rec, opts.sync ?? false, await this.prepare(rec))
    const p = this.tail.then(run, run)
    this.tail = p.catch(() => {})
    return p
  }

  /** Waits until everything submitted so far is applied and in LevelDB. */
  async settle (): Promise<void> {
    await this.tail
    await this.state.store.settle()
  }

  onRecord (fn: (seq: number, rec: LogRecord) => void): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  private async prepare (rec: LogRecord): Promise<ReturnType<VolumeState['begin']>> {
    await this.state.store.ready()
    const tx = this.state.begin()
    await applyRecord(rec, tx)
    return tx
  }

  private applyLocked (rec: LogRecord, sync: boolean, tx: ReturnType<VolumeState['begin']>): Committed {
    const entry = encodeRecord(rec, { omitPayload: !this.state.journalPayloads })
    const durable = this.state.commit(tx, entry, { sync })
    const seq = this.state.counters.seq
    durable.catch(err => this.logger.error({ err, seq, type: rec.type }, 'record not committed'))
    for (const fn of this.listeners) fn(seq, rec)
    return { seq, durable }
  }
}
