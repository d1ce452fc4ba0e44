import { join } from 'node:path'
import type { Server } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { JournalFile } from '../log/journal-file.js'
import { ReplfsError } from '../errors.js'
import type { AdmissionOptions } from '../net/admission.js'
import { type Endpoint, type TlsFiles, type TlsMaterial, Redialer, formatEndpoint, listen, loadTls } from '../net/transport.js'
import type { ChannelOptions } from '../repl/channel.js'
import type { SplitBrainPolicy } from '../repl/generations.js'
import { PeerRefusal, RoleHandover } from '../repl/handshake.js'
import { NodeGenerations } from '../repl/node-state.js'
import { DEFAULT_CHANNEL, ReplicationPrimary, type ReplicationMode, type VerifyResult } from '../repl/primary.js'
import { ReplicationSecondary } from '../repl/secondary.js'
import { StagedResync } from '../store/range-sync.js'
import { releasePages } from '../util/process-addon.js'
import type { OpenedVolume } from './open-volume.js'

export interface ReplicationConfig {
  /** The role of a store that has never recorded one; a store's own recorded role wins. */
  role: 'primary' | 'secondary'
  listen: Endpoint
  peer: Endpoint
  /** null: --insecure. */
  secret: Buffer | null
  mode: ReplicationMode
  tls: TlsFiles | null
  journalBytes?: number
  channel?: Partial<ChannelOptions>
  policy?: SplitBrainPolicy
  /** Start as a writable primary without waiting for the peer's word (mount --force). */
  force?: boolean
  /** Bounds on connections that have not authenticated yet (net/admission.ts). */
  admission?: Partial<AdmissionOptions>
}

/** What the replication side needs of the mounted volume above it. */
export interface VolumeHooks {
  /** The volume takes writes (primary, confirmed) or not (secondary, or fenced). */
  setWritable: (writable: boolean) => void
  onStateReplaced?: () => void
}

/**
 * Wires one volume into replication: its journal file, the listener every node runs (so roles
 * can swap without new addresses), the role this host holds (stored in its store), and the
 * changes of role: promote, demote, and a fenced primary that learns its peer is newer.
 */
export class VolumeReplication {
  private server: Server | null = null
  private dialer: Redialer | null = null
  private primary: ReplicationPrimary | null = null
  private secondary: ReplicationSecondary | null = null
  private tls: TlsMaterial | null = null
  private transition: Promise<unknown> = Promise.resolve()
  /** Connections the peer dialed into this node's primary side, until each ends. */
  private readonly inboundSessions = new Set<Promise<void>>()
  private readonly log: Logger

  private constructor (readonly config: ReplicationConfig, private readonly opened: OpenedVolume, readonly journal: JournalFile,
    readonly node: NodeGenerations, private readonly hooks: VolumeHooks, logger: Logger) {
    this.log = logger.child({ component: 'replication' })
  }

  static async start (config: ReplicationConfig, opened: OpenedVolume, hooks: VolumeHooks, logger: Logger, opts: { fresh?: boolean } = {}): Promise<VolumeReplication> {
    const journal = await JournalFile.open({ dir: join(opened.store.dir, 'journal'), maxBytes: config.journalBytes, releasePages, logger }, opened.state.counters.seq)
    opened.log.journal = journal
    const node = await NodeGenerations.load(opened.store, { role: config.role, volumeId: opened.state.format?.volumeId ?? null, fresh: opts.fresh, force: config.force })
    if (node.role !== config.role) logger.warn({ stored: node.role, given: config.role }, 'this store last ran in another role than --role asks: it keeps its own (change it with replfs promote / demote)')
    const r = new VolumeReplication(config, opened, journal, node, hooks, logger)
    try {
      await r.begin()
    } catch (err) {
      await r.stop()
      throw err
    }
    return r
  }

  get role (): 'primary' | 'secondary' { return this.node.role }

  private async begin (): Promise<void> {
    const c = this.config
    this.tls = c.tls === null ? null : await loadTls(c.tls)
    this.server = await listen(c.listen, this.tls, (s, peer) => this.inbound(s, peer), this.log, err => {
      this.current()?.noteError(Object.assign(new Error(`TLS handshake with a connecting peer failed: ${err.message}`), { code: 'AUTH_FAILED' }))
    }, c.admission)
    if (this.node.role === 'primary') this.becomePrimary()
    else this.becomeSecondary()
    if (this.node.fenced) this.log.warn('this primary restarted: it takes no writes until its peer confirms it holds nothing newer (or: replfs promote --force)')
    this.log.info({ listen: formatEndpoint(c.listen), peer: formatEndpoint(c.peer), role: this.node.role, fenced: this.node.fenced, mode: c.mode, tls: this.tls !== null, auth: c.secret !== null, generation: this.node.current?.id }, 'replication started')
  }

  private current (): ReplicationPrimary | ReplicationSecondary | null { return this.primary ?? this.secondary }

  private common (): { log: OpenedVolume['log'], journal: JournalFile, secret: Buffer | null, logger: Logger, channel?: Partial<ChannelOptions>, node: NodeGenerations, policy?: SplitBrainPolicy } {
    const c = this.config
    return { log: this.opened.log, journal: this.journal, secret: c.secret, logger: this.log, channel: c.channel, node: this.node, policy: c.policy }
  }

  /**
   * Runs the primary side and its dialer; the volume takes writes unless fenced. `peerComing`: the
   * peer stepped down to be this node's secondary, so sync writes wait for it (up to its timeout).
   */
  private becomePrimary (peerComing = false): void {
    const primary = new ReplicationPrimary({ ...this.common(), mode: this.config.mode, onConfirmed: () => this.hooks.setWritable(true) })
    if (peerComing) primary.holdWrites(this.config.channel?.idleTimeoutMs ?? DEFAULT_CHANNEL.idleTimeoutMs)
    this.primary = primary
    this.hooks.setWritable(!this.node.fenced)
    // While the peer's own connection serves this primary (a restarted one that dialed in and
    // yielded), dialing it again would only be turned away, on both sides, every few seconds.
    const idle = async (): Promise<void> => { while (this.inboundSessions.size > 0) await Promise.race(this.inboundSessions) }
    const dialer = new Redialer(this.config.peer, this.tls, async (s, peer) => { await this.session(primary, s, peer, true, dialer) }, this.log, undefined, idle)
    this.dialer = dialer
    dialer.start()
  }

  private becomeSecondary (): void {
    this.hooks.setWritable(false)
    this.secondary = new ReplicationSecondary({
      ...this.common(),
      onStateReplaced: this.hooks.onStateReplaced,
      // Answered already: promoting closes this very connection, so it runs after.
      onSwitchover: () => { setImmediate(() => { this.promote({ force: true }).catch(err => this.log.error({ err }, 'promotion asked by the switchover failed')) }) }
    })
  }

  private inbound (s: Duplex, peer: string): void {
    if (this.primary !== null) {
      const done = this.session(this.primary, s, peer, false, null).catch(() => {})
      this.inboundSessions.add(done)
      void done.then(() => this.inboundSessions.delete(done))
    } else if (this.secondary !== null) {
      this.secondary.serve(s, peer).catch(() => {})
    } else {
      // Between two roles: closing it makes the peer redial at once instead of waiting out its timeout.
      s.destroy()
    }
  }

  /** One connection on the primary side; when the peer turns out to be the source, this node demotes itself and receives on it. */
  private async session (primary: ReplicationPrimary, s: Duplex, peer: string, dialed: boolean, dialer: Redialer | null): Promise<void> {
    try {
      await primary.serve(s, peer, { dialed })
    } catch (err) {
      if (err instanceof RoleHandover) {
        dialer?.halt()
        // Its connection is the one handed over: switchTo must not stop() this dialer, which closes it.
        if (dialer !== null && this.dialer === dialer) this.dialer = null
        await this.exclusive(async () => {
          this.log.warn({ peer, reason: err.message }, 'the peer is newer: this node becomes its secondary')
          await this.switchTo('secondary')
        })
        this.secondary?.serveHandover(err).catch(() => {})
        return
      }
      const level = err instanceof PeerRefusal ? 'error' : 'warn'
      this.log[level]({ err, peer }, 'replication to the peer stopped; retrying')
      throw err
    }
  }

  private async exclusive<T> (fn: () => Promise<T>): Promise<T> {
    const p = this.transition.then(fn, fn)
    this.transition = p.catch(() => {})
    return await p
  }

  /** Stops the side this node runs and starts the other (or the same, afresh), storing the role first. */
  private async switchTo (role: 'primary' | 'secondary', opts: { promoteAt?: number, peerComing?: boolean } = {}): Promise<void> {
    this.hooks.setWritable(false)
    const dialer = this.dialer
    this.dialer = null
    dialer?.halt()
    // Neither side takes a connection from here until the new one runs (inbound drops it: the peer redials).
    const [primary, secondary] = [this.primary, this.secondary]
    this.primary = null
    this.secondary = null
    await primary?.close()
    await secondary?.close()
    if (role === 'primary') {
      if (opts.promoteAt !== undefined) await this.node.promote(opts.promoteAt)
      // What an interrupted resync staged here came from the old primary; this node's state is the one now.
      if (await StagedResync.abandon(this.opened.store)) this.log.warn('dropped what an interrupted resync had staged: this node is primary now')
      this.becomePrimary(opts.peerComing)
    } else {
      await this.node.demote()
      this.becomeSecondary()
    }
    void dialer?.stop()
  }

  /**
   * This secondary becomes the writable primary, in a new generation. Refused while a resync is
   * under way (its state is not yet one the source had) or while the peer is connected as primary,
   * unless forced.
   */
  async promote (opts: { force?: boolean } = {}): Promise<Record<string, unknown>> {
    return await this.exclusive(async () => {
      if (this.node.role === 'primary' && !this.node.fenced) return { role: 'primary', generation: this.node.current, changed: false }
      const s = this.secondary
      if (opts.force !== true) {
        if (s === null) throw new ReplfsError('BAD_ARGUMENT', 'this primary restarted and its peer has not confirmed that it holds nothing newer', { hint: 'Wait until it reaches its peer (replfs status), or, if the peer is gone for good: replfs promote --force' })
        if (s.phase === 'resyncing') throw new ReplfsError('BAD_ARGUMENT', 'a resync is under way: this node does not hold a state the primary had yet', { hint: 'Wait for it (replfs status), or: replfs promote --force (the state from before the resync is what you get)' })
        if (s.phase === 'streaming') throw new ReplfsError('BAD_ARGUMENT', 'the primary is connected and streaming to this node: demote it first, or use replfs switchover on it', { hint: 'Planned: replfs switchover <mountpoint> on the primary. Or: replfs promote --force (split brain)' })
        await this.opened.log.settle()
        if (s.peerDemotedAt !== this.opened.state.counters.seq) {
          throw new ReplfsError('BAD_ARGUMENT', 'the primary cannot be reached: it may still be primary, and promoting this node would split the pair\'s history', { hint: 'If the primary is down for good (or fenced): replfs promote --force. Its writes this node lacks come back as a diverged snapshot' })
        }
      }
      await this.opened.log.settle()
      const seq = this.opened.state.counters.seq
      if (this.node.role === 'primary') {
        // A fenced primary told to go on: same generation would fork history silently, so a new one.
        await this.node.promote(seq)
        this.hooks.setWritable(true)
      } else {
        // A switchover, or a demote: the peer stepped down with everything here and reconnects as secondary.
        await this.switchTo('primary', { promoteAt: seq, peerComing: s?.peerDemotedAt === seq })
      }
      this.log.warn({ seq, generation: this.node.current?.id, force: opts.force === true }, 'promoted: this node is the writable primary')
      return { role: 'primary', generation: this.node.current, seq, changed: true }
    })
  }

  /** This primary becomes a read-only secondary, once the peer holds everything it has (unless forced). */
  async demote (opts: { force?: boolean, timeoutMs?: number } = {}): Promise<Record<string, unknown>> {
    return await this.exclusive(async () => {
      if (this.node.role === 'secondary') return { role: 'secondary', changed: false }
      this.hooks.setWritable(false)
      await this.opened.log.settle()
      const seq = this.opened.state.counters.seq
      const p = this.primary
      if (opts.force !== true && p !== null) {
        try {
          await p.waitAcked(seq, opts.timeoutMs ?? 30_000)
          // Tells the peer it holds everything: it may then be promoted without --force.
          await p.handOff(seq, opts.timeoutMs ?? 30_000, { promote: false })
        } catch (err) {
          this.hooks.setWritable(!this.node.fenced)
          throw err
        }
      }
      await this.switchTo('secondary')
      this.log.warn({ seq, force: opts.force === true }, 'demoted: this node is a read-only secondary')
      return { role: 'secondary', seq, changed: true }
    })
  }

  /**
   * Planned role swap, run on the primary: writes stop, the peer acknowledges everything, it is
   * asked to promote itself and confirms, and this node demotes itself. No acknowledged write can
   * be lost and nothing is copied: the new primary resumes the old one from its journal.
   */
  async switchover (opts: { timeoutMs?: number } = {}): Promise<Record<string, unknown>> {
    return await this.exclusive(async () => {
      const p = this.primary
      if (p === null || this.node.fenced) throw new ReplfsError('BAD_ARGUMENT', 'switchover runs on the writable primary', { hint: 'On a secondary: replfs promote' })
      const began = performance.now()
      this.hooks.setWritable(false)
      try {
        await this.opened.log.settle()
        const seq = this.opened.state.counters.seq
        await p.waitAcked(seq, opts.timeoutMs ?? 30_000)
        await p.handOff(seq, opts.timeoutMs ?? 30_000)
        await this.switchTo('secondary')
        const ms = Math.round(performance.now() - began)
        this.log.warn({ seq, ms }, 'switchover: the peer is primary, this node its secondary')
        return { role: 'secondary', seq, ms, changed: true }
      } catch (err) {
        if (this.primary === p) this.hooks.setWritable(true)
        throw err
      }
    })
  }

  status (): Record<string, unknown> {
    const side = this.current()?.status() ?? {}
    const code = (side.lastError as { code?: string } | null | undefined)?.code
    return { ...side, role: this.node.role, fenced: this.node.fenced, splitBrain: code === 'SPLIT_BRAIN' && side.phase !== 'streaming', generation: this.node.current ?? null, history: this.node.history.length }
  }

  async verify (): Promise<VerifyResult> {
    if (this.primary === null) {
      throw new ReplfsError('BAD_ARGUMENT', 'verify runs on the primary: it compares both sides at one point of its stream', { hint: 'Run replfs verify on the primary host' })
    }
    return await this.primary.verify()
  }

  async stop (): Promise<void> {
    this.server?.close()
    await this.dialer?.stop()
    await this.primary?.close()
    await this.secondary?.close()
  }

  async closeJournal (): Promise<void> {
    this.opened.log.journal = null
    await this.journal.close()
  }
}
