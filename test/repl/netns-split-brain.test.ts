import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { cli, isMounted } from '../helpers/mount.js'
import { controlStatus, netnsList, startHostPair, twoHosts, writeFiles, noise, type HostNode, type TwoHosts } from '../helpers/netns.js'
import { diffSnapshots, status, treeSnapshot, waitCaughtUp, waitFor, type Entry, type ReplStatus } from '../helpers/replicated.js'

t.setTimeout(900_000)

// Failover on two real hosts (network namespaces joined by a veth pair, real replfs processes):
// a split brain is detected when the cut link heals, and resolved by an operator (demote --force)
// or by a policy given at mount, with the yielding side's writes kept as a read-only diverged
// snapshot on both hosts (also when the link fails during that snapshot's pass); and a resync
// whose source dies half-way leaves its target as it was.

const MiB = 1 << 20
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** path -> sha256 of every regular file under dir, at any depth (`.snapshots` is not listed in a root). */
function digests (dir: string, rel = ''): Record<string, string> {
  const out: Record<string, string> = {}
  for (const d of fs.readdirSync(join(dir, rel), { withFileTypes: true })) {
    const p = rel === '' ? d.name : `${rel}/${d.name}`
    if (d.isDirectory()) Object.assign(out, digests(dir, p))
    else if (d.isFile()) out[p] = sha(fs.readFileSync(join(dir, p)))
  }
  return out
}


type Status = Awaited<ReturnType<typeof status>> & { readOnly: boolean, replication: ReplStatus & { splitBrain?: boolean, fenced?: boolean, resync?: Resync | null, generation?: { id: string } | null } }
interface Resync { phase: string, ranges: number, rangesDiffering: number, bytesReceived: number, bytesSent: number }

const st = async (n: HostNode): Promise<Status> => await status(n) as Status

const quickStatus = async (n: HostNode): Promise<Status> => await controlStatus(n) as Status

async function cliJson<T> (n: HostNode, args: string[], t: Test, what: string): Promise<T> {
  const r = await n.cli(args, 60_000)
  t.equal(r.code, 0, `${what}: replfs ${args[0]} exits 0${r.code === 0 ? '' : ` (${r.stderr.trim()})`}`)
  return JSON.parse(r.stdout === '' ? 'null' : r.stdout) as T
}

interface SnapInfo { name: string, seq: number, writable: boolean, diverged?: true }

const diverged = async (n: HostNode, t: Test): Promise<SnapInfo[]> =>
  (await cliJson<SnapInfo[]>(n, ['snapshot', 'list', n.mnt, '--json'], t, `${n.host.name}`)).filter(s => s.name.startsWith('diverged-'))

/** The error code `fn` fails with ('none' when it does not fail). */
function failure (fn: () => unknown): string {
  try {
    fn()
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? 'no code'
  }
  return 'none'
}

/** Every kind of change aimed at a read-only snapshot directory, each with the code it got. */
function changesRefused (dir: string): Record<string, string> {
  return {
    create: failure(() => fs.writeFileSync(join(dir, 'new-file'), 'x')),
    overwrite: failure(() => fs.writeFileSync(join(dir, 'common.txt'), 'x')),
    append: failure(() => fs.appendFileSync(join(dir, 'common.txt'), 'x')),
    truncate: failure(() => fs.truncateSync(join(dir, 'common.txt'), 1)),
    mkdir: failure(() => fs.mkdirSync(join(dir, 'new-dir'))),
    unlink: failure(() => fs.unlinkSync(join(dir, 'common.txt'))),
    rmdir: failure(() => fs.rmSync(join(dir, 'base'), { recursive: true })),
    rename: failure(() => fs.renameSync(join(dir, 'common.txt'), join(dir, 'renamed.txt'))),
    symlink: failure(() => fs.symlinkSync('common.txt', join(dir, 'link'))),
    chmod: failure(() => fs.chmodSync(join(dir, 'common.txt'), 0o600)),
    utimes: failure(() => fs.utimesSync(join(dir, 'common.txt'), 1, 1))
  }
}

const hostsMade: TwoHosts[] = []
const nodesMade: HostNode[] = []

interface Split {
  h: TwoHosts
  a: HostNode
  b: HostNode
  /** what each mount holds when the link is healed */
  aState: Record<string, string>
  bState: Record<string, string>
  /** seq at which they last agreed */
  agreed: number
}

/**
 * A = primary, B = secondary (async, --peer-timeout 2); a base set written and acknowledged; the
 * link cut; B promoted with --force; different files written on each side and the common file
 * changed differently on each. Returns before the heal.
 */
async function splitBrain (t: Test, o: { args?: string[], aFiles: number, bFiles: number, bBigMiB?: number }): Promise<Split> {
  const h = await twoHosts(t)
  hostsMade.push(h)
  const { primary: a, secondary: b } = await startHostPair(h, { mode: 'async', peerTimeout: 2, primaryArgs: o.args, secondaryArgs: o.args })
  nodesMade.push(a, b)
  const base: Record<string, Buffer> = { 'common.txt': noise(40_000, 1) }
  for (let i = 0; i < 6; i++) base[`base/f${i}`] = noise(1000 + i * 97_003, 10 + i)
  const baseDigests = writeFiles(a.mnt, base)
  const caught = await waitCaughtUp(a, 30_000)
  t.equal(caught.ackedSeq, caught.seq, `B acknowledged every record of the base set (seq ${String(caught.seq)})`)
  t.same(digests(b.mnt), baseDigests, 'B holds the base set')
  const agreed = (await st(b)).replication.appliedSeq as number

  h.cut()
  await waitFor('A to see B gone', async () => await st(a), s => !s.replication.connected, 20_000)
  await waitFor('B to see A gone', async () => await st(b), s => !s.replication.connected, 20_000)
  const p = await cliJson<{ role: string, changed: boolean }>(b, ['promote', b.mnt, '--force', '--json'], t, 'B')
  t.equal(p.role, 'primary', 'promote --force on B: B is primary')
  const sb = await waitFor('B to take writes', async () => await st(b), s => !s.readOnly, 10_000)
  t.equal(sb.replication.role, 'primary', 'B status: role primary')

  const aw: Record<string, Buffer> = { 'common.txt': noise(55_555, 2) }
  for (let i = 0; i < o.aFiles; i++) aw[`a-only/x${i}`] = noise(2000 + i * 51_001, 100 + i)
  const bw: Record<string, Buffer> = { 'common.txt': noise(33_333, 3) }
  for (let i = 0; i < o.bFiles; i++) bw[`b-only/y${i}`] = noise(3000 + i * 77_003, 200 + i)
  for (let i = 0; i < (o.bBigMiB ?? 0) / 4; i++) bw[`b-big/z${i}`] = noise(4 * MiB, 400 + i)
  writeFiles(a.mnt, aw)
  writeFiles(b.mnt, bw)
  fs.rmSync(join(b.mnt, 'base/f1'))
  const aState = digests(a.mnt)
  const bState = digests(b.mnt)
  t.same(aState, { ...baseDigests, ...Object.fromEntries(Object.entries(aw).map(([k, v]) => [k, sha(v)])) }, 'A holds the base set and its own writes')
  t.notOk('base/f1' in bState, 'B removed base/f1 during the split')
  t.not(aState['common.txt'], bState['common.txt'], 'the common file differs between the sides')
  return { h, a, b, aState, bState, agreed }
}

/** Both sides end the resync equal, B's split-brain writes kept as one diverged snapshot on both. */
async function checkResolved (t: Test, s: Split, bView: Record<string, string>, bTree: Record<string, Entry>): Promise<{ name: string, caughtAt: number }> {
  const { a, b } = s
  const caught = await waitCaughtUp(a, 120_000)
  const caughtAt = Date.now()
  const v = await a.cli(['verify', a.mnt], 60_000)
  t.equal(v.code, 0, `replfs verify on A exits 0 (${v.stdout.trim().split('\n')[0]})`)
  t.match(v.stdout, /seq \d+: identical/, 'verify says identical')
  const r = caught.resync as Resync | null
  t.comment(`resync: ${JSON.stringify(r)}`)
  t.ok(r !== null && r.phase === 'done', 'A\'s status shows the resync done')

  const da = await diverged(a, t)
  const db = await diverged(b, t)
  t.equal(da.length, 1, `A lists one diverged snapshot (${da.map(x => x.name).join(', ')})`)
  t.same(db.map(x => x.name), da.map(x => x.name), 'B lists the same diverged snapshot')
  const name = da[0]?.name ?? 'none'
  t.ok(da[0]?.diverged === true && !da[0].writable, 'it is marked diverged and read-only')
  const snapTrees = [a, b].map(n => treeSnapshot(join(n.mnt, '.snapshots', name)))
  t.same(diffSnapshots(snapTrees[0], snapTrees[1]), [], 'the diverged snapshot\'s tree is the same on both hosts (modes, sizes, links, xattrs)')
  t.same(diffSnapshots(bTree, snapTrees[0]), [], 'and it is B\'s live tree from just before it yielded')
  for (const n of [a, b]) {
    t.same(digests(join(n.mnt, '.snapshots', name)), bView, `${n.host.name}: ${name} holds B's live view from the split (B's files, B's common.txt, without base/f1)`)
  }
  t.same(digests(a.mnt), s.aState, 'A\'s files are unchanged')
  t.same(digests(b.mnt), s.aState, 'B\'s live mount now equals A\'s')
  t.same(diffSnapshots(treeSnapshot(a.mnt), treeSnapshot(b.mnt)), [], 'same trees on both mounts: names, modes, sizes, xattrs')
  for (const n of [a, b]) {
    const got = changesRefused(join(n.mnt, '.snapshots', name))
    t.same(got, Object.fromEntries(Object.keys(got).map(k => [k, 'EROFS'])), `${n.host.name}${n === a ? ' (the writable primary)' : ''}: every change into the diverged snapshot gives EROFS`)
  }
  t.same(diffSnapshots(bTree, treeSnapshot(join(a.mnt, '.snapshots', name))), [], 'the snapshot is unchanged by those attempts')
  return { name, caughtAt }
}

t.test('split brain: detected on both sides, both stay writable, demote --force on B keeps B\'s writes as a diverged snapshot on both hosts', async t => {
  const began = Date.now()
  const s = await splitBrain(t, { aFiles: 5, bFiles: 4 })
  const { h, a, b } = s

  const healAt = Date.now()
  await h.heal()
  const sa = await waitFor('A to report split brain', async () => await st(a), x => x.replication.splitBrain === true, 30_000)
  const sbr = await waitFor('B to report split brain', async () => await st(b), x => x.replication.splitBrain === true, 30_000)
  t.comment(`split brain reported ${Date.now() - healAt} ms after the heal`)
  for (const [n, x] of [['A', sa], ['B', sbr]] as const) {
    t.equal(x.replication.lastError?.code, 'SPLIT_BRAIN', `${n} status: lastError code SPLIT_BRAIN`)
    t.equal(x.replication.role, 'primary', `${n} status: still primary`)
    t.notOk(x.readOnly, `${n} status: still writable`)
  }
  // Both keep refusing, not once, and say so all along: sample both until each has refused two
  // later connections, and every sample must say split brain.
  const seen = { a: new Set<string>(), b: new Set<string>() }
  const codes = { a: new Set<string>(), b: new Set<string>() }
  let samples = 0
  let notSplit: string[] = []
  await waitFor('each side to refuse two later connections', async () => {
    for (const [k, n] of [['a', a], ['b', b]] as const) {
      const x = await st(n)
      samples++
      const e = x.replication.lastError
      if (e !== null) { seen[k].add(e.at ?? ''); codes[k].add(e.code) }
      if (x.replication.splitBrain !== true || x.readOnly) notSplit.push(`${k}: splitBrain ${String(x.replication.splitBrain)} readOnly ${String(x.readOnly)} ${JSON.stringify(e)}`)
    }
    return null
  }, () => seen.a.size >= 3 && seen.b.size >= 3, 60_000, 100)
  notSplit = notSplit.slice(0, 5)
  t.same(notSplit, [], `every one of ${samples} status samples on both sides said splitBrain: true and writable`)
  t.same([...codes.a, ...codes.b], ['SPLIT_BRAIN', 'SPLIT_BRAIN'], 'every lastError seen meanwhile was SPLIT_BRAIN')
  const aAfter = writeFiles(a.mnt, { 'a-only/after-heal': noise(7777, 300) })
  const bAfter = writeFiles(b.mnt, { 'b-only/after-heal': noise(8888, 301) })
  s.aState = { ...s.aState, ...aAfter }
  const bView = { ...s.bState, ...bAfter }
  t.same(digests(a.mnt), s.aState, 'A took a write after the heal; nothing of B reached it')
  t.same(digests(b.mnt), bView, 'B took a write after the heal; nothing of A reached it')
  for (const n of [a, b]) t.ok(n.m.child.exitCode === null && n.m.child.signalCode === null, `${n.host.name}'s process is running`)

  const bTree = treeSnapshot(b.mnt)
  const demoteAt = Date.now()
  const d = await cliJson<{ role: string, changed: boolean }>(b, ['demote', b.mnt, '--force', '--json'], t, 'B')
  t.equal(d.role, 'secondary', 'demote --force on B: B is secondary')
  const { name, caughtAt } = await checkResolved(t, s, bView, bTree)
  t.comment(`caught up ${caughtAt - demoteAt} ms after the demote; snapshot ${name}`)
  const fa = await st(a)
  const fb = await st(b)
  t.equal(fa.replication.role, 'primary', 'A is primary')
  t.equal(fb.replication.role, 'secondary', 'B is secondary')
  t.notOk(fa.replication.splitBrain, 'A no longer reports split brain')
  t.notOk(fb.replication.splitBrain, 'B no longer reports split brain')

  // What B wrote alone is the operator's to take back: restore it from the snapshot on A.
  const rs = await a.cli(['snapshot', 'restore', a.mnt, name, '--path', 'b-only'], 60_000)
  t.equal(rs.code, 0, `snapshot restore --path b-only from ${name} on A exits 0${rs.code === 0 ? '' : `: ${rs.stderr.trim()}`}`)
  const bOnly = Object.fromEntries(Object.entries(bView).filter(([k]) => k.startsWith('b-only/')))
  const restored = { ...s.aState, ...bOnly }
  t.same(digests(a.mnt), restored, 'A now holds its own files and B\'s b-only/ from the split')
  await waitCaughtUp(a, 30_000)
  t.same(digests(b.mnt), restored, 'and so does B, through the stream')
  const v = await a.cli(['verify', a.mnt], 60_000)
  t.match(v.stdout, /seq \d+: identical/, 'verify says identical after the restore')
  t.comment(`scenario took ${((Date.now() - began) / 1000).toFixed(1)} s`)
})

t.test('split brain with --after-split-brain discard-least-changes: the side with fewer records yields by itself after the heal', async t => {
  const began = Date.now()
  const s = await splitBrain(t, { args: ['--after-split-brain', 'discard-least-changes'], aFiles: 12, bFiles: 2 })
  const { h, a, b } = s
  const [sa, sb] = [await st(a), await st(b)]
  const aRecs = sa.seq - s.agreed
  const bRecs = sb.seq - s.agreed
  t.ok(bRecs < aRecs, `B wrote fewer records during the split (${bRecs}) than A (${aRecs})`)

  const bTree = treeSnapshot(b.mnt)
  const healAt = Date.now()
  await h.heal()
  const yielded = await waitFor('B to yield and become secondary', async () => await st(b), x => x.replication.role === 'secondary', 60_000)
  t.equal(yielded.replication.role, 'secondary', 'B demoted itself')
  const { name, caughtAt } = await checkResolved(t, s, s.bState, bTree)
  t.comment(`caught up ${caughtAt - healAt} ms after the heal; snapshot ${name}`)
  t.equal((await st(a)).replication.role, 'primary', 'A is still primary')
  t.notOk((await st(a)).readOnly, 'A is writable')
  t.match(b.logs(), /the peer is newer: this node becomes its secondary/, 'B\'s log: it yielded on its own')
  t.comment(`scenario took ${((Date.now() - began) / 1000).toFixed(1)} s`)
})

t.test('the link fails during the diverged-snapshot pass: the resync starts again and still leaves one complete diverged snapshot', async t => {
  const began = Date.now()
  const s = await splitBrain(t, { aFiles: 3, bFiles: 3, bBigMiB: 48 })
  const { h, a, b } = s
  await h.heal()
  await waitFor('both to report split brain', async () => [await st(a), await st(b)], x => x.every(y => y.replication.splitBrain === true), 30_000)
  const bTree = treeSnapshot(b.mnt)
  // Shape B's side (B sends its diverged writes to A in this pass) so the pass can be caught.
  const tc = h.b.exec(['tc', 'qdisc', 'add', 'dev', h.b.veth, 'root', 'tbf', 'rate', '100mbit', 'burst', '256kb', 'latency', '200ms'])
  t.equal(tc.code, 0, `B's end of the link shaped to 100 Mbit/s${tc.code === 0 ? '' : `: ${tc.stderr}`}`)
  const demoteAt = Date.now()
  await cliJson(b, ['demote', b.mnt, '--force', '--json'], t, 'B')
  const mid = await waitFor('A to be in the diverged pass with data arriving', async () => await quickStatus(a),
    x => x.replication.resync?.phase === 'diverged' && x.replication.resync.bytesReceived > 8 * MiB, 120_000, 25)
  t.comment(`A in the diverged pass ${Date.now() - demoteAt} ms after the demote: ${JSON.stringify(mid.replication.resync)}`)
  h.cut()
  await waitFor('A to see B gone', async () => await st(a), x => !x.replication.connected, 20_000)
  const half = await diverged(a, t)
  t.equal(half.length, 1, `after the cut A holds the half-filled snapshot ${half[0]?.name ?? '(none)'}`)
  t.equal(h.b.exec(['tc', 'qdisc', 'del', 'dev', h.b.veth, 'root']).code, 0, 'the link is no longer shaped')
  const healAt = Date.now()
  await h.heal()
  const { name, caughtAt } = await checkResolved(t, s, s.bState, bTree)
  t.comment(`caught up ${caughtAt - healAt} ms after the second heal; snapshot ${name}`)
  t.equal(name, half[0]?.name, 'the retry filled the snapshot the cut pass began (no second one)')
  t.match(a.logs(), /an earlier resync began this diverged snapshot: filling it again/, 'A\'s log: the snapshot was filled again')
  for (const n of [b, a]) {
    await n.stop()
    const f = cli(['fsck', '--store', n.store])
    t.equal(f.code, 0, `${n.host.name}: replfs fsck exits 0 after a clean stop: ${f.stdout.trim().split('\n').pop() ?? ''}${f.code === 0 ? '' : `\n${f.stdout}${f.stderr}`}`)
  }
  t.comment(`scenario took ${((Date.now() - began) / 1000).toFixed(1)} s`)
})

t.test('the source dies in the middle of a resync: the target keeps its old state, readable, promotable and fsck-clean; the old primary then yields its writes as a diverged snapshot', async t => {
  const began = Date.now()
  const h = await twoHosts(t)
  hostsMade.push(h)
  const { primary: a, secondary: b } = await startHostPair(h, { mode: 'async', peerTimeout: 2, primaryArgs: ['--journal-size', '64M'] })
  nodesMade.push(a, b)
  const base: Record<string, Buffer> = {}
  for (let i = 0; i < 16; i++) base[`base/d${i % 4}/f${i}`] = noise(MiB + i * 123_457, 1 + i)
  writeFiles(a.mnt, base)
  await waitCaughtUp(a, 60_000)
  const before = treeSnapshot(b.mnt)
  const seqBefore = (await st(b)).replication.appliedSeq as number
  t.ok(Object.keys(before).length > 16, `B's tree recorded (${Object.keys(before).length} paths, seq ${seqBefore})`)
  await b.stop()

  // ~200 MiB written and changed on A while B is away: far more than A's 64 MiB journal holds.
  const writeAt = Date.now()
  const chunk = 8 * MiB
  for (let i = 0; i < 24; i++) writeFiles(a.mnt, { [`new/g${i}`]: noise(chunk, 1000 + i) })
  for (let i = 0; i < 16; i += 2) writeFiles(a.mnt, { [`base/d${i % 4}/f${i}`]: noise(MiB + i * 7, 5000 + i) })
  const aTree = treeSnapshot(a.mnt)
  const sa = await st(a)
  const journal = sa.replication.journal as { firstSeq: number, lastSeq: number, bytes: number }
  t.comment(`wrote ~200 MiB on A in ${Date.now() - writeAt} ms; A at seq ${sa.seq}, journal ${JSON.stringify(journal)}`)
  t.ok(journal.firstSeq > seqBefore + 1, `A's journal no longer reaches back to B's next record (${seqBefore + 1} < first ${journal.firstSeq})`)

  // Shape A's side of the link so the resync takes long enough to be caught in the middle.
  const tc = h.a.exec(['tc', 'qdisc', 'add', 'dev', h.a.veth, 'root', 'tbf', 'rate', '200mbit', 'burst', '256kb', 'latency', '200ms'])
  t.equal(tc.code, 0, `A's end of the link shaped to 200 Mbit/s${tc.code === 0 ? '' : `: ${tc.stderr}`}`)

  const restartAt = Date.now()
  await b.restart()
  const mid = await waitFor('B to be resyncing with data arriving', async () => await quickStatus(b),
    x => x.replication.phase === 'resyncing' && (x.replication.resync?.bytesReceived ?? 0) > 16 * MiB, 120_000, 25)
  t.comment(`B resyncing ${Date.now() - restartAt} ms after its start: ${JSON.stringify(mid.replication.resync)}`)
  await a.kill9()
  t.comment('A killed (-9) in the middle of the resync')
  const afterKill = await waitFor('B to see the source gone', async () => await st(b), x => !x.replication.connected, 20_000)
  t.equal(afterKill.replication.phase, 'disconnected', 'B status: disconnected')
  t.equal(afterKill.seq, seqBefore, `B is still at seq ${seqBefore}`)
  t.same(diffSnapshots(before, treeSnapshot(b.mnt)), [], 'B\'s mount is readable and its tree (sha256 of every file) is the one from before the resync')

  // What the resync staged stays aside (StagedResync.recover); promoting B drops it.
  await b.kill9()
  await b.restart()
  t.match(b.log(), /a resync was interrupted before its data was complete/, 'B restarted: the interrupted resync\'s data is kept aside, the old state served')
  t.equal((await st(b)).seq, seqBefore, `B restarted at seq ${seqBefore}`)
  t.same(diffSnapshots(before, treeSnapshot(b.mnt)), [], 'after the restart B\'s tree is still the one from before the resync')

  const p = await cliJson<{ role: string }>(b, ['promote', b.mnt, '--force', '--json'], t, 'B')
  t.equal(p.role, 'primary', 'promote --force on B works')
  await waitFor('B to take writes', async () => await st(b), x => !x.readOnly, 10_000)
  const mine = writeFiles(b.mnt, { 'after-failover.txt': noise(100_000, 9) })
  t.same(digests(b.mnt)['after-failover.txt'], mine['after-failover.txt'], 'B is writable: a new file reads back')
  await b.stop()
  t.notOk(isMounted(b.mnt), 'B unmounted')
  const f = cli(['fsck', '--store', b.store])
  t.equal(f.code, 0, `replfs fsck on B's store exits 0: ${f.stdout.trim().split('\n').pop() ?? ''}${f.code === 0 ? '' : `\n${f.stdout}${f.stderr}`}`)

  // The old primary comes back: both restarted primaries are fenced; B is forced, A's writes of
  // the time B was away (and B's since) are a split brain, and A yields to B by demote --force.
  t.equal(h.a.exec(['tc', 'qdisc', 'del', 'dev', h.a.veth, 'root']).code, 0, 'the link is no longer shaped')
  await b.restart()
  const fencedB = await st(b)
  t.ok(fencedB.replication.role === 'primary' && fencedB.replication.fenced === true && fencedB.readOnly, 'B restarted as a fenced primary (read-only)')
  await cliJson(b, ['promote', b.mnt, '--force', '--json'], t, 'B again')
  await waitFor('B to take writes', async () => await st(b), x => !x.readOnly, 10_000)
  const bTree = treeSnapshot(b.mnt)
  await a.restart()
  const fencedA = await waitFor('A (fenced) and B to refuse each other as split brain', async () => await st(a),
    x => x.replication.splitBrain === true, 60_000)
  t.ok(fencedA.replication.fenced === true && fencedA.readOnly, 'A restarted fenced: read-only, split brain reported')
  t.notOk((await st(b)).readOnly, 'B stays writable')
  const yieldAt = Date.now()
  await cliJson(a, ['demote', a.mnt, '--force', '--json'], t, 'A')
  const caught = await waitCaughtUp(b, 300_000)
  const r = caught.resync as Resync | null
  t.comment(`A yielded and resynced from B in ${Date.now() - yieldAt} ms: ${JSON.stringify(r)}`)
  // A already holds its diverged writes, now B's snapshot: they come back as copies, not again in full.
  t.ok(r !== null && r.bytesSent < r.bytesReceived / 4, `A's diverged writes crossed once: B took ${((r?.bytesReceived ?? 0) / MiB).toFixed(1)} MiB of them and sent A ${((r?.bytesSent ?? 0) / MiB).toFixed(1)} MiB back`)
  const at = (n: HostNode, msg: string): number => {
    const line = n.logs().split('\n').reverse().find(l => l.includes(`"msg":"${msg}"`))
    return line === undefined ? NaN : (JSON.parse(line) as { time: number }).time
  }
  const kept = at(b, 'the peer\'s diverged writes are kept as a read-only snapshot')
  t.comment(`diverged pass (A's writes into B's snapshot) ${kept - yieldAt} ms; resync back to A ${at(b, 'resync by difference sent') - kept} ms; A checked and swapped it in ${at(a, 'resync by difference received and checked') - at(b, 'resync by difference sent')} ms after`)
  const v = await b.cli(['verify', b.mnt], 120_000)
  t.equal(v.code, 0, `replfs verify on B exits 0 (${v.stdout.trim().split('\n')[0]})`)
  const da = await diverged(a, t)
  const db = await diverged(b, t)
  t.equal(db.length, 1, `B lists one diverged snapshot (${db.map(x => x.name).join(', ')})`)
  t.same(da.map(x => x.name), db.map(x => x.name), 'A lists the same one')
  const name = db[0]?.name ?? 'none'
  for (const n of [a, b]) t.same(diffSnapshots(aTree, treeSnapshot(join(n.mnt, '.snapshots', name))), [], `${n.host.name}: ${name} holds A's ~200 MiB of writes from while B was away`)
  t.same(diffSnapshots(bTree, treeSnapshot(b.mnt)), [], 'B\'s live tree is unchanged')
  t.same(diffSnapshots(bTree, treeSnapshot(a.mnt)), [], 'A\'s live tree now equals B\'s')
  t.comment(`scenario took ${((Date.now() - began) / 1000).toFixed(1)} s`)
})

t.test('nothing is left behind: no namespace, mount or node process', async t => {
  const listed = netnsList()
  for (const h of hostsMade) t.notOk(listed.includes(h.a.ns) || listed.includes(h.b.ns), `neither ${h.a.ns} nor ${h.b.ns} is listed`)
  for (const n of nodesMade) {
    t.notOk(isMounted(n.mnt), `${n.host.name} ${n.role} mount is gone`)
    t.ok(n.m.child.exitCode !== null || n.m.child.signalCode !== null, `${n.host.name} ${n.role} process has exited`)
  }
})
