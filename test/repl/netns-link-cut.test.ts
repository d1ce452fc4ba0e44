import t from 'tap'
t.setTimeout(480_000)
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { isMounted } from '../helpers/mount.js'
import { controlStatus, netnsList, startHostPair, twoHosts, writeFiles, noise, type HostNode, type TwoHosts } from '../helpers/netns.js'
import { diffSnapshots, status, treeSnapshot, waitCaughtUp, waitFor } from '../helpers/replicated.js'

// A primary in network namespace A and a secondary in namespace B, joined by a veth pair: the
// link is cut for real (both ends down), the primary carries on alone, and after the link is back
// it resumes from the secondary's last record. The nodes run under `nsenter --net`, so both
// mounts are visible here and addressed through their control sockets.

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** name -> sha256 of every file under dir (one level of subdirectories, as written here). */
function digests (dir: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
    if (d.isDirectory()) for (const f of fs.readdirSync(join(dir, d.name))) out[`${d.name}/${f}`] = sha(fs.readFileSync(join(dir, d.name, f)))
    else if (d.isFile()) out[d.name] = sha(fs.readFileSync(join(dir, d.name)))
  }
  return out
}


const MiB = 1 << 20
const hostsMade: TwoHosts[] = []
let nodes: HostNode[] = []

interface Resync { phase: string, rangesDiffering: number, bytesReceived: number, bytesRemaining: number }
const resyncOf = async (n: HostNode): Promise<{ phase: string, resync: Resync | null }> => {
  const s = await controlStatus(n) as { replication: { phase: string, resync?: Resync | null } }
  return { phase: s.replication.phase, resync: s.replication.resync ?? null }
}

/** The field `key` of the last log line whose msg is `msg`. */
function logged (n: HostNode, msg: string, key: string): number {
  const line = n.logs().split('\n').reverse().find(l => l.includes(`"msg":"${msg}"`))
  return line === undefined ? NaN : Number((JSON.parse(line) as Record<string, unknown>)[key])
}

t.test('two netns hosts: a cut link leaves the primary writable, healing it resumes replication', async t => {
  const began = Date.now()
  const h = await twoHosts(t)
  hostsMade.push(h)
  t.comment(`namespaces ${h.a.ns} (${h.a.addr}) and ${h.b.ns} (${h.b.addr}), veth ${h.a.veth}/${h.b.veth}`)
  const pair = await startHostPair(h, { mode: 'async', peerTimeout: 2 })
  const { primary, secondary } = pair
  nodes.push(primary, secondary)

  let first: Record<string, string> = {}
  await t.test('over the veth link the secondary acknowledges every write; both mounts hold the same bytes', async t => {
    const files: Record<string, Buffer> = {}
    for (let i = 0; i < 12; i++) files[`${i % 3 === 0 ? 'd/' : ''}f${i}`] = noise(100 + (i * 37_813) % 300_000, i + 1)
    first = writeFiles(primary.mnt, files)
    const st = await waitFor('the secondary to acknowledge every record', async () => await status(primary),
      s => s.replication.connected && s.replication.ackedSeq === s.seq, 30_000)
    t.equal(st.replication.ackedSeq, st.seq, `ackedSeq ${String(st.replication.ackedSeq)} == seq ${st.seq}`)
    t.equal(st.replication.peer, `${h.b.addr}:7410`, 'the primary streams to host b\'s link-local address')
    t.same(digests(primary.mnt), first, 'the primary\'s mount holds what was written')
    t.same(digests(secondary.mnt), first, 'the secondary\'s mount (host b) holds the same bytes')
  })

  await t.test('link cut: the primary keeps writing alone and notices; the secondary keeps the old content', async t => {
    const seqBefore = (await status(secondary)).replication.appliedSeq
    const cutAt = Date.now()
    h.cut()
    t.same(h.linkState(), { a: 'DOWN', b: 'DOWN' }, 'both ends of the veth pair are down')
    const writesBegan = Date.now()
    const more: Record<string, Buffer> = {}
    for (let i = 0; i < 4; i++) more[`f${i + 1}`] = noise(5000 + i * 70_001, 100 + i)
    for (let i = 0; i < 6; i++) more[`cut/g${i}`] = noise(1000 + i * 41_000, 200 + i)
    const second = writeFiles(primary.mnt, more)
    t.ok(Date.now() - writesBegan < 5000, `writes during the cut completed locally in ${Date.now() - writesBegan} ms`)
    t.same(digests(primary.mnt), { ...first, ...second }, 'the primary\'s mount has the new content')
    const st = await waitFor('the primary to see the peer gone', async () => await status(primary), s => !s.replication.connected, 15_000)
    t.comment(`the primary said not connected ${Date.now() - cutAt} ms after the cut (phase ${st.replication.phase})`)
    t.notOk(st.replication.connected, 'primary status: not connected')
    t.ok(st.seq > (st.replication.ackedSeq ?? -1), `primary status: seq ${st.seq} ahead of ackedSeq ${String(st.replication.ackedSeq)}`)
    const ss = await waitFor('the secondary to see the primary gone', async () => await status(secondary), s => !s.replication.connected, 15_000)
    t.equal(ss.replication.appliedSeq, seqBefore, `secondary applied nothing during the cut (appliedSeq ${String(seqBefore)})`)
    t.same(digests(secondary.mnt), first, 'the secondary\'s mount still shows the content from before the cut')
  })

  await t.test('link healed: the primary resumes from the secondary\'s last record (no full copy); verify says identical', async t => {
    const mark = primary.logs().length
    const healAt = Date.now()
    await h.heal()
    t.same(h.linkState(), { a: 'UP', b: 'UP' }, 'both ends of the veth pair are up')
    await waitCaughtUp(primary, 30_000)
    t.comment(`caught up ${Date.now() - healAt} ms after the heal`)
    const since = primary.logs().slice(mark)
    t.match(since, /secondary connected; resuming/, 'primary log: resumed')
    t.notMatch(since, /full copy/, 'primary log: no full copy')
    const v = await primary.cli(['verify', primary.mnt], 60_000)
    t.equal(v.code, 0, `replfs verify exits 0 (${v.stdout.trim().split('\n')[0]})`)
    t.match(v.stdout, /seq \d+: identical/, 'verify says identical')
    const a = digests(primary.mnt)
    t.same(digests(secondary.mnt), a, `same digests on both mounts (${Object.keys(a).length} files)`)
    // (no hard links here, so the primary's 1 s attribute cache cannot show a stale size or nlink)
    t.same(diffSnapshots(treeSnapshot(primary.mnt), treeSnapshot(secondary.mnt)), [], 'same trees: names, modes, sizes, xattrs')
  })
  t.comment(`scenario took ${((Date.now() - began) / 1000).toFixed(1)} s`)
})

t.test('a link cut in the middle of a resync: after the heal it goes on from what the target holds, and the changed bytes cross about once', async t => {
  const began = Date.now()
  const h = await twoHosts(t)
  hostsMade.push(h)
  const { primary: a, secondary: b } = await startHostPair(h, { mode: 'async', peerTimeout: 2, primaryArgs: ['--journal-size', '64M'] })
  nodes.push(a, b)
  writeFiles(a.mnt, { 'base/f0': noise(4 * MiB, 1), 'base/f1': noise(3 * MiB, 2) })
  await waitCaughtUp(a, 60_000)
  await b.stop()
  // 160 MiB new on A while B is away: more than A's journal holds, so B resyncs by digest ranges.
  const changed = 160 * MiB
  for (let i = 0; i < 16; i++) writeFiles(a.mnt, { [`new/g${i}`]: noise(changed / 16, 100 + i) })
  const tc = h.a.exec(['tc', 'qdisc', 'add', 'dev', h.a.veth, 'root', 'tbf', 'rate', '200mbit', 'burst', '256kb', 'latency', '200ms'])
  t.equal(tc.code, 0, `A's end of the link shaped to 200 Mbit/s${tc.code === 0 ? '' : `: ${tc.stderr}`}`)
  await b.restart()
  const mid = await waitFor('B to be resyncing with 56 MiB received', async () => await resyncOf(b),
    x => x.phase === 'resyncing' && (x.resync?.bytesReceived ?? 0) > 56 * MiB, 120_000, 25)
  h.cut()
  const cutAt = await waitFor('B to see the link gone', async () => await resyncOf(b), x => x.phase === 'disconnected', 30_000)
  const first = Math.max(mid.resync?.bytesReceived ?? 0, cutAt.resync?.bytesReceived ?? 0)
  t.comment(`link cut with ${(first / MiB).toFixed(1)} MiB of the resync received`)
  t.ok((mid.resync?.bytesRemaining ?? 0) > 0, `B's status in the middle: ${((mid.resync?.bytesRemaining ?? 0) / MiB).toFixed(1)} MiB still to come`)
  t.equal(h.a.exec(['tc', 'qdisc', 'del', 'dev', h.a.veth, 'root']).code, 0, 'the link is no longer shaped')
  await h.heal()
  await waitCaughtUp(a, 120_000)
  t.match(b.logs(), /an interrupted resync staged data here: this one goes on from it/, 'B\'s log: the second resync goes on from the first')
  const done = await resyncOf(b)
  t.ok(done.resync?.phase === 'done' && done.resync.bytesRemaining === 0, 'B\'s status after it: resync done, nothing still to come')
  const second = logged(b, 'resync by difference received and checked', 'bytesReceived')
  t.comment(`second attempt received ${(second / MiB).toFixed(1)} MiB; ${(changed / MiB).toFixed(0)} MiB changed`)
  t.ok(second <= changed - 48 * MiB, `the second attempt received ${(second / MiB).toFixed(1)} MiB: not again what the first one staged (${(first / MiB).toFixed(1)} MiB)`)
  t.ok(first + second <= 1.1 * changed + 8 * MiB, `both attempts together ${((first + second) / MiB).toFixed(1)} MiB for ${changed / MiB} MiB changed`)
  const v = await a.cli(['verify', a.mnt], 120_000)
  t.equal(v.code, 0, `replfs verify exits 0 (${v.stdout.trim().split('\n')[0]})`)
  t.same(diffSnapshots(treeSnapshot(a.mnt), treeSnapshot(b.mnt)), [], 'same trees on both hosts: names, modes, sizes, digests')
  t.comment(`scenario took ${((Date.now() - began) / 1000).toFixed(1)} s`)
})

t.test('nothing is left behind: no namespace, veth, mount or node process', async t => {
  t.equal(hostsMade.length, 2, 'both scenarios made their hosts')
  const listed = netnsList()
  const links = fs.readdirSync('/sys/class/net')
  for (const h of hostsMade) {
    t.notOk(listed.includes(h.a.ns) || listed.includes(h.b.ns), `ip netns list has neither ${h.a.ns} nor ${h.b.ns}`)
    t.notOk(links.includes(h.a.veth) || links.includes(h.b.veth), `no veth of the pair ${h.a.veth}/${h.b.veth} in the root namespace`)
    t.notOk(fs.existsSync(h.base), `the temp dir ${h.base} is removed`)
  }
  for (const n of nodes) {
    t.notOk(isMounted(n.mnt), `${n.role} mount ${n.mnt} is gone`)
    t.ok(n.m.child.exitCode !== null || n.m.child.signalCode !== null, `${n.role} process ${String(n.m.child.pid)} has exited`)
  }
})
