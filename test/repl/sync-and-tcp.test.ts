import t from 'tap'
import type { Server, Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { constants } from 'node:fs'
import { Redialer, listen } from '../../src/net/transport.js'
import { quietLogger } from '../helpers/volume.js'
import {
  caughtUp, connect, dumpsEqual, fsckProblems, makePrimary, makeSecondary, pattern, readFile, waitFor, writeFile
} from '../helpers/replica.js'
import { ROOT } from '../helpers/volume.js'

/** Tracks whether a promise has settled. */
function watch (p: Promise<unknown>): { settled: () => boolean, promise: Promise<unknown> } {
  let done = false
  const promise = p.finally(() => { done = true })
  return { settled: () => done, promise }
}

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

t.test('sync mode: a write returns without waiting for the peer, while fsync, O_DSYNC writes and snapshot commands wait for its ack; without a secondary they complete locally (degraded)', async t => {
  const p = await makePrimary(t, { mode: 'sync' })
  const s = await makeSecondary(t)
  const c = connect(p, s)
  await caughtUp(p, s)
  t.equal((p.repl.status() as { degraded: boolean }).degraded, false, 'streaming: not degraded')
  const fh = await p.vol.create('/f', 0o644, ROOT)

  // Stall the acks (secondary -> primary): records reach the secondary, acks do not.
  c.pair.hold('toPrimary')
  const seqBefore = p.state.counters.seq
  await p.vol.write(fh, pattern(50_000, 3), 50_000, 0)
  t.ok(p.repl.ackedSeq < seqBefore + 1, `the write (record ${seqBefore + 1}) returned with no ack from the peer (acked: ${p.repl.ackedSeq})`)
  const f = watch(p.vol.fsync(fh))
  await waitFor(() => s.state.counters.seq === seqBefore + 1, 'the secondary to apply the write')
  await sleep(300)
  t.equal(f.settled(), false, 'fsync is still pending 300 ms after the secondary applied the write (no ack yet)')
  const dsync = await p.vol.open('/f', constants.O_WRONLY | constants.O_DSYNC)
  const w = watch(p.vol.write(dsync, pattern(1000, 9), 1000, 50_000))
  const snap = watch(p.vol.createSnapshot('held'))
  await sleep(200)
  t.equal(w.settled(), false, 'a write through an O_DSYNC descriptor waits for the ack')
  t.equal(snap.settled(), false, 'a snapshot command waits for the ack')
  c.pair.release('toPrimary')
  await Promise.all([f.promise, w.promise, snap.promise])
  t.ok(p.repl.ackedSeq >= seqBefore + 3, 'fsync, the O_DSYNC write and the snapshot completed once the acks arrived')
  await p.vol.release(dsync)

  // Pending fsyncs are released when the connection drops; later ones complete locally.
  c.pair.hold('toPrimary')
  await p.vol.write(fh, pattern(10_000, 4), 10_000, 51_000)
  const f2 = watch(p.vol.fsync(fh))
  await sleep(100)
  t.equal(f2.settled(), false, 'the second fsync waits for its ack')
  c.cut()
  await c.ended
  await f2.promise
  t.equal(f2.settled(), true, 'the waiting fsync completed when the connection dropped')
  const st = p.repl.status() as { degraded: boolean, phase: string }
  t.equal(st.degraded, true, 'status says degraded')
  t.equal(st.phase, 'disconnected')
  await p.vol.write(fh, pattern(10_000, 5), 10_000, 61_000)
  const f3 = watch(p.vol.fsync(fh))
  await Promise.race([f3.promise, sleep(5000)])
  t.equal(f3.settled(), true, 'an fsync with no secondary completes locally')
  await p.vol.release(fh)

  // The secondary comes back: it resumes, catches up, and fsync waits for it again.
  const c2 = connect(p, s)
  await caughtUp(p, s)
  t.equal((p.repl.status() as { degraded: boolean }).degraded, false, 'no longer degraded')
  c2.pair.hold('toPrimary')
  await p.vol.mkdir('/d', 0o755, ROOT)
  const f4 = watch(p.vol.fsync())
  await sleep(200)
  t.equal(f4.settled(), false, 'fsync waits for the peer again after the reconnect')
  c2.pair.release('toPrimary')
  await f4.promise
  await caughtUp(p, s)
  t.ok((await p.repl.verify()).identical, 'identical after all that')
  const want = Buffer.concat([pattern(50_000, 3), pattern(1000, 9), pattern(10_000, 4), pattern(10_000, 5)])
  t.same(await readFile(s.vol, '/f'), want)
})

t.test('over loopback TCP: a Redialer reconnects after the connection is killed from outside and replication resumes', async t => {
  const p = await makePrimary(t, { channel: { idleTimeoutMs: 3000, pingIntervalMs: 500 } })
  const s = await makeSecondary(t, { channel: { idleTimeoutMs: 3000, pingIntervalMs: 500 } })
  const sockets: Duplex[] = []
  let server: Server | null = null
  let dialer: Redialer | null = null
  try {
    server = await listen({ host: '127.0.0.1', port: 0 }, null, (sock, peer) => {
      sockets.push(sock)
      s.repl.serve(sock, peer).catch(() => {})
    }, quietLogger)
    const addr = server.address()
    if (addr === null || typeof addr === 'string') throw new Error('no port')
    let sessions = 0
    dialer = new Redialer({ host: '127.0.0.1', port: addr.port }, null, async (sock, peer) => {
      sessions++
      await p.repl.serve(sock, peer)
    }, quietLogger, { minMs: 20, maxMs: 200 })
    dialer.start()
    await writeFile(p.vol, '/a', 40, 64 * 1024)
    await caughtUp(p, s)
    t.equal(sessions, 1, 'one session so far')
    t.equal(sockets.length, 1)

    // Kill the connection from outside (an RST from the secondary's end), mid-stream.
    const writing = writeFile(p.vol, '/b', 40, 64 * 1024, 50)
    await waitFor(() => s.state.counters.seq > p.state.counters.seq - 35 && s.state.counters.seq > 45, 'streaming of /b to begin', 10_000).catch(() => {})
    ;(sockets[0] as Socket).resetAndDestroy()
    await writing
    await waitFor(() => sessions >= 2, 'the Redialer to reconnect', 10_000)
    await caughtUp(p, s)
    t.ok(sockets.length >= 2, `${sockets.length} connections accepted`)
    t.ok(dialer.attempts >= 2, `${dialer.attempts} dial attempts`)
    t.match((s.repl.status() as { lastError: { message: string } | null }).lastError?.message ?? '', /closed|reset|ECONNRESET|silent/, 'the secondary noted the dropped connection')
    const v = await p.repl.verify()
    t.ok(v.identical, `verify at ${v.seq}: identical`)
    t.ok(await dumpsEqual(p, s), 'state dumps equal')
    t.same(await readFile(s.vol, '/b'), Buffer.concat(Array.from({ length: 40 }, (_, i) => pattern(64 * 1024, 50 + i))), '/b, written across the kill, is complete on the secondary')
    t.same(await fsckProblems(s), [])
  } finally {
    // Redialer.stop() alone does not end a running session (see the test below): mark it
    // stopped first, then end the connection, so it neither hangs nor redials.
    const stopping = dialer?.stop()
    for (const sock of sockets) sock.destroy()
    await stopping
    server?.close()
  }
})

t.test('Redialer.stop() ends a running session rather than waiting for the peer to hang up', async t => {
  const p = await makePrimary(t)
  const s = await makeSecondary(t)
  const sockets: Duplex[] = []
  const server = await listen({ host: '127.0.0.1', port: 0 }, null, (sock, peer) => {
    sockets.push(sock)
    s.repl.serve(sock, peer).catch(() => {})
  }, quietLogger)
  const addr = server.address()
  if (addr === null || typeof addr === 'string') throw new Error('no port')
  const dialer = new Redialer({ host: '127.0.0.1', port: addr.port }, null, async (sock, peer) => { await p.repl.serve(sock, peer) }, quietLogger, { minMs: 20, maxMs: 200 })
  dialer.start()
  try {
    await caughtUp(p, s)
    const stop = watch(dialer.stop())
    await Promise.race([stop.promise, sleep(2000)])
    // VolumeReplication.stop() awaits dialer.stop() before primary.close(): while a secondary is
    // connected (it pings, so the connection never goes idle) a primary's unmount hangs.
    t.equal(stop.settled(), true, 'Redialer.stop() resolved within 2 s while a session was running')
  } finally {
    const stopping = dialer.stop()
    for (const sock of sockets) sock.destroy()
    await stopping
    server.close()
  }
})

t.test('status times each record from its arrival at the secondary to its durable apply there, and the primary times it to the ack: a slow secondary store shows in both', async t => {
  const p = await makePrimary(t, { mode: 'sync' })
  const s = await makeSecondary(t)
  connect(p, s)
  await caughtUp(p, s)
  type Summary = { p50: number | null, p99: number | null, samples: number }
  const durable = (): Summary => (s.repl.status() as { durableLatencyMs: Summary }).durableLatencyMs
  const acked = (): Summary => (p.repl.status() as { ackLatencyMs: Summary }).ackLatencyMs
  const before = durable().samples
  t.ok(before >= 1, `the records so far were timed (${before})`)

  // Every LevelDB commit on the secondary now takes 60 ms longer to be reported done.
  const DELAY = 60
  const write = s.store.write.bind(s.store)
  s.store.write = async (ops, opts) => { await write(ops, opts); await sleep(DELAY) }
  try {
    const fh = await p.vol.create('/slow', 0o644, ROOT)
    for (let i = 0; i < 8; i++) await p.vol.write(fh, pattern(4096, i), 4096, i * 4096)
    await p.vol.release(fh)
    await caughtUp(p, s)
  } finally {
    s.store.write = write
  }

  // The ring holds the newest samples: 9+ slow records (create, 8 writes) out of all so far.
  const d = durable()
  t.ok(d.samples >= before + 9, `samples grew by the slow records (${before} -> ${d.samples})`)
  t.ok(d.p50 !== null && d.p50 >= DELAY, `the secondary's durable p50 includes the ${DELAY} ms delay (most samples are slow ones): ${String(d.p50)} ms`)
  const a = acked()
  t.ok(a.p50 !== null && a.p50 >= DELAY, `the primary's ack p50 includes it too: ${String(a.p50)} ms`)
})
