import { type Server, type Socket, createConnection, createServer } from 'node:net'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import t, { type Test } from 'tap'
import { Redialer, listen } from '../../src/net/transport.js'
import { FrameChannel } from '../../src/repl/channel.js'
import { FrameDecoder, FrameType, frameHeader, parseJsonBody } from '../../src/repl/frames.js'
import { HANDSHAKE_MAX_FRAME } from '../../src/repl/handshake.js'
import { caughtUp, makePrimary, makeSecondary, writeFile } from '../helpers/replica.js'

/** A logger whose lines the test reads. */
function capturedLogger (): { logger: pino.Logger, lines: Array<{ msg?: string, [k: string]: unknown }> } {
  const lines: Array<{ msg?: string, [k: string]: unknown }> = []
  const sink = new Writable({ write (chunk: Buffer, _enc, done) { lines.push(JSON.parse(chunk.toString())); done() } })
  return { logger: pino({ level: 'info' }, sink), lines }
}

interface Idle { sock: Socket, closed: Promise<void>, isClosed: () => boolean, bytes: () => number }

/** Opens a TCP connection that never says anything, once the server has accepted it. */
async function idleConnection (server: Server, port: number): Promise<Idle> {
  const accepted = new Promise(resolve => server.once('connection', resolve))
  const sock = createConnection({ host: '127.0.0.1', port })
  sock.on('error', () => {})
  let got = 0
  let closed = false
  sock.on('data', (d: Buffer) => { got += d.length })
  const whenClosed = new Promise<void>(resolve => sock.once('close', () => { closed = true; resolve() }))
  // Accepted (and counted by the server) before the next one opens, so "oldest" is well defined.
  await accepted
  return { sock, closed: whenClosed, isClosed: () => closed, bytes: () => got }
}

async function secondaryListening (t: Test, admission: { maxUnauthenticated: number, handshakeTimeoutMs: number }): Promise<{ server: Server, port: number, s: Awaited<ReturnType<typeof makeSecondary>>, lines: Array<{ msg?: string, [k: string]: unknown }> }> {
  const s = await makeSecondary(t)
  const { logger, lines } = capturedLogger()
  const server = await listen({ host: '127.0.0.1', port: 0 }, null, (sock, peer) => { s.repl.serve(sock, peer).catch(() => {}) }, logger, undefined, admission)
  t.teardown(() => { server.close() })
  return { server, port: (server.address() as { port: number }).port, s, lines }
}

t.test('idle unauthenticated connections: beyond the cap the oldest are closed at once, the rest at the deadline; a real primary connects meanwhile and stays', async t => {
  const { server, port, s, lines } = await secondaryListening(t, { maxUnauthenticated: 4, handshakeTimeoutMs: 1500 })
  const idle: Idle[] = []
  for (let i = 0; i < 6; i++) idle.push(await idleConnection(server, port))
  t.teardown(() => { for (const c of idle) c.sock.destroy() })
  await Promise.all([idle[0].closed, idle[1].closed])
  t.same(idle.map(c => c.isClosed()), [true, true, false, false, false, false], 'the two oldest were closed when the 5th and 6th came; the cap of 4 holds')
  t.ok(lines.some(l => l.msg === 'too many connections still in their handshake: closed the oldest' && l.max === 4), 'with a log line')

  // A real primary dials while four idle connections are held.
  const p = await makePrimary(t)
  await writeFile(p.vol, '/data', 4, 20_000)
  const sock = createConnection({ host: '127.0.0.1', port })
  sock.on('error', () => {})
  await new Promise(resolve => sock.once('connect', resolve))
  const served = p.repl.serve(sock, 'test-secondary', { dialed: true }).catch((e: Error) => e)
  t.teardown(async () => { sock.destroy(); await served })
  await caughtUp(p, s)
  t.ok((await p.repl.verify()).identical, 'the real primary authenticated and replicated: identical')
  t.ok(idle[2].isClosed(), 'its connection, the newest, made the oldest idle one give way')

  // The deadline closes the idle ones; the authenticated connection is not subject to it.
  await Promise.all(idle.map(c => c.closed))
  t.same(idle.map(c => c.bytes()), [0, 0, 0, 0, 0, 0], 'no idle connection was sent a single byte')
  t.ok(lines.filter(l => l.msg === 'a connecting peer did not complete the handshake in time: closing it').length >= 3, 'each one past the deadline is logged')
  await new Promise(resolve => setTimeout(resolve, 1600))
  t.equal(p.repl.streaming, true, 'the real primary is still streaming a deadline later')
  await writeFile(p.vol, '/after', 2, 10_000)
  await caughtUp(p, s)
  t.ok((await p.repl.verify()).identical, 'and writes made after it still replicate')
})

t.test('before authentication a frame larger than HANDSHAKE_MAX_FRAME is refused from its header alone', async t => {
  const { port } = await secondaryListening(t, { maxUnauthenticated: 4, handshakeTimeoutMs: 10_000 })
  const sock = createConnection({ host: '127.0.0.1', port })
  sock.on('error', () => {})
  t.teardown(() => sock.destroy())
  const got: Buffer[] = []
  sock.on('data', (d: Buffer) => got.push(d))
  await new Promise(resolve => sock.once('connect', resolve))
  // Claims a 1 MiB HELLO but sends only the header: the answer must not wait for the body.
  sock.write(frameHeader(1 << 20, FrameType.HELLO, 0))
  await new Promise(resolve => sock.once('close', resolve))
  const frames = new FrameDecoder().push(Buffer.concat(got))
  t.same(frames.map(f => f.type), ['ERROR'], 'one ERROR, then the connection closed')
  const e = parseJsonBody<{ code: string, message: string }>(frames[0])
  t.equal(e.code, 'BAD_FRAME')
  t.match(e.message, new RegExp(`HELLO frame body of ${1 << 20} bytes exceeds the maximum of ${HANDSHAKE_MAX_FRAME}`))
})

t.test('a dialer gives up on a listener that accepts but never completes the handshake, even one that keeps pinging', async t => {
  const p = await makePrimary(t)
  const accepted: Socket[] = []
  const server = createServer(sock => {
    accepted.push(sock)
    sock.on('error', () => {})
    const ch = new FrameChannel(sock, { idleTimeoutMs: 60_000, pingIntervalMs: 50 })
    void ch.next().catch(() => {})
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const { logger, lines } = capturedLogger()
  const ended: Array<Error | null> = []
  const dialer = new Redialer({ host: '127.0.0.1', port: (server.address() as { port: number }).port }, null, async (sock, peer) => {
    ended.push(await p.repl.serve(sock, peer).then(() => null, (e: Error) => e))
  }, logger, { minMs: 60_000, maxMs: 60_000 }, undefined, 400)
  dialer.start()
  t.teardown(async () => { await dialer.stop() })
  while (ended.length === 0) await new Promise(resolve => setTimeout(resolve, 20))
  t.equal(accepted.length, 1, 'one connection was made')
  t.ok(ended[0] instanceof Error, `its session ended: ${ended[0]?.message ?? ''}`)
  t.ok(lines.some(l => l.msg === 'the peer did not complete the handshake in time: closing the connection'), 'the dialer logs the deadline')
  t.equal(p.repl.phase, 'disconnected')
})
