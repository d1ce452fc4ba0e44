import t from 'tap'
t.setTimeout(240_000)
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import { dirname, join } from 'node:path'
import { cli, mountVolume, sh, shr } from '../helpers/mount.js'

const code = (fn: () => unknown): string | undefined => { try { fn(); return undefined } catch (e) { return (e as NodeJS.ErrnoException).code } }

t.test('POSIX operations on a real mount', async t => {
  const m = await mountVolume(t, { allowOther: true })
  const p = (s: string): string => join(m.mnt, s)
  // let the unprivileged user reach the mount point
  fs.chmodSync(dirname(m.mnt), 0o755)

  t.test('create, write and read back a file', async t => {
    fs.writeFileSync(p('a.txt'), 'hello world')
    t.equal(fs.readFileSync(p('a.txt'), 'utf8'), 'hello world')
    fs.appendFileSync(p('a.txt'), '!')
    t.equal(fs.readFileSync(p('a.txt'), 'utf8'), 'hello world!')
    t.equal(fs.statSync(p('a.txt')).size, 12)
  })

  t.test('mkdir and rmdir', async t => {
    fs.mkdirSync(p('d1'))
    t.ok(fs.statSync(p('d1')).isDirectory())
    t.ok(fs.readdirSync(m.mnt).includes('d1'))
    fs.rmdirSync(p('d1'))
    t.equal(code(() => fs.statSync(p('d1'))), 'ENOENT')
  })

  t.test('rename replaces a file, replaces an empty dir, and moves across dirs', async t => {
    fs.writeFileSync(p('r1'), 'one'); fs.writeFileSync(p('r2'), 'two')
    fs.renameSync(p('r1'), p('r2'))
    t.equal(fs.readFileSync(p('r2'), 'utf8'), 'one')
    t.equal(code(() => fs.statSync(p('r1'))), 'ENOENT')
    fs.mkdirSync(p('rd1')); fs.writeFileSync(p('rd1/in'), 'x'); fs.mkdirSync(p('rd2'))
    fs.renameSync(p('rd1'), p('rd2'))
    t.equal(fs.readFileSync(p('rd2/in'), 'utf8'), 'x')
    t.equal(code(() => fs.statSync(p('rd1'))), 'ENOENT')
    fs.mkdirSync(p('other'))
    fs.renameSync(p('r2'), p('other/moved'))
    t.equal(fs.readFileSync(p('other/moved'), 'utf8'), 'one')
    t.same(fs.readdirSync(p('other')), ['moved'])
  })

  t.test('symlink and readlink', async t => {
    fs.writeFileSync(p('target'), 'via link')
    fs.symlinkSync('target', p('sl'))
    t.equal(fs.readlinkSync(p('sl')), 'target')
    t.ok(fs.lstatSync(p('sl')).isSymbolicLink())
    t.equal(fs.readFileSync(p('sl'), 'utf8'), 'via link')
  })

  t.test('hard link shares st_ino and has nlink 2', async t => {
    fs.writeFileSync(p('h1'), 'linked')
    fs.linkSync(p('h1'), p('h2'))
    const a = fs.statSync(p('h1')); const b = fs.statSync(p('h2'))
    t.equal(a.ino, b.ino)
    t.equal(a.nlink, 2)
    fs.writeFileSync(p('h2'), 'changed')
    // The kernel caches each name's attributes separately (path-based FUSE): the binding tells it
    // to drop h1's after the write through h2, so h1 is not cut to its old size.
    t.equal(fs.readFileSync(p('h1'), 'utf8'), 'changed', 'read through the other name right away sees the new size')
    t.equal(fs.statSync(p('h1')).size, 7, 'stat through the other name right away shows the new size')
    fs.appendFileSync(p('h1'), ' again')
    t.equal(fs.readFileSync(p('h2'), 'utf8'), 'changed again', 'and the other way round')
    fs.truncateSync(p('h2'), 3)
    t.equal(fs.readFileSync(p('h1'), 'utf8'), 'cha', 'a truncate through one name shows through the other')
    await new Promise(resolve => setTimeout(resolve, 1500))
    t.equal(fs.readFileSync(p('h1'), 'utf8'), 'cha', 'read through the other name after the attr timeout')
    // The name linked from is tracked by the link itself, before anything asks for its attributes.
    fs.writeFileSync(p('k1'), 'one')
    t.equal(fs.readFileSync(p('k1'), 'utf8'), 'one')
    fs.linkSync(p('k1'), p('k2'))
    fs.appendFileSync(p('k2'), ' two')
    t.equal(fs.readFileSync(p('k1'), 'utf8'), 'one two', 'a name read before the link sees a write made through the new one')
    fs.unlinkSync(p('k1'))
    fs.unlinkSync(p('k2'))
    fs.unlinkSync(p('h1'))
    t.equal(fs.statSync(p('h2')).nlink, 1)
  })

  t.test('chmod and chown as root', async t => {
    fs.writeFileSync(p('perm'), 'x')
    fs.chmodSync(p('perm'), 0o640)
    t.equal(fs.statSync(p('perm')).mode & 0o7777, 0o640)
    fs.chownSync(p('perm'), 1234, 5678)
    const st = fs.statSync(p('perm'))
    t.equal(st.uid, 1234); t.equal(st.gid, 5678)
  })

  t.test('utimens keeps nanoseconds and leaves atime alone when only mtime is set', async t => {
    fs.writeFileSync(p('times'), 'x')
    fs.utimesSync(p('times'), new Date('2000-01-01T00:00:00Z'), new Date('2000-01-01T00:00:00Z'))
    const atimeBefore = sh(`stat -c %x ${p('times')}`).trim()
    sh(`TZ=UTC touch -m -d '2001-02-03 04:05:06.123456789' ${p('times')}`)
    t.equal(sh(`TZ=UTC stat -c %y ${p('times')}`).trim(), '2001-02-03 04:05:06.123456789 +0000')
    t.equal(sh(`stat -c %x ${p('times')}`).trim(), atimeBefore, 'atime untouched')
  })

  t.test('statfs: the total is --size, and free space drops by what a written file stores', async t => {
    const size = 64 * 1024 * 1024
    const sm = await mountVolume(t, { size: '64M' })
    // f_frsize (%S) is the unit of the block counts: %b total, %f free, %a available.
    const statfs = (): { frsize: number, blocks: number, bfree: number, bavail: number } => {
      const [frsize, blocks, bfree, bavail] = sh(`stat -f -c '%S %b %f %a' ${sm.mnt}`).trim().split(' ').map(Number)
      return { frsize, blocks, bfree, bavail }
    }
    const before = statfs()
    t.equal(before.frsize, 4096, 'f_frsize is the volume\'s 4 KiB block')
    t.equal(before.blocks * before.frsize, size, 'blocks * frsize is the --size the volume was mounted with')
    t.same([before.bfree, before.bavail], [before.blocks, before.blocks], 'an empty volume has every block free and available')
    // Random bytes, so every byte is stored; not a whole number of blocks, so the last one is partly used.
    const data = randomBytes(1024 * 1024 + 1000)
    const fd = fs.openSync(join(sm.mnt, 'statfs-file'), 'w')
    try {
      fs.writeSync(fd, data)
      fs.fsyncSync(fd)
    } finally { fs.closeSync(fd) }
    const after = statfs()
    t.equal(after.blocks, before.blocks, 'the total does not change')
    t.equal(before.bfree - after.bfree, Math.ceil(data.length / before.frsize), `bfree drops by the ${data.length} bytes the file stores, in whole blocks`)
    t.equal(after.bavail, after.bfree, 'all free space is available (no reserve)')
    fs.unlinkSync(join(sm.mnt, 'statfs-file'))
    // (the kernel sends RELEASE after close() returned: until it lands the file is open, unlinked, and keeps its blocks)
    let freed = statfs().bfree
    for (const deadline = Date.now() + 5000; freed !== before.bfree && Date.now() < deadline; freed = statfs().bfree) await new Promise(resolve => setTimeout(resolve, 50))
    t.equal(freed, before.bfree, 'removing the file frees its blocks again')
  })

  t.test('user.* xattrs: set, get, list, remove', async t => {
    fs.writeFileSync(p('xa'), 'x')
    sh(`setfattr -n user.color -v blue ${p('xa')}`)
    t.equal(sh(`getfattr --only-values -n user.color ${p('xa')}`), 'blue')
    t.match(sh(`getfattr -d ${p('xa')}`), /user\.color="blue"/)
    sh(`setfattr -x user.color ${p('xa')}`)
    const r = shr(`getfattr -n user.color ${p('xa')}`)
    t.not(r.code, 0); t.match(r.stderr, /No such attribute/)
  })

  t.test('truncate and ftruncate grow (zero-filled) and shrink', async t => {
    fs.writeFileSync(p('tr'), 'abcdefgh')
    fs.truncateSync(p('tr'), 3)
    t.equal(fs.readFileSync(p('tr'), 'utf8'), 'abc')
    const fd = fs.openSync(p('tr'), 'r+')
    fs.ftruncateSync(fd, 6)
    t.equal(fs.fstatSync(fd).size, 6)
    fs.closeSync(fd)
    t.same(fs.readFileSync(p('tr')), Buffer.from([97, 98, 99, 0, 0, 0]))
  })

  t.test('an unlinked but open file keeps its data and fstat works 2 s later', async t => {
    fs.writeFileSync(p('ghost'), 'still here')
    const fd = fs.openSync(p('ghost'), 'r+')
    fs.unlinkSync(p('ghost'))
    t.equal(code(() => fs.statSync(p('ghost'))), 'ENOENT')
    await new Promise(resolve => setTimeout(resolve, 2000))
    const st = fs.fstatSync(fd)
    t.equal(st.size, 10)
    const buf = Buffer.alloc(10)
    t.equal(fs.readSync(fd, buf, 0, 10, 0), 10)
    t.equal(buf.toString(), 'still here')
    fs.writeSync(fd, 'X', 0)
    fs.readSync(fd, buf, 0, 10, 0)
    t.equal(buf.toString(), 'Xtill here')
    fs.closeSync(fd)
  })

  t.test('errors: ENOENT EEXIST ENOTDIR EISDIR ENOTEMPTY ENAMETOOLONG EINVAL', async t => {
    t.equal(code(() => fs.readFileSync(p('nope'))), 'ENOENT')
    fs.mkdirSync(p('e'))
    t.equal(code(() => fs.mkdirSync(p('e'))), 'EEXIST')
    fs.writeFileSync(p('e/f'), 'x')
    t.equal(code(() => fs.writeFileSync(p('e/f'), 'y', { flag: 'wx' })), 'EEXIST')
    t.equal(code(() => fs.readdirSync(p('e/f'))), 'ENOTDIR')
    t.equal(code(() => fs.writeFileSync(p('e/f/g'), 'x')), 'ENOTDIR')
    t.equal(code(() => fs.writeFileSync(p('e'), 'x')), 'EISDIR')
    t.equal(code(() => fs.rmdirSync(p('e'))), 'ENOTEMPTY')
    t.equal(code(() => fs.writeFileSync(p('n'.repeat(256)), 'x')), 'ENAMETOOLONG')
    fs.writeFileSync(p('n'.repeat(255)), 'x')
    t.equal(fs.readFileSync(p('n'.repeat(255)), 'utf8'), 'x', '255-byte name is fine')
    fs.mkdirSync(p('e/sub'))
    t.equal(code(() => fs.renameSync(p('e'), p('e/sub/e'))), 'EINVAL')
  })

  t.test('EACCES for an unprivileged user writing into a root-owned 0755 dir', async t => {
    fs.mkdirSync(p('rootonly'), { mode: 0o755 })
    fs.chmodSync(m.mnt, 0o755)
    const r = shr(`setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'echo x > ${p('rootonly/f')}'`)
    t.not(r.code, 0)
    t.match(r.stderr, /Permission denied/)
    t.equal(code(() => fs.statSync(p('rootonly/f'))), 'ENOENT')
    const ok = shr(`setpriv --reuid=65534 --regid=65534 --clear-groups cat ${p('a.txt')}`)
    t.equal(ok.stdout, 'hello world!', 'but it can read a 0644 file')
  })
})

t.test('ENOSPC when writing 2 MiB into a --size 1M volume', async t => {
  const m = await mountVolume(t, { size: '1M' })
  const fd = fs.openSync(join(m.mnt, 'big'), 'w')
  const chunk = Buffer.alloc(64 * 1024, 7)
  let written = 0; let err: string | undefined
  try {
    while (written < 2 * 1024 * 1024) written += fs.writeSync(fd, chunk)
  } catch (e) { err = (e as NodeJS.ErrnoException).code }
  try { fs.closeSync(fd) } catch (e) { err ??= (e as NodeJS.ErrnoException).code }
  t.equal(err, 'ENOSPC', `write failed after ${written} bytes`)
  t.ok(written <= 1024 * 1024, `no more than 1 MiB accepted (${written})`)
})

t.test('a 1 MiB write(2) reaches the volume in one or two FUSE requests, not eight (maxPages), and stat offers 1 MiB as the I/O size', async t => {
  const m = await mountVolume(t)
  const env = { REPLFS_RUN_DIR: m.runDir }
  const fuseOps = (): Record<string, number> => JSON.parse(cli(['status', m.mnt, '--json'], env).stdout).fuseOps as Record<string, number>
  const file = join(m.mnt, 'big')
  const chunks = Array.from({ length: 8 }, () => randomBytes(1 << 20))
  const before = fuseOps().write ?? 0
  const fd = fs.openSync(file, 'w')
  for (const c of chunks) t.equal(fs.writeSync(fd, c), c.length)
  fs.closeSync(fd)
  const requests = (fuseOps().write ?? 0) - before
  // libfuse 2.9 alone caps a request at 32 pages: 8 MiB would take 64 requests.
  t.ok(requests >= 8 && requests <= 16, `8 MiB in 1 MiB write(2) calls took ${requests} FUSE write requests`)
  t.ok(fs.readFileSync(file).equals(Buffer.concat(chunks)), 'the file reads back exactly')
  t.equal(fs.statSync(file).blksize, 1 << 20, 'st_blksize is 1 MiB, so cp and stdio write in 1 MiB pieces')
})

t.test('the binding answers security.* xattr reads itself: writes cost no getxattr round trip into JavaScript, user.* xattrs still reach the volume', async t => {
  const m = await mountVolume(t)
  const env = { REPLFS_RUN_DIR: m.runDir }
  const fuseOps = (): Record<string, number> => JSON.parse(cli(['status', m.mnt, '--json'], env).stdout).fuseOps as Record<string, number>
  const before = fuseOps()
  const fd = fs.openSync(join(m.mnt, 'f'), 'w')
  for (let i = 0; i < 20; i++) fs.writeSync(fd, Buffer.alloc(256 * 1024, i)) // the kernel asks for security.capability before each write(2)
  fs.closeSync(fd)
  t.equal(shr(`getfattr -n security.capability ${join(m.mnt, 'f')}`).stderr.includes('No such attribute'), true, 'security.capability: no such attribute')
  sh(`setfattr -n user.k -v v1 ${join(m.mnt, 'f')}`)
  t.match(sh(`getfattr -n user.k ${join(m.mnt, 'f')}`), /user\.k="v1"/, 'user.* attributes still work')
  const after = fuseOps()
  const delta = (k: string): number => (after[k] ?? 0) - (before[k] ?? 0)
  t.ok(delta('write') >= 20, `${delta('write')} writes reached the volume`)
  // getfattr asks twice (the value's size, then the value): those are the only ones that reach us.
  t.equal(delta('getxattr'), 2, 'the only getxattr calls that reached JavaScript are getfattr\'s two for user.k')
  t.equal(fs.readFileSync(join(m.mnt, 'f')).length, 20 * 256 * 1024)
})
