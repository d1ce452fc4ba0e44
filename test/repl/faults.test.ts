import t from 'tap'
t.setTimeout(240_000)
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { mountVolume, tempDir } from '../helpers/mount.js'
import { assertIdentical, kill9, restart, sleep, startPair, status, waitCaughtUp, waitFor, type Node } from '../helpers/replicated.js'

// Faults between two replicated mounts: process kills, a cut / slow / corrupting / stalled
// connection, and peers that must be refused. Every scenario that replicates ends caught up,
// with `replfs verify` exit 0 and identical trees on both mounts.
const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex')

function content (n: number): Buffer {
  const len = 200 + (n * 7919) % 6000
  const b = Buffer.allocUnsafe(len)
  let x = (n * 2654435761) | 1
  for (let i = 0; i < len; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    b[i] = x & 0xff
  }
  return b
}

/**
 * A steady writer in this process (async fs, so it never blocks the event loop): creates
 * w-N files (write + fsync + close) and appends a line per file to `journal.txt` (+ fsync).
 * A write counts as acknowledged, and is recorded, only after its fsync returned.
 */
class Writer {
  /** file name -> sha256 of what was fsynced */
  files = new Map<string, string>()
  /** bytes of journal.txt that were fsynced */
  journalBytes = 0
  journalText = ''
  n = 0
  error: NodeJS.ErrnoException | null = null
  stopped = false
  done: Promise<void>
  private countWaiters: Array<{ n: number, resolve: () => void }> = []
  constructor (readonly dir: string, readonly prefix: string, readonly pauseMs = 0) {
    this.done = this.loop()
  }
  private async loop (): Promise<void> {
    let jh: fs.promises.FileHandle | null = null
    try {
      jh = await fs.promises.open(join(this.dir, `${this.prefix}-journal.txt`), 'a')
      while (!this.stopped) {
        const name = `${this.prefix}-${String(this.n).padStart(6, '0')}`
        const c = content(this.n)
        const fh = await fs.promises.open(join(this.dir, name), 'wx')
        try {
          await fh.write(c, 0, c.length, 0)
          await fh.sync()
        } finally {
          // (never leave a FileHandle to the GC: closing it there on a dead mount throws uncaught)
          await fh.close().catch(() => {})
        }
        const line = `${name} ${sha(c)}\n`
        await jh.write(line)
        await jh.sync()
        this.files.set(name, sha(c))
        this.journalText += line
        this.journalBytes += line.length
        this.n++
        for (const w of this.countWaiters.filter(w => this.n >= w.n))
          w.resolve()
        if (this.pauseMs > 0)
          await sleep(this.pauseMs)
      }
    }
    catch (err) {
      this.error = err as NodeJS.ErrnoException
    }
    finally {
      await jh?.close().catch(() => { })
      for (const w of this.countWaiters)
        w.resolve()
    }
  }
  /** Resolves once `count` more files were acknowledged (or the writer failed). */
  async more (count: number, timeoutMs = 30_000): Promise<void> {
    const target = this.n + count
    if (this.error !== null)
      return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      new Promise<void>(resolve => this.countWaiters.push({ n: target, resolve })),
      new Promise<void>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`writer made no progress to ${target} (at ${this.n})`)), timeoutMs); })
    ]).finally(() => clearTimeout(timer))
  }
  async stop (): Promise<void> {
    this.stopped = true
    await this.done
  }
  async finished (): Promise<void> { await this.done; }
}

const INVALID = /crc mismatch|unknown frame type|exceeds the maximum/

function logSince (n: Node, from: number): string { return n.logs().slice(from) }

t.test('kill -9 of the secondary mid-stream: the primary carries on, the restarted secondary resumes (no full copy)', async t => {
  const pair = await startPair(t, { mode: 'sync' })
  await waitCaughtUp(pair.primary)
  const w = new Writer(pair.primary.mnt, 's')
  await w.more(60)
  await kill9(pair.secondary)
  t.comment(`secondary killed after ${w.n} files`)
  await w.more(60)
  const st = await waitFor('the primary to notice', async () => (await status(pair.primary)).replication, r => r.phase === 'disconnected')
  t.equal(st.degraded, true, 'sync primary without its secondary runs degraded')
  const mark = pair.primary.logs().length
  await restart(t, pair.secondary)
  await w.more(60)
  await w.stop()
  t.equal(w.error, null, 'no write failed on the primary')
  await waitCaughtUp(pair.primary)
  const since = logSince(pair.primary, mark)
  t.match(since, /secondary connected; resuming/, 'primary log: the restarted secondary resumes')
  t.notMatch(since, /full copy/, 'primary log: no full copy after the restart')
  await assertIdentical(t, pair)
})

t.test('kill -9 of a sync primary mid-stream: every acknowledged write is on the secondary; the restarted primary resumes', async t => {
  const pair = await startPair(t, { mode: 'sync' })
  await waitCaughtUp(pair.primary)
  const w = new Writer(pair.primary.mnt, 'w')
  await w.more(150)
  await kill9(pair.primary)
  await w.finished()
  t.ok(w.error !== null, `the writer stopped with ${String(w.error?.code)} once the primary was gone`)
  t.comment(`${w.files.size} files acknowledged before the kill`)
  // before the primary comes back: the secondary alone must hold every acknowledged write
  const b = pair.secondary.mnt
  const missing: string[] = []
  for (const [name, h] of w.files) {
    let got: string | null = null
    try {
      got = sha(fs.readFileSync(join(b, name)))
    }
    catch { /* missing */ }
    if (got !== h)
      missing.push(name)
  }
  t.same(missing, [], `all ${w.files.size} acknowledged files are on the secondary with their content`)
  const j = fs.readFileSync(join(b, 'w-journal.txt'), 'utf8')
  t.ok(j.length >= w.journalBytes && j.startsWith(w.journalText), `secondary's journal.txt holds the ${w.journalBytes} acknowledged bytes (has ${j.length})`)
  const sst = (await status(pair.secondary)).replication
  t.comment(`secondary after the kill: ${JSON.stringify({ phase: sst.phase, appliedSeq: sst.appliedSeq, lastError: sst.lastError })}`)
  const p2 = await restart(t, pair.primary)
  await waitCaughtUp(p2)
  t.match(p2.m.stderr(), /secondary connected; resuming/, 'restarted primary log: resuming')
  t.notMatch(p2.m.stderr(), /full copy/, 'restarted primary log: no full copy')
  // the restarted primary works, and replicates
  fs.writeFileSync(join(p2.mnt, 'after-restart'), 'written after the primary came back')
  await assertIdentical(t, pair)
})

t.test('faults on the connection (through a proxy)', async t => {
  const pair = await startPair(t, { mode: 'sync', proxy: true, peerTimeout: 2 })
  const proxy = pair.proxy!
  await waitCaughtUp(pair.primary)
  await t.test('cut: reconnect with backoff and resume', async t => {
    const w = new Writer(pair.primary.mnt, 'cut', 2)
    await w.more(30)
    const mark = pair.primary.logs().length
    const before = await proxy.stats()
    for (let i = 0; i < 3; i++) {
      const acc = (await proxy.stats()).accepted
      await proxy.cut(i === 1 ? 1500 : 0)
      await w.more(10)
      // (degraded writes go fast: wait for the reconnection before the next cut)
      await waitFor('a new connection', async () => [(await proxy.stats()).accepted, (await status(pair.primary)).replication] as const,
        ([a, r]) => a > acc && r.phase === 'streaming', 20_000)
      await w.more(10)
    }
    await w.stop()
    t.equal(w.error, null, 'every write succeeded on the primary')
    await waitCaughtUp(pair.primary)
    const after = await proxy.stats()
    t.ok(after.accepted - before.accepted >= 3, `the primary reconnected (${after.accepted - before.accepted} new connections, ${after.refused - before.refused} refused)`)
    const since = logSince(pair.primary, mark)
    t.ok((since.match(/secondary connected; resuming/g) ?? []).length >= 3, 'primary log: resumed after each cut')
    t.notMatch(since, /full copy/, 'no full copy')
    await assertIdentical(t, pair)
  })
  await t.test('delay: 20 ms per chunk, still correct', async t => {
    await proxy.delay(20)
    const w = new Writer(pair.primary.mnt, 'delay')
    const began = Date.now()
    await w.more(25)
    const perFile = (Date.now() - began) / 25
    await w.stop()
    t.equal(w.error, null, 'every write succeeded')
    t.ok(perFile >= 20, `sync writes wait for the round trip: ${perFile.toFixed(0)} ms per file (2 fsyncs)`)
    await assertIdentical(t, pair)
    await proxy.pass()
  })
  await t.test('corrupt: the secondary refuses the frame, says why, and the pair resumes', async t => {
    const w = new Writer(pair.primary.mnt, 'corrupt', 2)
    await w.more(10)
    const mark = pair.secondary.logs().length
    const acceptedBefore = (await proxy.stats()).accepted
    await proxy.corruptNext(1000)
    const st = await waitFor('the secondary to refuse a frame', async () => (await status(pair.secondary)).replication, r => r.lastError !== null && /crc|checksum|frame/i.test(r.lastError.message), 20_000)
    await w.more(20)
    await w.stop()
    t.equal(w.error, null, 'every write succeeded on the primary')
    t.equal((await proxy.stats()).corrupted >= 1, true, 'the proxy flipped a byte')
    // (a flip in a frame header is refused as an unknown type or an oversize body instead)
    t.match(st.lastError?.message, INVALID, `secondary status lastError: ${JSON.stringify(st.lastError)}`)
    t.match(logSince(pair.secondary, mark), INVALID, 'the secondary logs why it refused the frame')
    await waitCaughtUp(pair.primary)
    t.ok((await proxy.stats()).accepted > acceptedBefore, 'the primary reconnected')
    await assertIdentical(t, pair)
  })
  await t.test('stall: the peer timeout drops the silent connection, then replication resumes', async t => {
    const w = new Writer(pair.primary.mnt, 'stall', 2)
    await w.more(10)
    const mark = pair.primary.logs().length
    const stalledAt = Date.now()
    await proxy.stall()
    // the primary (sync) is blocked until the timeout; then it goes on degraded and reconnects.
    // Whichever side's timer fires first drops the connection; the other then sees it closed.
    const fresh = (e: { at?: string } | null): boolean => e !== null && Date.parse(String(e.at)) >= stalledAt
    const [ps, ss] = await waitFor('a side to give up on the silent peer', async () => [(await status(pair.primary)).replication, (await status(pair.secondary)).replication] as const,
      ([p, s]) => fresh(p.lastError) && fresh(s.lastError) && (/silent/.test(p.lastError!.message) || /silent/.test(s.lastError!.message)), 20_000)
    const took = (Date.now() - stalledAt) / 1000
    t.ok(took >= 1.5 && took < 10, `noticed after ${took.toFixed(1)} s (--peer-timeout 2): primary ${JSON.stringify(ps.lastError)}, secondary ${JSON.stringify(ss.lastError)}`)
    await w.more(20)
    await w.stop()
    t.equal(w.error, null, 'every write succeeded on the primary')
    await waitCaughtUp(pair.primary)
    t.match(logSince(pair.primary, mark), /secondary connected; resuming/, 'resumed after the stall')
    await assertIdentical(t, pair)
  })
})

// A flip in a frame's length field that makes the body longer (but under the 16 MiB cap) would not
// be caught by the body crc until that many bytes have arrived; pings keep both idle timers happy
// meanwhile, and in sync mode the primary's writes would hang for minutes. The header's own crc
// must refuse it at once.
t.test('corrupt length field of a frame: detected like any corruption, not a hang', async t => {
  const pair = await startPair(t, { mode: 'sync', proxy: true, peerTimeout: 2 })
  const proxy = pair.proxy!
  await waitCaughtUp(pair.primary)
  // Idle: caught up, and no new record between two looks, so only PINGs flow up now and the next
  // byte up starts a frame header. Its byte 2 is the second-lowest byte of the u32 body length:
  // the flip makes a ~20-byte PING claim ~23 KB.
  let seqBefore = -1
  await waitFor('the primary to stay caught up with no new records', async () => await status(pair.primary), s => {
    const idle = s.seq === seqBefore && s.replication.phase === 'streaming' && s.replication.lagRecords === 0
    seqBefore = s.seq
    return idle
  }, 10_000)
  const mark = pair.secondary.logs().length
  const acceptedBefore = (await proxy.stats()).accepted
  await proxy.corruptNext(2)
  await waitFor('the flipped byte to pass', async () => await proxy.stats(), s => s.corrupted >= 1, 5000)
  const began = Date.now()
  const write = fs.promises.writeFile(join(pair.primary.mnt, 'after-length-flip'), 'written after the flip').then(() => 'done', (e: Error) => e.message)
  const res = await Promise.race([write, sleep(12_000).then(() => 'still waiting')])
  const s = await status(pair.secondary)
  t.equal(res, 'done', `a sync write on the primary completes within 12 s of the corruption (--peer-timeout 2); took ${((Date.now() - began) / 1000).toFixed(1)} s; secondary: ${JSON.stringify({ phase: s.replication.phase, appliedSeq: s.replication.appliedSeq, lastError: s.replication.lastError })}`)
  // The flip hit a header (else it would be a body crc mismatch), so the length field was damaged.
  const refused = await waitFor('the secondary to log why it refused the frame', async () => logSince(pair.secondary, mark), l => INVALID.test(l), 5000).catch(() => logSince(pair.secondary, mark))
  t.match(refused, /frame header crc mismatch/, 'the secondary refused the damaged header by its crc')
  t.ok((await proxy.stats()).accepted > acceptedBefore, 'the primary reconnected after the refused frame')
  if (res === 'done') await assertIdentical(t, pair)
})

t.test('wrong secret: nothing replicates, both sides say AUTH_FAILED, the primary keeps working', async t => {
  const pair = await startPair(t, { mode: 'sync', secondarySecret: 'a-different-secret-of-32-bytes!!' })
  fs.writeFileSync(join(pair.primary.mnt, 'secret-test'), 'still writable')
  const pst = await waitFor('AUTH_FAILED on the primary', async () => (await status(pair.primary)).replication, r => r.lastError?.code === 'AUTH_FAILED', 15_000)
  const sst = await waitFor('AUTH_FAILED on the secondary', async () => (await status(pair.secondary)).replication, r => r.lastError?.code === 'AUTH_FAILED', 15_000)
  t.equal(pst.lastError?.code, 'AUTH_FAILED', `primary: ${pst.lastError?.message}`)
  t.equal(sst.lastError?.code, 'AUTH_FAILED', `secondary: ${sst.lastError?.message}`)
  for (let i = 0; i < 20; i++)
    fs.writeFileSync(join(pair.primary.mnt, `more-${i}`), `file ${i}`)
  t.equal(fs.readFileSync(join(pair.primary.mnt, 'more-19'), 'utf8'), 'file 19', 'writes on the primary succeed')
  const p = (await status(pair.primary)).replication
  t.equal(p.degraded, true, 'sync primary runs degraded')
  t.not(p.phase, 'streaming', 'not streaming')
  const s = await status(pair.secondary)
  t.equal(s.replication.appliedSeq, 0, 'the secondary applied nothing')
  t.same(fs.readdirSync(pair.secondary.mnt), [], 'the secondary shows nothing')
})

t.test('wrong volume: a secondary holding another volume is refused (VOLUME_MISMATCH), its data untouched', async t => {
  const other = tempDir()
  t.teardown(() => fs.rmSync(other, { recursive: true, force: true }))
  const otherStore = join(other, 'store')
  const solo = await mountVolume(t, { store: otherStore, mnt: join(other, 'mnt'), runDir: join(other, 'run') })
  fs.writeFileSync(join(solo.mnt, 'mine'), 'belongs to the other volume')
  fs.mkdirSync(join(solo.mnt, 'dir'))
  await solo.stop()
  const pair = await startPair(t, { mode: 'sync', secondaryStore: otherStore })
  fs.writeFileSync(join(pair.primary.mnt, 'primary-file'), 'from the primary')
  const pst = await waitFor('VOLUME_MISMATCH on the primary', async () => (await status(pair.primary)).replication, r => r.lastError?.code === 'VOLUME_MISMATCH', 15_000)
  const sst = await waitFor('VOLUME_MISMATCH on the secondary', async () => (await status(pair.secondary)).replication, r => r.lastError?.code === 'VOLUME_MISMATCH', 15_000)
  t.equal(pst.lastError?.code, 'VOLUME_MISMATCH', `primary: ${pst.lastError?.message}`)
  t.equal(sst.lastError?.code, 'VOLUME_MISMATCH', `secondary: ${sst.lastError?.message}`)
  await sleep(1000)
  t.same(fs.readdirSync(pair.secondary.mnt).sort(), ['dir', 'mine'], 'the secondary still shows its own volume only')
  t.equal(fs.readFileSync(join(pair.secondary.mnt, 'mine'), 'utf8'), 'belongs to the other volume', 'its data is untouched')
  t.equal((await status(pair.primary)).replication.degraded, true, 'the primary runs degraded')
  t.equal(fs.readFileSync(join(pair.primary.mnt, 'primary-file'), 'utf8'), 'from the primary', 'the primary works')
})
//# sourceMappingURL=faults.test.js.map
