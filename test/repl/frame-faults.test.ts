import t from 'tap'
import { crc32 } from 'node:zlib'
import { FRAME_HEADER_LENGTH, FrameType, MAX_FRAME_BODY, frameHeader } from '../../src/repl/frames.js'
import {
  type FrameFault, type PrimaryNode, type SecondaryNode, type Teardown, caughtUp, connect, dumpsEqual, fsckProblems, makePrimary, makeSecondary, replayTo, writeFile
} from '../helpers/replica.js'

/** The seq a RECORD frame carries. */
function recordSeq (body: Buffer): number { return Number(body.readBigUInt64BE(0)) }

/** A header for a frame of `type` and `length` whose own crc checks out, with a body crc that matches nothing. */
function header (length: number, type: number): Buffer {
  return frameHeader(length, type, 0xdeadbeef)
}

/** Fault at the RECORD frame of seq `at`, applied once (the first connection only). */
function atRecord (at: number, act: (raw: Buffer) => Buffer[]): FrameFault {
  return f => f.type === FrameType.RECORD && recordSeq(f.body) === at ? act(f.raw) : [f.raw]
}

interface Case {
  name: string
  fault: (at: number) => FrameFault
  /** The secondary's lastError. */
  code: string
  message: RegExp
  /** Highest seq the secondary may hold afterwards, given the faulty record's seq. */
  maxApplied: (at: number) => number
  /** Exactly this seq (when the protocol makes it certain). */
  exactApplied?: (at: number) => number
  /** What the primary's lastError says (it learns the reason only from an ERROR frame). */
  primaryCode?: string
}

const cases: Case[] = [
  {
    name: 'one flipped bit in a RECORD frame body',
    fault: at => atRecord(at, raw => {
      const bad = Buffer.from(raw)
      bad[FRAME_HEADER_LENGTH + 8 + 20] ^= 0x10
      return [bad]
    }),
    code: 'FRAME_INVALID',
    message: /crc mismatch on a RECORD frame/,
    maxApplied: at => at - 1
  },
  {
    name: 'a duplicated RECORD frame',
    fault: at => atRecord(at, raw => [raw, raw]),
    code: 'BAD_FRAME',
    message: /out of sequence/,
    maxApplied: at => at,
    exactApplied: at => at,
    primaryCode: 'BAD_FRAME'
  },
  {
    name: 'an out-of-sequence RECORD (one skipped)',
    fault: at => atRecord(at, () => []),
    code: 'BAD_FRAME',
    message: new RegExp('out of sequence'),
    maxApplied: at => at - 1,
    exactApplied: at => at - 1,
    primaryCode: 'BAD_FRAME'
  },
  {
    name: 'a frame of an unknown type',
    fault: at => atRecord(at, raw => {
      const body = Buffer.from('{}')
      const h = frameHeader(body.length, 99, crc32(body, crc32(Buffer.of(99))))
      return [h, body, raw]
    }),
    code: 'FRAME_INVALID',
    message: /unknown frame type 99/,
    maxApplied: at => at - 1
  },
  {
    name: 'a frame whose length is over 16 MiB',
    fault: at => atRecord(at, raw => [header(MAX_FRAME_BODY + 1, FrameType.RECORD), raw]),
    code: 'FRAME_INVALID',
    message: /exceeds the maximum/,
    maxApplied: at => at - 1
  },
  {
    name: 'garbage bytes',
    fault: at => atRecord(at, raw => [Buffer.from('GET / HTTP/1.1\r\nHost: replfs\r\n\r\n'), raw]),
    code: 'FRAME_INVALID',
    message: /exceeds the maximum|unknown frame type|crc mismatch/,
    maxApplied: at => at - 1
  },
  {
    name: 'a RECORD frame with a valid crc but a corrupt record',
    fault: at => atRecord(at, raw => {
      // Re-framed properly, so only the record decoder can notice: truncate the record.
      const body = raw.subarray(FRAME_HEADER_LENGTH, FRAME_HEADER_LENGTH + 8 + 3)
      const h = frameHeader(body.length, FrameType.RECORD, crc32(body, crc32(Buffer.of(FrameType.RECORD))))
      return [h, body]
    }),
    code: 'BAD_FRAME',
    message: /record \d+:/,
    maxApplied: at => at - 1,
    exactApplied: at => at - 1,
    primaryCode: 'BAD_FRAME'
  }
]

async function setup (t: Teardown): Promise<{ p: PrimaryNode, s: SecondaryNode }> {
  const p = await makePrimary(t)
  // 40 write records of 10 KB, then streaming starts from 0 on connect (the journal starts at 1).
  await writeFile(p.vol, '/f', 40, 10_000)
  await p.log.settle()
  const s = await makeSecondary(t)
  return { p, s }
}

for (const c of cases) {
  t.test(`${c.name}: the secondary refuses, applies nothing of it, drops the connection, and resumes cleanly without the fault`, async t => {
    const { p, s } = await setup(t)
    const at = 20
    t.ok(p.state.counters.seq > at + 5, `primary at seq ${p.state.counters.seq}`)
    const conn = connect(p, s, { fault: c.fault(at) })
    const [pe, se] = await conn.ended
    await s.log.settle()
    const applied = s.state.counters.seq
    const st = s.repl.status() as { lastError: { code: string, message: string } | null, connected: boolean, appliedSeq: number }
    t.equal(st.lastError?.code, c.code, `secondary lastError code (${se.message})`)
    t.match(st.lastError?.message, c.message, 'secondary lastError says why')
    t.equal(st.connected, false, 'the secondary is disconnected')
    t.ok(conn.pair.a.destroyed && conn.pair.b.destroyed, 'the connection is dropped')
    t.ok(pe instanceof Error, `the primary's serve() ended: ${pe.message}`)
    const pst = p.repl.status() as { lastError: { code: string } | null, connected: boolean }
    t.equal(pst.connected, false, 'the primary is disconnected')
    if (c.primaryCode !== undefined) t.equal(pst.lastError?.code, c.primaryCode, 'the primary was told why')
    else t.not(pst.lastError, null, 'the primary noted the connection loss')
    t.ok(applied <= c.maxApplied(at), `applied ${applied} <= ${c.maxApplied(at)}: nothing of the bad frame`)
    if (c.exactApplied !== undefined) t.equal(applied, c.exactApplied(at), 'every valid record before it was applied')
    t.ok(applied >= 1, 'records before the fault were applied')
    t.equal(s.journal.lastSeq, applied, 'the secondary journaled exactly what it applied')
    // Whole records only: the state equals the primary's at that seq.
    const ref = await replayTo(t, p, applied)
    t.ok(await dumpsEqual(ref, s), `the secondary's state is the primary's state at seq ${applied}`)
    t.same(await fsckProblems(s), [], 'fsck clean on the secondary after the refusal')

    // Reconnect without the fault: resumes from `applied` and ends identical.
    const again = connect(p, s)
    await writeFile(p.vol, '/after', 3, 5000, 7)
    await caughtUp(p, s)
    const v = await p.repl.verify()
    t.ok(v.identical, `verify at seq ${v.seq}: identical`)
    t.ok(await dumpsEqual(p, s), 'state dumps equal')
    t.ok(again.pair.bytesToSecondary < p.journal.bytesAfter(applied) + 4096, 'the reconnect resumed rather than starting over')
    t.same(await fsckProblems(s), [], 'fsck clean after resuming')
  })
}
