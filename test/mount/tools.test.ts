import t from 'tap'
t.setTimeout(240_000)
import * as fs from 'node:fs'
import { join } from 'node:path'
import { mountVolume, sh, shr, tempDir } from '../helpers/mount.js'

t.test('real tools on the mount', async t => {
  const m = await mountVolume(t)

  t.test('git init, add, commit, status, fsck', async t => {
    const repo = join(m.mnt, 'repo')
    fs.mkdirSync(repo)
    const git = (args: string): string => sh(`git -c user.name=t -c user.email=t@t -c init.defaultBranch=main ${args}`, { cwd: repo })
    git('init -q')
    for (let i = 0; i < 20; i++) fs.writeFileSync(join(repo, `f${i}.txt`), `file ${i}\n`.repeat(i + 1))
    fs.mkdirSync(join(repo, 'sub')); fs.writeFileSync(join(repo, 'sub/x'), 'x')
    git('add -A')
    git('commit -q -m first')
    t.equal(git('status --porcelain'), '', 'clean after commit')
    fs.appendFileSync(join(repo, 'f3.txt'), 'more\n')
    t.equal(git('status --porcelain').trim(), 'M f3.txt')
    git('commit -qam second')
    t.equal(git('rev-list --count HEAD').trim(), '2')
    git('fsck --strict')
    t.equal(git('show HEAD:f3.txt'), 'file 3\n'.repeat(4) + 'more\n')
  })

  t.test('tar c of a tree on the mount, x elsewhere, compare', async t => {
    const src = join(m.mnt, 'tree')
    fs.mkdirSync(join(src, 'a/b/c'), { recursive: true })
    for (let i = 0; i < 50; i++) fs.writeFileSync(join(src, 'a', i % 2 === 0 ? 'b' : 'b/c', `n${i}`), Buffer.alloc(i * 1000 + 1, i))
    fs.symlinkSync('../n0', join(src, 'a/b/c/ln'))
    fs.linkSync(join(src, 'a/b/n0'), join(src, 'a/hard'))
    const out = tempDir()
    t.teardown(() => fs.rmSync(out, { recursive: true, force: true }))
    sh(`tar -C ${m.mnt} -cf ${out}/t.tar tree && mkdir ${out}/x && tar -C ${out}/x -xf ${out}/t.tar`)
    // diff exits 0 with no output when the trees are the same, 1 listing each difference.
    t.same(shr(`diff -r --no-dereference ${src} ${out}/x/tree`), { code: 0, stdout: '', stderr: '' }, 'diff -r finds no difference')
    // and back onto the mount
    sh(`mkdir ${m.mnt}/back && tar -C ${m.mnt}/back -xf ${out}/t.tar`)
    t.same(shr(`diff -r --no-dereference ${src} ${m.mnt}/back/tree`), { code: 0, stdout: '', stderr: '' }, 'extracting onto the mount round-trips too')
    const a = fs.statSync(join(m.mnt, 'back/tree/a/hard')); const b = fs.statSync(join(m.mnt, 'back/tree/a/b/n0'))
    t.equal(a.ino, b.ino, 'tar recreated the hard link on the mount')
  })

  t.test('sqlite3 in WAL mode: create, insert 1000 rows, read back', async t => {
    const db = join(m.mnt, 'test.db')
    const sql = ['PRAGMA journal_mode=WAL;', 'CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);', 'BEGIN;']
    for (let i = 1; i <= 1000; i++) sql.push(`INSERT INTO t (v) VALUES ('row ${i} ${'x'.repeat(i % 50)}');`)
    sql.push('COMMIT;')
    const out = sh(`sqlite3 ${db} <<'EOF'\n${sql.join('\n')}\nEOF`)
    t.equal(out.trim(), 'wal')
    t.equal(sh(`sqlite3 ${db} 'SELECT count(*), sum(id) FROM t;'`).trim(), '1000|500500')
    t.equal(sh(`sqlite3 ${db} "SELECT v FROM t WHERE id=777;"`).trim(), `row 777 ${'x'.repeat(777 % 50)}`)
    t.equal(sh(`sqlite3 ${db} 'PRAGMA integrity_check;'`).trim(), 'ok')
    t.equal(sh(`sqlite3 ${db} 'PRAGMA journal_mode;'`).trim(), 'wal')
  })
})
