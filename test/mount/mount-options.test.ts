import t from 'tap'
t.setTimeout(300_000)
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { CLI, forceUnmount, isMounted, mountVolume, tempDir } from '../helpers/mount.js'
import { freePort } from '../helpers/replicated.js'

// `replfs mount` with a bad option value must refuse before anything is mounted: exit 1, a
// message that names the option and what it takes, a hint, no mount left behind.

interface Run { code: number | null, stdout: string, stderr: string, wasMounted: boolean }

/**
 * Runs `replfs mount <mnt> --store <store> ...args` and waits up to `ms` for it to exit. A
 * foreground mount that was (wrongly) accepted never exits: it is stopped and unmounted, as is
 * a background one's detached volume process, so a failing case leaves nothing behind.
 */
async function runMount (args: string[], ms = 15_000): Promise<Run> {
  const base = tempDir()
  const mnt = join(base, 'mnt')
  fs.mkdirSync(mnt)
  const argv = [CLI, 'mount', mnt, '--store', join(base, 'store'), '--log-file', join(base, 'volume.log'), ...args]
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, REPLFS_RUN_DIR: join(base, 'run') } })
  let stdout = ''; let stderr = ''
  let seen = false
  let stopping = false
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString()
    // a foreground mount that was accepted logs this and would run until stopped
    if (!stopping && stderr.includes('"msg":"mounted"')) { stopping = true; setTimeout(() => child.kill('SIGTERM'), 200) }
  })
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  const timer = setTimeout(() => child.kill('SIGTERM'), ms)
  const stopped = setInterval(() => { if (isMounted(mnt)) seen = true }, 20)
  const code = await exited
  clearTimeout(timer)
  clearInterval(stopped)
  const wasMounted = seen || isMounted(mnt)
  if (wasMounted) {
    // a background mount's volume process: "mounted <mnt> (store ..., pid N, ...)"
    const pid = /pid (\d+)/.exec(stdout)?.[1]
    forceUnmount(mnt)
    if (pid !== undefined) { try { process.kill(Number(pid), 'SIGKILL') } catch { /* gone */ } }
  }
  if (!isMounted(mnt)) fs.rmSync(base, { recursive: true, force: true })
  return { code, stdout, stderr, wasMounted }
}

const port = await freePort()
const peer = await freePort()
const secondary = ['--role', 'secondary', '--listen', `127.0.0.1:${port}`, '--peer', `127.0.0.1:${peer}`, '--insecure']

/** [the flags, the option the message must name, what the message must say it takes] */
const cases: Array<[string[], string, RegExp]> = [
  [['--journal-size', '0'], '--journal-size', /at least 64M/],
  [['--journal-size', '1M'], '--journal-size', /at least 64M/],
  [['--journal-size', '63M'], '--journal-size', /at least 64M/],
  [['--journal-size', 'lots'], '--journal-size', /at least 64M/],
  [['--journal-size', '1M', ...secondary], '--journal-size', /at least 64M/],
  [['--size', '0'], '--size', /at least 4K/],
  [['--size=-1G'], '--size', /at least 4K/],
  [['--size', 'big'], '--size', /at least 4K/],
  [['--attr-timeout', 'abc'], '--attr-timeout', /seconds from 0 to 86400/],
  [['--attr-timeout=-1'], '--attr-timeout', /seconds from 0 to 86400/],
  [['--attr-timeout', ''], '--attr-timeout', /seconds from 0 to 86400/],
  [['--attr-timeout', 'Infinity'], '--attr-timeout', /seconds from 0 to 86400/],
  [['--peer-timeout', 'Infinity', ...secondary], '--peer-timeout', /seconds from 0\.1 to 86400/],
  [['--peer-timeout', 'NaN', ...secondary], '--peer-timeout', /seconds from 0\.1 to 86400/],
  [['--peer-timeout', '0', ...secondary], '--peer-timeout', /seconds from 0\.1 to 86400/],
  [['--peer-timeout=-5', ...secondary], '--peer-timeout', /seconds from 0\.1 to 86400/],
  [['--peer-timeout', '86401', ...secondary], '--peer-timeout', /seconds from 0\.1 to 86400/],
  [['--peer-timeout', '1e9', ...secondary], '--peer-timeout', /seconds from 0\.1 to 86400/],
  [['--peer-timeout', 'Infinity'], '--peer-timeout', /seconds from 0\.1 to 86400/]
]

for (const how of ['background', 'foreground'] as const) {
  t.test(`${how}: a bad option value is refused before anything is mounted (exit 1, the option named, a hint)`, async t => {
    for (const [args, option, takes] of cases) {
      const r = await runMount(how === 'foreground' ? [...args, '--foreground'] : args)
      const what = `${how} mount ${args.join(' ')}`
      t.equal(r.code, 1, `${what}: exit code (stderr: ${r.stderr.trim()})`)
      t.notOk(r.wasMounted, `${what}: nothing is mounted`)
      const lines = r.stderr.split('\n')
      t.ok(lines[0].startsWith(`replfs: ${option} `), `${what}: the message names ${option}: ${lines[0]}`)
      t.match(lines[0], takes, `${what}: the message says what ${option} takes`)
      t.match(lines[1] ?? '', /^ {2}\S/, `${what}: a hint follows: ${lines[1] ?? ''}`)
      t.equal(r.stdout, '', `${what}: nothing on stdout`)
    }
  })
}

t.test('the edge values still mount: --size 4K, --attr-timeout 0, --journal-size 64M, --peer-timeout 86400', async t => {
  const m = await mountVolume(t, { size: '4K', extraArgs: ['--attr-timeout', '0', '--journal-size', '64M', '--peer-timeout', '86400'] })
  fs.writeFileSync(join(m.mnt, 'f'), 'x')
  t.equal(fs.readFileSync(join(m.mnt, 'f'), 'utf8'), 'x')
  t.equal(fs.statfsSync(m.mnt).blocks, 1, '--size 4K is one 4 KiB block')
  await m.stop()
  t.notOk(isMounted(m.mnt))
})

t.test('a replicated mount takes --peer-timeout 0.1 and fractions of a second', async t => {
  const sp = await freePort(); const pp = await freePort()
  const m = await mountVolume(t, { extraArgs: ['--role', 'secondary', '--listen', `127.0.0.1:${sp}`, '--peer', `127.0.0.1:${pp}`, '--insecure', '--peer-timeout', '0.1', '--attr-timeout', '0.5'] })
  t.ok(fs.statSync(m.mnt).isDirectory())
  await m.stop()
  t.notOk(isMounted(m.mnt))
})
