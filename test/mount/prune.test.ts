import * as fs from 'node:fs'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import t from 'tap'
import { CLI, REPO, cli, mountVolume, tempDir } from '../helpers/mount.js'
import { startPair } from '../helpers/replicated.js'

t.setTimeout(180_000)

interface Listed { name: string, created: string }

t.test('snapshot prune: grid retention over the prefix only; --dry-run deletes nothing; bad --keep changes nothing', async t => {
  const m = await mountVolume(t)
  const env = { REPLFS_RUN_DIR: m.runDir }
  const run = (...args: string[]): ReturnType<typeof cli> => cli(args, env)
  const names = (): string[] => (JSON.parse(run('snapshot', 'list', m.mnt, '--json', '--no-space').stdout) as Listed[]).map(s => s.name).sort()
  for (const [i, name] of ['auto-1', 'manual', 'auto-2', 'auto-3'].entries()) {
    fs.writeFileSync(join(m.mnt, 'data'), `version ${i}\n`)
    t.equal(run('snapshot', 'create', m.mnt, name).code, 0, `create ${name}`)
  }
  const all = ['auto-1', 'auto-2', 'auto-3', 'manual']
  t.same(names(), all)

  const dry = run('snapshot', 'prune', m.mnt, '--keep', 'hourly=1', '--dry-run', '--json')
  t.equal(dry.code, 0, `dry run: ${dry.stderr}`)
  const plan = JSON.parse(dry.stdout) as { dryRun: boolean, keep: Array<{ name: string, reasons: string[] }>, deleted: Array<{ name: string }>, ignored: number }
  t.equal(plan.dryRun, true)
  t.same(plan.keep.map(d => d.name), ['auto-3'], 'the newest auto- snapshot of this hour stays')
  t.match(plan.keep[0].reasons, ['newest', /^hourly \d{4}-\d\d-\d\dT\d\d$/])
  t.same(plan.deleted.map(d => d.name), ['auto-2', 'auto-1'], 'the older ones of the same hour would go')
  t.equal(plan.ignored, 1, 'manual does not match the prefix')
  t.same(names(), all, 'a dry run deletes nothing')
  const text = run('snapshot', 'prune', m.mnt, '--keep', 'hourly=1', '--dry-run')
  t.match(text.stdout, /^would delete {2}auto-2 /m)
  t.match(text.stdout, /^keep {10}auto-3 .*\(newest, hourly /m)
  t.match(text.stdout, /1 kept, 2 would be deleted \(dry run\); 1 not matching "auto-" left alone/)

  for (const [args, message] of [
    [['--keep', 'hourly=1,minutely=5'], /--keep "hourly=1,minutely=5": unknown period "minutely"/],
    [['--keep', 'hourly'], /"hourly" is not period=count/],
    [['--keep', 'hourly=1', '--prefix', ''], /--prefix must not be empty/]
  ] as Array<[string[], RegExp]>) {
    const r = run('snapshot', 'prune', m.mnt, ...args)
    t.equal(r.code, 1, `${args.join(' ')}: exit 1`)
    t.match(r.stderr, message)
  }
  t.same(names(), all, 'refused runs deleted nothing')

  const real = run('snapshot', 'prune', m.mnt, '--keep', 'hourly=1')
  t.equal(real.code, 0, `prune: ${real.stderr}`)
  t.match(real.stdout, /1 kept, 2 deleted; 1 not matching "auto-" left alone/)
  t.same(names(), ['auto-3', 'manual'], 'only the older auto- snapshots went')
  t.equal(fs.readFileSync(join(m.mnt, '.snapshots/auto-3/data'), 'utf8'), 'version 3\n', 'the kept snapshot reads as taken')
  t.equal(fs.readFileSync(join(m.mnt, '.snapshots/manual/data'), 'utf8'), 'version 1\n', 'the other snapshot is untouched')
  const again = run('snapshot', 'prune', m.mnt, '--keep', 'hourly=0', '--json')
  t.same((JSON.parse(again.stdout) as { keep: Array<{ name: string }> }).keep.map(d => d.name), ['auto-3'], 'the newest matching snapshot is never deleted, even with hourly=0')
  t.same(names(), ['auto-3', 'manual'])
})

/**
 * The commands of replfs-snapshot@.service as systemd would run them for instance `volume`
 * (only the specifiers and escapes the unit uses: %i, %%, $$, \\ and ${VAR} from Environment=),
 * with its mount point /mnt/<volume> replaced by the test's.
 */
function unitCommands (volume: string, mnt: string): { condition: string[], start: string[][] } {
  const text = fs.readFileSync(join(REPO, 'systemd/replfs-snapshot@.service'), 'utf8')
  const env = Object.fromEntries([...text.matchAll(/^Environment=([A-Z_]+)=(.*)$/gm)].map(m => [m[1], m[2]]))
  const argv = (line: string): string[] => {
    const resolved = line.replace(/%i/g, volume).replace(/%%/g, '%').replace(/\$\{([A-Z_]+)\}/g, (_s, k: string) => env[k]).replace(/\$\$/g, '$')
      .split(`/mnt/${volume}`).join(mnt)
    const sh = /^\/bin\/sh -c '(.*)'$/.exec(resolved)
    return sh !== null ? ['/bin/sh', '-c', sh[1].replace(/\\\\/g, '\\')] : resolved.split(' ')
  }
  const lines = (key: string): string[][] => [...text.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map(m => argv(m[1]))
  return { condition: lines('ExecCondition')[0], start: lines('ExecStart') }
}

/** A PATH whose `replfs` is this checkout's, as the units' /usr/bin/env replfs finds it once installed. */
function pathWithReplfs (t: { teardown: (fn: () => void) => void }): string {
  const bin = tempDir()
  t.teardown(() => fs.rmSync(bin, { recursive: true, force: true }))
  fs.symlinkSync(CLI, join(bin, 'replfs'))
  return `${bin}:${process.env.PATH ?? ''}`
}

t.test('the snapshot timer\'s service: runs on the writable node only, creates auto-<time> and prunes', async t => {
  const PATH = pathWithReplfs(t)
  const exec = (argv: string[], runDir: string): ReturnType<typeof spawnSync> =>
    spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', env: { ...process.env, PATH, REPLFS_RUN_DIR: runDir } })

  const m = await mountVolume(t)
  const env = { REPLFS_RUN_DIR: m.runDir }
  t.equal(cli(['snapshot', 'create', m.mnt, 'auto-old'], env).code, 0)
  t.equal(cli(['snapshot', 'create', m.mnt, 'keep-me'], env).code, 0)
  const u = unitCommands('vol', m.mnt)
  t.equal(exec(u.condition, m.runDir).status, 0, 'ExecCondition: a standalone volume takes snapshots')
  t.equal(u.start.length, 2, 'two ExecStart= lines: create, then prune')
  const created = exec(u.start[0], m.runDir)
  t.equal(created.status, 0, `create: ${String(created.stderr)}`)
  const name = /created snapshot (auto-\d{8}T\d{6}Z) at seq/.exec(String(created.stdout))?.[1]
  t.ok(name !== undefined, `named auto-<UTC time>: ${String(created.stdout)}`)
  const pruned = exec(u.start[1], m.runDir)
  t.equal(pruned.status, 0, `prune: ${String(pruned.stderr)}`)
  const list = JSON.parse(cli(['snapshot', 'list', m.mnt, '--json', '--no-space'], env).stdout) as Listed[]
  t.ok(list.some(s => s.name === name), 'the new snapshot stays')
  t.ok(list.some(s => s.name === 'keep-me'), 'a snapshot without the prefix stays')
  const hours = list.filter(s => s.name.startsWith('auto-')).map(s => s.created.slice(0, 13))
  t.equal(new Set(hours).size, hours.length, `one auto- snapshot per hour is left (${hours.join(', ')})`)

  const pair = await startPair(t)
  t.equal(exec(unitCommands('vol', pair.primary.mnt).condition, pair.primary.runDir).status, 0, 'ExecCondition: the primary takes snapshots')
  t.equal(exec(unitCommands('vol', pair.secondary.mnt).condition, pair.secondary.runDir).status, 1, 'ExecCondition: the secondary is skipped (it receives the primary\'s)')
})

t.test('snapshot create, refresh, restore and delete --json print the snapshot (or what was freed) as JSON', async t => {
  const m = await mountVolume(t, { extraArgs: ['--attr-timeout', '0'] })
  const env = { REPLFS_RUN_DIR: m.runDir }
  const json = (...args: string[]): Record<string, unknown> => {
    const r = cli([...args, '--json'], env)
    t.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`)
    return JSON.parse(r.stdout) as Record<string, unknown>
  }
  fs.writeFileSync(join(m.mnt, 'f'), 'one\n')
  const created = json('snapshot', 'create', m.mnt, 's', '--writable')
  t.match(created, { name: 's', writable: true, seq: Number })
  fs.writeFileSync(join(m.mnt, 'f'), 'two\n')
  const refreshed = json('snapshot', 'refresh', m.mnt, 's')
  t.ok((refreshed.seq as number) > (created.seq as number), 'refresh moved the snapshot\'s seq')
  fs.writeFileSync(join(m.mnt, 'f'), 'three, longer\n')
  t.match(json('snapshot', 'restore', m.mnt, 's'), { name: 's', seq: refreshed.seq })
  t.equal(fs.readFileSync(join(m.mnt, 'f'), 'utf8'), 'two\n', 'restored to the refreshed state')
  t.match(json('snapshot', 'delete', m.mnt, 's'), { name: 's', freedBytes: Number })
  t.same(JSON.parse(cli(['snapshot', 'list', m.mnt, '--json'], env).stdout), [], 'gone')
})
