import t, { type Test } from 'tap'
import { PROTOCOL_MAX, newNonce } from '../../src/repl/auth.js'
import { FrameChannel } from '../../src/repl/channel.js'
import { type Frame, parseJsonBody } from '../../src/repl/frames.js'
import { stateDump } from '../helpers/volume.js'
import {
  type PrimaryNode, type SecondaryNode, SECRET, caughtUp, connect, duplexPair, makePrimary, makeSecondary, writeFile
} from '../helpers/replica.js'

const OTHER = Buffer.from('another secret, 32 bytes long!!!')
const CH = { idleTimeoutMs: 5000, pingIntervalMs: 1000 }

interface LastError { code: string, message: string }
const lastError = (n: PrimaryNode | SecondaryNode): LastError | null => (n.repl.status() as { lastError: LastError | null }).lastError

async function primaryWithData (t: Parameters<typeof makePrimary>[0], secret: Buffer | null = SECRET): Promise<PrimaryNode> {
  const p = await makePrimary(t, { secret })
  await writeFile(p.vol, '/data', 5, 10_000)
  await p.log.settle()
  return p
}

interface Before { seq: number, dump: Array<[string, string]> }

/** The secondary applied nothing: its seq and store are as they were `before`. */
async function assertUnchanged (t: Test, s: SecondaryNode, before: Before): Promise<void> {
  await s.log.settle()
  t.equal(s.state.counters.seq, before.seq, 'the secondary applied nothing')
  t.same(await stateDump(s), before.dump, 'the secondary\'s store is unchanged')
}

/** Nothing of the primary reached the secondary, and neither side thinks it is replicating. */
async function assertNothingApplied (t: Test, p: PrimaryNode, s: SecondaryNode, before: Before): Promise<void> {
  await assertUnchanged(t, s, before)
  const ps = p.repl.status() as { phase: string, ackedSeq: number | null, connected: boolean }
  t.equal(ps.phase, 'disconnected', 'the primary is not streaming')
  t.equal(ps.ackedSeq, null, 'the primary has no acknowledged seq')
  t.equal((s.repl.status() as { connected: boolean }).connected, false, 'the secondary is not connected')
}

async function snapshotOf (s: SecondaryNode): Promise<Before> {
  return { seq: s.state.counters.seq, dump: await stateDump(s) }
}

/** Runs a real primary against a real secondary until the connection ends. */
async function realPair (p: PrimaryNode, s: SecondaryNode): Promise<[Error, Error]> {
  const c = connect(p, s)
  const timer = setTimeout(() => c.cut(), 10_000)
  try {
    return await c.ended
  } finally {
    clearTimeout(timer)
  }
}

/** A real primary against a real secondary: both end refused with `code`, and each side's lastError says so. */
async function refusedOnBothSides (t: Test, p: PrimaryNode, s: SecondaryNode, code: string): Promise<void> {
  const [pe, se] = await realPair(p, s)
  t.equal((pe as { refusal?: string }).refusal, code, `primary: ${pe.message}`)
  t.equal((se as { refusal?: string }).refusal, code, `secondary: ${se.message}`)
  t.equal(lastError(p)?.code, code)
  t.equal(lastError(s)?.code, code)
}

/** Reads frames (each seen by `onFrame` as it comes) until the peer closes; returns them. */
async function drain (ch: FrameChannel, onFrame: (f: Frame) => void = () => {}): Promise<Frame[]> {
  const got: Frame[] = []
  for (;;) {
    let f: Frame | null
    try { f = await ch.next() } catch { break }
    if (f === null) break
    got.push(f)
    onFrame(f)
  }
  ch.close()
  return got
}

const errorOf = (frames: Frame[]): LastError | undefined => {
  const f = frames.find(f => f.type === 'ERROR')
  return f === undefined ? undefined : parseJsonBody<LastError>(f)
}

/** A hand-made primary talking to a real secondary: sends `hello`, answers its HELLO with `auth` (if given). */
async function craftedPrimary (s: SecondaryNode, hello: object, auth?: object): Promise<{ frames: Frame[], served: Error }> {
  const pair = duplexPair()
  const served = s.repl.serve(pair.b, 'crafted-primary').then(() => new Error('no error'), (e: Error) => e)
  const ch = new FrameChannel(pair.a, CH)
  ch.sendJson('HELLO', hello)
  const frames = await drain(ch, f => { if (f.type === 'HELLO' && auth !== undefined) ch.sendJson('AUTH', auth) })
  return { frames, served: await served }
}

/** A hand-made secondary talking to a real primary: answers its HELLO with `hello`. */
async function craftedSecondary (p: PrimaryNode, hello: (primaryHello: Record<string, unknown>) => object): Promise<{ frames: Frame[], served: Error }> {
  const pair = duplexPair()
  const served = p.repl.serve(pair.a, 'crafted-secondary').then(() => new Error('no error'), (e: Error) => e)
  const ch = new FrameChannel(pair.b, CH)
  const first = await ch.next()
  if (first === null || first.type !== 'HELLO') throw new Error('the primary did not start with HELLO')
  ch.sendJson('HELLO', hello(parseJsonBody(first)))
  const frames = await drain(ch)
  return { frames, served: await served }
}

// What each side's lastError message matches, and what that shows.
interface Says { primary: readonly [RegExp, string], secondary: readonly [RegExp, string] }
// The primary proves first, so the secondary is the one that finds a wrong secret, and says so to the primary.
const secretMismatch: Says = {
  primary: [/^peer refused: the primary does not know the shared secret/, 'the primary shows the secondary\'s reason'],
  secondary: [/^the primary does not know the shared secret/, 'the secondary says the primary did not prove it holds the secret']
}
const insecure = (message: RegExp): Says => ({ primary: [message, 'the primary shows the secondary\'s reason'], secondary: [message, 'the secondary says which side is --insecure'] })

for (const [name, pSecret, sSecret, says] of [
  ['the secondary holds a different secret', SECRET, OTHER, secretMismatch],
  ['the primary holds a different secret', OTHER, SECRET, secretMismatch],
  ['the primary has a secret, the secondary runs --insecure', SECRET, null, insecure(/this node runs --insecure/)],
  ['the primary runs --insecure, the secondary has a secret', null, SECRET, insecure(/the primary runs --insecure/)]
] as const) {
  t.test(`${name}: refused with AUTH_FAILED on both sides, nothing applied`, async t => {
    const p = await primaryWithData(t, pSecret)
    const s = await makeSecondary(t, { secret: sSecret })
    const before = await snapshotOf(s)
    await refusedOnBothSides(t, p, s, 'AUTH_FAILED')
    t.match(lastError(p)?.message, ...says.primary)
    t.match(lastError(s)?.message, ...says.secondary)
    await assertNothingApplied(t, p, s, before)
  })
}

t.test('a primary whose AUTH proof is wrong is refused by the secondary with AUTH_FAILED', async t => {
  const p = await primaryWithData(t)
  const s = await makeSecondary(t)
  const before = await snapshotOf(s)
  const { frames, served } = await craftedPrimary(s,
    { protocolMin: PROTOCOL_MAX, protocolMax: PROTOCOL_MAX, role: 'primary', volumeId: p.state.format!.volumeId, nonce: newNonce(), auth: true },
    { proof: 'ab'.repeat(32) })
  t.same(frames.map(f => f.type), ['HELLO', 'ERROR'], 'the secondary said HELLO, then refused')
  t.equal(errorOf(frames)?.code, 'AUTH_FAILED', 'the crafted primary is told AUTH_FAILED')
  t.equal((served as { refusal?: string }).refusal, 'AUTH_FAILED')
  t.equal(lastError(s)?.code, 'AUTH_FAILED')
  t.match(lastError(s)?.message, /the primary does not know the shared secret/)
  await assertUnchanged(t, s, before)
})

t.test('both sides --insecure: replication works (the control case)', async t => {
  const p = await primaryWithData(t, null)
  const s = await makeSecondary(t, { secret: null })
  const c = connect(p, s)
  await caughtUp(p, s)
  t.ok((await p.repl.verify()).identical)
  c.cut()
  await c.ended
})

t.test('a secondary holding another volume is refused with VOLUME_MISMATCH on both sides; its own volume is untouched', async t => {
  const p = await primaryWithData(t)
  const s = await makeSecondary(t, { ownVolume: true })
  await s.log.settle()
  t.equal(s.state.counters.seq, 1, 'the secondary holds its own (initialised) volume')
  t.not(s.state.format?.volumeId, p.state.format?.volumeId)
  const before = await snapshotOf(s)
  await refusedOnBothSides(t, p, s, 'VOLUME_MISMATCH')
  t.match(lastError(s)?.message, new RegExp(p.state.format!.volumeId), 'the message names the primary\'s volume')
  await assertNothingApplied(t, p, s, before)
})

t.test('a secondary HELLO naming another volume is refused by the primary with VOLUME_MISMATCH', async t => {
  const p = await primaryWithData(t)
  const { frames, served } = await craftedSecondary(p, () => ({ protocol: PROTOCOL_MAX, role: 'secondary', volumeId: 'some-other-volume', nonce: newNonce(), auth: true }))
  t.equal(errorOf(frames)?.code, 'VOLUME_MISMATCH', 'the crafted secondary is told VOLUME_MISMATCH')
  t.equal((served as { refusal?: string }).refusal, 'VOLUME_MISMATCH')
  t.equal(lastError(p)?.code, 'VOLUME_MISMATCH')
  t.equal((p.repl.status() as { ackedSeq: number | null }).ackedSeq, null, 'nothing acknowledged')
})

t.test('a HELLO offering protocols 7..9 is refused by the secondary with PROTOCOL', async t => {
  const p = await primaryWithData(t)
  const s = await makeSecondary(t)
  const before = await snapshotOf(s)
  const { frames, served } = await craftedPrimary(s, { protocolMin: 7, protocolMax: 9, role: 'primary', volumeId: p.state.format!.volumeId, nonce: newNonce(), auth: true })
  t.same(frames.map(f => f.type), ['ERROR'], 'the secondary answered only with ERROR')
  t.equal(errorOf(frames)?.code, 'PROTOCOL', 'the crafted primary is told PROTOCOL')
  t.match(errorOf(frames)?.message, /7\.\.9/, 'naming the offered range')
  t.equal((served as { refusal?: string }).refusal, 'PROTOCOL')
  t.equal(lastError(s)?.code, 'PROTOCOL')
  await assertUnchanged(t, s, before)
})

t.test('a secondary choosing protocol 7 is refused by the primary with PROTOCOL', async t => {
  const p = await primaryWithData(t)
  const { frames, served } = await craftedSecondary(p, () => ({ protocol: 7, role: 'secondary', volumeId: null, nonce: newNonce(), auth: true }))
  t.equal(errorOf(frames)?.code, 'PROTOCOL', 'the crafted secondary is told PROTOCOL')
  t.equal((served as { refusal?: string }).refusal, 'PROTOCOL')
  t.equal(lastError(p)?.code, 'PROTOCOL')
  t.notOk(frames.some(f => f.type === 'AUTH' || f.type === 'START' || f.type === 'RECORD'), 'no AUTH, START or RECORD was sent')
})

t.test('a HELLO from a peer claiming to be secondary (two secondaries) is refused with ROLE_CONFLICT', async t => {
  const s = await makeSecondary(t)
  const { frames } = await craftedPrimary(s, { protocolMin: PROTOCOL_MAX, protocolMax: PROTOCOL_MAX, role: 'secondary', volumeId: 'x', nonce: newNonce(), auth: true })
  t.equal(errorOf(frames)?.code, 'ROLE_CONFLICT')
  t.equal(lastError(s)?.code, 'ROLE_CONFLICT')
  t.equal(s.state.counters.seq, 0)
})

t.test('a primary of protocol 2 (the secondary proved first) is refused with PROTOCOL, and told to run the same release', async t => {
  const s = await makeSecondary(t)
  const { frames } = await craftedPrimary(s, { protocolMin: 2, protocolMax: 2, role: 'primary', volumeId: 'x', nonce: newNonce(), auth: true })
  t.same(frames.map(f => f.type), ['ERROR'], 'no HELLO, so no nonce and no proof, for an old primary')
  t.equal(errorOf(frames)?.code, 'PROTOCOL')
  t.match(errorOf(frames)?.message, /peer speaks protocol 2\.\.2, this replfs 3\.\.3: run the same replfs release on both nodes/)
})

/** Every 64-hex-digit string in `bytes`: nonces and proofs are the only ones a handshake carries. */
const hex64 = (bytes: Buffer): string[] => bytes.toString('latin1').match(/[0-9a-f]{64}/g) ?? []

t.test('the secondary sends no proof to a primary that has not proven itself: on the wire, HELLO without a proof, then ERROR', async t => {
  const p = await primaryWithData(t)
  const s = await makeSecondary(t)
  const before = await snapshotOf(s)
  const pair = duplexPair()
  const wire: Buffer[] = []
  pair.a.on('data', (d: Buffer) => wire.push(Buffer.from(d)))
  const served = s.repl.serve(pair.b, 'crafted-primary').then(() => new Error('no error'), (e: Error) => e)
  const ch = new FrameChannel(pair.a, CH)
  ch.sendJson('HELLO', { protocolMin: PROTOCOL_MAX, protocolMax: PROTOCOL_MAX, role: 'primary', volumeId: p.state.format!.volumeId, nonce: newNonce(), auth: true })
  // A dialer that cannot prove anything: it sends no AUTH, or a wrong one once the secondary has answered.
  const first = await ch.next()
  t.equal(first?.type, 'HELLO', 'the secondary answers HELLO')
  const hello = parseJsonBody<Record<string, unknown>>(first!)
  t.same(Object.keys(hello).sort(), ['auth', 'nonce', 'protocol', 'role', 'volumeId'], 'its HELLO holds no proof field')
  t.same(hex64(Buffer.concat(wire)), [hello.nonce], 'and the only 64-hex string on the wire so far is its nonce')
  ch.sendJson('AUTH', { proof: 'ab'.repeat(32) })
  const rest = await drain(ch)
  t.same(rest.map(f => f.type), ['ERROR'], 'after a wrong proof: ERROR, and no AUTH of its own')
  t.equal(errorOf(rest)?.code, 'AUTH_FAILED')
  t.same(hex64(Buffer.concat(wire)), [hello.nonce], 'no proof ever crossed the wire from the secondary')
  t.equal(((await served) as { refusal?: string }).refusal, 'AUTH_FAILED')
  await assertUnchanged(t, s, before)
})

t.test('a primary\'s HELLO and AUTH captured from a real session and replayed on a new connection are refused with AUTH_FAILED', async t => {
  const p = await primaryWithData(t)
  const s = await makeSecondary(t)
  const captured = new Map<string, Buffer>()
  const c = connect(p, s, { fault: f => { if (f.typeName !== undefined && !captured.has(f.typeName)) captured.set(f.typeName, Buffer.from(f.body)); return [f.raw] } })
  await caughtUp(p, s)
  c.cut()
  await c.ended
  t.ok(captured.has('HELLO') && captured.has('AUTH'), 'the real session\'s HELLO and AUTH were captured')
  const before = await snapshotOf(s)

  const pair = duplexPair()
  const served = s.repl.serve(pair.b, 'replaying-primary').then(() => new Error('no error'), (e: Error) => e)
  const ch = new FrameChannel(pair.a, CH)
  ch.send('HELLO', captured.get('HELLO')!)
  const frames = await drain(ch, f => { if (f.type === 'HELLO') ch.send('AUTH', captured.get('AUTH')!) })
  t.same(frames.map(f => f.type), ['HELLO', 'ERROR'], 'the secondary said HELLO (a fresh nonce), then refused')
  t.equal(errorOf(frames)?.code, 'AUTH_FAILED', 'the replayed proof does not cover the new nonce')
  t.equal(((await served) as { refusal?: string }).refusal, 'AUTH_FAILED')
  await assertUnchanged(t, s, before)
})

t.test('a fake secondary reflecting the primary\'s own nonce and proof back is refused by the primary with AUTH_FAILED', async t => {
  const p = await primaryWithData(t)
  const pair = duplexPair()
  const served = p.repl.serve(pair.a, 'reflecting-secondary').then(() => new Error('no error'), (e: Error) => e)
  const ch = new FrameChannel(pair.b, CH)
  const first = await ch.next()
  const theirs = parseJsonBody<{ nonce: string }>(first!)
  ch.sendJson('HELLO', { protocol: PROTOCOL_MAX, role: 'secondary', volumeId: null, nonce: theirs.nonce, auth: true })
  const frames = await drain(ch, f => { if (f.type === 'AUTH') ch.send('AUTH', f.body) })
  t.same(frames.map(f => f.type), ['AUTH', 'ERROR'], 'the primary proved itself, then refused its own proof sent back')
  t.equal(errorOf(frames)?.code, 'AUTH_FAILED')
  t.equal(((await served) as { refusal?: string }).refusal, 'AUTH_FAILED')
  t.equal(lastError(p)?.code, 'AUTH_FAILED')
  t.equal((p.repl.status() as { ackedSeq: number | null }).ackedSeq, null, 'no STATE, START or RECORD: nothing acknowledged')
})

t.test('a relay that rewrites the secondary\'s HELLO (to pose as an empty secondary) is refused with AUTH_FAILED on both sides', async t => {
  const p = await primaryWithData(t)
  const s = await makeSecondary(t)
  const first = connect(p, s)
  await caughtUp(p, s)
  first.cut()
  await first.ended
  t.ok(s.state.format?.volumeId !== undefined, 'the secondary holds the volume')
  await writeFile(p.vol, '/more', 2, 10_000)
  await p.log.settle()
  const before = await snapshotOf(s)
  // primary <-> toP <-> relay <-> toS <-> secondary; the relay forwards every frame, rewriting one.
  const toP = duplexPair()
  const toS = duplexPair()
  const pEnded = p.repl.serve(toP.a, 'relay').then(() => new Error('no error'), (e: Error) => e)
  const sEnded = s.repl.serve(toS.b, 'relay').then(() => new Error('no error'), (e: Error) => e)
  const nearP = new FrameChannel(toP.b, CH)
  const nearS = new FrameChannel(toS.a, CH)
  const forward = async (from: FrameChannel, to: FrameChannel, rewrite: (f: Frame) => Buffer): Promise<void> => {
    for (;;) {
      const f = await from.next().catch(() => null)
      if (f === null) break
      try { to.send(f.type, rewrite(f)) } catch { break }
    }
    from.close()
    to.close()
  }
  const toSecondary = forward(nearP, nearS, f => f.body)
  const toPrimary = forward(nearS, nearP, f => f.type === 'HELLO' ? Buffer.from(JSON.stringify({ ...parseJsonBody(f), volumeId: null })) : f.body)
  const [pe, se] = await Promise.all([pEnded, sEnded])
  await Promise.all([toSecondary, toPrimary])
  t.equal((se as { refusal?: string }).refusal, 'AUTH_FAILED', `the secondary refuses the proof over a HELLO it never sent: ${se.message}`)
  t.equal((pe as { refusal?: string }).refusal, 'AUTH_FAILED', `the primary is refused: ${pe.message}`)
  await assertUnchanged(t, s, before)
  t.equal(p.repl.phase, 'disconnected', 'the primary is not streaming')
  t.equal((p.repl.status() as { ackedSeq: number | null }).ackedSeq, before.seq, 'nor has it an acknowledgement beyond the first session\'s')
})
