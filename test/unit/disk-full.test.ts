import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createHash, randomBytes } from 'node:crypto'
import { fsck } from '../../src/store/fsck.js'
import { ROOT, tempVolume } from '../helpers/volume.js'

t.test('a full disk gets ENOSPC-class errors, loses at most the last acknowledged write and then says so at fsync, and recovers when space returns', async t => {
  const mnt = mkdtempSync(join(tmpdir(), 'replfs-test-tmpfs-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', mnt])
  t.teardown(() => { try { execFileSync('umount', ['-l', mnt]) } catch {} rmSync(mnt, { recursive: true, force: true }) })
  const dir = join(mnt, 'store')
  const v = await tempVolume({ dir, sizeLimit: 2 ** 40 })
  const fh = await v.vol.create('/f', 0o644, ROOT)
  const chunks: Buffer[] = []
  let acked = 0
  let failure: (Error & { code?: string }) | null = null
  for (let i = 0; i < 1000 && failure === null; i++) {
    // Random bytes: LevelDB compresses tables, so uniform data would never fill the disk.
    const chunk = randomBytes(131072)
    try {
      await v.vol.write(fh, chunk, chunk.length, acked)
      chunks.push(chunk)
      acked += chunk.length
    } catch (err) {
      failure = err as Error
    }
  }
  t.equal(failure?.code, 'DISK_FULL', `the disk filled after ${acked} acknowledged bytes`)
  t.equal((await import('../../src/errors.js')).toErrno(failure), -28, 'the kernel would see ENOSPC')
  execFileSync('mount', ['-o', 'remount,size=128m', mnt])
  // A write is acknowledged before LevelDB has it (the next request overlaps its commit), so
  // the last acknowledged one may be the batch the full disk refused. fsync must say so.
  const reported = await v.vol.fsync(fh).then(() => null, (err: Error & { code?: string }) => err)
  const kept = (await v.vol.getattr('/f')).size
  const lost = acked - kept
  t.ok(lost === 0 || lost === chunks[chunks.length - 1].length, `at most the last acknowledged write is lost (lost ${lost} bytes)`)
  t.equal(reported?.code, lost > 0 ? 'DISK_FULL' : undefined, lost > 0 ? 'fsync reports the lost write as ENOSPC' : 'fsync reports nothing: nothing acknowledged was lost')
  if (lost > 0) chunks.pop()
  await t.resolves(v.vol.fsync(fh), 'the next fsync succeeds: an error is reported once per open file')
  const extra = randomBytes(131072)
  await v.vol.write(fh, extra, extra.length, kept)
  chunks.push(extra)
  acked = kept + extra.length
  await v.vol.fsync(fh)
  await v.vol.release(fh)
  const model = createHash('sha256')
  for (const c of chunks) model.update(c)
  await v.store.close()

  const w = await tempVolume({ dir })
  t.teardown(() => w.store.close())
  const r = await fsck(w.state)
  t.ok(r.ok, `fsck after reopening: ${r.problems.join('; ') || 'clean'}`)
  const st = await w.vol.getattr('/f')
  t.equal(st.size, acked, 'the file holds exactly the acknowledged bytes that were not reported lost')
  const rh = await w.vol.open('/f', 0)
  const got = createHash('sha256')
  const buf = Buffer.alloc(1 << 20)
  for (let off = 0; off < st.size; off += buf.length) {
    const n = await w.vol.read(rh, buf, buf.length, off)
    got.update(buf.subarray(0, n))
  }
  t.equal(got.digest('hex'), model.digest('hex'), 'contents match what was acknowledged')
})
