import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { sdNotify, statusLine } from '../../src/daemon/sd-notify.js'
import { ReplfsError } from '../../src/errors.js'
import { notifySocket } from '../helpers/notify-socket.js'

const dir = mkdtempSync(join(tmpdir(), 'replfs-test-notify-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

t.test('one datagram per notification reaches an abstract NOTIFY_SOCKET and a path one, byte for byte', async t => {
  for (const address of [`@replfs-test-${process.pid}`, join(dir, 'notify.sock')]) {
    const sock = await notifySocket(t, address)
    const env = { NOTIFY_SOCKET: address }
    t.equal(sdNotify({ READY: '1', STATUS: 'primary, streaming\nwith hostB' }, env), true, `${address}: sent`)
    t.equal(await sock.next(m => m.startsWith('READY=1')), 'READY=1\nSTATUS=primary, streaming with hostB', `${address}: fields on lines of their own, a newline in a value flattened`)
    sdNotify({ STOPPING: '1' }, env)
    t.equal(await sock.next(m => m.startsWith('STOPPING')), 'STOPPING=1')
    t.equal(sock.received.length, 2, `${address}: exactly the two datagrams`)
  }
})

t.test('without NOTIFY_SOCKET nothing is sent; an unreachable or malformed one is an error naming it', async t => {
  t.equal(sdNotify({ READY: '1' }, {}), false, 'not run by systemd: no notification')
  t.equal(sdNotify({ READY: '1' }, { NOTIFY_SOCKET: '' }), false, 'an empty NOTIFY_SOCKET is unset')
  const missing = join(dir, 'nobody-listens.sock')
  t.throws(() => sdNotify({ READY: '1' }, { NOTIFY_SOCKET: missing }), { name: 'ReplfsError', message: new RegExp(`NOTIFY_SOCKET=${missing}: sendto\\(NOTIFY_SOCKET\\): No such file or directory`) })
  t.throws(() => sdNotify({ READY: '1' }, { NOTIFY_SOCKET: 'relative.sock' }), { message: /NOTIFY_SOCKET=relative.sock: NOTIFY_SOCKET: Invalid argument/ })
  t.throws(() => sdNotify({ READY: '1' }, { NOTIFY_SOCKET: '/' + 'x'.repeat(120) }), ReplfsError, 'a path longer than sun_path is refused, not cut')
})

t.test('the STATUS line says role, link, lag and seq', async t => {
  t.equal(statusLine({ seq: 12, readOnly: false }), 'standalone, seq 12')
  t.equal(statusLine({ seq: 40, replication: { role: 'primary', peer: 'hostB:7410', connected: true, phase: 'streaming', lagRecords: 3 } }), 'primary, streaming with hostB:7410, lag 3 records, seq 40')
  t.equal(statusLine({ seq: 9, replication: { role: 'primary', fenced: true, peer: 'hostB:7410', connected: false, lagRecords: null } }), 'primary (fenced), peer hostB:7410 not connected, seq 9')
})
