import t from 'tap'
t.setTimeout(120_000)
import * as fs from 'node:fs'
import { join } from 'node:path'
import { cli, mountVolume, tempDir } from '../helpers/mount.js'

// libfuse renames a file unlinked while open to .fuse_hidden<16 hex digits> and unlinks that name
// at the last close; the volume keeps such a file as an orphan instead. A user's own rename to a
// name of that shape is an ordinary rename.

const code = (fn: () => unknown): string | undefined => { try { fn(); return undefined } catch (e) { return (e as NodeJS.ErrnoException).code } }
const HIDDEN = '.fuse_hidden0123456789abcdef'

t.test('a rename onto a .fuse_hidden<16 hex> name is an ordinary rename: the file stays, with its content, across a remount', async t => {
  const base = tempDir()
  t.teardown(() => fs.rmSync(base, { recursive: true, force: true }))
  const store = join(base, 'store'); const mnt = join(base, 'mnt'); const runDir = join(base, 'run')
  const m = await mountVolume(t, { store, mnt, runDir, extraArgs: ['--attr-timeout', '0'] })
  const p = (s: string): string => join(mnt, s)
  fs.writeFileSync(p('victim'), 'precious data')
  fs.renameSync(p('victim'), p(HIDDEN))
  t.equal(code(() => fs.statSync(p('victim'))), 'ENOENT', 'the old name is gone')
  t.equal(fs.readFileSync(p(HIDDEN), 'utf8'), 'precious data', 'the new name has the content')
  t.ok(fs.readdirSync(mnt).includes(HIDDEN), 'and is listed')

  // in a subdirectory, onto an existing file, and from another directory
  fs.mkdirSync(p('d'))
  fs.writeFileSync(p('d/a'), 'aaa')
  fs.writeFileSync(p('d/' + HIDDEN), 'old')
  fs.renameSync(p('d/a'), p('d/' + HIDDEN))
  t.equal(fs.readFileSync(p('d/' + HIDDEN), 'utf8'), 'aaa', 'replacing an existing file of that name')
  fs.writeFileSync(p('moved'), 'across')
  fs.renameSync(p('moved'), p('d/.fuse_hiddenfedcba9876543210'))
  t.equal(fs.readFileSync(p('d/.fuse_hiddenfedcba9876543210'), 'utf8'), 'across', 'moved into another directory')
  t.same(fs.readdirSync(p('d')).sort(), [HIDDEN, '.fuse_hiddenfedcba9876543210'].sort())

  // and back: still an ordinary file under any name
  fs.renameSync(p('d/.fuse_hiddenfedcba9876543210'), p('back'))
  t.equal(fs.readFileSync(p('back'), 'utf8'), 'across')

  await m.stop()
  const m2 = await mountVolume(t, { store, mnt, runDir })
  t.equal(fs.readFileSync(p(HIDDEN), 'utf8'), 'precious data', 'after a remount the file is still there')
  t.equal(fs.readFileSync(p('d/' + HIDDEN), 'utf8'), 'aaa')
  t.equal(fs.readFileSync(p('back'), 'utf8'), 'across')
  t.notMatch(m2.stderr(), /"purged"/, 'nothing was left as an orphan to free')
  await m2.stop()
  const f = cli(['fsck', '--store', store, '--json'])
  t.equal(f.code, 0, `fsck: ${f.stdout}`)
  t.equal(JSON.parse(f.stdout).dataBytes, 'precious data'.length + 'aaa'.length + 'across'.length, 'every byte is still stored')
})

t.test('a file unlinked (or renamed over) while open: no hidden name ever shows, its directory can be removed, fstat and reads work, and its data is freed at the last close', async t => {
  const base = tempDir()
  t.teardown(() => fs.rmSync(base, { recursive: true, force: true }))
  const store = join(base, 'store'); const mnt = join(base, 'mnt'); const runDir = join(base, 'run')
  const m = await mountVolume(t, { store, mnt, runDir, extraArgs: ['--attr-timeout', '0'] })
  const p = (s: string): string => join(mnt, s)
  fs.mkdirSync(p('dir'))
  fs.writeFileSync(p('dir/open'), 'kept while open')
  const fd = fs.openSync(p('dir/open'), 'r+')
  fs.unlinkSync(p('dir/open'))
  t.same(fs.readdirSync(p('dir')), [], 'no .fuse_hidden name in the directory')
  t.equal(fs.fstatSync(fd).size, 15, 'fstat works')
  const buf = Buffer.alloc(15)
  fs.readSync(fd, buf, 0, 15, 0)
  t.equal(buf.toString(), 'kept while open', 'read works')
  fs.rmdirSync(p('dir'))
  t.equal(code(() => fs.statSync(p('dir'))), 'ENOENT', 'its directory could be removed')

  fs.writeFileSync(p('target'), 'overwritten while open')
  fs.writeFileSync(p('src'), 'new')
  const fd2 = fs.openSync(p('target'), 'r')
  fs.renameSync(p('src'), p('target'))
  t.same(fs.readdirSync(mnt), ['target'], 'renamed over an open file: no hidden name shows')
  t.equal(fs.readFileSync(p('target'), 'utf8'), 'new')
  const buf2 = Buffer.alloc(22)
  fs.readSync(fd2, buf2, 0, 22, 0)
  t.equal(buf2.toString(), 'overwritten while open', 'the replaced file is still readable through its handle')
  fs.closeSync(fd)
  fs.closeSync(fd2)
  t.same(fs.readdirSync(mnt), ['target'])
  await m.stop()
  const f = cli(['fsck', '--store', store, '--json'])
  t.equal(f.code, 0, `fsck: ${f.stdout}`)
  t.equal(JSON.parse(f.stdout).dataBytes, 3, 'only the 3 bytes of target remain: both unlinked files were freed at their last close')
})
