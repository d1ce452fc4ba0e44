import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { REPO } from '../helpers/mount.js'

t.setTimeout(300_000)

// scripts/two-hosts.sh is the README's two-host walk-through: it must do what it says and leave
// nothing behind (namespaces, mounts, its temp dir).

t.test('scripts/two-hosts.sh: failover and failback between two netns hosts under their config files, nothing left behind', async t => {
  const started = Date.now()
  const r = spawnSync('bash', [join(REPO, 'scripts/two-hosts.sh')], { encoding: 'utf8', timeout: 240_000 })
  const out = r.stdout + r.stderr
  t.equal(r.status, 0, `exits 0 after ${((Date.now() - started) / 1000).toFixed(1)} s${r.status === 0 ? '' : `\n${out.slice(-3000)}`}`)
  t.equal((out.match(/: identical/g) ?? []).length, 3, 'replfs verify said identical three times: before the failover, after A rejoined, after the failback')
  t.match(out, /written on B after the failover/, 'A, back as secondary, holds what B wrote while it was down')
  t.match(out, /done: failover and failback, both hosts identical/, 'the last step ran')
  const base = /replfs-two-hosts\.[A-Za-z0-9]+/.exec(out)?.[0] ?? 'none'
  t.notMatch(readFileSync('/proc/mounts', 'utf8'), new RegExp(base), 'no mount of the script is left')
  const ns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout
  t.notMatch(ns, /replfs-demo-/, 'no namespace of the script is left')
  t.notOk(existsSync(join('/tmp', base)), `its temp dir /tmp/${base} is removed`)
})
