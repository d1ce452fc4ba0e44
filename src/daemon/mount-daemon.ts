import type { Server } from 'node:net'
import type { Server as HttpServer } from 'node:http'
import { basename } from 'node:path'
import { rmSync } from 'node:fs'
import type { Logger } from 'pino'
import { ReplfsError } from '../errors.js'
import { FuseMount, isMounted } from '../fuse/mount.js'
import { LowLevelMount } from '../fuse/lowlevel-mount.js'
import type { Volume } from '../fs/volume.js'
import { type ControlGroup, controlSocketPath, serveControl } from './control.js'
import { serveMetrics } from './metrics.js'
import { type Endpoint, formatEndpoint } from '../net/transport.js'
import { defaultSizeLimit, makeVolume, openVolume, type OpenedVolume } from './open-volume.js'
import { type ReplicationConfig, VolumeReplication } from './replication.js'

/** Which FUSE binding serves the mount. */
export type FuseBinding = 'libfuse3' | 'fuse-native'
export const FUSE_BINDINGS: readonly FuseBinding[] = ['libfuse3', 'fuse-native']

export interface MountDaemonOptions {
  store: string
  mountpoint: string
  create: boolean
  sizeLimit?: number
  allowOther?: boolean
  attrTimeout?: number
  /** libfuse3: our own binding of libfuse 3's low-level API (default); fuse-native: the old path API. */
  fuseBinding?: FuseBinding
  replication?: ReplicationConfig
  /** Members of this group may use the control socket too (else only root and this process's user). */
  controlGroup?: ControlGroup
  /** Serve Prometheus metrics here (metrics.ts); `volume` labels them (default: the mount point's name). */
  metrics?: { at: Endpoint, volume?: string }
  /** Called once as the stop begins, whatever asked for it (systemd's STOPPING=1). */
  onStopping?: () => void
  logger: Logger
}

/**
 * One mounted volume in this process: store, record log, FUSE mount and control socket, with
 * an orderly stop whichever way the stop comes (signal, `replfs umount`, or an external
 * fusermount -u).
 */
export class MountDaemon {
  private opened!: OpenedVolume
  private vol!: Volume
  private fuse!: FuseMount | LowLevelMount
  private control: Server | null = null
  private metrics: HttpServer | null = null
  private repl: VolumeReplication | null = null
  private watch: NodeJS.Timeout | null = null
  private stopping: Promise<void> | null = null
  readonly stopped: Promise<void>
  private resolveStopped!: () => void
  private readonly log: Logger

  constructor (private readonly opts: MountDaemonOptions) {
    this.log = opts.logger.child({ mountpoint: opts.mountpoint })
    this.stopped = new Promise(resolve => { this.resolveStopped = resolve })
  }

  async start (): Promise<void> {
    // The role asked for on the command line; a store that recorded one keeps its own (replication.ts).
    const secondary = this.opts.replication?.role === 'secondary'
    // A secondary's store starts empty: its volume (init record or full copy) comes from the primary.
    this.opened = await openVolume(this.opts.store, { create: this.opts.create || secondary, replay: secondary, logger: this.log })
    const volumeId = this.opened.state.format?.volumeId ?? 'none-yet'
    try {
      const sizeLimit = this.opts.sizeLimit ?? await defaultSizeLimit(this.opts.store, this.opened.state.counters.usedBytes)
      // Replicated volumes start read-only: their role (and fencing) is known once replication starts.
      this.vol = makeVolume(this.opened, { sizeLimit, readOnly: this.opts.replication !== undefined, logger: this.log })
      if (this.opts.replication !== undefined) {
        this.repl = await VolumeReplication.start(this.opts.replication, this.opened, {
          setWritable: w => this.setWritable(w),
          onStateReplaced: () => { if (this.fuse instanceof LowLevelMount) this.fuse.invalidateAll() }
        }, this.log, { fresh: this.opened.created === true })
      }
      // Before the mount: an address that cannot be served fails the start with nothing to undo but the store.
      if (this.opts.metrics !== undefined) {
        this.metrics = (await serveMetrics(this.opts.metrics.at, {
          volume: this.opts.metrics.volume ?? basename(this.opts.mountpoint),
          peer: this.opts.replication === undefined ? null : formatEndpoint(this.opts.replication.peer),
          status: () => this.status(),
          snapshots: async o => await this.vol.listSnapshots(o),
          fuseOps: () => this.fuse?.opCounts ?? new Map(),
          fuseErrors: () => this.fuse?.errorCounts ?? new Map(),
          log: this.opened.log
        }, this.log)).server
      }
      // A secondary's orphans are freed by the primary's purge records, never on its own.
      if (!this.vol.readOnly) await this.housekeeping()
      const mountOpts = { allowOther: this.opts.allowOther, attrTimeout: this.opts.attrTimeout, fsname: `replfs:${volumeId.slice(0, 8)}`, logger: this.log }
      this.fuse = (this.opts.fuseBinding ?? 'libfuse3') === 'libfuse3'
        ? new LowLevelMount(this.opts.mountpoint, this.vol, mountOpts)
        : new FuseMount(this.opts.mountpoint, this.vol, mountOpts)
      await this.fuse.mount()
    } catch (err) {
      this.metrics?.close()
      await this.repl?.stop().catch(() => {})
      await this.repl?.closeJournal().catch(() => {})
      await this.opened.store.close().catch(() => {})
      throw err
    }
    this.control = await serveControl(controlSocketPath(this.opts.mountpoint), async req => await this.command(req), this.log, { group: this.opts.controlGroup })
    // If someone runs fusermount -u behind our back, close the store cleanly anyway.
    this.watch = setInterval(() => {
      if (!isMounted(this.opts.mountpoint)) {
        this.log.warn('mount point was unmounted externally; closing the store')
        void this.stop()
      }
    }, 1000)
    this.watch.unref()
    this.log.info({ volume: volumeId, store: this.opts.store, sizeLimit: this.vol.sizeLimit, seq: this.opened.state.counters.seq }, 'mounted')
  }

  /** The volume takes writes (or stops); the first time it does, it frees what the last run left. */
  private setWritable (writable: boolean): void {
    if (this.vol === undefined) return
    this.vol.readOnly = !writable
    if (writable && this.fuse !== undefined) void this.housekeeping()
  }

  private housekept = false
  private async housekeeping (): Promise<void> {
    if (this.housekept) return
    this.housekept = true
    const purged = await this.vol.purgeOrphans().catch(err => { this.log.error({ err }, 'freeing orphans failed'); return 0 })
    if (purged > 0) this.log.info({ purged }, 'freed files that were unlinked while open when the volume last stopped')
    if (this.opened.state.counters.garbageFrom !== undefined) {
      void this.vol.collectGarbage().then(
        freedBytes => this.log.info({ freedBytes }, 'finished the garbage collection the last run left pending'),
        err => this.log.error({ err }, 'garbage collection failed; it resumes at the next snapshot command or mount'))
    }
  }

  private async command (req: { cmd: string }): Promise<unknown> {
    switch (req.cmd) {
      case 'status': return this.status()
      case 'snapshot': return await this.snapshotCommand(req as { cmd: string, op?: unknown, name?: unknown, path?: unknown, writable?: unknown, space?: unknown })
      case 'verify':
        if (this.repl === null) throw Object.assign(new Error('this volume is not replicated'), { code: 'BAD_ARGUMENT' })
        return await this.repl.verify()
      case 'promote': return await this.replication().promote({ force: (req as { force?: unknown }).force === true })
      case 'demote': return await this.replication().demote({ force: (req as { force?: unknown }).force === true })
      case 'switchover': return await this.replication().switchover()
      case 'unmount':
        setImmediate(() => { void this.stop() })
        return { unmounting: this.opts.mountpoint }
      default: throw Object.assign(new Error(`unknown command ${req.cmd}`), { code: 'BAD_ARGUMENT' })
    }
  }

  private replication (): VolumeReplication {
    if (this.repl === null) throw new ReplfsError('BAD_ARGUMENT', 'this volume is not replicated', { hint: 'Mount it with --role, --listen and --peer' })
    return this.repl
  }

  /** Snapshot commands: they change state, so they run on the primary (or a standalone volume). */
  private async snapshotCommand (req: { op?: unknown, name?: unknown, path?: unknown, writable?: unknown, space?: unknown }): Promise<unknown> {
    if (req.op === 'list') return await this.vol.listSnapshots({ space: req.space === true })
    if (this.repl !== null && (this.repl.role === 'secondary' || this.repl.node.fenced)) {
      throw new ReplfsError('BAD_ARGUMENT', `snapshot ${String(req.op)} changes the volume, so it runs on the primary; this is the secondary`, {
        hint: 'Run it on the primary: its snapshot commands reach this host in the replication stream'
      })
    }
    const name = String(req.name ?? '')
    switch (req.op) {
      case 'create': return await this.vol.createSnapshot(name, { writable: req.writable === true })
      case 'delete': return await this.vol.deleteSnapshot(name)
      case 'restore': return await this.vol.restoreSnapshot(name, typeof req.path === 'string' ? req.path : undefined)
      case 'refresh': return await this.vol.refreshSnapshot(name)
      default: throw new ReplfsError('BAD_ARGUMENT', `unknown snapshot operation ${String(req.op)}`)
    }
  }

  status (): Record<string, unknown> {
    const s = this.opened.state
    return {
      mountpoint: this.opts.mountpoint,
      store: this.opts.store,
      volume: s.format?.volumeId,
      role: this.repl?.role ?? 'standalone',
      readOnly: this.vol.readOnly,
      seq: s.counters.seq,
      usedBytes: s.counters.usedBytes,
      inodes: s.counters.inodes,
      sizeLimit: this.vol.sizeLimit,
      // Space a delete, restore or refresh is still freeing (like ZFS's "freeing"): the cursor
      // of the pending collection, and the layers it is merging.
      garbageCollection: s.counters.garbageFrom === undefined
        ? { pending: false }
        : { pending: true, at: s.counters.garbageFrom, mergingLayers: (s.layers.merging ?? []).length },
      pid: process.pid,
      fuseOps: Object.fromEntries([...(this.fuse?.opCounts ?? new Map<string, number>()).entries()].sort((a, b) => a[0] < b[0] ? -1 : 1)),
      ...(this.repl === null ? {} : { replication: this.repl.status() })
    }
  }

  stop (): Promise<void> {
    if (this.stopping !== null) return this.stopping
    this.stopping = (async () => {
      try { this.opts.onStopping?.() } catch (err) { this.log.warn({ err }, 'stop notification failed') }
      if (this.watch !== null) clearInterval(this.watch)
      this.metrics?.close()
      this.metrics?.closeAllConnections()
      this.control?.close()
      rmSync(controlSocketPath(this.opts.mountpoint), { force: true })
      try {
        await this.fuse.unmount()
      } catch (err) {
        this.log.error({ err }, 'unmount failed')
      }
      await this.vol?.stopCollecting()
      await this.repl?.stop().catch(err => this.log.error({ err }, 'replication did not stop cleanly'))
      await this.opened.log.settle().catch(err => this.log.error({ err }, 'pending records failed at stop'))
      await this.opened.log.journal?.sync().catch(err => this.log.error({ err }, 'journal sync failed at stop'))
      await this.opened.store.sync().catch(() => {})
      await this.repl?.closeJournal().catch(err => this.log.error({ err }, 'journal close failed'))
      await this.opened.store.close()
      this.log.info({ seq: this.opened.state.counters.seq }, 'unmounted; store closed')
      this.resolveStopped()
    })()
    return this.stopping
  }
}
