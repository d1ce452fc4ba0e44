import t from 'tap'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { startPair, status, waitFor } from '../helpers/replicated.js'

t.setTimeout(120_000)

// The secondary's kernel caches names, attributes and pages like any mount (here for 60 s); the
// records it applies are pushed to that cache as invalidations, so its mount shows the primary's
// changes as soon as they are applied, also through descriptors held open.

const caughtUp = async (pair: Awaited<ReturnType<typeof startPair>>): Promise<void> => {
  await waitFor('the secondary to apply everything', async () => await status(pair.primary), s => s.replication.ackedSeq === s.seq, 30_000)
}

t.test('the secondary shows new data, renamed and removed names at once, even in a file held open, with a 60 s cache', async t => {
  const pair = await startPair(t, { mode: 'sync', secondaryArgs: ['--attr-timeout', '60'] })
  const a = (s: string): string => join(pair.primary.mnt, s)
  const b = (s: string): string => join(pair.secondary.mnt, s)
  fs.writeFileSync(a('held'), 'first version')
  fs.writeFileSync(a('old-name'), 'moves')
  fs.writeFileSync(a('goes'), 'is removed')
  await caughtUp(pair)
  const fd = fs.openSync(b('held'), 'r')
  t.teardown(() => fs.closeSync(fd))
  const read = (): string => { const buf = Buffer.alloc(64); return buf.subarray(0, fs.readSync(fd, buf, 0, 64, 0)).toString() }
  t.equal(read(), 'first version', 'the secondary reads the file through a descriptor it holds open')
  t.equal(fs.statSync(b('old-name')).size, 5, 'and has looked up the names (now cached for 60 s)')
  t.equal(fs.readFileSync(b('goes'), 'utf8'), 'is removed', 'the file to be removed reads on the secondary')

  fs.writeFileSync(a('held'), 'second version, longer')
  fs.renameSync(a('old-name'), a('new-name'))
  fs.unlinkSync(a('goes'))
  fs.mkdirSync(a('made'))
  await caughtUp(pair)
  t.equal(read(), 'second version, longer', 'the held-open descriptor reads the new bytes')
  t.equal(fs.fstatSync(fd).size, 22, 'and fstat shows the new size')
  t.equal(fs.existsSync(b('old-name')), false, 'the old name of a renamed file is gone')
  t.equal(fs.readFileSync(b('new-name'), 'utf8'), 'moves', 'the new name is there')
  t.equal(fs.existsSync(b('goes')), false, 'a removed name is gone')
  t.ok(fs.statSync(b('made')).isDirectory(), 'a new directory is there')
  t.same(fs.readdirSync(pair.secondary.mnt).sort(), ['held', 'made', 'new-name'], 'the listing is the primary\'s')
})
