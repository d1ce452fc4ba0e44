import t from 'tap'
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import { join, relative } from 'node:path'
import { mountVolume, sh, tempDir } from '../helpers/mount.js'

t.setTimeout(120_000)

// Through libfuse 3's low-level interface every name of a file is one kernel inode: a change
// through one name shows through the others at once, though the kernel caches attributes (1 s).

interface Node { type: string, mode: number, size: number, nlink: number, sha: string | null, link: string | null, group: string }

/** path -> what cp -a / rsync -aH must keep, with hard links as the sorted list of names sharing an inode. */
function tree (root: string): Record<string, Node> {
  const byIno = new Map<number, string[]>()
  const out: Record<string, Node> = {}
  const walk = (dir: string): void => {
    for (const name of fs.readdirSync(dir).sort()) {
      const p = join(dir, name)
      const st = fs.lstatSync(p)
      const rel = relative(root, p)
      if (!st.isDirectory()) byIno.set(st.ino, [...(byIno.get(st.ino) ?? []), rel])
      out[rel] = {
        type: st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other',
        mode: st.mode, size: st.isDirectory() ? 0 : st.size, nlink: st.isDirectory() ? 0 : st.nlink,
        sha: st.isFile() ? createHash('sha256').update(fs.readFileSync(p)).digest('hex') : null,
        link: st.isSymbolicLink() ? fs.readlinkSync(p) : null,
        group: String(st.ino)
      }
      if (st.isDirectory()) walk(p)
    }
  }
  walk(root)
  for (const n of Object.values(out)) n.group = n.type === 'dir' ? '' : (byIno.get(Number(n.group)) ?? []).sort().join(' ')
  return out
}

t.test('after link, chmod, unlink and rename through one name, lstat through the other shows it at once', async t => {
  const m = await mountVolume(t)
  const p = (s: string): string => join(m.mnt, s)
  fs.writeFileSync(p('a'), 'hard')
  t.equal(fs.lstatSync(p('a')).nlink, 1, 'a has one name')
  fs.linkSync(p('a'), p('b'))
  t.equal(fs.lstatSync(p('a')).nlink, 2, 'link a b: lstat a shows nlink 2 at once')
  t.equal(fs.lstatSync(p('a')).ino, fs.lstatSync(p('b')).ino, 'a and b are one inode')
  fs.chmodSync(p('b'), 0o600)
  t.equal(fs.lstatSync(p('a')).mode & 0o777, 0o600, 'chmod through b: a shows mode 0600 at once')
  fs.writeFileSync(p('b'), 'hard link, longer')
  t.equal(fs.lstatSync(p('a')).size, 17, 'a write through b: a shows the new size at once')
  sh(`mkfifo ${p('fifo')} && ln ${p('fifo')} ${p('fifo2')} && chown 65534:65533 ${p('fifo2')}`)
  const fifo = fs.lstatSync(p('fifo'))
  t.same([fifo.nlink, fifo.uid, fifo.gid], [2, 65534, 65533], 'a fifo chowned through its second name: nlink, uid, gid at once through the first')
  fs.renameSync(p('b'), p('c'))
  t.equal(fs.lstatSync(p('a')).nlink, 2, 'rename b c: a still has two names')
  fs.unlinkSync(p('c'))
  t.equal(fs.lstatSync(p('a')).nlink, 1, 'unlink c: lstat a shows nlink 1 at once')
  t.equal(fs.readFileSync(p('a'), 'utf8'), 'hard link, longer', 'and holds what was written through the other name')
})

t.test('cp -a and rsync -aH of a tree with hard links, compared right after: identical', async t => {
  const m = await mountVolume(t)
  const src = tempDir()
  t.teardown(() => fs.rmSync(src, { recursive: true, force: true }))
  fs.mkdirSync(join(src, 'sub/deeper'), { recursive: true })
  fs.writeFileSync(join(src, 'one'), 'one file with three names')
  fs.linkSync(join(src, 'one'), join(src, 'one-again'))
  fs.linkSync(join(src, 'one'), join(src, 'sub/deeper/one-more'))
  fs.writeFileSync(join(src, 'sub/two'), Buffer.alloc(300_000, 7))
  fs.linkSync(join(src, 'sub/two'), join(src, 'two-linked'))
  fs.writeFileSync(join(src, 'single'), 'alone')
  fs.chmodSync(join(src, 'single'), 0o640)
  fs.symlinkSync('one', join(src, 'to-one'))
  const want = tree(src)
  t.equal(want.one.nlink, 3, 'the source has a file with three names')
  sh(`cp -a ${src} ${join(m.mnt, 'cp')}`)
  t.same(tree(join(m.mnt, 'cp')), want, 'cp -a: same names, modes, sizes, contents, link counts and link groups')
  sh(`rsync -aH ${src}/ ${join(m.mnt, 'rs')}/`)
  t.same(tree(join(m.mnt, 'rs')), want, 'rsync -aH: the same')
})
