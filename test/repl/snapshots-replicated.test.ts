import t from 'tap'
import fc from 'fast-check'
import { createHash } from 'node:crypto'
import type { Volume } from '../../src/fs/volume.js'
import { ROOT, stateDump } from '../helpers/volume.js'
import {
  caughtUp, connect, scope, dumpsEqual, fsckProblems, makePrimary, makeSecondary, readFile, writeFile
} from '../helpers/replica.js'
import { SNAPSHOT_MIX, type Op, opArb, pattern, runOp } from '../helpers/workload.js'

t.setTimeout(120_000)

const MiB = 1 << 20
const seed = Number(process.env.FC_SEED ?? Date.now() % 100000)

/** A logical dump of a tree through the Volume API: type, mode, size, content hash, symlink target. */
async function treeDump (vol: Volume, root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  const walk = async (rel: string): Promise<void> => {
    const abs = rel === '' ? root : `${root === '/' ? '' : root}/${rel}`
    const st = await vol.getattr(abs)
    const fmt = st.mode & 0o170000
    let desc = `${st.mode.toString(8)} ${st.nlink} ${st.mtime}`
    if (fmt === 0o100000) desc += ` ${st.size} ${createHash('sha256').update(await readFile(vol, abs)).digest('hex')}`
    if (fmt === 0o120000) desc += ` -> ${await vol.readlink(abs)}`
    out[rel === '' ? '.' : rel] = desc
    if (fmt === 0o040000) {
      for (const n of (await vol.readdir(abs)).map(d => d.name).filter(n => n !== '.' && n !== '..').sort()) await walk(rel === '' ? n : `${rel}/${n}`)
    }
  }
  await walk('')
  return out
}

const op = opArb(SNAPSHOT_MIX)

t.test('writes and snapshot commands on a connected primary: the secondary is byte-identical with the same snapshots', async t => {
  t.comment(`fast-check seed ${seed}`)
  let runs = 0
  let snapCmds = 0
  await fc.assert(fc.asyncProperty(fc.array(op, { minLength: 10, maxLength: 50 }), async ops => {
    runs++
    const rt = scope()
    try {
      const p = await makePrimary(rt, { mode: runs % 2 === 0 ? 'sync' : 'async' })
      const s = await makeSecondary(rt)
      connect(p, s)
      const setup: Op[] = [{ op: 'mkdir', path: '/a' }, { op: 'create', path: '/b' }, { op: 'write', path: '/b', offset: 0, len: 70_000, seed: 1 }, { op: 'snap-create', name: 's1' }]
      for (const o of [...setup, ...ops]) await runOp(p.vol, o)
      await caughtUp(p, s)
      const v = await p.repl.verify()
      if (!v.identical) throw new Error(`verify at ${v.seq}: digests differ ${JSON.stringify(v)}`)
      if (!await dumpsEqual(p, s)) throw new Error('state dumps differ')
      const [lp, ls] = [JSON.stringify((await p.vol.listSnapshots())), JSON.stringify((await s.vol.listSnapshots()))]
      if (lp !== ls) throw new Error(`snapshot lists differ: ${lp} vs ${ls}`)
      for (const sn of (await p.vol.listSnapshots())) {
        const [tp, ts] = [await treeDump(p.vol, `/.snapshots/${sn.name}`), await treeDump(s.vol, `/.snapshots/${sn.name}`)]
        if (JSON.stringify(tp) !== JSON.stringify(ts)) throw new Error(`snapshot ${sn.name} reads differently on the secondary`)
      }
      const probs = [...await fsckProblems(p), ...await fsckProblems(s)]
      if (probs.length > 0) throw new Error('fsck: ' + probs.join('; '))
      snapCmds += ops.filter(o => o.op.startsWith('snap-')).length
    } finally {
      await rt.run()
    }
  }), { numRuns: 30, seed })
  t.equal(runs, 30, 'ran 30 random workloads')
  t.ok(snapCmds > 30, `${snapCmds} snapshot commands issued`)
})

t.test('restoring a 20 MiB volume sends a few bytes, and the secondary\'s live tree equals the snapshot', async t => {
  const p = await makePrimary(t)
  const s = await makeSecondary(t)
  const c = connect(p, s)
  for (let i = 0; i < 20; i++) await writeFile(p.vol, `/f${i}`, 4, MiB / 4, i * 10)
  await p.vol.mkdir('/d', 0o755, ROOT)
  await p.vol.symlink('f1', '/d/l', ROOT)
  await p.vol.createSnapshot('before')
  // Change a lot after the snapshot: overwrite half, delete some, add new data.
  for (let i = 0; i < 10; i++) await writeFile(p.vol, `/new${i}`, 1, MiB, 500 + i)
  for (let i = 0; i < 5; i++) await p.vol.unlink(`/f${i}`)
  for (let i = 5; i < 10; i++) {
    const fh = await p.vol.open(`/f${i}`, 2)
    await p.vol.write(fh, pattern(MiB, 900 + i), MiB, 0)
    await p.vol.release(fh)
  }
  await caughtUp(p, s)
  const snapTree = await treeDump(p.vol, '/.snapshots/before')
  t.equal(Object.keys(snapTree).length, 23, 'the snapshot holds 20 files, a dir, a symlink and the root')
  const usedBefore = p.state.counters.usedBytes
  const bytes0 = c.pair.bytesToSecondary
  await p.vol.restoreSnapshot('before')
  await caughtUp(p, s)
  const sent = c.pair.bytesToSecondary - bytes0
  t.ok(sent < 4096, `the restore sent ${sent} bytes primary -> secondary`)
  t.ok(sent > 0, 'something was sent')
  t.equal(p.state.counters.usedBytes, 20 * MiB, `usedBytes ${usedBefore} -> ${p.state.counters.usedBytes}`)
  t.equal(s.state.counters.usedBytes, p.state.counters.usedBytes, 'the secondary frees the same bytes')
  t.same(await treeDump(s.vol, '/'), snapTree, 'secondary live tree equals the snapshot')
  t.same(await treeDump(p.vol, '/'), snapTree, 'primary live tree equals the snapshot')
  const v = await p.repl.verify()
  t.ok(v.identical, `verify at seq ${v.seq}: identical`)
  t.ok(await dumpsEqual(p, s), 'state dumps equal')
  t.same([...await fsckProblems(p), ...await fsckProblems(s)], [], 'fsck clean on both')
})

t.test('a snapshot taken while writers run holds every write completed before the call and none started after it returned', async t => {
  const p = await makePrimary(t, { mode: 'sync' })
  const s = await makeSecondary(t)
  connect(p, s)
  const WRITERS = 6
  const CHUNK = 8192
  const CHUNKS = 60
  // Per writer, per chunk: when its write started and finished, on a shared logical clock.
  let tick = 0
  const started: number[][] = Array.from({ length: WRITERS }, () => [])
  const finished: number[][] = Array.from({ length: WRITERS }, () => [])
  const fhs: number[] = []
  for (let w = 0; w < WRITERS; w++) fhs.push(await p.vol.create(`/w${w}`, 0o644, ROOT))
  let callTick = -1
  let returnTick = -1
  const writer = async (w: number): Promise<void> => {
    for (let i = 0; i < CHUNKS; i++) {
      started[w][i] = tick++
      await p.vol.write(fhs[w], pattern(CHUNK, w * 1000 + i + 1), CHUNK, i * CHUNK)
      finished[w][i] = tick++
      if (i % 3 === w % 3) await new Promise(resolve => setImmediate(resolve))
    }
  }
  const snapper = async (): Promise<void> => {
    // Let the writers get going first.
    while (finished.reduce((n, f) => n + f.length, 0) < WRITERS * CHUNKS / 3) await new Promise(resolve => setImmediate(resolve))
    callTick = tick++
    await p.vol.createSnapshot('mid')
    returnTick = tick++
  }
  await Promise.all([...Array.from({ length: WRITERS }, async (_, w) => await writer(w)), snapper()])
  for (const fh of fhs) await p.vol.release(fh)
  await caughtUp(p, s)
  let before = 0; let after = 0; let inFlight = 0
  const wrong: string[] = []
  for (let w = 0; w < WRITERS; w++) {
    const snap = await readFile(p.vol, `/.snapshots/mid/w${w}`)
    for (let i = 0; i < CHUNKS; i++) {
      const got = snap.subarray(i * CHUNK, (i + 1) * CHUNK)
      const present = got.length === CHUNK && got.equals(pattern(CHUNK, w * 1000 + i + 1))
      const absent = got.length === 0 || got.every(b => b === 0)
      if (!present && !absent) wrong.push(`w${w} chunk ${i}: torn`)
      if (finished[w][i] < callTick) { before++; if (!present) wrong.push(`w${w} chunk ${i}: completed before the call, missing`) } else if (started[w][i] > returnTick) { after++; if (!absent) wrong.push(`w${w} chunk ${i}: started after the return, present`) } else inFlight++
    }
  }
  t.same(wrong, [], `${before} writes before, ${inFlight} in flight, ${after} after`)
  t.ok(before > 0 && after > 0, 'writes on both sides of the snapshot')
  for (let w = 0; w < WRITERS; w++) {
    t.ok((await readFile(p.vol, `/.snapshots/mid/w${w}`)).equals(await readFile(s.vol, `/.snapshots/mid/w${w}`)), `w${w}: primary and secondary snapshot views equal`)
  }
  t.same(await treeDump(s.vol, '/.snapshots/mid'), await treeDump(p.vol, '/.snapshots/mid'), 'snapshot trees equal')
  t.same((await s.vol.listSnapshots()), (await p.vol.listSnapshots()), 'snapshot lists equal')
  const v = await p.repl.verify()
  t.ok(v.identical, `verify at seq ${v.seq}: identical`)
  t.same(await stateDump(s), await stateDump(p), 'state dumps equal')
})

t.test('the secondary refuses snapshot commands itself and follows the primary', async t => {
  const p = await makePrimary(t)
  const s = await makeSecondary(t)
  connect(p, s)
  await writeFile(p.vol, '/f', 1, 1000, 1)
  await p.vol.createSnapshot('s1')
  await caughtUp(p, s)
  for (const [what, fn] of [
    ['create', async () => await s.vol.createSnapshot('x')],
    ['delete', async () => await s.vol.deleteSnapshot('s1')],
    ['restore', async () => await s.vol.restoreSnapshot('s1')],
    ['refresh', async () => await s.vol.refreshSnapshot('s1')]
  ] as const) {
    try { await fn(); t.fail(`${what} succeeded on the secondary`) } catch (err) { t.equal((err as { code?: string }).code, 'EROFS', `${what} on the secondary's Volume: EROFS`) }
  }
  t.same((await s.vol.listSnapshots()).map(x => x.name), ['s1'])
  await p.vol.deleteSnapshot('s1')
  await caughtUp(p, s)
  t.same((await s.vol.listSnapshots()), [], 'delete followed')
  t.ok(await dumpsEqual(p, s))
})

t.test('a fresh secondary copied in full gets every snapshot; one that reconnects catches up on snapshot commands', async t => {
  // The journal does not reach seq 1: a fresh secondary must be copied (state transfer).
  const p = await makePrimary(t, { journalFromInit: false })
  for (let i = 0; i < 4; i++) await writeFile(p.vol, `/f${i}`, 2, 100_000, i)
  await p.vol.createSnapshot('s1')
  for (let i = 0; i < 4; i++) await writeFile(p.vol, `/g${i}`, 1, 50_000, 10 + i)
  await p.vol.unlink('/f0')
  await p.vol.createSnapshot('s2')
  await p.log.settle()
  const s = await makeSecondary(t)
  const c = connect(p, s)
  await caughtUp(p, s)
  t.same((await s.vol.listSnapshots()), (await p.vol.listSnapshots()), 'the copy brought the snapshot list')
  for (const n of ['s1', 's2']) t.same(await treeDump(s.vol, `/.snapshots/${n}`), await treeDump(p.vol, `/.snapshots/${n}`), `${n} reads the same on the copy`)
  t.ok((await p.repl.verify()).identical, 'verify after the copy')
  // Cut, run commands and writes, reconnect: the secondary resumes from its journal position.
  c.cut()
  await c.ended
  await p.vol.restoreSnapshot('s1')
  await writeFile(p.vol, '/h', 1, 70_000, 99)
  await p.vol.refreshSnapshot('s2')
  await p.vol.deleteSnapshot('s1')
  await p.vol.createSnapshot('s3')
  connect(p, s)
  await caughtUp(p, s)
  t.same((await s.vol.listSnapshots()), (await p.vol.listSnapshots()), 'snapshot lists equal after resuming')
  t.same(await treeDump(s.vol, '/'), await treeDump(p.vol, '/'), 'live trees equal')
  t.same(await treeDump(s.vol, '/.snapshots/s2'), await treeDump(p.vol, '/'), 's2 was refreshed to the live volume on the secondary')
  t.ok((await p.repl.verify()).identical, 'verify after resuming')
  t.ok(await dumpsEqual(p, s), 'state dumps equal')
  t.same([...await fsckProblems(p), ...await fsckProblems(s)], [], 'fsck clean on both')
})

t.test('writes into a writable snapshot and a --path restore replicate: the secondary\'s snapshot and live tree follow, restore sends under 4 KiB', async t => {
  const p = await makePrimary(t)
  const s = await makeSecondary(t)
  const c = connect(p, s)
  await p.vol.mkdir('/site', 0o755, ROOT)
  await writeFile(p.vol, '/site/page', 40, 65536, 3)
  await writeFile(p.vol, '/other', 2, 1000, 4)
  await p.vol.createSnapshot('w', { writable: true })
  const fh = await p.vol.open('/.snapshots/w/site/page', 2)
  for (let i = 0; i < 10; i++) await p.vol.write(fh, pattern(65536, 90 + i), 65536, i * 65536)
  await p.vol.release(fh)
  await writeFile(p.vol, '/.snapshots/w/site/new', 1, 5000, 5)
  await p.vol.unlink('/site/page')
  await writeFile(p.vol, '/site/added', 1, 100, 6)
  await caughtUp(p, s)
  t.same(await treeDump(s.vol, '/.snapshots/w'), await treeDump(p.vol, '/.snapshots/w'), 'the writable snapshot is identical on the secondary')
  t.ok((await readFile(s.vol, '/.snapshots/w/site/page')).equals(await readFile(p.vol, '/.snapshots/w/site/page')))

  const bytes0 = c.pair.bytesToSecondary
  await p.vol.restoreSnapshot('w', '/site')
  await caughtUp(p, s)
  const sent = c.pair.bytesToSecondary - bytes0
  t.ok(sent < 4096, `restoring /site (2.6 MB) sent ${sent} bytes primary -> secondary`)
  t.same(await treeDump(p.vol, '/site'), await treeDump(p.vol, '/.snapshots/w/site'), 'the primary\'s /site is the snapshot\'s')
  t.same(await treeDump(s.vol, '/'), await treeDump(p.vol, '/'), 'the secondary\'s live tree is identical')
  t.ok(await dumpsEqual(p, s), 'stores byte-identical')
  t.same(await fsckProblems(p), [])
  t.same(await fsckProblems(s), [])
  const v = await p.repl.verify()
  t.ok(v.identical, `verify at seq ${v.seq}`)
})
