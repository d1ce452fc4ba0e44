import { createHash, randomBytes } from 'node:crypto'
import fsp from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { ReplfsError } from '../../src/errors.js'
import { loadFuse3 } from '../../src/fuse3/binding.js'
import { mountFuse3, RENAME_EXCHANGE, RENAME_NOREPLACE } from '../../src/fuse3/session.js'
import { pino } from 'pino'
import { isMounted } from '../helpers/mount.js'
import { mountToy, renameat2, sh } from './toy-mount.js'

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

t.test('loading a missing addon is a ReplfsError whose hint names apt-get install libfuse3-dev and npm ci', async t => {
  const err = t.throws(() => loadFuse3('/nonexistent/replfs_fuse3.node')) as ReplfsError
  t.ok(err instanceof ReplfsError, 'a ReplfsError')
  t.equal(err.code, 'MOUNT_FAILED')
  t.match(err.hint, /apt-get install libfuse3-dev/)
  t.match(err.hint, /npm ci/)
  const other = new URL('../../../native/process/build/Release/replfs_process.node', import.meta.url).pathname
  t.throws(() => loadFuse3(other), { name: 'ReplfsError', code: 'MOUNT_FAILED', message: /has ABI undefined, expected 1/ }, 'another addon fails the ABI check')
  const built = loadFuse3()
  t.equal(built.abi, 1, 'the built addon has the ABI the wrapper expects')
  t.match(built.libfuseVersion, /^3\.\d+/, 'linked against libfuse 3')
})

t.test('mounting on a missing directory or with an unknown option is a MOUNT_FAILED ReplfsError, nothing mounted', async t => {
  const log = pino({ level: 'silent' })
  t.throws(() => mountFuse3('/nonexistent/replfs-mnt', {}, { log }), { name: 'ReplfsError', code: 'MOUNT_FAILED', message: /fuse_session_mount/ })
  const { mnt } = await mountToy(t)
  const dir = join(mnt, '..', `replfs-fuse3-badopt-${process.pid}`)
  await fsp.mkdir(dir)
  t.teardown(async () => await fsp.rmdir(dir))
  t.throws(() => mountFuse3(dir, {}, { log, extraOptions: ['no_such_option'] }), { name: 'ReplfsError', code: 'MOUNT_FAILED', message: /fuse_session_new/ })
  t.notOk(isMounted(dir))
})

t.test('a file created, written and read back keeps its digest; truncate, chmod and nanosecond times show in stat', async t => {
  const { mnt, toy } = await mountToy(t)
  const p = join(mnt, 'f')
  const data = randomBytes(300_000)
  await fsp.writeFile(p, data)
  t.equal(sha(await fsp.readFile(p)), sha(data), 'read back through the kernel: same digest')
  t.equal((await sh(`sha256sum ${p}`)).stdout.split(' ')[0], sha(data), 'and from another process')
  t.equal(sha(toy.resolve('f').data), sha(data), 'the toy fs holds the same bytes')
  await fsp.truncate(p, 1000)
  t.equal((await fsp.stat(p)).size, 1000, 'truncated size')
  t.equal(sha(await fsp.readFile(p)), sha(data.subarray(0, 1000)), 'truncated contents')
  await fsp.chmod(p, 0o640)
  t.equal((await fsp.stat(p)).mode & 0o7777, 0o640, 'chmod shows')
  t.equal((await sh(`touch -m -d '2021-03-04 05:06:07.123456789 UTC' ${p} && touch -a -d '2020-01-02 03:04:05.987654321 UTC' ${p}`)).code, 0)
  const st = await fsp.stat(p, { bigint: true })
  t.equal(st.mtimeNs, BigInt(Date.UTC(2021, 2, 4, 5, 6, 7)) * 1_000_000n + 123_456_789n, 'mtime to the nanosecond')
  t.equal(st.atimeNs, BigInt(Date.UTC(2020, 0, 2, 3, 4, 5)) * 1_000_000n + 987_654_321n, 'atime to the nanosecond')
  const before = BigInt(Date.now()) * 1_000_000n - 2_000_000_000n
  t.equal((await sh(`touch ${p}`)).code, 0, 'touch with UTIME_NOW')
  t.ok((await fsp.stat(p, { bigint: true })).mtimeNs > before, 'UTIME_NOW sets the current time')
})

t.test('mkdir, readdir across several kernel batches, rmdir (ENOTEMPTY while it has entries)', async t => {
  const taken: string[] = []
  const { mnt } = await mountToy(t, { mount: { readdirplus: 'yes' }, ops: base => ({ ...base, readdirplusTaken: es => taken.push(...es.map(e => e.name.toString())) }) })
  const d = join(mnt, 'dir')
  await fsp.mkdir(d)
  const names = Array.from({ length: 80 }, (_, i) => `entry-with-a-rather-long-name-${String(i).padStart(3, '0')}`)
  for (const n of names) await fsp.writeFile(join(d, n), n)
  t.same((await fsp.readdir(d)).sort(), names, 'every name once, in all batches')
  t.equal((await sh(`ls -a ${d} | wc -l`)).stdout.trim(), String(names.length + 2), 'ls in another process agrees (with . and ..)')
  t.same([...new Set(taken)].filter(n => n.startsWith('entry-')).sort(), names, 'readdirplus: the session reports each entry the kernel took')
  t.equal((await fsp.stat(mnt)).nlink, 3, 'the root counts the subdirectory')
  await t.rejects(fsp.rmdir(d), { code: 'ENOTEMPTY' })
  for (const n of names) await fsp.unlink(join(d, n))
  await fsp.rmdir(d)
  await t.rejects(fsp.stat(d), { code: 'ENOENT' }, 'gone')
  t.equal((await fsp.stat(mnt)).nlink, 2)
})

t.test('symlink and readlink', async t => {
  const { mnt } = await mountToy(t)
  await fsp.writeFile(join(mnt, 'target'), 'pointed at')
  await fsp.symlink('target', join(mnt, 'link'))
  t.equal(await fsp.readlink(join(mnt, 'link')), 'target')
  t.ok((await fsp.lstat(join(mnt, 'link'))).isSymbolicLink())
  t.equal(await fsp.readFile(join(mnt, 'link'), 'utf8'), 'pointed at', 'followed by the kernel')
})

t.test('hard links: nlink and st_ino agree at once, chmod through one name shows on the other, unlink drops nlink', async t => {
  const { mnt } = await mountToy(t)
  const a = join(mnt, 'a')
  const b = join(mnt, 'b')
  await fsp.writeFile(a, 'shared')
  await fsp.link(a, b)
  const [sa, sb] = [await fsp.lstat(a), await fsp.lstat(b)]
  t.equal(sa.nlink, 2, 'a has two links right after link')
  t.equal(sa.ino, sb.ino, 'a and b are one inode')
  await fsp.chmod(b, 0o600)
  t.equal((await fsp.lstat(a)).mode & 0o7777, 0o600, 'chmod through b shows on a')
  await fsp.appendFile(b, '+more')
  t.equal(await fsp.readFile(a, 'utf8'), 'shared+more', 'data written through b reads through a')
  await fsp.unlink(b)
  t.equal((await fsp.lstat(a)).nlink, 1, 'after unlink b, a has one link')
  t.equal(await fsp.readFile(a, 'utf8'), 'shared+more')
})

t.test('rename onto an existing name replaces it; RENAME_NOREPLACE fails EEXIST; RENAME_EXCHANGE swaps', async t => {
  const { mnt } = await mountToy(t)
  const [x, y] = [join(mnt, 'x'), join(mnt, 'y')]
  await fsp.writeFile(x, 'from x')
  await fsp.writeFile(y, 'old y')
  await fsp.rename(x, y)
  t.equal(await fsp.readFile(y, 'utf8'), 'from x', 'y replaced')
  await t.rejects(fsp.stat(x), { code: 'ENOENT' }, 'x is gone')
  await fsp.writeFile(x, 'new x')
  t.equal(await renameat2(x, y, RENAME_NOREPLACE), 'EEXIST', 'NOREPLACE onto an existing name')
  t.equal(await fsp.readFile(y, 'utf8'), 'from x', 'y untouched')
  t.equal(await renameat2(x, y, RENAME_EXCHANGE), 'OK', 'EXCHANGE')
  t.equal(await fsp.readFile(y, 'utf8'), 'new x')
  t.equal(await fsp.readFile(x, 'utf8'), 'from x', 'swapped')
  await fsp.mkdir(join(mnt, 'sub'))
  await fsp.rename(x, join(mnt, 'sub', 'moved'))
  t.equal(await fsp.readFile(join(mnt, 'sub', 'moved'), 'utf8'), 'from x', 'moved between directories')
})

t.test('xattrs set, get, list and remove with setfattr/getfattr', async t => {
  const { mnt, toy } = await mountToy(t)
  const p = join(mnt, 'x')
  await fsp.writeFile(p, '')
  t.equal((await sh(`setfattr -n user.color -v blue ${p} && setfattr -n user.size -v 42 ${p}`)).code, 0)
  t.equal((await sh(`getfattr --only-values -n user.color ${p}`)).stdout, 'blue')
  t.same((await sh(`getfattr --absolute-names -d ${p}`)).stdout.split('\n').filter(l => l.startsWith('user.')).sort(), ['user.color="blue"', 'user.size="42"'])
  t.equal((await sh(`setfattr -x user.color ${p}`)).code, 0)
  const gone = await sh(`getfattr -n user.color ${p}`)
  t.not(gone.code, 0)
  t.match(gone.stderr, /No such attribute/)
  t.same([...toy.resolve('x').xattrs.keys()], ['user.size'], 'the toy fs holds what is left')
})

t.test('fallocate and copy_file_range reach their handlers', async t => {
  const { mnt, toy } = await mountToy(t)
  const [src, dst] = [join(mnt, 'src'), join(mnt, 'dst')]
  await fsp.writeFile(src, 'copy these bytes')
  t.equal((await sh(`fallocate -l 65536 ${dst}`)).code, 0)
  t.ok(toy.seen.has('fallocate'), 'the fallocate handler ran')
  t.equal((await fsp.stat(dst)).size, 65536, 'fallocate extended the file')
  const py = `import os; a = os.open('${src}', os.O_RDONLY); b = os.open('${dst}', os.O_WRONLY); print(os.copy_file_range(a, b, 10, 0, 100))`
  t.equal((await sh(`python3 -c "${py}"`)).stdout.trim(), '10', 'copy_file_range copied 10 bytes from offset 0 to offset 100')
  t.ok(toy.seen.has('copyFileRange'), 'the copy_file_range handler ran (not a kernel fallback)')
  const got = await fsp.readFile(dst)
  t.equal(got.subarray(100, 110).toString(), 'copy these', 'the bytes landed at the output offset')
  t.ok(got.length === 65536 && got.subarray(0, 100).every(b => b === 0), 'nothing else changed')
})

t.test('2,000 small files created from another process all appear', async t => {
  const { mnt, toy } = await mountToy(t)
  const r = await sh(`node -e "const fs=require('fs');const t0=process.hrtime.bigint();for(let i=0;i<2000;i++)fs.writeFileSync('${mnt}/f'+i,'x'+i);console.log(Number(process.hrtime.bigint()-t0)/1e6)"`)
  t.equal(r.code, 0, r.stderr)
  const ms = Number(r.stdout.trim())
  t.equal((await fsp.readdir(mnt)).length, 2000)
  t.equal(toy.resolve('f1999').data.toString(), 'x1999')
  t.comment(`2,000 creates+writes from a child process: ${ms.toFixed(0)} ms (create, write, close each)`)
})
