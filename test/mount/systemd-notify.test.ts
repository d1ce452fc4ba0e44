import t from 'tap'
import { cli, isMounted, mountVolume } from '../helpers/mount.js'
import { notifySocket } from '../helpers/notify-socket.js'

t.setTimeout(120_000)

t.test('under NOTIFY_SOCKET the volume process says READY=1 once mounted, STATUS= lines, and STOPPING=1 at umount', async t => {
  const sock = await notifySocket(t, `@replfs-test-mount-${process.pid}`)
  // spawnMount hands the test's environment to the volume process, as systemd would set it.
  process.env.NOTIFY_SOCKET = sock.address
  t.teardown(() => { delete process.env.NOTIFY_SOCKET })
  const m = await mountVolume(t)
  const ready = await sock.next(msg => msg.split('\n').includes('READY=1'))
  t.ok(isMounted(m.mnt), 'mounted when READY=1 arrived')
  t.match(ready, /^READY=1\nSTATUS=standalone, seq \d+$/, `READY with a STATUS line: ${JSON.stringify(ready)}`)
  t.equal(sock.received.filter(msg => msg.includes('READY=1')).length, 1, 'READY=1 once')

  const u = cli(['umount', m.mnt], { REPLFS_RUN_DIR: m.runDir })
  t.equal(u.code, 0, `umount: ${u.stderr}`)
  const stopping = await sock.next(msg => msg.includes('STOPPING=1'))
  t.equal(stopping, 'STOPPING=1\nSTATUS=unmounting')
  t.equal(await m.exited, 0, 'the volume process exited 0')
  t.ok(sock.received.indexOf(ready) < sock.received.indexOf(stopping), 'READY before STOPPING')
})
