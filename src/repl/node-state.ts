import { ReplfsError } from '../errors.js'
import { localKey } from '../store/keys.js'
import type { BatchOp, Store } from '../store/store.js'
import { randomUUID } from 'node:crypto'
import type { RecordLog } from '../log/record-log.js'
import { type Generation, type NodeRole, type SplitBrainPolicy, rootGeneration, startGeneration } from './generations.js'
import type { PeerState } from './handshake.js'

const NODE_KEY = localKey('node')

interface Stored { role: NodeRole, history: Generation[], nodeId: string }

/**
 * This host's role and generation history, kept in its store (a host-local key), so a node that
 * systemd restarts comes back in the role it last had. A primary that restarts is fenced (takes no
 * writes) until its peer has confirmed it holds nothing newer, or an operator forces it.
 */
export class NodeGenerations {
  fenced = false
  private constructor (private readonly store: Store, public role: NodeRole, public history: Generation[], readonly nodeId: string) {}

  /**
   * `role`: what the command line asks for, used for a store that has never recorded one.
   * `fresh`: the volume was created by this start, so no peer can hold anything newer.
   */
  static async load (store: Store, opts: { role: NodeRole, volumeId: string | null, fresh?: boolean, force?: boolean }): Promise<NodeGenerations> {
    const raw = await store.get(NODE_KEY)
    let stored: Stored | null = null
    if (raw !== undefined) {
      try {
        stored = JSON.parse(raw.toString()) as Stored
      } catch (err) {
        throw new ReplfsError('STORE_CORRUPT', 'the node state key (role, generations) does not parse', { cause: err })
      }
    }
    const history = stored?.history ?? (opts.volumeId === null ? [] : [rootGeneration(opts.volumeId)])
    const n = new NodeGenerations(store, stored?.role ?? opts.role, history, stored?.nodeId ?? randomUUID())
    n.fenced = n.role === 'primary' && opts.fresh !== true && opts.force !== true && history.length > 0
    if (stored === null) await n.save()
    return n
  }

  get current (): Generation | undefined { return this.history[this.history.length - 1] }

  /** A node with an empty store learns its first generation with its first record (the volume's init). */
  ensureRoot (volumeId: string): void {
    if (this.history.length === 0) this.history = [rootGeneration(volumeId)]
  }

  /** Becomes the writable primary: a new generation starts after `seq`. */
  async promote (seq: number): Promise<Generation> {
    this.history = startGeneration(this.history, seq)
    this.role = 'primary'
    this.fenced = false
    await this.save()
    return this.current!
  }

  /** A primary that lost its peer starts a generation, so the records it writes alone are told apart. */
  async startAlone (seq: number): Promise<void> {
    if (this.current !== undefined && this.current.since === seq) return
    this.history = startGeneration(this.history, seq)
    await this.save()
  }

  async demote (): Promise<void> {
    this.role = 'secondary'
    this.fenced = false
    await this.save()
  }

  /** What this node tells its peer: settled first, so seq and crc are of the last record here. */
  async viewOf (log: RecordLog, policy: SplitBrainPolicy): Promise<PeerState> {
    await log.settle()
    const st = log.state
    const last = await st.lastRecord()
    const seq = st.counters.seq
    return { role: this.role, fenced: this.fenced, history: this.history, seq, crc: last !== null && last.seq === seq ? last.crc : null, policy, nodeId: this.nodeId, volumeId: st.format?.volumeId ?? null }
  }

  /** Confirmed by the peer (or forced): takes writes again. */
  unfence (): void { this.fenced = false }

  /** The op that adopts a source's history, for the batch that makes its data this node's. */
  adoptOp (history: Generation[]): BatchOp {
    this.history = history.slice()
    return { type: 'put', key: NODE_KEY, value: this.encode() }
  }

  async adopt (history: Generation[]): Promise<void> {
    await this.store.write([this.adoptOp(history)], { sync: true })
  }

  private async save (): Promise<void> {
    await this.store.write([{ type: 'put', key: NODE_KEY, value: this.encode() }], { sync: true })
  }

  private encode (): Buffer {
    return Buffer.from(JSON.stringify({ role: this.role, history: this.history, nodeId: this.nodeId } satisfies Stored))
  }
}
