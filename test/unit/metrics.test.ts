import { pino } from 'pino'
import t from 'tap'
import { type MetricsSource, VolumeMetrics } from '../../src/daemon/metrics.js'
import type { SnapshotInfo } from '../../src/fs/volume.js'
import type { RecordLog } from '../../src/log/record-log.js'

/** A record log's two hooks, driven by the test. */
function fakeLog (): { log: RecordLog, record: (seq: number) => void, commit: (seq: number) => void } {
  const records = new Set<(seq: number) => void>()
  const commits = new Set<(seq: number) => void>()
  const log = {
    onRecord: (fn: (seq: number) => void) => { records.add(fn); return () => records.delete(fn) },
    onCommitted: (fn: (seq: number) => void) => { commits.add(fn); return () => commits.delete(fn) }
  } as unknown as RecordLog
  return { log, record: seq => { for (const fn of records) fn(seq) }, commit: seq => { for (const fn of commits) fn(seq) } }
}

function lineOf (text: string, prefix: string): string | undefined {
  return text.split('\n').find(l => l.startsWith(prefix))
}

t.test('a secondary in a resync: role, link, lag and resync gauges carry the volume and the configured peer', async t => {
  const { log } = fakeLog()
  const snaps: SnapshotInfo[] = [{ name: 'a', seq: 3, created: '2026-12-01T00:00:00Z', writable: false, layers: 1, heldBytes: 4096 }]
  const source: MetricsSource = {
    volume: 'data',
    peer: 'hostA:7410',
    status: () => ({
      role: 'secondary', seq: 90, usedBytes: 1000, sizeLimit: 5000, inodes: 7, readOnly: true, garbageCollection: { pending: false },
      replication: {
        role: 'secondary', peer: '10.0.0.1:51234', connected: true, phase: 'resyncing', appliedSeq: 90, lagRecords: 10, fenced: false, splitBrain: false,
        generation: { id: 'g2', since: 40 }, journal: { bytes: 12345 },
        resync: { phase: 'comparing', ranges: 12, rangesDiffering: 3, bytesReceived: 777, bytesSent: 55, bytesRemaining: 3_145_000 }
      }
    }),
    snapshots: async () => snaps,
    fuseOps: () => new Map([['getattr', 9]]),
    fuseErrors: () => new Map([['getattr', new Map([['ENOENT', 4], ['EACCES', 1]])]]),
    log
  }
  const m = new VolumeMetrics(source, pino({ level: 'silent' }))
  t.teardown(() => m.close())
  const text = await m.text()
  const peer = 'peer="hostA:7410",volume="data"'
  for (const [line, what] of [
    ['replfs_role{volume="data",role="secondary"} 1', 'role secondary'],
    ['replfs_role{volume="data",role="primary"} 0', 'not primary'],
    ['replfs_generation_info{volume="data",generation="g2",since="40"} 1', 'generation'],
    [`replfs_peer_connected{${peer}} 1`, 'connected, labelled with the configured peer, not the connection\'s port'],
    [`replfs_replication_lag_records{${peer}} 10`, 'lag records'],
    [`replfs_resync_active{${peer}} 1`, 'resync running'],
    [`replfs_resync_ranges{${peer}} 12`, 'ranges'],
    [`replfs_resync_ranges_differing{${peer}} 3`, 'differing'],
    [`replfs_resync_received_bytes{${peer}} 777`, 'received'],
    [`replfs_resync_remaining_bytes{${peer}} 3145000`, 'remaining'],
    ['replfs_journal_bytes{volume="data"} 12345', 'journal'],
    ['replfs_read_only{volume="data"} 1', 'read-only'],
    ['replfs_snapshots{volume="data"} 1', 'snapshot count'],
    ['replfs_fuse_operations_total{volume="data",op="getattr"} 9', 'ops'],
    ['replfs_fuse_errors_total{volume="data",op="getattr",errno="ENOENT"} 4', 'errors by errno'],
    ['replfs_fuse_errors_total{volume="data",op="getattr",errno="EACCES"} 1', 'errors by errno']
  ]) {
    // prom-client orders labels as declared: compare label sets, not their order.
    const [name, labels] = line.split(/[{}]/)
    const want = labels.split(',').sort().join(',')
    const got = text.split('\n').find(l => l.startsWith(`${name}{`) && l.split(/[{}]/)[1].split(',').sort().join(',') === want)
    t.equal(got?.split(' ').pop(), line.split(' ').pop(), `${what}: ${got ?? 'absent'}`)
  }
  t.equal(lineOf(text, 'replfs_replication_lag_seconds'), undefined, 'no lag seconds on a secondary (it cannot know them)')
  t.equal(lineOf(text, 'replfs_acked_seq{'), undefined, 'no acked seq on a secondary')
  const later = await m.text()
  t.match(lineOf(later, 'replfs_snapshot_held_bytes{') ?? '', / 4096$/, 'held bytes once computed in the background')
})

t.test('the apply histogram times each record once, from its apply to the commit that covers it', async t => {
  const f = fakeLog()
  const m = new VolumeMetrics({ volume: 'v', peer: null, status: () => ({ role: 'standalone', seq: 0 }), snapshots: async () => [], fuseOps: () => new Map(), fuseErrors: () => new Map(), log: f.log }, pino({ level: 'silent' }))
  t.teardown(() => m.close())
  const count = async (): Promise<string | undefined> => lineOf(await m.text(), 'replfs_apply_seconds_count')?.split(' ').pop()
  f.record(1); f.record(2); f.record(3)
  f.commit(2)
  t.equal(await count(), '2', 'a group commit up to 2 covers records 1 and 2')
  f.record(4)
  // A failed write rolled 4 back; the next record is 4 again and replaces it.
  f.record(4)
  f.commit(4)
  t.equal(await count(), '4', '3 and the second 4: the rolled-back one is not timed')
  f.commit(4)
  t.equal(await count(), '4', 'a repeated commit notice times nothing again')
  const [a, b] = await Promise.all([m.text(), m.text()])
  t.equal(a, b, 'overlapping scrapes share one collection')
})
