import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { REPO } from '../helpers/mount.js'

const UNITS = ['replfs@.service', 'replfs-snapshot@.service', 'replfs-snapshot@.timer']
const analyze = spawnSync('sh', ['-c', 'command -v systemd-analyze'], { encoding: 'utf8' }).stdout.trim()

/** `systemd-analyze verify` of a unit file: its exit code and what it printed (warnings included). */
function verify (file: string): { code: number | null, output: string } {
  const r = spawnSync(analyze, ['verify', file], { encoding: 'utf8' })
  return { code: r.status, output: `${r.stdout}${r.stderr}`.trim() }
}

/** Key -> values of one section of a unit file (keys may repeat, as ExecStart= does). */
function section (text: string, name: string): Map<string, string[]> {
  const out = new Map<string, string[]>()
  let inside = false
  for (const line of text.split('\n')) {
    if (/^\[.*\]$/.test(line)) { inside = line === `[${name}]`; continue }
    const m = /^([A-Za-z]+)=(.*)$/.exec(line)
    if (!inside || m === null) continue
    out.set(m[1], [...(out.get(m[1]) ?? []), m[2]])
  }
  return out
}

t.test('systemd-analyze verify passes on every unit, without a warning', { skip: analyze === '' ? 'systemd-analyze is not installed on this host (apt-get install systemd provides it)' : false }, async t => {
  for (const unit of UNITS) {
    const r = verify(join(REPO, 'systemd', unit))
    t.equal(r.code, 0, `${unit}: exit code`)
    t.equal(r.output, '', `${unit}: no warnings`)
  }
  // The check can fail: a misspelt key and a missing binary are both reported.
  const dir = mkdtempSync(join(tmpdir(), 'replfs-test-units-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const unit = readFileSync(join(REPO, 'systemd/replfs@.service'), 'utf8')
  writeFileSync(join(dir, 'replfs@.service'), unit.replace('UMask=0077', 'UMsk=0077'))
  t.match(verify(join(dir, 'replfs@.service')).output, /Unknown key 'UMsk'/, 'a misspelt key is reported')
  writeFileSync(join(dir, 'replfs@.service'), unit.replace('ExecStart=/usr/bin/env', 'ExecStart=/usr/bin/no-such-env'))
  t.not(verify(join(dir, 'replfs@.service')).code, 0, 'a missing binary fails the verification')
})

t.test('replfs@.service: Type=notify, config by instance name, clean stop, hardening without a mount namespace', async t => {
  const text = readFileSync(join(REPO, 'systemd/replfs@.service'), 'utf8')
  const unit = section(text, 'Unit')
  const svc = section(text, 'Service')
  const one = (key: string): string | undefined => svc.get(key)?.[0]
  t.equal(one('Type'), 'notify')
  t.equal(one('NotifyAccess'), 'main', 'only the volume process itself may say READY')
  t.equal(one('ExecStart'), '/usr/bin/env replfs mount /mnt/%i --name %i --foreground', 'reads /etc/replfs/%i.conf')
  t.equal(one('ExecStop'), '/usr/bin/env replfs umount /mnt/%i --timeout 110', 'umount, within TimeoutStopSec')
  t.ok(Number(one('TimeoutStopSec')) > 110, 'systemd waits longer than umount does')
  t.equal(one('RuntimeDirectory'), 'replfs')
  t.equal(one('RuntimeDirectoryPreserve'), 'yes', 'one instance stopping keeps the others\' control sockets')
  t.equal(one('UMask'), '0077')
  t.equal(one('Restart'), 'on-failure')
  t.same(unit.get('RequiresMountsFor'), ['/var/lib/replfs/%i'], 'the store\'s file system is mounted first')
  t.equal(one('DeviceAllow'), '/dev/fuse rw')
  t.match(one('CapabilityBoundingSet') ?? '', /\bCAP_SYS_ADMIN\b/, 'mount(2) needs CAP_SYS_ADMIN')
  for (const key of ['NoNewPrivileges', 'RestrictSUIDSGID', 'RestrictNamespaces', 'LockPersonality', 'ProtectClock']) t.equal(one(key), 'yes', key)
  // Each of these gives the service its own mount namespace, whose mounts never reach the host.
  for (const key of ['ProtectSystem', 'ProtectHome', 'PrivateTmp', 'PrivateDevices', 'PrivateMounts', 'ReadWritePaths', 'ReadOnlyPaths',
    'InaccessiblePaths', 'ProtectKernelTunables', 'ProtectKernelModules', 'ProtectKernelLogs', 'ProtectControlGroups', 'ProtectProc', 'MountFlags']) {
    t.notOk(svc.has(key), `no ${key}= (the FUSE mount would stay inside the service)`)
  }
})
