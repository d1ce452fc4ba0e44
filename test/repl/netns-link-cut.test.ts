import t from 'tap'
t.setTimeout(180_000)
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { isMounted } from '../helpers/mount.js'
import { netnsList, startHostPair, twoHosts, writeFiles, noise, type HostNode, type TwoHosts } from '../helpers/netns.js'
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


let hosts: TwoHosts | null = null
let nodes: HostNode[] = []

t.test('two netns hosts: a cut link leaves the primary writable, healing it resumes replication', async t => {
  const began = Date.now()
  hosts = await twoHosts(t)
  const h = hosts
  t.comment(`namespaces ${h.a.ns} (${h.a.addr}) and ${h.b.ns} (${h.b.addr}), veth ${h.a.veth}/${h.b.veth}`)
  const pair = await startHostPair(h, { mode: 'async', peerTimeout: 2 })
  const { primary, secondary } = pair
  nodes = [primary, secondary]

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

t.test('nothing is left behind: no namespace, veth, mount or node process', async t => {
  t.ok(hosts !== null, 'the hosts were created')
  if (hosts === null) return
  const h = hosts
  const listed = netnsList()
  t.notOk(listed.includes(h.a.ns) || listed.includes(h.b.ns), `ip netns list has neither ${h.a.ns} nor ${h.b.ns}`)
  const links = fs.readdirSync('/sys/class/net')
  t.notOk(links.includes(h.a.veth) || links.includes(h.b.veth), 'no veth of the pair in the root namespace')
  for (const n of nodes) {
    t.notOk(isMounted(n.mnt), `${n.role} mount ${n.mnt} is gone`)
    t.ok(n.m.child.exitCode !== null || n.m.child.signalCode !== null, `${n.role} process ${String(n.m.child.pid)} has exited`)
  }
  t.notOk(fs.existsSync(h.base), 'the temp dir is removed')
})
