import { join } from 'node:path'
import type { Server } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { Fuse } from '../fuse/mount.js'
import { JournalFile } from '../log/journal-file.js'
import { type Endpoint, type TlsFiles, Redialer, formatEndpoint, listen, loadTls } from '../net/transport.js'
import type { ChannelOptions } from '../repl/channel.js'
import { FrameChannel } from '../repl/channel.js'
import { PeerRefusal } from '../repl/handshake.js'
import { DEFAULT_CHANNEL, ReplicationPrimary, type ReplicationMode, type VerifyResult } from '../repl/primary.js'
import { ReplicationSecondary } from '../repl/secondary.js'
import type { OpenedVolume } from './open-volume.js'

export interface ReplicationConfig {
  role: 'primary' | 'secondary'
  listen: Endpoint
  peer: Endpoint
  /** null: --insecure. */
  secret: Buffer | null
  mode: ReplicationMode
  tls: TlsFiles | null
  journalBytes?: number
  channel?: Partial<ChannelOptions>
}

/**
 * Wires one volume into replication: its journal file, the listener every node runs (so roles
 * can swap without new addresses), and the dialing primary or the accepting secondary.
 */
export class VolumeReplication {
  private server: Server | null = null
  private dialer: Redialer | null = null
  private primary: ReplicationPrimary | null = null
  private secondary: ReplicationSecondary | null = null
  private readonly log: Logger

  private constructor (readonly config: ReplicationConfig, private readonly opened: OpenedVolume, readonly journal: JournalFile, logger: Logger) {
    this.log = logger.child({ role: config.role })
  }

  static async start (config: ReplicationConfig, opened: OpenedVolume, logger: Logger): Promise<VolumeReplication> {
    const journal = await JournalFile.open({ dir: join(opened.store.dir, 'journal'), maxBytes: config.journalBytes, releasePages: Fuse.releasePages, logger }, opened.state.counters.seq)
    opened.log.journal = journal
    const r = new VolumeReplication(config, opened, journal, logger)
    try {
      await r.begin()
    } catch (err) {
      await r.stop()
      throw err
    }
    return r
  }

  private async begin (): Promise<void> {
    const c = this.config
    const tls = c.tls === null ? null : await loadTls(c.tls)
    const common = { log: this.opened.log, journal: this.journal, secret: c.secret, logger: this.log, channel: c.channel }
    if (c.role === 'primary') {
      const primary = new ReplicationPrimary({ ...common, mode: c.mode })
      this.primary = primary
      this.server = await listen(c.listen, tls, (s, peer) => this.refuseInbound(s, peer), this.log)
      this.dialer = new Redialer(c.peer, tls, async (s, peer) => {
        try {
          await primary.serve(s, peer)
        } catch (err) {
          const level = err instanceof PeerRefusal ? 'error' : 'warn'
          this.log[level]({ err, peer }, 'replication to the secondary stopped; retrying')
          throw err
        }
      }, this.log)
      this.dialer.start()
    } else {
      const secondary = new ReplicationSecondary(common)
      this.secondary = secondary
      this.server = await listen(c.listen, tls, (s, peer) => { secondary.serve(s, peer).catch(() => {}) }, this.log, err => {
        secondary.noteError(Object.assign(new Error(`TLS handshake with a connecting peer failed: ${err.message}`), { code: 'AUTH_FAILED' }))
      })
    }
    this.log.info({ listen: formatEndpoint(c.listen), peer: formatEndpoint(c.peer), mode: c.mode, tls: tls !== null, auth: c.secret !== null }, 'replication started')
  }

  /** A primary takes no inbound replication: a peer dialing it believes it is primary too. */
  private refuseInbound (s: Duplex, peer: string): void {
    const ch = new FrameChannel(s, DEFAULT_CHANNEL)
    void ch.next().then(() => {
      const message = `a peer at ${peer} tried to replicate to this node, but this node is primary: two primaries (split brain)?`
      this.log.error({ peer }, message)
      this.primary?.noteError(new PeerRefusal('ROLE_CONFLICT', message, false))
      ch.close({ code: 'ROLE_CONFLICT', message: 'this node is primary; it does not accept a primary' })
    }, () => ch.close())
  }

  status (): Record<string, unknown> {
    return this.primary?.status() ?? this.secondary?.status() ?? {}
  }

  async verify (): Promise<VerifyResult> {
    if (this.primary === null) {
      throw Object.assign(new Error('verify runs on the primary: it compares both sides at one point of its stream'), { code: 'BAD_ARGUMENT', hint: 'Run replfs verify on the primary host' })
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
