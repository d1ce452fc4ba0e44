import t from 'tap'
t.setTimeout(120_000)
import * as fs from 'node:fs'
import { join } from 'node:path'
import { mountVolume } from '../helpers/mount.js'
import { freePort } from '../helpers/replicated.js'

const code = (fn: () => unknown): string | undefined => { try { fn(); return undefined } catch (e) { return (e as NodeJS.ErrnoException).code } }

t.test('a secondary that has not received its volume yet is an empty directory: every other path is ENOENT', async t => {
  // Its primary is not running: the store stays empty (no init record, no full copy).
  const port = await freePort(); const peer = await freePort()
  const m = await mountVolume(t, {
    extraArgs: ['--role', 'secondary', '--listen', `127.0.0.1:${port}`, '--peer', `127.0.0.1:${peer}`, '--insecure', '--attr-timeout', '0']
  })
  const st = fs.statSync(m.mnt)
  t.ok(st.isDirectory(), 'the root is a directory')
  t.same(fs.readdirSync(m.mnt), [], 'and it is empty')
  for (const p of ['anything', 'a/b/c', '.snapshots', '.snapshots/x', 'anything/..']) {
    // (not path.join: it would fold anything/.. away before the kernel sees it)
    t.equal(code(() => fs.statSync(`${m.mnt}/${p}`)), 'ENOENT', `stat ${p}`)
    t.equal(code(() => fs.lstatSync(`${m.mnt}/${p}`)), 'ENOENT', `lstat ${p}`)
  }
  t.equal(code(() => fs.readdirSync(join(m.mnt, 'anything'))), 'ENOENT', 'readdir of a name in it')
  t.equal(code(() => fs.readFileSync(join(m.mnt, 'anything'))), 'ENOENT', 'open of a name in it')
  t.equal(code(() => fs.readlinkSync(join(m.mnt, 'anything'))), 'ENOENT', 'readlink of a name in it')
  t.equal(code(() => fs.writeFileSync(join(m.mnt, 'new'), 'x')), 'EROFS', 'a secondary takes no writes')
  t.notOk(fs.existsSync(join(m.mnt, 'new')))
  t.same(fs.readdirSync(m.mnt), [], 'still empty')
  await m.stop()
})
