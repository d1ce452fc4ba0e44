import t from 'tap'
t.setTimeout(180_000)
import fc from 'fast-check'
import { stateDump } from '../helpers/volume.js'
import {
  caughtUp, connect, scope, dumpsEqual, fsckProblems, makePrimary, makeSecondary, readFile, waitFor, writeFile
} from '../helpers/replica.js'
import { FILE_OPS, type Op, opArb, pattern, runOp } from '../helpers/workload.js'

const op = opArb({
  weights: { ...FILE_OPS, create: 3, write: 4 },
  names: ['a', 'b', 'c'],
  depth: 2,
  // Offsets past 64 KiB and past EOF (sparse), lengths spanning several blocks.
  offset: fc.oneof(fc.integer({ min: 0, max: 4096 }), fc.integer({ min: 65_536, max: 400_000 })),
  maxWrite: 140_000,
  maxTruncate: 500_000,
  xattrNames: ['user.x', 'user.y'],
  maxXattr: 64
})

const seed = Number(process.env.FC_SEED ?? Date.now() % 100000)

for (const mode of ['async', 'sync'] as const) {
  t.test(`${mode}: a random workload on the connected primary leaves the secondary byte-identical and fsck-clean`, async t => {
    t.comment(`fast-check seed ${seed}`)
    let runs = 0
    let records = 0
    await fc.assert(fc.asyncProperty(fc.array(op, { minLength: 10, maxLength: 80, size: 'max' }), async ops => {
      runs++
      // Each run gets its own nodes, closed and removed at the end of the run.
      const rt = scope()
      try {
        const p = await makePrimary(rt, { mode })
        const s = await makeSecondary(rt)
        connect(p, s)
        // A few fixed ops first so the random ones find files and directories to act on.
        const setup: Op[] = [{ op: 'mkdir', path: '/a' }, { op: 'create', path: '/b' }, { op: 'create', path: '/a/c' }, { op: 'write', path: '/b', offset: 70_000, len: 5000, seed: 1 }]
        for (const o of [...setup, ...ops]) await runOp(p.vol, o)
        await caughtUp(p, s)
        const v = await p.repl.verify()
        if (!v.identical) throw new Error(`verify at ${v.seq}: digests differ ${JSON.stringify(v)}`)
        if (!await dumpsEqual(p, s)) throw new Error('state dumps differ')
        const probs = [...await fsckProblems(p), ...await fsckProblems(s)]
        if (probs.length > 0) throw new Error('fsck: ' + probs.join('; '))
        records += p.state.counters.seq
      } finally {
        await rt.run()
      }
    }), { numRuns: 25, seed })
    t.equal(runs, 25, 'ran 25 random workloads')
    t.ok(records > 25 * 10, `${records} records replicated in all`)
  })
}

t.test('a fresh secondary gets the whole state by the resync while writes go on, then streams: identical, and the writes made during it are there', async t => {
  // The init record was applied before the journal was attached: the journal starts at seq 2,
  // so a secondary at seq 0 cannot resume and must be copied.
  const p = await makePrimary(t, { journalFromInit: false })
  t.equal(p.journal.firstSeq, 2, 'the journal does not reach back to seq 1')
  const MB = 1 << 20
  for (let f = 0; f < 30; f++) await writeFile(p.vol, `/big${f}`, 1, MB, f)
  await p.log.settle()
  const s = await makeSecondary(t)
  const c = connect(p, s)
  await waitFor(() => p.repl.phase === 'resyncing', 'the copy to start')
  // A writer keeps going while the copy is under way.
  const during: string[] = []
  let i = 0
  // Bounded, so the state dumps compared below stay within what one string can hold.
  while ((p.repl.phase === 'resyncing' && i < 300) || i < 3) {
    const path = `/during${i}`
    const copying = p.repl.phase === 'resyncing'
    await writeFile(p.vol, path, 2, 100_000, 1000 + i)
    if (copying) during.push(path)
    i++
  }
  t.ok(during.length > 0, `${during.length} files written while the copy was under way`)
  await caughtUp(p, s)
  const v = await p.repl.verify()
  t.ok(v.identical, `verify at seq ${v.seq}: ${v.primary.digest} vs ${v.secondary.digest}`)
  t.ok(v.primary.bytes > 30 * MB, `the state holds ${v.primary.bytes} bytes`)
  t.ok(c.pair.bytesToSecondary > 30 * MB, `${c.pair.bytesToSecondary} bytes went to the secondary`)
  t.ok(await dumpsEqual(p, s), 'state dumps are equal')
  const wrong: string[] = []
  for (const path of during) {
    const i = Number(path.slice('/during'.length))
    const want = Buffer.concat([pattern(100_000, 1000 + i), pattern(100_000, 1001 + i)])
    const got = await readFile(s.vol, path).catch(() => null)
    if (got === null || !got.equals(want)) wrong.push(path)
  }
  t.same(wrong, [], `all ${during.length} files written during the copy are on the secondary with their content`)
  t.same(await readFile(s.vol, '/big7'), pattern(MB, 7), 'a copied file reads back on the secondary')
  t.same(await fsckProblems(p), [], 'fsck clean on the primary')
  t.same(await fsckProblems(s), [], 'fsck clean on the secondary')
  t.equal(s.repl.status().phase, 'streaming')
})

t.test('a connection cut mid-stream resumes from the secondary\'s applied seq and carries only the missing records', async t => {
  const p = await makePrimary(t)
  const SIZE = 64 * 1024
  const N = 200
  await writeFile(p.vol, '/f', N, SIZE)
  await p.log.settle()
  const total = p.journal.bytesAfter(0)
  t.ok(total > N * SIZE, `${total} journal bytes`)
  const s = await makeSecondary(t)
  const first = connect(p, s, { cutAfterBytes: Math.floor(total * 0.4) })
  const [pe, se] = await first.ended
  t.match(pe.message, /closed|connection/, `the primary saw the connection end: ${pe.message}`)
  t.match(se.message, /closed|connection/, `the secondary saw the connection end: ${se.message}`)
  await s.log.settle()
  const applied = s.state.counters.seq
  t.ok(applied > 1 && applied < p.state.counters.seq, `the secondary applied ${applied} of ${p.state.counters.seq}`)
  const missing = p.journal.bytesAfter(applied)
  // Writes go on while disconnected.
  await writeFile(p.vol, '/g', 10, SIZE, 99)
  const missingAll = p.journal.bytesAfter(applied)
  t.ok(missingAll > missing)
  const second = connect(p, s)
  await caughtUp(p, s)
  const wire = second.pair.bytesToSecondary
  t.ok(wire >= missingAll - 16 * (p.state.counters.seq - applied), `the second connection carried the missing records (${wire} bytes for ${missingAll} journal bytes)`)
  t.ok(wire < 1.4 * missingAll + 4096, `the second connection carried ${wire} bytes, about only the ${missingAll} missing (total written ${p.journal.bytesAfter(0)})`)
  t.ok(first.pair.bytesToSecondary + wire < 1.4 * p.journal.bytesAfter(0), 'both connections together carried little more than everything once')
  const v = await p.repl.verify()
  t.ok(v.identical, 'verify: identical')
  t.ok(await dumpsEqual(p, s), 'state dumps equal')
  t.same(await readFile(s.vol, '/g'), Buffer.concat(Array.from({ length: 10 }, (_, i) => pattern(SIZE, 99 + i))), 'a file written during the outage is on the secondary')
  t.same(await fsckProblems(s), [])
  t.same((await stateDump(s)).length, (await stateDump(p)).length)
})

t.test('a secondary that fell further behind than the journal reaches is copied over again, its stale state replaced', async t => {
  const p = await makePrimary(t, { journalMaxBytes: 1 << 20, segmentBytes: 256 * 1024 })
  const s = await makeSecondary(t)
  const c1 = connect(p, s)
  await writeFile(p.vol, '/old', 4, 64 * 1024)
  await caughtUp(p, s)
  c1.cut()
  await c1.ended
  const behind = s.state.counters.seq
  // While disconnected: delete what the secondary has, and write far more than the journal keeps.
  await p.vol.unlink('/old')
  // Seeds unlike /old's: a value the secondary holds already would cross as a copy, not in full.
  for (let f = 0; f < 6; f++) await writeFile(p.vol, `/new${f}`, 8, 64 * 1024, 100 + f * 10)
  await p.log.settle()
  t.ok(p.journal.firstSeq > behind + 1, `the journal starts at ${p.journal.firstSeq}, past the secondary's ${behind} + 1`)
  const c2 = connect(p, s)
  await waitFor(() => p.repl.phase === 'resyncing' || p.repl.phase === 'streaming', 'the second session to start')
  await caughtUp(p, s)
  t.ok(c2.pair.bytesToSecondary > 6 * 8 * 64 * 1024, 'the second session carried every new block in full')
  const v = await p.repl.verify()
  t.ok(v.identical, 'verify: identical')
  t.ok(await dumpsEqual(p, s), 'state dumps equal')
  await t.rejects(s.vol.getattr('/old'), 'the file deleted while disconnected is gone from the secondary')
  t.same(await readFile(s.vol, '/new5'), Buffer.concat(Array.from({ length: 8 }, (_, i) => pattern(64 * 1024, 150 + i))))
  t.same(await fsckProblems(s), [], 'fsck clean on the copied-over secondary')
  t.equal(s.journal.firstSeq, p.state.counters.seq + 1, 'the secondary journal restarted right after the copied seq (nothing was written since)')
})
