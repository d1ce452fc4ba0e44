import t from 'tap'
import { fsck } from '../../src/store/fsck.js'
import type { Volume } from '../../src/fs/volume.js'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openVolume } from '../../src/daemon/open-volume.js'
import type { LogRecord } from '../../src/log/records.js'
import { readFile } from '../helpers/replica.js'
import { ROOT, putFile, quietLogger, stateDump, tempVolume } from '../helpers/volume.js'
import { decodeRecord } from '../../src/log/codec.js'
import { journalKey } from '../../src/store/keys.js'

async function get (vol: Volume, path: string): Promise<string> {
  return (await readFile(vol, path)).toString()
}

t.test('a writable snapshot takes writes of its own; the live volume and read-only snapshots do not see them', async t => {
  const v = await tempVolume()
  t.teardown(v.close)
  const { vol } = v
  v.state.journalPayloads = true
  const records: LogRecord[] = []
  v.log.onRecord((_seq, rec) => records.push(rec))
  await vol.mkdir('/d', 0o755, ROOT)
  await putFile(vol, '/d/f', 'live v1')
  await vol.createSnapshot('w', { writable: true })
  await vol.createSnapshot('r')
  t.same((await vol.listSnapshots()).map(s => [s.name, s.writable]), [['w', true], ['r', false]])

  const fh = await vol.open('/.snapshots/w/d/f', 2)
  await vol.write(fh, Buffer.from('snap v2'), 7, 0)
  await vol.release(fh)
  await putFile(vol, '/.snapshots/w/new', 'made in w')
  await vol.mkdir('/.snapshots/w/nd', 0o755, ROOT)
  await vol.rename('/.snapshots/w/new', '/.snapshots/w/nd/moved')
  await putFile(vol, '/d/f2', 'live only')

  t.equal(await get(vol, '/.snapshots/w/d/f'), 'snap v2', 'the write landed in w')
  t.equal(await get(vol, '/.snapshots/w/nd/moved'), 'made in w')
  t.equal(await get(vol, '/d/f'), 'live v1', 'live is untouched')
  t.equal(await get(vol, '/.snapshots/r/d/f'), 'live v1', 'a read-only snapshot is untouched')
  await t.rejects(vol.getattr('/.snapshots/w/d/f2'), { code: 'ENOENT' }, 'w does not see later live writes')
  await t.rejects(vol.getattr('/nd'), { code: 'ENOENT' })
  await t.rejects(putFile(vol, '/.snapshots/r/x', 'no'), { code: 'EROFS' }, 'read-only snapshots stay read-only')
  await t.rejects(vol.rename('/d/f', '/.snapshots/w/f'), { code: 'EXDEV' }, 'no rename between views')
  await t.rejects(vol.link('/d/f', '/.snapshots/w/hl'), { code: 'EXDEV' }, 'no hard link between views')
  const st = await vol.getattr('/.snapshots/w/d/f')
  t.not(st.ino, (await vol.getattr('/d/f')).ino, 'the snapshot\'s copy of a file has its own inode number')

  // Records name the view by inode numbers alone: the same records on an empty store (a
  // replica) give a byte-identical store, snapshots and all.
  await v.log.settle()
  const dir = mkdtempSync(join(tmpdir(), 'replfs-test-replay-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const b = await openVolume(dir, { create: true, logger: quietLogger, replay: true })
  t.teardown(() => b.store.close())
  const init = decodeRecord((await v.store.get(journalKey(1)))!)
  for (const rec of [init, ...records]) await b.log.apply(rec)
  await b.log.settle()
  t.same(await stateDump(b), await stateDump(v), 'replayed store is identical, writable snapshot included')

  // Restore from w: live becomes w's content; w keeps its own top and stays writable.
  await vol.restoreSnapshot('w')
  t.equal(await get(vol, '/d/f'), 'snap v2')
  t.equal(await get(vol, '/nd/moved'), 'made in w')
  await putFile(vol, '/.snapshots/w/after', 'w only')
  await t.rejects(vol.getattr('/after'), { code: 'ENOENT' }, 'after a restore, writes to w no longer show in live')
  const used = v.state.counters.usedBytes
  const { freedBytes } = await vol.deleteSnapshot('w')
  t.equal(freedBytes, 'w only'.length, 'deleting w frees what only w held')
  t.equal(v.state.counters.usedBytes, used - freedBytes)
  const r = await fsck(v.state)
  t.ok(r.ok, `fsck: ${r.problems.join('; ') || 'clean'}`)
})
