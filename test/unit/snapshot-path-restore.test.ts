import t from 'tap'
import { fsck } from '../../src/store/fsck.js'
import type { Volume } from '../../src/fs/volume.js'
import { readFile } from '../helpers/replica.js'
import { ROOT, putFile, tempVolume } from '../helpers/volume.js'

async function names (vol: Volume, path: string): Promise<string[]> {
  return (await vol.readdir(path)).map(e => e.name).filter(n => n !== '.' && n !== '..').sort()
}

t.test('restore --path puts back one tree as it was (data, xattrs, hard links inside it), removes what was added, and touches nothing else', async t => {
  const v = await tempVolume()
  t.teardown(v.close)
  const { vol } = v
  await vol.mkdir('/site', 0o755, ROOT)
  await vol.mkdir('/site/img', 0o755, ROOT)
  await vol.mkdir('/other', 0o755, ROOT)
  const big = Buffer.alloc(300_000)
  for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff
  await putFile(vol, '/site/index.html', 'v1')
  await putFile(vol, '/site/img/logo', big)
  await vol.link('/site/img/logo', '/site/logo-link')
  await vol.setxattr('/site/index.html', 'user.tag', Buffer.from('kept'), 0)
  await putFile(vol, '/other/f', 'other v1')
  await vol.createSnapshot('s1')

  await putFile(vol, '/site/added', 'new since')
  await vol.unlink('/site/img/logo')
  const fh = await vol.open('/site/index.html', 2)
  await vol.truncate(null, fh, 0)
  await vol.write(fh, Buffer.from('broken'), 6, 0)
  await vol.release(fh)
  await vol.unlink('/other/f')
  await putFile(vol, '/other/f', 'other v2')
  const seqBefore = v.state.counters.seq

  await vol.restoreSnapshot('s1', 'site')
  t.equal(v.state.counters.seq, seqBefore + 1, 'one record')
  t.same(await names(vol, '/site'), ['img', 'index.html', 'logo-link'], 'the added file is gone, the removed one is back')
  t.equal((await readFile(vol, '/site/index.html')).toString(), 'v1')
  t.ok((await readFile(vol, '/site/img/logo')).equals(big), 'a 300 KB file comes back byte for byte')
  t.equal((await vol.getxattr('/site/index.html', null, 'user.tag')).toString(), 'kept', 'xattrs come back')
  const a = await vol.getattr('/site/img/logo')
  const b = await vol.getattr('/site/logo-link')
  t.equal(a.ino, b.ino, 'a hard link inside the tree is still one inode')
  t.equal(a.nlink, 2)
  t.equal((await readFile(vol, '/other/f')).toString(), 'other v2', 'outside the path nothing changed')
  t.equal((await readFile(vol, '/.snapshots/s1/site/index.html')).toString(), 'v1', 'the snapshot is unchanged')
  const r = await fsck(v.state)
  t.ok(r.ok, `fsck: ${r.problems.join('; ') || 'clean'}`)

  // One file; then errors that change nothing.
  await vol.restoreSnapshot('s1', '/other/f')
  t.equal((await readFile(vol, '/other/f')).toString(), 'other v1', 'a single file restores too')
  const seq = v.state.counters.seq
  await t.rejects(vol.restoreSnapshot('s1', 'nope/x'), { code: 'BAD_ARGUMENT', message: /not in snapshot s1/ })
  await t.rejects(vol.restoreSnapshot('s2', 'site'), { code: 'SNAPSHOT_MISSING' })
  await t.rejects(vol.restoreSnapshot('s1', '.snapshots/s1'), { code: 'BAD_ARGUMENT' })
  t.equal(v.state.counters.seq, seq, 'refused restores made no record')
  const r2 = await fsck(v.state)
  t.ok(r2.ok, `fsck at the end: ${r2.problems.join('; ') || 'clean'}`)
})
