import t from 'tap'
t.setTimeout(240_000)
import { createHash, randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { cli, mountVolume, tempDir } from '../helpers/mount.js'

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

t.test('files survive a clean unmount and remount with identical sha256, and fsck is clean', async t => {
  const base = tempDir()
  t.teardown(() => fs.rmSync(base, { recursive: true, force: true }))
  const store = join(base, 'store'); const mnt = join(base, 'mnt'); const runDir = join(base, 'run')
  const files: Record<string, Buffer> = {
    'small.txt': Buffer.from('hello\n'),
    'empty': Buffer.alloc(0),
    'dir/sub/random3m.bin': randomBytes(3 * 1024 * 1024),
    'dir/odd.bin': randomBytes(65536 * 3 + 17)
  }
  const m1 = await mountVolume(t, { store, mnt, runDir })
  for (const [name, data] of Object.entries(files)) {
    fs.mkdirSync(join(mnt, name, '..'), { recursive: true })
    fs.writeFileSync(join(mnt, name), data)
  }
  fs.symlinkSync('small.txt', join(mnt, 'link'))
  // clean unmount through the CLI (control socket), then wait for the process to exit
  const u = cli(['umount', mnt], { REPLFS_RUN_DIR: runDir })
  t.equal(u.code, 0, `replfs umount: ${u.stderr}`)
  t.equal(await m1.exited, 0, 'volume process exited 0')
  t.match(m1.stderr(), /unmounted; store closed/)

  const f = cli(['fsck', '--store', store])
  t.equal(f.code, 0, `fsck after clean unmount: ${f.stdout}${f.stderr}`)
  t.match(f.stdout, /clean/)

  const m2 = await mountVolume(t, { store, mnt, runDir })
  for (const [name, data] of Object.entries(files)) {
    t.equal(sha(fs.readFileSync(join(mnt, name))), sha(data), `${name} (${data.length} bytes) sha256 equal after remount`)
  }
  t.equal(fs.readlinkSync(join(mnt, 'link')), 'small.txt')
  // second cycle via SIGTERM
  await m2.stop()
  t.equal(await m2.exited, 0, 'SIGTERM stops cleanly')
  const f2 = cli(['fsck', '--store', store])
  t.equal(f2.code, 0, `fsck after SIGTERM stop: ${f2.stdout}`)
  await mountVolume(t, { store, mnt, runDir })
  t.equal(sha(fs.readFileSync(join(mnt, 'dir/sub/random3m.bin'))), sha(files['dir/sub/random3m.bin']), 'still equal after second remount')
})
