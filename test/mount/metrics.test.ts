import * as fs from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { cli, isMounted, mountVolume, tempDir } from '../helpers/mount.js'
import { freePort, startPair, status, waitCaughtUp, waitFor } from '../helpers/replicated.js'

t.setTimeout(180_000)

/** One scrape: `name{label="v",...}` (labels sorted) -> value. */
type Scrape = Map<string, number>

async function scrape (port: number): Promise<Scrape> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`)
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`)
  const out: Scrape = new Map()
  for (const line of (await res.text()).split('\n')) {
    const m = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) continue
    const labels = (m[2] ?? '').split(/,(?=[a-z_]+=")/).filter(l => l !== '').sort().join(',')
    out.set(`${m[1]}{${labels}}`, Number(m[3]))
  }
  return out
}

/** The value of `name` with exactly these labels (NaN when absent, so a comparison fails). */
function value (s: Scrape, name: string, labels: Record<string, string>): number {
  const key = `${name}{${Object.entries(labels).map(([k, v]) => `${k}="${v}"`).sort().join(',')}}`
  return s.get(key) ?? NaN
}

t.test('a volume mounted from a config file with metrics = serves /metrics; FUSE counters move by the operations done', async t => {
  const base = tempDir()
  t.teardown(() => fs.rmSync(base, { recursive: true, force: true }))
  const port = await freePort()
  const conf = join(base, 'vol1.conf')
  fs.writeFileSync(conf, `# metrics test\nmetrics = 127.0.0.1:${port}\nattr-timeout = 0\n`)
  const m = await mountVolume(t, { extraArgs: ['--config', conf] })
  const vol = { volume: 'vol1' }

  const before = await scrape(port)
  t.equal(value(before, 'replfs_role', { ...vol, role: 'standalone' }), 1, 'role gauge: standalone')
  t.equal(value(before, 'replfs_role', { ...vol, role: 'primary' }), 0)
  t.equal(value(before, 'replfs_snapshots', vol), 0)
  const op = (s: Scrape, name: string): number => value(s, 'replfs_fuse_operations_total', { ...vol, op: name }) || 0
  const enoent = (s: Scrape): number => value(s, 'replfs_fuse_errors_total', { ...vol, op: 'lookup', errno: 'ENOENT' }) || 0

  for (let i = 0; i < 5; i++) fs.writeFileSync(join(m.mnt, `f${i}`), `file ${i}\n`)
  for (let i = 0; i < 3; i++) fs.mkdirSync(join(m.mnt, `d${i}`))
  for (let i = 0; i < 5; i++) fs.unlinkSync(join(m.mnt, `f${i}`))
  // Each create and mkdir above began with a lookup of the new name (ENOENT): count misses apart.
  const mid = await scrape(port)
  for (let i = 0; i < 4; i++) t.notOk(fs.existsSync(join(m.mnt, `missing${i}`)), 'a missing name is missing')
  const c = cli(['snapshot', 'create', m.mnt, 'one'], { REPLFS_RUN_DIR: m.runDir })
  t.equal(c.code, 0, `snapshot create: ${c.stderr}`)

  const after = await scrape(port)
  t.equal(op(after, 'create') - op(before, 'create'), 5, 'create: +5')
  t.equal(op(after, 'mkdir') - op(before, 'mkdir'), 3, 'mkdir: +3')
  t.equal(op(after, 'unlink') - op(before, 'unlink'), 5, 'unlink: +5')
  t.equal(op(after, 'write') - op(before, 'write'), 5, 'write: +5')
  t.equal(enoent(mid) - enoent(before), 8, 'lookup ENOENT errors: +8, the lookups of the 5 new files and 3 new directories')
  t.equal(enoent(after) - enoent(mid), 4, 'lookup ENOENT errors: +4, one per missing name')
  const seqDelta = value(after, 'replfs_applied_seq', vol) - value(before, 'replfs_applied_seq', vol)
  // 5 creates, 5 writes, 3 mkdirs, 5 unlinks and the snapshot (plus any attribute records).
  t.ok(seqDelta >= 19, `records: +${seqDelta}`)
  const applied = (s: Scrape): number => value(s, 'replfs_apply_seconds_count', vol) || 0
  t.equal(applied(after) - applied(before), seqDelta, 'the apply histogram timed every record committed meanwhile')
  t.equal(value(after, 'replfs_snapshots', vol), 1, 'snapshot count: 1')
  const st = JSON.parse(cli(['status', m.mnt, '--json'], { REPLFS_RUN_DIR: m.runDir }).stdout) as { seq: number, usedBytes: number }
  t.equal(value(after, 'replfs_applied_seq', vol), st.seq, 'seq as status gives it')
  t.equal(value(after, 'replfs_used_bytes', vol), st.usedBytes, 'used bytes as status gives them')
  const held = await waitFor('held bytes computed', async () => value(await scrape(port), 'replfs_snapshot_held_bytes', vol), v => !Number.isNaN(v), 10_000)
  t.equal(held, 0, 'the snapshot alone holds nothing yet (the volume has it all)')

  const other = await fetch(`http://127.0.0.1:${port}/other`)
  t.equal(other.status, 404, 'only /metrics is served')
  await m.stop()
  await t.rejects(fetch(`http://127.0.0.1:${port}/metrics`), 'the endpoint goes with the volume')
})

t.test('a bad --metrics address or a port in use refuses the mount with a message, and nothing stays mounted', async t => {
  const base = tempDir()
  const busy = createServer()
  t.teardown(() => { busy.close(); fs.rmSync(base, { recursive: true, force: true }) })
  const run = (extra: string[], foreground: boolean): ReturnType<typeof cli> => cli(['mount', join(base, 'mnt'), '--store', join(base, 'store'), ...(foreground ? ['--foreground'] : []), '--log-file', join(base, 'log'), ...extra], { REPLFS_RUN_DIR: join(base, 'run') })
  for (const bad of ['9410', 'localhost', '127.0.0.1:0', '127.0.0.1:65536', ':9410']) {
    const r = run(['--metrics', bad], false)
    t.equal(r.code, 1, `--metrics ${bad}: refused`)
    t.match(r.stderr, `--metrics must be host:port (e.g. 10.0.0.2:7410 or [::1]:7410), not '${bad}'`)
  }
  t.notOk(fs.existsSync(join(base, 'store')), 'refused before the store was created')
  const port = await freePort()
  await new Promise<void>(resolve => busy.listen(port, '127.0.0.1', () => resolve()))
  const r = run(['--metrics', `127.0.0.1:${port}`], true)
  t.equal(r.code, 1, 'port in use: exit 1')
  t.match(r.stderr, `cannot serve metrics on 127.0.0.1:${port}: EADDRINUSE`)
  t.match(r.stderr, /pick a free port/)
  t.notOk(isMounted(join(base, 'mnt')), 'not mounted')
})

t.test('on a pair, role, connected, generation and acked seq are right on both sides', async t => {
  const [pm, sm] = [await freePort(), await freePort()]
  const pair = await startPair(t, { primaryArgs: ['--metrics', `127.0.0.1:${pm}`], secondaryArgs: ['--metrics', `127.0.0.1:${sm}`] })
  fs.writeFileSync(join(pair.primary.mnt, 'a'), Buffer.alloc(200_000, 7))
  const fd = fs.openSync(join(pair.primary.mnt, 'a'), 'r+')
  fs.fsyncSync(fd)
  fs.closeSync(fd)
  await waitCaughtUp(pair.primary)
  const pst = await status(pair.primary)
  const p = await scrape(pm)
  const s = await scrape(sm)
  const pv = { volume: 'mnt-a' }
  const sv = { volume: 'mnt-b' }
  const peerOfP = { ...pv, peer: `127.0.0.1:${pair.secondary.port}` }
  t.equal(value(p, 'replfs_role', { ...pv, role: 'primary' }), 1, 'primary: role primary')
  t.equal(value(p, 'replfs_role', { ...pv, role: 'secondary' }), 0)
  t.equal(value(s, 'replfs_role', { ...sv, role: 'secondary' }), 1, 'secondary: role secondary')
  t.equal(value(p, 'replfs_peer_connected', peerOfP), 1, 'primary: connected')
  const peerOfS = { ...sv, peer: `127.0.0.1:${pair.primary.port}` }
  t.equal(value(s, 'replfs_peer_connected', peerOfS), 1, 'secondary: connected, labelled with its --peer')
  t.equal(value(p, 'replfs_acked_seq', peerOfP), pst.seq, 'acked seq is the primary\'s seq once caught up')
  t.equal(value(p, 'replfs_replication_lag_records', peerOfP), 0, 'no lag')
  t.equal(value(p, 'replfs_replication_lag_bytes', peerOfP), 0)
  t.equal(value(s, 'replfs_applied_seq', sv), pst.seq, 'the secondary applied everything')
  t.equal(value(p, 'replfs_degraded', peerOfP), 0, 'sync primary streaming: not degraded')
  const gen = (x: Scrape): string | undefined => [...x.keys()].find(k => k.startsWith('replfs_generation_info{'))?.replace(/volume="[^"]*"/, '')
  t.ok(gen(p) !== undefined, `generation info: ${String(gen(p))}`)
  t.equal(gen(p), gen(s), 'both sides in the same generation')
  t.ok(value(p, 'replfs_journal_bytes', pv) >= 200_000, 'the journal holds the file\'s data')
  t.ok(value(p, 'process_resident_memory_bytes', {}) > 10_000_000, 'the process\'s own metrics are there too')
})
