import t from 'tap'
import { fsck } from '../../src/store/fsck.js'
import { toErrno } from '../../src/errors.js'
import { ROOT, tempVolume, type TestVolume } from '../helpers/volume.js'

/**
 * Makes the store's next LevelDB batch fail the way a full disk does, a few milliseconds after
 * it was handed over (so the change that made it has already been answered). The store then
 * reopens the database, which drops this patch.
 */
function failNextBatch (v: TestVolume): void {
  const db = (v.store as unknown as { db: { _batch: (ops: unknown[], o: unknown) => Promise<void> } }).db
  const real = db._batch.bind(db)
  let armed = true
  db._batch = async (ops, o) => {
    if (!armed) return await real(ops, o)
    armed = false
    await new Promise(resolve => setTimeout(resolve, 5))
    throw new Error('IO error: /store/000005.log: No space left on device')
  }
}

async function readAll (v: TestVolume, path: string): Promise<Buffer> {
  const size = (await v.vol.getattr(path)).size
  const fh = await v.vol.open(path, 0)
  const buf = Buffer.alloc(size)
  try { await v.vol.read(fh, buf, size, 0) } finally { await v.vol.release(fh) }
  return buf
}

t.test('a write LevelDB refuses after it was answered is reported once at fsync and at close of each file open before it, and nothing half-applied stays', async t => {
  const v = await tempVolume()
  t.teardown(() => v.close())
  const fh = await v.vol.create('/f', 0o644, ROOT)
  const first = Buffer.alloc(4096, 'a')
  await v.vol.write(fh, first, first.length, 0)
  await v.vol.fsync(fh)
  const other = await v.vol.open('/f', 2)

  failNextBatch(v)
  const second = Buffer.alloc(4096, 'b')
  t.equal(await v.vol.write(fh, second, second.length, 4096), 4096, 'the write is answered before LevelDB has taken it')
  await v.log.settle()
  await v.state.store.ready()
  const late = await v.vol.open('/f', 0)

  const err = await v.vol.fsync(fh).then(() => null, (e: Error & { code?: string }) => e)
  t.equal(err?.code, 'DISK_FULL', 'fsync on the writing handle reports the lost write')
  t.equal(toErrno(err), -28, 'as ENOSPC, as Linux reports a write-back error of a full disk')
  await t.resolves(v.vol.fsync(fh), 'the next fsync on that handle succeeds: reported once')
  t.throws(() => v.vol.flush(other), { code: 'DISK_FULL' }, 'close of another handle opened before the error reports it too')
  t.doesNotThrow(() => v.vol.flush(other), 'once')
  t.doesNotThrow(() => v.vol.flush(late), 'a handle opened after the error has nothing to report')

  t.same(await readAll(v, '/f'), first, 'the file holds what was stored: the lost write is not half there')
  const again = Buffer.alloc(4096, 'c')
  await v.vol.write(fh, again, again.length, 4096)
  await v.vol.fsync(fh)
  t.same(await readAll(v, '/f'), Buffer.concat([first, again]), 'the volume takes writes again')
  for (const h of [fh, other, late]) await v.vol.release(h)
  const r = await fsck(v.state)
  t.ok(r.ok, `fsck: ${r.problems.join('; ') || 'clean'}`)
})

t.test('a change made while the one before it is being refused fails with that error instead of being answered', async t => {
  const v = await tempVolume()
  t.teardown(() => v.close())
  const fh = await v.vol.create('/f', 0o644, ROOT)
  await v.vol.fsync(fh)
  failNextBatch(v)
  const a = Buffer.alloc(4096, 'a')
  const b = Buffer.alloc(4096, 'b')
  const first = v.vol.write(fh, a, a.length, 0)
  const second = v.vol.write(fh, b, b.length, 4096)
  t.equal(await first, 4096, 'the first is answered at once')
  await t.rejects(second, { code: 'DISK_FULL' }, 'the second waits for the first to be stored and gets its error')
  await v.state.store.ready()
  t.equal((await v.vol.getattr('/f')).size, 0, 'neither write is in the file')
  await t.rejects(v.vol.fsync(fh), { code: 'DISK_FULL' }, 'and fsync still reports the first one, which was answered')
  await v.vol.release(fh)
})

t.test('snapshot commands answer only once LevelDB holds them', async t => {
  const v = await tempVolume()
  t.teardown(() => v.close())
  failNextBatch(v)
  await t.rejects(v.vol.createSnapshot('s1'), { code: 'DISK_FULL' }, 'a refused snapshot fails the command itself')
  await v.state.store.ready()
  t.same(v.state.snapshots.map(s => s.name), [], 'and no snapshot is left')
  await v.vol.createSnapshot('s1')
  t.same(v.state.snapshots.map(s => s.name), ['s1'], 'the next one is taken')
})
