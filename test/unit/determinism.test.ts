import t from 'tap'
import fc from 'fast-check'
import { createHash } from 'node:crypto'
import { ROOT, stateDump, tempVolume } from '../helpers/volume.js'
import { FILE_OPS, opArb, replayGivesSameStore, runOp } from '../helpers/workload.js'

const op = opArb({
  weights: FILE_OPS,
  names: ['a', 'b', 'c', 'd'],
  depth: 3,
  offset: fc.integer({ min: 0, max: 300_000 }),
  maxWrite: 140_000,
  maxTruncate: 400_000,
  xattrNames: ['user.x', 'user.y'],
  maxXattr: 64
})
// Writes of one repeated byte (0 included), as this test has always written.
const fill = (len: number, seed: number): Buffer => Buffer.alloc(len, seed)

t.test('replaying the journaled records on an empty store gives a byte-identical store', async t => {
  await t.resolves(fc.assert(fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 60 }), async ops => {
    await replayGivesSameStore(async a => {
      for (const o of ops) await runOp(a.vol, o, { data: fill })
    })
  }), { numRuns: 40, seed: Number(process.env.FC_SEED ?? Date.now() % 100000) }), 'held for 40 random workloads')
})

t.test('state digest changes when any state byte changes', async t => {
  const a = await tempVolume()
  const fh = await a.vol.create('/f', 0o644, ROOT)
  await a.vol.write(fh, Buffer.from('hello'), 5, 0)
  await a.log.settle()
  const d1 = createHash('sha256').update(JSON.stringify(await stateDump(a))).digest('hex')
  await a.vol.write(fh, Buffer.from('j'), 1, 0)
  await a.log.settle()
  const d2 = createHash('sha256').update(JSON.stringify(await stateDump(a))).digest('hex')
  t.not(d1, d2)
  await a.close()
})
