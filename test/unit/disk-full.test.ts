import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createHash, randomBytes } from 'node:crypto'
import { fsck } from '../../src/store/fsck.js'
import { ROOT, tempVolume } from '../helpers/volume.js'

t.test('a full disk gets ENOSPC-class errors, keeps every acknowledged write, and recovers when space returns', async t => {
  const mnt = mkdtempSync(join(tmpdir(), 'replfs-test-tmpfs-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', mnt])
  t.teardown(() => { try { execFileSync('umount', ['-l', mnt]) } catch {} rmSync(mnt, { recursive: true, force: true }) })
  const dir = join(mnt, 'store')
  const v = await tempVolume({ dir, sizeLimit: 2 ** 40 })
  const fh = await v.vol.create('/f', 0o644, ROOT)
  const model = createHash('sha256')
  let acked = 0
  let failure: (Error & { code?: string }) | null = null
  for (let i = 0; i < 1000 && failure === null; i++) {
    // Random bytes: LevelDB compresses tables, so uniform data would never fill the disk.
    const chunk = randomBytes(131072)
    try {
      await v.vol.write(fh, chunk, chunk.length, acked)
      model.update(chunk)
      acked += chunk.length
    } catch (err) {
      failure = err as Error
    }
  }
  t.equal(failure?.code, 'DISK_FULL', `the disk filled after ${acked} acknowledged bytes`)
  t.equal((await import('../../src/errors.js')).toErrno(failure), -28, 'the kernel would see ENOSPC')
  execFileSync('mount', ['-o', 'remount,size=128m', mnt])
  const extra = randomBytes(131072)
  await v.vol.write(fh, extra, extra.length, acked)
  model.update(extra)
  acked += extra.length
  await v.vol.release(fh)
  await v.store.close()

  const w = await tempVolume({ dir })
  t.teardown(() => w.store.close())
  const r = await fsck(w.state)
  t.ok(r.ok, `fsck after reopening: ${r.problems.join('; ') || 'clean'}`)
  const st = await w.vol.getattr('/f')
  t.equal(st.size, acked, 'the file holds exactly the acknowledged bytes')
  const rh = await w.vol.open('/f', 0)
  const got = createHash('sha256')
  const buf = Buffer.alloc(1 << 20)
  for (let off = 0; off < st.size; off += buf.length) {
    const n = await w.vol.read(rh, buf, buf.length, off)
    got.update(buf.subarray(0, n))
  }
  t.equal(got.digest('hex'), model.digest('hex'), 'contents match what was acknowledged')
})
