import t from 'tap'
t.setTimeout(240_000)
import type { Test } from 'tap'
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { REPO, cli, forceUnmount, isMounted, mountVolume, tempDir } from '../helpers/mount.js'
import { callControl } from '../../src/daemon/control.js'

// Appends numbered records to log.txt, fsyncs, and every 20th record also creates rec-N as its
// own fsynced file (plus a dir fsync); prints "ack N" only after the fsyncs returned.
const WRITER = `
const fs = require('fs'), path = require('path')
const dir = process.argv[1]
const fd = fs.openSync(path.join(dir, 'log.txt'), 'a')
let n = 0
process.stdout._handle && process.stdout._handle.setBlocking && process.stdout._handle.setBlocking(true)
for (;;) {
  const line = 'record ' + String(n).padStart(8, '0') + ' ' + 'x'.repeat(n % 300) + '\\n'
  fs.writeSync(fd, line)
  fs.fsyncSync(fd)
  if (n % 20 === 0) {
    const f = fs.openSync(path.join(dir, 'rec-' + n), 'w'); fs.writeSync(f, line); fs.fsyncSync(f); fs.closeSync(f)
    const d = fs.openSync(dir, 'r'); fs.fsyncSync(d); fs.closeSync(d)
  }
  fs.writeSync(1, 'ack ' + n + '\\n')
  n++
}
`

// Writes big.bin in 1 MiB chunks (each 4 KiB page stamped with its chunk and page number), fsyncs
// every 4 MiB and prints "ack N" once N MiB are durable: enough data that LevelDB flushes memtables
// (as several tables: blocks, then metadata) while the volume process is killed.
const BIG_WRITER = `
const fs = require('fs'), path = require('path')
const fd = fs.openSync(path.join(process.argv[1], 'big.bin'), 'w')
process.stdout._handle && process.stdout._handle.setBlocking && process.stdout._handle.setBlocking(true)
const chunk = Buffer.alloc(1 << 20)
for (let n = 0; n < 1024; n++) {
  for (let p = 0; p < 256; p++) { chunk.writeUInt32BE(n, p * 4096); chunk.writeUInt32BE(p, p * 4096 + 4) }
  fs.writeSync(fd, chunk)
  if (n % 4 === 3) { fs.fsyncSync(fd); fs.writeSync(1, 'ack ' + (n + 1) + '\\n') }
}
`

async function runUntilKill (t: Test, m: Awaited<ReturnType<typeof mountVolume>>, acksBeforeKill: number, writer = WRITER): Promise<number[]> {
  const acked: number[] = []
  const w = spawn(process.execPath, ['-e', writer, m.mnt], { stdio: ['ignore', 'pipe', 'ignore'] })
  t.teardown(() => { if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL') })
  let buf = ''
  const writerExit = new Promise(resolve => w.once('exit', resolve))
  await new Promise<void>(resolve => {
    w.stdout.on('data', (d: Buffer) => {
      buf += d.toString()
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 1)
        const mm = /^ack (\d+)$/.exec(line)
        if (mm !== null) acked.push(Number(mm[1]))
      }
      if (acked.length === acksBeforeKill) {
        m.child.kill('SIGKILL') // the volume process dies mid-workload
        resolve()
      }
    })
    w.once('exit', () => resolve())
  })
  await m.exited
  // the writer now gets ENOTCONN and dies; give it a moment, then make sure it is gone
  const timer = setTimeout(() => w.kill('SIGKILL'), 3000)
  await writerExit
  clearTimeout(timer)
  w.stdout.destroy()
  return acked
}

function verify (t: Test, mnt: string, acked: number[]): void {
  const text = fs.readFileSync(join(mnt, 'log.txt'), 'utf8')
  const lines = new Set(text.split('\n'))
  const missing = acked.filter(n => !lines.has('record ' + String(n).padStart(8, '0') + ' ' + 'x'.repeat(n % 300)))
  t.same(missing, [], `all ${acked.length} acknowledged records are in log.txt`)
  const missingFiles = acked.filter(n => n % 20 === 0 && !fs.existsSync(join(mnt, `rec-${n}`)))
  t.same(missingFiles, [], `all ${acked.filter(n => n % 20 === 0).length} acknowledged rec-N files exist`)
}

t.test('kill -9 of the volume process mid-write: fsck clean, remount works, every fsynced record survives', async t => {
  const base = tempDir()
  t.teardown(() => fs.rmSync(base, { recursive: true, force: true }))
  const store = join(base, 'store'); const mnt = join(base, 'mnt'); const runDir = join(base, 'run')
  const m1 = await mountVolume(t, { store, mnt, runDir })
  const acked = await runUntilKill(t, m1, 300)
  t.ok(acked.length >= 300, `${acked.length} records acknowledged before the kill`)
  forceUnmount(mnt)
  t.notOk(isMounted(mnt), 'stale mount detached')
  const f = cli(['fsck', '--store', store])
  t.equal(f.code, 0, `fsck after kill -9: ${f.stdout}${f.stderr}`)
  await mountVolume(t, { store, mnt, runDir })
  verify(t, mnt, acked)
})

t.test('kill -9 mid-way through large writes that LevelDB flushes as separate tables: fsck clean, every fsynced MiB intact, the file a prefix of what was written', async t => {
  const base = tempDir()
  t.teardown(() => fs.rmSync(base, { recursive: true, force: true }))
  const store = join(base, 'store'); const mnt = join(base, 'mnt'); const runDir = join(base, 'run')
  const m1 = await mountVolume(t, { store, mnt, runDir })
  // 48 MiB durable: three 16 MiB memtables flushed, the next ones filling or flushing at the kill.
  const acked = await runUntilKill(t, m1, 12, BIG_WRITER)
  const durable = acked[acked.length - 1]
  t.ok(durable >= 48, `${durable} MiB fsynced before the kill`)
  forceUnmount(mnt)
  // The killed process's LevelDB log (read before fsck opens the store and starts a new one).
  t.match(fs.readFileSync(join(store, 'LOG'), 'utf8'), /Level-0 table #\d+: \d+ bytes OK \(level [12]\)/, 'its flushes wrote block tables straight below level 0')
  const f = cli(['fsck', '--store', store])
  t.equal(f.code, 0, `fsck after kill -9: ${f.stdout}${f.stderr}`)
  await mountVolume(t, { store, mnt, runDir })
  const data = fs.readFileSync(join(mnt, 'big.bin'))
  t.ok(data.length >= durable * (1 << 20), `big.bin holds ${data.length >> 20} MiB, at least the ${durable} fsynced`)
  t.equal(data.length % 4096, 0, 'whole pages only (writes are applied whole, in order)')
  const bad: number[] = []
  for (let off = 0; off < data.length && bad.length < 5; off += 4096) {
    if (data.readUInt32BE(off) !== Math.floor(off / (1 << 20)) || data.readUInt32BE(off + 4) !== (off % (1 << 20)) / 4096) bad.push(off)
  }
  t.same(bad, [], 'every page holds what was written there')
})

t.test('mounting again on the stale mount point a kill -9 left (no fusermount first) recovers it', async t => {
  const base = tempDir()
  t.teardown(() => fs.rmSync(base, { recursive: true, force: true }))
  const store = join(base, 'store'); const mnt = join(base, 'mnt'); const runDir = join(base, 'run')
  const m1 = await mountVolume(t, { store, mnt, runDir })
  const acked = await runUntilKill(t, m1, 100)
  t.ok(isMounted(mnt), 'the dead mount is still listed')
  let err: string | undefined
  try { fs.statSync(mnt) } catch (e) { err = (e as NodeJS.ErrnoException).code }
  t.equal(err, 'ENOTCONN', 'the mount point is stale')
  const m2 = await mountVolume(t, { store, mnt, runDir })
  t.match(m2.stderr(), /stale FUSE mount found/)
  verify(t, mnt, acked)
  fs.writeFileSync(join(mnt, 'after'), 'ok')
  t.equal(fs.readFileSync(join(mnt, 'after'), 'utf8'), 'ok', 'the recovered mount is writable')
  await m2.stop()
  const f = cli(['fsck', '--store', store])
  t.equal(f.code, 0, `fsck after the recovered mount was stopped: ${f.stdout}`)
})

t.test('files unlinked while open when the volume process is killed are freed at the next mount; fsck clean', async t => {
  const base = tempDir()
  t.teardown(() => fs.rmSync(base, { recursive: true, force: true }))
  const store = join(base, 'store'); const mnt = join(base, 'mnt'); const runDir = join(base, 'run')
  const m1 = await mountVolume(t, { store, mnt, runDir })
  fs.writeFileSync(join(mnt, 'orphan'), Buffer.alloc(300000, 5))
  fs.writeFileSync(join(mnt, 'keep'), 'keep')
  const fd = fs.openSync(join(mnt, 'orphan'), 'r')
  fs.unlinkSync(join(mnt, 'orphan'))
  fs.fsyncSync(fd)
  m1.child.kill('SIGKILL')
  await m1.exited
  try { fs.closeSync(fd) } catch { /* the connection is gone */ }
  forceUnmount(mnt)
  const before = cli(['fsck', '--store', store, '--json'])
  t.equal(before.code, 0, `fsck with the orphan still stored: ${before.stdout}`)
  t.ok(JSON.parse(before.stdout).dataBytes >= 300000, 'the orphan\'s data is still in the store before remount')
  const m2 = await mountVolume(t, { store, mnt, runDir })
  t.match(m2.stderr(), /"purged":1/)
  t.same(fs.readdirSync(mnt), ['keep'])
  await m2.stop()
  const after = cli(['fsck', '--store', store, '--json'])
  t.equal(after.code, 0, `fsck after remount: ${after.stdout}`)
  t.equal(JSON.parse(after.stdout).dataBytes, 4, 'only the kept file\'s 4 bytes remain')
})

t.test('kill -9 in the middle of the garbage collection a snapshot delete started: the next mount finishes it; fsck clean, every file intact', async t => {
  const base = tempDir()
  t.teardown(() => fs.rmSync(base, { recursive: true, force: true }))
  const store = join(base, 'store'); const mnt = join(base, 'mnt'); const runDir = join(base, 'run')
  const env = { REPLFS_RUN_DIR: runDir }
  // The control socket's directory comes from the environment when the call starts.
  const status = async (): Promise<unknown> => {
    const prev = process.env.REPLFS_RUN_DIR
    process.env.REPLFS_RUN_DIR = runDir
    try { return callControl(mnt, { cmd: 'status' }, 5000) } finally { if (prev === undefined) delete process.env.REPLFS_RUN_DIR; else process.env.REPLFS_RUN_DIR = prev }
  }
  const m1 = await mountVolume(t, { store, mnt, runDir })
  const MiB = 1 << 20
  const fill = (seed: number): Buffer => { const b = Buffer.alloc(16 * MiB); for (let i = 0; i < b.length; i += 4096) b.writeUInt32BE(seed * 100_000 + i / 4096, i); return b }
  for (let i = 0; i < 10; i++) fs.writeFileSync(join(mnt, `f${i}`), fill(i))
  t.equal(cli(['snapshot', 'create', mnt, 'old'], env).code, 0)
  for (let i = 0; i < 10; i++) fs.writeFileSync(join(mnt, `f${i}`), fill(100 + i)) // 160 MiB only 'old' holds now
  fs.writeFileSync(join(mnt, 'small'), 'small file')

  // Delete in the background; kill the volume process once the collection is under way.
  const del = spawn(process.execPath, [join(REPO, 'bin/replfs'), 'snapshot', 'delete', mnt, 'old'], { env: { ...process.env, ...env }, stdio: 'ignore' })
  const delExit = new Promise(resolve => del.once('exit', resolve))
  let pendingSeen = false
  for (let i = 0; i < 2000 && !pendingSeen; i++) {
    const st = await status().catch(() => null) as { garbageCollection?: { pending: boolean } } | null
    if (st?.garbageCollection?.pending === true) pendingSeen = true
    else await new Promise(resolve => setTimeout(resolve, 5))
  }
  t.ok(pendingSeen, 'the collection was seen running')
  m1.child.kill('SIGKILL')
  await m1.exited
  t.not(await delExit, 0, 'the delete CLI fails (it does not hang) when the volume process dies under it')
  forceUnmount(mnt)
  const mid = JSON.parse(cli(['fsck', '--store', store, '--json']).stdout) as { ok: boolean, dataBytes: number }
  t.equal(mid.ok, true, 'fsck is clean with the collection cut short')
  t.ok(mid.dataBytes > 170 * MiB, `the killed collection left ${(mid.dataBytes / MiB).toFixed(0)} MiB stored (more than the 160 MiB live)`)

  const m2 = await mountVolume(t, { store, mnt, runDir })
  type Status = { garbageCollection: { pending: boolean }, usedBytes: number }
  let st: Status | null = null
  for (let i = 0; i < 600; i++) {
    st = await status() as Status
    if (!st.garbageCollection.pending) break
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  t.equal(st?.garbageCollection.pending, false, 'the next mount finished the collection')
  t.equal(st?.usedBytes, 160 * MiB + 'small file'.length, 'and only the live data is stored')
  t.match(m2.stderr(), /finished the garbage collection the last run left pending/)
  for (let i = 0; i < 10; i++) t.ok(fs.readFileSync(join(mnt, `f${i}`)).equals(fill(100 + i)), `f${i} intact`)
  t.same(fs.readdirSync(join(mnt, '.snapshots')), [], 'the snapshot is gone')
  await m2.stop()
  const after = cli(['fsck', '--store', store, '--json'])
  t.equal(after.code, 0, `fsck after the finished collection: ${after.stdout.slice(0, 300)}`)
})
