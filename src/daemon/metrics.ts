import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { ReplfsError } from '../errors.js'
import type { SnapshotInfo } from '../fs/volume.js'
import type { RecordLog } from '../log/record-log.js'
import { type Endpoint, formatEndpoint } from '../net/transport.js'

/**
 * A Prometheus endpoint (`--metrics host:port`, GET /metrics) for one mounted volume, named in
 * the conventions of drbd-reactor and zrepl: `replfs_` prefix, base units in the name
 * (`_bytes`, `_seconds`), `_total` for counters, labels `volume` and, for the replication link,
 * `peer`. Gauges are read from the daemon's `status` at each scrape, so nothing on the I/O path
 * waits for metrics; only the apply histogram is fed as records commit.
 */

/** What the metrics read from the mounted volume. */
export interface MetricsSource {
  /** The `volume` label: the config's name, else the mount point's last component. */
  volume: string
  /** The `peer` label: the configured peer address (a connection's own address changes with every reconnect). */
  peer: string | null
  status: () => Record<string, unknown>
  snapshots: (opts: { space: boolean }) => Promise<SnapshotInfo[]>
  /** Calls of each FUSE op, and failed ones by op and errno name (fuse/adapter.ts fills both). */
  fuseOps: () => ReadonlyMap<string, number>
  fuseErrors: () => ReadonlyMap<string, ReadonlyMap<string, number>>
  log: RecordLog
}

export interface MetricsOptions {
  /** How stale the snapshots' held bytes may get: computing them reads every block key. */
  heldBytesMaxAgeMs?: number
}

const ROLES = ['primary', 'secondary', 'standalone'] as const

interface ReplicationStatus {
  role?: string
  peer?: string | null
  connected?: boolean
  phase?: string
  degraded?: boolean
  fenced?: boolean
  splitBrain?: boolean
  generation?: { id: string, since: number } | null
  ackedSeq?: number | null
  appliedSeq?: number
  lagRecords?: number | null
  lagBytes?: number | null
  lagSeconds?: number | null
  journal?: { bytes: number }
  resync?: { phase: string, ranges: number, rangesDiffering: number, bytesReceived: number, bytesSent: number, bytesRemaining?: number } | null
}

/** The registry and how it is refreshed before each scrape; separate from the server so a test can read it without HTTP. */
export class VolumeMetrics {
  readonly registry = new Registry()
  private readonly g: Record<string, Gauge>
  private readonly fuseOps: Counter
  private readonly fuseErrors: Counter
  private readonly apply: Histogram
  private held: { bytes: number, at: number } | null = null
  private heldRefresh: Promise<void> | null = null
  private collecting: Promise<string> | null = null
  private readonly unsubscribe: Array<() => void> = []

  constructor (private readonly source: MetricsSource, private readonly log: Logger, private readonly opts: MetricsOptions = {}) {
    const r = [this.registry]
    // The process's CPU, memory, file descriptors and event loop delay, under their usual names.
    collectDefaultMetrics({ register: this.registry })
    const gauge = (name: string, help: string, labelNames: string[] = []): Gauge =>
      new Gauge({ name, help, labelNames: ['volume', ...labelNames], registers: r })
    this.g = {
      role: gauge('replfs_role', 'The role this node holds: 1 for the role it has, 0 for the others', ['role']),
      generation: gauge('replfs_generation_info', 'The current data generation (label generation, value 1) and the seq it began after (label since)', ['generation', 'since']),
      connected: gauge('replfs_peer_connected', '1 while the replication link to the peer is up', ['peer']),
      lagRecords: gauge('replfs_replication_lag_records', 'Records this host has that the peer has not acknowledged (primary) or this host lacks (secondary)', ['peer']),
      lagBytes: gauge('replfs_replication_lag_bytes', 'Journal bytes the peer has not acknowledged (primary)', ['peer']),
      lagSeconds: gauge('replfs_replication_lag_seconds', 'Age of the oldest record the peer has not acknowledged (primary)', ['peer']),
      ackedSeq: gauge('replfs_acked_seq', 'Highest seq the peer has acknowledged (primary)', ['peer']),
      appliedSeq: gauge('replfs_applied_seq', 'Highest seq applied on this host'),
      degraded: gauge('replfs_degraded', '1 while a sync primary completes fsync locally only (peer away or resyncing)', ['peer']),
      fenced: gauge('replfs_fenced', '1 while a restarted primary waits for its peer before taking writes'),
      splitBrain: gauge('replfs_split_brain', '1 while both nodes wrote on their own and wait for an operator'),
      resyncActive: gauge('replfs_resync_active', '1 while a resync by difference runs', ['peer']),
      resyncRanges: gauge('replfs_resync_ranges', 'Ranges compared so far by the running (or last) resync', ['peer']),
      resyncDiffering: gauge('replfs_resync_ranges_differing', 'Ranges found different so far by the running (or last) resync', ['peer']),
      resyncSent: gauge('replfs_resync_sent_bytes', 'Bytes sent by the running (or last) resync', ['peer']),
      resyncReceived: gauge('replfs_resync_received_bytes', 'Bytes received by the running (or last) resync', ['peer']),
      resyncRemaining: gauge('replfs_resync_remaining_bytes', 'At most how many bytes the running resync still moves (grows while ranges are compared; 0 when done)', ['peer']),
      journal: gauge('replfs_journal_bytes', 'Bytes in the replication journal'),
      used: gauge('replfs_used_bytes', 'Data the volume holds, every snapshot layer counted'),
      size: gauge('replfs_size_limit_bytes', 'How much data the volume may hold'),
      inodes: gauge('replfs_inodes', 'Inodes in use'),
      readOnly: gauge('replfs_read_only', '1 while the mount takes no writes'),
      snapshots: gauge('replfs_snapshots', 'Snapshots of the volume'),
      heldBytes: gauge('replfs_snapshot_held_bytes', 'Data that only one snapshot holds, summed over snapshots (what deleting each alone frees); refreshed at most every few minutes'),
      gcPending: gauge('replfs_garbage_collection_pending', '1 while space freed by a snapshot command is still being collected')
    }
    this.fuseOps = new Counter({ name: 'replfs_fuse_operations_total', help: 'FUSE requests that reached the volume, by op', labelNames: ['volume', 'op'], registers: r })
    this.fuseErrors = new Counter({ name: 'replfs_fuse_errors_total', help: 'FUSE requests answered with an error, by op and errno', labelNames: ['volume', 'op', 'errno'], registers: r })
    this.apply = new Histogram({
      name: 'replfs_apply_seconds',
      help: 'Seconds from a record\'s apply to this host\'s volume state until LevelDB has committed it (group commits included)',
      labelNames: ['volume'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: r
    })
    this.watchCommits(source.log)
  }

  /** Times each record from its apply to its commit: records commit in order, so a queue suffices. */
  private watchCommits (log: RecordLog): void {
    const pending: Array<[seq: number, at: number]> = []
    const volume = this.source.volume
    this.unsubscribe.push(log.onRecord(seq => {
      // After a rollback a seq comes again: the entries it replaces never committed.
      while (pending.length > 0 && pending[pending.length - 1][0] >= seq) pending.pop()
      pending.push([seq, performance.now()])
    }))
    this.unsubscribe.push(log.onCommitted(seq => {
      const now = performance.now()
      let n = 0
      while (n < pending.length && pending[n][0] <= seq) { this.apply.observe({ volume }, (now - pending[n][1]) / 1000); n++ }
      pending.splice(0, n)
    }))
  }

  /** Sets every gauge and counter from the volume's state now. */
  refresh (): void {
    const volume = this.source.volume
    const s = this.source.status()
    const repl = (s.replication ?? null) as ReplicationStatus | null
    for (const g of Object.values(this.g)) g.reset()
    const set = (g: Gauge, v: number | boolean | null | undefined, labels: Record<string, string> = {}): void => {
      if (v === null || v === undefined) return
      g.set({ volume, ...labels }, typeof v === 'boolean' ? (v ? 1 : 0) : v)
    }
    const role = String(s.role ?? 'standalone')
    for (const r of ROLES) set(this.g.role, r === role, { role: r })
    set(this.g.appliedSeq, s.seq as number)
    set(this.g.used, s.usedBytes as number)
    set(this.g.size, s.sizeLimit as number)
    set(this.g.inodes, s.inodes as number)
    set(this.g.readOnly, s.readOnly as boolean)
    set(this.g.gcPending, (s.garbageCollection as { pending?: boolean } | undefined)?.pending)
    if (repl !== null) {
      const peer = { peer: this.source.peer ?? repl.peer ?? 'none' }
      if (repl.generation != null) set(this.g.generation, 1, { generation: repl.generation.id, since: String(repl.generation.since) })
      set(this.g.connected, repl.connected === true, peer)
      set(this.g.lagRecords, repl.lagRecords, peer)
      set(this.g.lagBytes, repl.lagBytes, peer)
      if (repl.role === 'primary') set(this.g.lagSeconds, repl.lagSeconds, peer)
      set(this.g.ackedSeq, repl.ackedSeq, peer)
      set(this.g.degraded, repl.degraded, peer)
      set(this.g.fenced, repl.fenced)
      set(this.g.splitBrain, repl.splitBrain)
      set(this.g.journal, repl.journal?.bytes)
      const rs = repl.resync
      set(this.g.resyncActive, rs != null && rs.phase !== 'done', peer)
      if (rs != null) {
        set(this.g.resyncRanges, rs.ranges, peer)
        set(this.g.resyncDiffering, rs.rangesDiffering, peer)
        set(this.g.resyncSent, rs.bytesSent, peer)
        set(this.g.resyncReceived, rs.bytesReceived, peer)
        set(this.g.resyncRemaining, rs.bytesRemaining ?? 0, peer)
      }
    }
    // The daemon keeps the counts; a counter is set to them (they only grow while the process runs).
    this.fuseOps.reset()
    for (const [op, n] of this.source.fuseOps()) this.fuseOps.inc({ volume, op }, n)
    this.fuseErrors.reset()
    for (const [op, byErrno] of this.source.fuseErrors()) {
      for (const [errno, n] of byErrno) this.fuseErrors.inc({ volume, op, errno }, n)
    }
  }

  /** Snapshot count at every scrape; held bytes from the last computation, redone in the background once stale. */
  async refreshSnapshots (): Promise<void> {
    const volume = this.source.volume
    const list = await this.source.snapshots({ space: false })
    this.g.snapshots.set({ volume }, list.length)
    const maxAge = this.opts.heldBytesMaxAgeMs ?? 300_000
    if ((this.held === null || performance.now() - this.held.at > maxAge) && this.heldRefresh === null) {
      this.heldRefresh = this.source.snapshots({ space: true }).then(
        all => { this.held = { bytes: all.reduce((sum, x) => sum + (x.heldBytes ?? 0), 0), at: performance.now() } },
        err => { this.log.warn({ err }, 'computing the snapshots\' held bytes for metrics failed') }
      ).finally(() => { this.heldRefresh = null })
    }
    if (this.held !== null) this.g.heldBytes.set({ volume }, this.held.bytes)
  }

  /** One scrape's text. Scrapes that overlap share one collection: each resets the gauges it sets. */
  async text (): Promise<string> {
    this.collecting ??= (async () => {
      try {
        this.refresh()
        await this.refreshSnapshots()
        return await this.registry.metrics()
      } finally {
        this.collecting = null
      }
    })()
    return await this.collecting
  }

  close (): void {
    for (const fn of this.unsubscribe) fn()
  }
}

/** Serves GET /metrics on `at`; anything else is 404. Refuses to start (clearly) if it cannot bind. */
export async function serveMetrics (at: Endpoint, source: MetricsSource, logger: Logger, opts: MetricsOptions = {}): Promise<{ server: Server, metrics: VolumeMetrics, address: AddressInfo }> {
  const log = logger.child({ component: 'metrics' })
  const metrics = new VolumeMetrics(source, log, opts)
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('replfs serves /metrics only\n')
      return
    }
    metrics.text().then(
      body => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
      err => {
        log.error({ err }, 'collecting metrics failed')
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`collecting metrics failed: ${(err as Error).message}\n`)
      })
  })
  try {
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(at.port, at.host, () => resolve()))
  } catch (err) {
    metrics.close()
    const code = (err as NodeJS.ErrnoException).code
    throw new ReplfsError('MOUNT_FAILED', `cannot serve metrics on ${formatEndpoint(at)}: ${code ?? (err as Error).message}`, {
      hint: code === 'EADDRINUSE' ? 'Another process listens there: pick a free port (each volume needs its own)' : 'Give an address of this host, e.g. --metrics 127.0.0.1:9410',
      cause: err
    })
  }
  server.on('close', () => metrics.close())
  const address = server.address() as AddressInfo
  log.info({ metrics: `http://${formatEndpoint({ host: address.address, port: address.port })}/metrics` }, 'serving metrics')
  return { server, metrics, address }
}
