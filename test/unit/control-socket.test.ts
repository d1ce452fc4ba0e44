import { execFile } from 'node:child_process'
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import { callControl, controlSocketPath, serveControl } from '../../src/daemon/control.js'
import { cli } from '../helpers/mount.js'

const NOBODY = 65534
const CONTROL_JS = new URL('../../src/daemon/control.js', import.meta.url).pathname

/** A logger whose lines the test reads. */
function capturedLogger (): { logger: pino.Logger, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const sink = new Writable({ write (chunk: Buffer, _enc, done) { lines.push(JSON.parse(chunk.toString())); done() } })
  return { logger: pino({ level: 'info' }, sink), lines }
}

/** A run dir others can traverse (as /run/replfs is), and a control server on it counting the commands it runs. */
async function controlServer (t: Test, opts: Parameters<typeof serveControl>[3] = {}): Promise<{ mnt: string, sock: string, runs: string[], lines: Array<Record<string, unknown>> }> {
  const base = mkdtempSync(join(tmpdir(), 'replfs-test-control-'))
  chmodSync(base, 0o755)
  const runDir = join(base, 'run')
  const prevRunDir = process.env.REPLFS_RUN_DIR
  process.env.REPLFS_RUN_DIR = runDir
  t.teardown(() => { if (prevRunDir === undefined) delete process.env.REPLFS_RUN_DIR; else process.env.REPLFS_RUN_DIR = prevRunDir })
  const mnt = join(base, 'mnt')
  const sock = controlSocketPath(mnt)
  const runs: string[] = []
  const { logger, lines } = capturedLogger()
  const server = await serveControl(sock, async req => { runs.push(req.cmd); return { done: req.cmd } }, logger, opts)
  t.teardown(async () => {
    await new Promise<void>((resolve, reject) => server.close(err => { if (err !== undefined) reject(err); else resolve() }))
    rmSync(base, { recursive: true, force: true })
  })
  return { mnt, sock, runs, lines }
}

/** `replfs`'s own control client (callControl), run as another user; what it got back or threw. */
async function callAs (ids: { uid: number, gid: number }, mnt: string, runDir: string): Promise<{ ok?: unknown, code?: string, message?: string, hint?: string }> {
  const script = `import(${JSON.stringify(CONTROL_JS)}).then(m => m.callControl(${JSON.stringify(mnt)}, { cmd: 'umount' }, 10000))
    .then(r => console.log(JSON.stringify({ ok: r })), e => console.log(JSON.stringify({ code: e.code, message: e.message, hint: e.hint })))`
  const args = [`--reuid=${ids.uid}`, `--regid=${ids.gid}`, '--clear-groups', process.execPath, '--input-type=module', '-e', script]
  const out = await new Promise<string>((resolve, reject) => {
    execFile('setpriv', args, { env: { ...process.env, REPLFS_RUN_DIR: runDir }, timeout: 20_000 }, (err, stdout, stderr) => {
      if (err !== null && stdout === '') reject(new Error(`${err.message}\n${stderr}`))
      else resolve(stdout)
    })
  })
  return JSON.parse(out.trim().split('\n').at(-1) ?? '{}')
}

t.test('the control socket is 0600, owned by the daemon, even when it starts under umask 0002', async t => {
  const prev = process.umask(0o002)
  t.teardown(() => process.umask(prev))
  const { sock } = await controlServer(t)
  const st = statSync(sock)
  t.ok(st.isSocket(), 'a unix socket is at the derived path')
  t.equal((st.mode & 0o777).toString(8), '600', 'mode 0600, not 0775 from the umask')
  t.equal(st.uid, process.getuid?.(), 'owned by the daemon\'s user')
  t.same(readdirSync(join(sock, '..')), [sock.split('/').at(-1)], 'no staging directory is left next to it')
})

t.test('a user other than root and the daemon\'s is refused with CONTROL_DENIED, even through a 0666 socket, and nothing runs', async t => {
  const { mnt, sock, runs, lines } = await controlServer(t)
  chmodSync(sock, 0o666)
  const got = await callAs({ uid: NOBODY, gid: NOBODY }, mnt, join(sock, '..'))
  t.equal(got.code, 'CONTROL_DENIED', `nobody is told why: ${got.message ?? JSON.stringify(got)}`)
  t.match(got.message, /uid 65534 \(pid \d+\) may not control this volume/)
  t.match(got.hint, new RegExp(`as root or as the user the volume process runs as \\(uid ${process.getuid?.() ?? 0}\\)`))
  t.same(runs, [], 'the umount command never ran')
  const refused = lines.find(l => l.msg?.toString().startsWith('control connection refused'))
  t.equal(refused?.peerUid, NOBODY, 'the daemon logs the peer\'s uid')
  t.type(refused?.peerPid, 'number', 'and its pid')

  // The control case: the daemon's own user (root here) is served on the same socket.
  t.same(await callControl(mnt, { cmd: 'status' }), { done: 'status' }, 'the daemon\'s own user is served')
  t.same(runs, ['status'])
})

t.test('another user reaching the default 0600 socket is told it may not, not that nothing is mounted', async t => {
  const { mnt, sock, runs } = await controlServer(t)
  const got = await callAs({ uid: NOBODY, gid: NOBODY }, mnt, join(sock, '..'))
  t.equal(got.code, 'CONTROL_DENIED', got.message ?? JSON.stringify(got))
  t.match(got.message, /this user \(uid 65534\) may not control .*: its control socket .* is private/)
  t.same(runs, [], 'nothing ran')
})

t.test('--control-group: the socket is 0660 with that group; its members are served, other users refused', async t => {
  const { mnt, sock, runs } = await controlServer(t, { group: { name: 'nogroup', gid: NOBODY } })
  const st = statSync(sock)
  t.equal((st.mode & 0o777).toString(8), '660', 'mode 0660')
  t.equal(st.gid, NOBODY, 'group nogroup')
  const member = await callAs({ uid: NOBODY, gid: NOBODY }, mnt, join(sock, '..'))
  t.same(member, { ok: { done: 'umount' } }, 'a member of the group is served')
  chmodSync(sock, 0o666)
  const outsider = await callAs({ uid: 4242, gid: 4242 }, mnt, join(sock, '..'))
  t.equal(outsider.code, 'CONTROL_DENIED', 'a user outside the group is refused')
  t.match(outsider.hint, /or as a member of group nogroup/)
  t.same(runs, ['umount'], 'only the member\'s command ran')
})

t.test('mount --control-group naming no group is refused before anything is created', async t => {
  const base = mkdtempSync(join(tmpdir(), 'replfs-test-control-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  const store = join(base, 'store')
  const r = cli(['mount', join(base, 'mnt'), '--store', store, '--control-group', 'no-such-group-here'])
  t.not(r.code, 0)
  t.match(r.stderr, /--control-group "no-such-group-here" is not a group on this host/)
  t.match(r.stderr, /groupadd --system replfs/, 'with the command that makes one')
  t.notOk(existsSync(store), 'no store was created')
})
