import t from 'tap'
import * as fs from 'node:fs'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { cli, mountVolume, shr } from '../helpers/mount.js'
import { cliAsync, diffSnapshots, sleep, startPair, status, treeSnapshot, verify, waitCaughtUp, type Node } from '../helpers/replicated.js'
import { pattern } from '../helpers/workload.js'

t.setTimeout(120_000)

/** A subtest, as t.test hands it to its callback. */
type TapTest = Parameters<Parameters<typeof t.test>[0]>[0]

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

function errCode (fn: () => unknown): string {
  try { fn(); return 'no error' } catch (err) { return (err as NodeJS.ErrnoException).code ?? String(err) }
}

t.test('snapshot commands on a mount, read through .snapshots/NAME', async t => {
  // attr-timeout 0: after a restore the kernel must not show cached names (a documented limit otherwise)
  const m = await mountVolume(t, { extraArgs: ['--attr-timeout', '0'] })
  const env = { REPLFS_RUN_DIR: m.runDir }
  const run = (...args: string[]): ReturnType<typeof cli> => cli(args, env)
  const v1 = pattern(300_000, 1)
  fs.writeFileSync(join(m.mnt, 'A'), v1)
  fs.mkdirSync(join(m.mnt, 'dir'))
  fs.writeFileSync(join(m.mnt, 'dir/B'), 'bee\n')
  fs.symlinkSync('../A', join(m.mnt, 'dir/lnk'))

  const c = run('snapshot', 'create', m.mnt, 's1')
  t.equal(c.code, 0, `create: ${c.stdout}${c.stderr}`)
  t.match(c.stdout, /created snapshot s1 at seq \d+/)
  const l = run('snapshot', 'list', m.mnt, '--json')
  t.equal(l.code, 0, 'list --json')
  const list = JSON.parse(l.stdout) as Array<{ name: string, seq: number, created: string, writable: boolean, layers: number }>
  t.equal(list.length, 1)
  t.same(Object.keys(list[0]).sort(), ['created', 'heldBytes', 'layers', 'name', 'seq', 'writable'])
  t.equal((list[0] as { heldBytes?: number }).heldBytes, 0, 'nothing changed since: the snapshot alone holds nothing')
  t.equal(list[0].name, 's1')
  t.equal(list[0].writable, false)
  t.ok(Number.isInteger(list[0].seq) && list[0].seq > 0, `seq ${list[0].seq}`)
  t.ok(Math.abs(Date.parse(list[0].created) - Date.now()) < 60_000, `created ${list[0].created}`)
  const plain = run('snapshot', 'list', m.mnt)
  t.equal(plain.code, 0)
  t.match(plain.stdout, /^s1\s+\d+\s+\S+\s+ro\s+0 B$/m, 'plain list shows s1 ro, holding 0 B')

  const S = join(m.mnt, '.snapshots', 's1')
  const snapTree = treeSnapshot(S)
  // change the live volume
  fs.writeFileSync(join(m.mnt, 'A'), pattern(200_000, 2))
  fs.unlinkSync(join(m.mnt, 'dir/B'))
  fs.writeFileSync(join(m.mnt, 'C'), 'sea')
  t.ok(fs.readFileSync(join(S, 'A')).equals(v1), 'A reads v1 in the snapshot')
  t.equal(fs.readFileSync(join(S, 'dir/B'), 'utf8'), 'bee\n', 'B still in the snapshot')
  t.equal(fs.readlinkSync(join(S, 'dir/lnk')), '../A', 'symlink in the snapshot')
  t.notOk(fs.existsSync(join(S, 'C')), 'C not in the snapshot')
  t.same(treeSnapshot(S), snapTree, 'the snapshot did not change')

  t.test('read-only: EROFS for changes under .snapshots', async t => {
    t.equal(errCode(() => fs.writeFileSync(join(S, 'new'), 'x')), 'EROFS', 'create')
    t.equal(errCode(() => fs.openSync(join(S, 'A'), 'r+')), 'EROFS', 'open O_RDWR')
    t.equal(errCode(() => fs.unlinkSync(join(S, 'A'))), 'EROFS', 'unlink')
    t.equal(errCode(() => fs.mkdirSync(join(S, 'd2'))), 'EROFS', 'mkdir inside')
    t.equal(errCode(() => fs.mkdirSync(join(m.mnt, '.snapshots', 'x'))), 'EROFS', 'mkdir in .snapshots')
    t.equal(errCode(() => fs.mkdirSync(join(m.mnt, '.snapshots'))), 'EEXIST', 'mkdir .snapshots: it exists')
    t.equal(errCode(() => fs.renameSync(join(S, 'A'), join(m.mnt, 'out'))), 'EROFS', 'rename out of')
    t.equal(errCode(() => fs.renameSync(join(m.mnt, 'C'), join(S, 'in'))), 'EROFS', 'rename into')
    t.equal(errCode(() => fs.chmodSync(join(S, 'A'), 0o600)), 'EROFS', 'chmod')
    t.equal(errCode(() => fs.truncateSync(join(S, 'A'), 0)), 'EROFS', 'truncate')
    t.equal(errCode(() => fs.rmdirSync(S)), 'EROFS', 'rmdir the snapshot')
    const x = shr(`setfattr -n user.x -v 1 '${join(S, 'A')}'`)
    t.not(x.code, 0, 'setfattr fails')
    t.match(x.stderr, /Read-only file system/, 'setfattr: EROFS')
    t.ok(fs.readFileSync(join(S, 'A')).equals(v1), 'still v1')
  })

  t.test('.snapshots is hidden from ls but can be entered', async t => {
    const ls = shr(`ls -a '${m.mnt}'`)
    t.equal(ls.code, 0)
    t.notOk(ls.stdout.split('\n').includes('.snapshots'), `ls -a: ${ls.stdout.trim().replace(/\n/g, ' ')}`)
    const ls2 = shr(`ls '${join(m.mnt, '.snapshots')}'`)
    t.equal(ls2.code, 0)
    t.same(ls2.stdout.trim().split('\n'), ['s1'])
    t.same(fs.readdirSync(S).sort(), ['A', 'dir'])
    const st = fs.statSync(S)
    t.ok(st.isDirectory())
    t.ok(st.ino >= 2 ** 36, `snapshot inode ${st.ino} is numbered apart`)
  })

  t.test('restore, refresh, delete', async t => {
    const r = run('snapshot', 'restore', m.mnt, 's1')
    t.equal(r.code, 0, `restore: ${r.stdout}${r.stderr}`)
    t.match(r.stdout, /restored .* from snapshot s1/)
    t.ok(fs.readFileSync(join(m.mnt, 'A')).equals(v1), 'live A is v1 again')
    t.equal(fs.readFileSync(join(m.mnt, 'dir/B'), 'utf8'), 'bee\n', 'B back')
    t.notOk(fs.existsSync(join(m.mnt, 'C')), 'C gone')
    t.same(diffSnapshots(treeSnapshot(m.mnt), snapTree), [], 'live tree equals the snapshot')
    // refresh
    fs.writeFileSync(join(m.mnt, 'D'), pattern(70_000, 4))
    fs.appendFileSync(join(m.mnt, 'A'), 'tail')
    const f = run('snapshot', 'refresh', m.mnt, 's1')
    t.equal(f.code, 0, `refresh: ${f.stdout}${f.stderr}`)
    t.same(diffSnapshots(treeSnapshot(S), treeSnapshot(m.mnt)), [], 'snapshot equals live after refresh')
    t.ok(fs.readFileSync(join(S, 'D')).equals(pattern(70_000, 4)), 'D in the snapshot')
    const list2 = JSON.parse(run('snapshot', 'list', m.mnt, '--json').stdout) as Array<{ seq: number }>
    t.ok(list2[0].seq > list[0].seq, 'refresh moved the seq')
    // errors
    const dup = run('snapshot', 'create', m.mnt, 's1')
    t.not(dup.code, 0, 'duplicate create fails')
    t.match(dup.stderr, /exists/)
    const bad = run('snapshot', 'create', m.mnt, 'a/b')
    t.not(bad.code, 0, 'bad name fails')
    const miss = run('snapshot', 'delete', m.mnt, 'nope')
    t.not(miss.code, 0, 'delete of a missing snapshot fails')
    t.match(miss.stderr, /no snapshot named nope/)
    // delete
    fs.writeFileSync(join(m.mnt, 'D'), pattern(70_000, 5)) // the snapshot alone holds D's old 70 000 bytes
    const d = run('snapshot', 'delete', m.mnt, 's1')
    t.equal(d.code, 0, `delete: ${d.stdout}${d.stderr}`)
    const freed = Number(/; (\d+) bytes freed/.exec(d.stdout)?.[1])
    t.ok(freed >= 70_000, `${freed} bytes freed`)
    t.same(fs.readdirSync(join(m.mnt, '.snapshots')), [], '.snapshots is empty')
    t.notOk(fs.existsSync(S), 'the snapshot is gone')
    t.same(JSON.parse(run('snapshot', 'list', m.mnt, '--json').stdout), [])
  })

  t.test('fsck of the store is clean after it all', async t => {
    await m.stop()
    const r = cli(['fsck', '--store', m.store])
    t.equal(r.code, 0, `fsck: ${r.stdout}${r.stderr}`)
  })
})

/** sha256 of every file under dir, by relative path. */
function fileHashes (dir: string): Record<string, string> {
  const out: Record<string, string> = {}
  const walk = (rel: string): void => {
    for (const e of fs.readdirSync(join(dir, rel), { withFileTypes: true })) {
      const r = rel === '' ? e.name : join(rel, e.name)
      if (e.isDirectory()) walk(r)
      else if (e.isFile()) out[r] = sha(fs.readFileSync(join(dir, r)))
    }
  }
  walk('')
  return out
}

/** A replicated pair with CLI and verify helpers bound to it. */
async function replicatedPair (t: TapTest): Promise<{
  pair: Awaited<ReturnType<typeof startPair>>
  P: string
  Sm: string
  run: (n: Node, ...args: string[]) => Promise<{ code: number | null, stdout: string, stderr: string }>
  verifyOk: (what: string) => Promise<void>
}> {
  const pair = await startPair(t, { primaryArgs: ['--attr-timeout', '0'] })
  return {
    pair,
    P: pair.primary.mnt,
    Sm: pair.secondary.mnt,
    run: async (n, ...args) => await cliAsync(args, { REPLFS_RUN_DIR: n.runDir }),
    verifyOk: async what => {
      await waitCaughtUp(pair.primary)
      const v = await verify(pair.primary)
      t.equal(v.code, 0, `verify after ${what}: ${v.output.trim().split('\n')[0]}`)
    }
  }
}

t.test('names the kernel still caches after a restore behave as on a local filesystem: O_CREAT creates, the rest get ENOENT', async t => {
  // A long entry timeout: the kernel surely keeps the old names' dentries across the restore.
  const m = await mountVolume(t, { extraArgs: ['--attr-timeout', '30'] })
  const run = (...args: string[]): ReturnType<typeof cli> => cli(args, { REPLFS_RUN_DIR: m.runDir })
  fs.writeFileSync(join(m.mnt, 'kept'), 'kept v1')
  t.equal(run('snapshot', 'create', m.mnt, 'base').code, 0)
  for (const n of ['probe', 'gone', 'gone2', 'gone3']) fs.writeFileSync(join(m.mnt, n), `${n} before`)
  fs.mkdirSync(join(m.mnt, 'dir'))
  for (const n of ['probe', 'gone', 'gone2', 'gone3', 'dir']) fs.statSync(join(m.mnt, n)) // cached now
  const r = run('snapshot', 'restore', m.mnt, 'base')
  t.equal(r.code, 0, `restore: ${r.stdout}${r.stderr}`)

  fs.writeFileSync(join(m.mnt, 'probe'), 'probe after')
  t.equal(fs.readFileSync(join(m.mnt, 'probe'), 'utf8'), 'probe after', 'writeFile (O_CREAT|O_TRUNC) on a cached name creates the file')
  t.equal(errCode(() => fs.readFileSync(join(m.mnt, 'gone'))), 'ENOENT', 'opening a cached name for reading: ENOENT, not ESTALE')
  t.equal(errCode(() => fs.unlinkSync(join(m.mnt, 'gone2'))), 'ENOENT', 'unlink of a cached name: ENOENT')
  t.equal(errCode(() => fs.chmodSync(join(m.mnt, 'gone3'), 0o600)), 'ENOENT', 'chmod of a cached name: ENOENT')
  fs.mkdirSync(join(m.mnt, 'dir'))
  t.ok(fs.statSync(join(m.mnt, 'dir')).isDirectory(), 'mkdir of a name cached as a removed directory makes it')
  t.equal(fs.readFileSync(join(m.mnt, 'kept'), 'utf8'), 'kept v1')
})

t.test('replicated pair: snapshot commands reach the secondary', async t => {
  const { pair, P, Sm, run, verifyOk } = await replicatedPair(t)
  fs.mkdirSync(join(P, 'd'))
  for (let i = 0; i < 8; i++) fs.writeFileSync(join(P, i % 2 === 0 ? 'd' : '', `f${i}`), pattern(50_000 * (i + 1), i))
  const c = await run(pair.primary, 'snapshot', 'create', P, 'snap')
  t.equal(c.code, 0, `create on the primary: ${c.stderr}`)
  await verifyOk('create')
  const hp = fileHashes(join(P, '.snapshots/snap'))
  t.equal(Object.keys(hp).length, 8, '8 files in the snapshot')
  t.same(fileHashes(join(Sm, '.snapshots/snap')), hp, 'secondary snapshot files byte-identical (sha256)')
  const [lp, ls] = [await run(pair.primary, 'snapshot', 'list', P, '--json'), await run(pair.secondary, 'snapshot', 'list', Sm, '--json')]
  t.equal(ls.code, 0, 'list works on the secondary')
  t.same(JSON.parse(ls.stdout), JSON.parse(lp.stdout), 'same list on both')

  for (const op of ['create', 'delete', 'restore', 'refresh']) {
    const r = await run(pair.secondary, 'snapshot', op, Sm, op === 'create' ? 'other' : 'snap')
    t.not(r.code, 0, `${op} on the secondary fails`)
    t.match(r.stderr, /primary/, `${op}: the message names the primary`)
  }

  // change, restore, refresh, delete: each replicated, verified
  for (let i = 0; i < 8; i += 3) fs.writeFileSync(join(P, i % 2 === 0 ? 'd' : '', `f${i}`), pattern(1000, 100 + i))
  fs.writeFileSync(join(P, 'extra'), pattern(100_000, 77))
  await verifyOk('changes')
  const r = await run(pair.primary, 'snapshot', 'restore', P, 'snap')
  t.equal(r.code, 0, `restore: ${r.stderr}`)
  await verifyOk('restore')
  t.same(fileHashes(P), hp, 'primary live = snapshot')
  t.same(fileHashes(Sm), hp, 'secondary live = snapshot')
  fs.writeFileSync(join(P, 'after'), 'after restore')
  const f = await run(pair.primary, 'snapshot', 'refresh', P, 'snap')
  t.equal(f.code, 0, `refresh: ${f.stderr}`)
  await verifyOk('refresh')
  t.equal(fs.readFileSync(join(Sm, '.snapshots/snap/after'), 'utf8'), 'after restore', 'refresh reached the secondary')
  t.same(fileHashes(join(Sm, '.snapshots/snap')), fileHashes(join(P, '.snapshots/snap')), 'snapshot identical after refresh')
  const d = await run(pair.primary, 'snapshot', 'delete', P, 'snap')
  t.equal(d.code, 0, `delete: ${d.stderr}`)
  await verifyOk('delete')
  t.same(fs.readdirSync(join(Sm, '.snapshots')), [], 'the secondary has no snapshot')
  t.same(JSON.parse((await run(pair.secondary, 'snapshot', 'list', Sm, '--json')).stdout), [])
  t.same(diffSnapshots(treeSnapshot(P), treeSnapshot(Sm)), [], 'live trees equal')
})

t.test('replicated pair: a writable snapshot written through the mount, and a --path restore, reach the secondary identical', async t => {
  const { pair, P, Sm, run, verifyOk } = await replicatedPair(t)
  fs.mkdirSync(join(P, 'site/img'), { recursive: true })
  fs.writeFileSync(join(P, 'site/index.html'), 'v1')
  fs.writeFileSync(join(P, 'site/img/logo'), pattern(400_000, 3))
  fs.writeFileSync(join(P, 'keep'), 'untouched')
  const c = await run(pair.primary, 'snapshot', 'create', P, 'w', '--writable')
  t.equal(c.code, 0, `create --writable: ${c.stderr}`)
  t.match(c.stdout, /created writable snapshot w/)

  const W = join(P, '.snapshots/w')
  fs.writeFileSync(join(W, 'site/index.html'), 'edited in the snapshot')
  fs.writeFileSync(join(W, 'site/new.txt'), pattern(70_000, 9))
  fs.mkdirSync(join(W, 'drafts'))
  fs.renameSync(join(W, 'site/new.txt'), join(W, 'drafts/new.txt'))
  t.equal(errCode(() => fs.renameSync(join(P, 'keep'), join(W, 'keep2'))), 'EXDEV', 'rename between live and the snapshot is EXDEV')
  t.equal(fs.readFileSync(join(P, 'site/index.html'), 'utf8'), 'v1', 'live is untouched by the snapshot\'s writes')
  await verifyOk('writes into the writable snapshot')
  t.same(fileHashes(join(Sm, '.snapshots/w')), fileHashes(W), 'the secondary\'s writable snapshot followed its writes (sha256 of every file)')
  t.equal(errCode(() => fs.writeFileSync(join(Sm, '.snapshots/w/x'), 'no')), 'EROFS', 'on the secondary it is read-only')

  // Damage the live site, then put back just site/ from the (edited) snapshot.
  fs.writeFileSync(join(P, 'site/index.html'), 'broken')
  fs.unlinkSync(join(P, 'site/img/logo'))
  fs.writeFileSync(join(P, 'site/stray'), 'added since')
  fs.writeFileSync(join(P, 'keep'), 'changed outside the path')
  const r = await run(pair.primary, 'snapshot', 'restore', P, 'w', '--path', 'site')
  t.equal(r.code, 0, `restore --path: ${r.stderr}`)
  await verifyOk('restore --path')
  t.same(fileHashes(join(P, 'site')), fileHashes(join(W, 'site')), 'the primary\'s site/ is the snapshot\'s site/')
  t.same(fileHashes(join(Sm, 'site')), fileHashes(join(W, 'site')), 'so is the secondary\'s')
  t.equal(fs.readFileSync(join(Sm, 'keep'), 'utf8'), 'changed outside the path', 'outside the path nothing was restored')
  t.same(diffSnapshots(treeSnapshot(P), treeSnapshot(Sm)), [], 'live trees equal')
  const miss = await run(pair.primary, 'snapshot', 'restore', P, 'w', '--path', 'nope')
  t.not(miss.code, 0)
  t.match(miss.stderr, /not in snapshot w/, 'a path missing in the snapshot is a clear error')
})

t.test('replicated pair: a snapshot taken while 3 writers run holds every write completed before it and none started after, identically on both hosts; a file restore, a delete that frees space and a 24 MiB restore under 4 KiB on the wire', async t => {
  const { pair, P, Sm, run, verifyOk } = await replicatedPair(t)
  const fsp = fs.promises
  for (let w = 0; w < 3; w++) fs.mkdirSync(join(P, `w${w}`))
  // Each writer writes whole files one after another; 'done' is when writeFile resolved.
  let phase: 'before' | 'during' | 'after' = 'before'
  const completedBefore = new Set<string>()
  const startedAfter = new Set<string>()
  let stop = false
  const writer = async (w: number): Promise<number> => {
    let i = 0
    for (; !stop; i++) {
      const name = `w${w}/f${String(i).padStart(4, '0')}`
      const startedIn = phase
      await fsp.writeFile(join(P, name), pattern(4096 + ((w * 7919 + i * 104729) % 60_000), w * 1000 + i))
      if (startedIn === 'after') startedAfter.add(name)
      if (phase === 'before') completedBefore.add(name)
    }
    return i
  }
  const writers = [0, 1, 2].map(writer)
  await sleep(700)
  phase = 'during'
  const c = await run(pair.primary, 'snapshot', 'create', P, 'busy')
  phase = 'after'
  await sleep(500)
  stop = true
  const written = await Promise.all(writers)
  t.equal(c.code, 0, `create while writing: ${c.stderr}`)
  t.ok(completedBefore.size > 10 && startedAfter.size > 10, `${completedBefore.size} files completed before the create, ${startedAfter.size} started after it returned (${written.join('+')} in all)`)

  const S = join(P, '.snapshots/busy')
  const inSnap = fileHashes(S)
  const missing = [...completedBefore].filter(n => inSnap[n] !== sha(fs.readFileSync(join(P, n))))
  t.same(missing, [], 'every file completed before the create is in the snapshot, whole')
  t.same([...startedAfter].filter(n => n in inSnap), [], 'no file started after the create returned is in it')
  await verifyOk('writers and the snapshot')
  t.same(fileHashes(join(Sm, '.snapshots/busy')), inSnap, 'the secondary\'s snapshot is byte-identical (sha256 of every file)')
  t.same(diffSnapshots(treeSnapshot(S), treeSnapshot(join(Sm, '.snapshots/busy'))), [], 'and so are its modes, sizes, links and xattrs')

  // One file back from the snapshot.
  const one = [...completedBefore][3]
  fs.writeFileSync(join(P, one), 'clobbered')
  const rf = await run(pair.primary, 'snapshot', 'restore', P, 'busy', '--path', one)
  t.equal(rf.code, 0, `restore --path ${one}: ${rf.stderr}`)
  await verifyOk('file restore')
  t.equal(sha(fs.readFileSync(join(Sm, one))), inSnap[one], 'the one file is back on the secondary too')

  // 24 MiB overwritten, then a whole restore: the wire carries commands, not data.
  const big = ['big0', 'big1', 'big2'].map(n => join(P, n))
  for (const [i, f] of big.entries()) fs.writeFileSync(f, pattern(8 << 20, 500 + i))
  const c2 = await run(pair.primary, 'snapshot', 'create', P, 'big')
  t.equal(c2.code, 0)
  for (const [i, f] of big.entries()) fs.writeFileSync(f, pattern(8 << 20, 600 + i))
  await waitCaughtUp(pair.primary)
  const out0 = Number((await status(pair.primary)).replication.bytesOut)
  const r = await run(pair.primary, 'snapshot', 'restore', P, 'big')
  t.equal(r.code, 0, `restore: ${r.stderr}`)
  await waitCaughtUp(pair.primary)
  const wire = Number((await status(pair.primary)).replication.bytesOut) - out0
  t.ok(wire > 0 && wire < 4096, `the restore of 24 MiB (and the collection that freed the overwritten 24 MiB) took ${wire} B on the wire`)
  await verifyOk('whole restore')
  for (const [i, f] of big.entries()) t.equal(sha(fs.readFileSync(f.replace(P, Sm))), sha(pattern(8 << 20, 500 + i)), `${f.slice(P.length + 1)} is the snapshot's on the secondary`)

  // Deleting a snapshot frees what only it held, on both hosts, as statfs shows.
  for (const [i, f] of big.entries()) fs.writeFileSync(f, pattern(8 << 20, 700 + i))
  await waitCaughtUp(pair.primary)
  const used = (mnt: string): number => { const s = fs.statfsSync(mnt); return (s.blocks - s.bfree) * s.bsize }
  const [usedP, usedS] = [used(P), used(Sm)]
  const d = await run(pair.primary, 'snapshot', 'delete', P, 'big')
  t.equal(d.code, 0, `delete: ${d.stderr}`)
  const freed = Number(/(\d+) bytes freed/.exec(d.stdout)?.[1])
  t.equal(freed, 24 << 20, `delete says it freed the 24 MiB only 'big' held: ${d.stdout.trim()}`)
  await verifyOk('delete')
  t.equal(usedP - used(P), 24 << 20, 'statfs on the primary shows 24 MiB less in use')
  t.equal(usedS - used(Sm), 24 << 20, 'and on the secondary')
})
