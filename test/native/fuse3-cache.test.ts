import { createHash } from 'node:crypto'
import { execFile } from 'node:child_process'
import fsp from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { loadFuse3 } from '../../src/fuse3/binding.js'
import { isMounted } from '../helpers/mount.js'
import { mountToy, sh } from './toy-mount.js'

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

t.test('statfs figures from the handler appear in fs.statfsSync of another process', async t => {
  const { mnt, toy } = await mountToy(t)
  toy.statfsFigures = { bsize: 8192, blocks: 12345, bfree: 2345, bavail: 1234, files: 999, ffree: 77, namemax: 255 }
  const r = await sh(`node -e "console.log(JSON.stringify(require('fs').statfsSync('${mnt}')))"`)
  t.equal(r.code, 0, r.stderr)
  t.match(JSON.parse(r.stdout), { bsize: 8192, blocks: 12345, bfree: 2345, bavail: 1234, files: 999, ffree: 77 })
})

t.test('a large sequential write arrives in requests over 128 KiB (up to 1 MiB) and reads back intact', async t => {
  const { mnt, toy, session } = await mountToy(t)
  t.equal((await session.conn).maxWrite, 1 << 20, 'libfuse offers 1 MiB writes')
  const p = join(mnt, 'big')
  const r = await sh(`node -e "const b=Buffer.alloc(16<<20);for(let i=0;i<b.length;i+=4096)b.writeUInt32LE(i,i);require('fs').writeFileSync('${p}',b);console.log(require('crypto').createHash('sha256').update(b).digest('hex'))"`)
  t.equal(r.code, 0, r.stderr)
  t.ok(toy.largestWrite > 128 << 10, `largest write request ${toy.largestWrite} bytes`)
  t.ok(toy.largestWrite <= 1 << 20)
  t.comment(`largest write request seen: ${toy.largestWrite} bytes`)
  t.equal(sha(await fsp.readFile(p)), r.stdout.trim(), 'same digest read back')
})

t.test('writeback cache is negotiated when asked for, and off by default', async t => {
  const WB = loadFuse3().constants.FUSE_CAP_WRITEBACK_CACHE
  const plain = await mountToy(t)
  t.equal((await plain.session.conn).want & WB, 0)
  const wb = await mountToy(t, { mount: { writebackCache: true } })
  t.equal((await wb.session.conn).want & WB, WB)
  const p = join(wb.mnt, 'f')
  await fsp.writeFile(p, 'through the writeback cache')
  t.equal(await fsp.readFile(p, 'utf8'), 'through the writeback cache')
})

t.test('notifyInvalInode: new bytes behind the cache show through an already-open descriptor', async t => {
  const { mnt, toy, session } = await mountToy(t, { timeouts: { attr: 60, entry: 60 } })
  const p = join(mnt, 'cached')
  await fsp.writeFile(p, 'old contents')
  const fh = await fsp.open(p, 'r')
  t.teardown(async () => await fh.close())
  const read = async (): Promise<string> => (await fh.read(Buffer.alloc(64), 0, 64, 0)).buffer.subarray(0, 12).toString()
  t.equal(await read(), 'old contents')
  const n = toy.resolve('cached')
  n.data = Buffer.from('NEW CONTENTS')
  t.equal(await read(), 'old contents', 'the kernel serves its cache without asking')
  t.equal(await session.notifyInvalInode(n.ino, 0, 0), true, 'the kernel had it cached')
  t.equal(await read(), 'NEW CONTENTS', 'after the notification the same descriptor reads the new bytes')
})

t.test('notifyInvalEntry: a name removed behind the cache is ENOENT at once despite a long entry timeout', async t => {
  const { mnt, toy, session } = await mountToy(t, { timeouts: { attr: 60, entry: 60 } })
  const p = join(mnt, 'doomed')
  await fsp.writeFile(p, 'x')
  await fsp.stat(p)
  toy.resolve('').children!.delete('doomed')
  t.equal((await fsp.stat(p)).size, 1, 'the kernel still has the name cached (60 s entry timeout)')
  t.equal(await session.notifyInvalEntry(1, 'doomed'), true)
  await t.rejects(fsp.stat(p), { code: 'ENOENT' }, 'gone at once')
  t.equal(await session.notifyInvalEntry(1, 'never-looked-up'), false, 'nothing cached: false, not an error')
  await fsp.writeFile(join(mnt, 'other'), 'y')
  const ino = toy.resolve('other').ino
  toy.resolve('').children!.delete('other')
  t.equal(await session.notifyDelete(1, ino, 'other'), true, 'notifyDelete')
  await t.rejects(fsp.stat(join(mnt, 'other')), { code: 'ENOENT' })
})

t.test('an unmount from outside (umount -l) ends the session: exited resolves and it is logged', async t => {
  const { mnt, session, logs } = await mountToy(t)
  await fsp.writeFile(join(mnt, 'f'), 'x')
  t.equal((await sh(`umount -l ${mnt}`)).code, 0)
  await session.exited
  t.notOk(isMounted(mnt))
  t.match(logs.join(''), /session ended without unmount/)
  await t.rejects(session.notifyInvalInode(1), { code: 'ERR_FUSE3_NOTIFY', errno: 107 }, 'notifying an ended session is ENOTCONN')
  session.unmount()
})

t.test('an answer the binding cannot convert (a bad attr) answers EIO and is logged', async t => {
  const { mnt, logs } = await mountToy(t, {
    ops: base => ({
      ...base,
      getattr: async r => {
        const good = await base.getattr!(r)
        return { timeout: 0, attr: { ...good.attr, mode: 'rw-' as unknown as number } }
      }
    })
  })
  await t.rejects(fsp.stat(mnt), { code: 'EIO' })
  t.match(logs.join(''), /mode must be a number/)
})

t.test('a handler that throws answers EIO, is logged, and the mount keeps working', async t => {
  const { mnt, toy, logs } = await mountToy(t)
  toy.throwOn.add('bug')
  await t.rejects(fsp.stat(join(mnt, 'bug')), { code: 'EIO' })
  t.match(logs.join(''), /fuse3 handler failed; answering EIO/)
  await t.rejects(fsp.stat(join(mnt, 'missing')), { code: 'ENOENT' }, 'an FsError answers its own errno')
  await fsp.writeFile(join(mnt, 'after'), 'still works')
  t.equal(await fsp.readFile(join(mnt, 'after'), 'utf8'), 'still works')
})

// Runs in a process of its own, which must end by itself: an unanswered request and the
// threadsafe function must not keep it alive after unmount.
const PENDING = `
import { execFile } from 'node:child_process'
import { mkdtempSync, rmdirSync } from 'node:fs'
import fsp from 'node:fs/promises'
import { pino } from 'pino'
const dist = process.argv[1]
const { mountFuse3 } = await import(dist + '/src/fuse3/session.js')
const { ToyFs } = await import(dist + '/test/native/toy-fs.js')
const mnt = mkdtempSync('/tmp/replfs-fuse3-pending-')
const toy = new ToyFs()
const s = mountFuse3(mnt, toy.ops(), { log: pino({ level: 'silent' }) })
await fsp.writeFile(mnt + '/stuck', 'x')
toy.hangOn.add('stuck')
const hung = new Promise(resolve => { toy.onHang = resolve })
const cat = new Promise(resolve => execFile('cat', [mnt + '/stuck'], (err, out, errOut) => resolve({ code: err?.code, errOut })))
await hung
const t0 = Date.now()
let res
if (process.argv[2] === 'gc') {
  // The handler's promise never settles and nothing holds it: collecting it answers EIO.
  let settled = false
  cat.then(() => { settled = true })
  for (let i = 0; i < 100 && !settled; i++) { globalThis.gc(); await new Promise(r => setTimeout(r, 20)) }
  res = await cat
  s.unmount()
} else {
  s.unmount()
  s.unmount()
  res = await cat
}
await s.exited
rmdirSync(mnt)
console.log(JSON.stringify({ ...res, unmountMs: Date.now() - t0, mnt }))
`

async function pendingChild (mode: 'unmount' | 'gc'): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const dist = new URL('../..', import.meta.url).pathname.replace(/\/$/, '')
  return await new Promise(resolve => {
    execFile(process.execPath, ['--expose-gc', '--input-type=module', '-e', PENDING, dist, mode], { cwd: join(dist, '..'), timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : (err as { code?: number }).code ?? null, stdout, stderr }))
  })
}

t.test('a request whose handler never answers and is collected gets EIO from the handle finalizer', async t => {
  const out = await pendingChild('gc')
  t.equal(out.code, 0, `the child exited on its own: ${out.stderr}`)
  const res = JSON.parse(out.stdout) as { code: number, errOut: string, mnt: string }
  t.equal(res.code, 1, 'cat failed')
  t.match(res.errOut, /Input\/output error/, 'with EIO, before any unmount')
  t.notOk(isMounted(res.mnt))
})

t.test('unmount while a request waits on JS answers it EIO and the process still exits by itself', async t => {
  const out = await pendingChild('unmount')
  t.equal(out.code, 0, `the child exited on its own: ${out.stderr}`)
  const res = JSON.parse(out.stdout) as { code: number, errOut: string, unmountMs: number, mnt: string }
  t.equal(res.code, 1, 'cat failed')
  t.match(res.errOut, /Input\/output error|Transport endpoint is not connected/, 'with EIO (or ENOTCONN)')
  t.ok(res.unmountMs < 5000, `unmount took ${res.unmountMs} ms`)
  t.notOk(isMounted(res.mnt), 'nothing left mounted')
  t.comment(`pending-request unmount: ${out.stdout.trim()}`)
})
