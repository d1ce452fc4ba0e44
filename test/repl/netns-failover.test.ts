import t, { type Test } from 'tap'
t.setTimeout(420_000)
import { createHash, randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { isMounted, mountVolume, tempDir } from '../helpers/mount.js'
import { netnsList, startHostPair, twoHosts, type HostNode, type TwoHosts } from '../helpers/netns.js'
import { cliAsync, diffSnapshots, status, treeSnapshot, waitCaughtUp, waitFor, sleep } from '../helpers/replicated.js'

// Failover, failback and planned switchover between two hosts (a network namespace each, a real
// replfs process on each), with a writer that fsyncs every record and keeps the list of what its
// fsync acknowledged: that list is what no change of role may lose.

/** Every pair of hosts made here, for the last test: nothing may be left behind. */
const made: TwoHosts[] = []
async function hostPair (t: Test): Promise<{ h: TwoHosts, A: HostNode, B: HostNode }> {
  const h = await twoHosts(t)
  made.push(h)
  const { primary: A, secondary: B } = await startHostPair(h, { mode: 'sync', peerTimeout: 3, primaryArgs: ['--attr-timeout', '0'] })
  return { h, A, B }
}

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex')
const MiB = 1 << 20

/** Record n: one fixed-length line, its content derived from n (so any line can be checked). */
const REC_LEN = 128
function record (n: number): string {
  return `rec ${String(n).padStart(8, '0')} ${sha(String(n))} `.padEnd(REC_LEN - 1, '.') + '\n'
}

/** The record numbers of a records file, in file order; lines that are not whole records are `bad`. */
function parseRecords (text: string): { nums: number[], bad: string[] } {
  const nums: number[] = []
  const bad: string[] = []
  const lines = text.split('\n')
  if (lines[lines.length - 1] === '') lines.pop()
  else if (lines.length > 0) bad.push(`unterminated last line ${JSON.stringify(lines[lines.length - 1].slice(0, 40))}`)
  for (const l of lines) {
    const m = /^rec (\d{8}) /.exec(l)
    if (m === null || record(Number(m[1])) !== l + '\n') bad.push(JSON.stringify(l.slice(0, 40)))
    else nums.push(Number(m[1]))
  }
  return { nums, bad }
}

/** What is wrong with a records file given what was acknowledged: [] when every acked record is there, in order, whole, once. */
function checkRecords (text: string, acked: readonly number[]): string[] {
  const { nums, bad } = parseRecords(text)
  const problems = bad.slice(0, 5).map(b => `not a record: ${b}`)
  for (let i = 0; i < nums.length; i++) {
    if (nums[i] !== i) { problems.push(`line ${i} holds record ${nums[i]}`); break }
  }
  const have = new Set(nums)
  const missing = acked.filter(n => !have.has(n))
  if (missing.length > 0) problems.push(`${missing.length} acknowledged records missing, first ${missing[0]}`)
  return problems
}

/** The first log line with message `msg` ('' if none). */
const logLine = (log: string, msg: string): string => log.split('\n').find(l => l.includes(`"msg":"${msg}"`)) ?? ''

const readRecords = (mnt: string): string => fs.readFileSync(join(mnt, 'records.log'), 'utf8')

/**
 * Appends record after record to `file` under the first of `targets`, each write followed by an
 * fsync; a record counts as acknowledged (and goes to `acked`) only once its fsync returned.
 * With `followRoles`, an EROFS (this host stopped being the primary) sends it on to the next
 * target, polled until it takes writes, where it goes on with the same record.
 */
class RecordWriter {
  readonly acked: number[] = []
  /** When each of `acked` was acknowledged (Date.now() after its fsync returned). */
  readonly ackedAt: number[] = []
  /** EROFS seen on a target, and when the writer got going on the next one. */
  readonly moves: Array<{ from: string, to: string, erofsAt: number, resumedAt: number }> = []
  error: NodeJS.ErrnoException | null = null
  /** Records the old host had taken (their fsync failed) found already on the new one: not written twice. */
  duplicatesAvoided = 0
  next: number
  stopped = false
  readonly done: Promise<void>
  private waiters: Array<{ n: number, resolve: () => void }> = []

  constructor (readonly targets: string[], readonly file: string, readonly opts: { from?: number, followRoles?: boolean, pauseMs?: number } = {}) {
    this.next = opts.from ?? 0
    this.done = this.loop()
  }

  private async open (mnt: string): Promise<{ fh: fs.promises.FileHandle, pos: number }> {
    const fh = await fs.promises.open(join(mnt, this.file), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644)
    return { fh, pos: (await fh.stat()).size }
  }

  /** The next target that takes writes (polled: it becomes primary a moment after the old one refused). */
  private async openWritable (mnt: string, timeoutMs = 30_000): Promise<{ fh: fs.promises.FileHandle, pos: number }> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      try {
        return await this.open(mnt)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EROFS' || Date.now() > deadline) throw err
      }
      await sleep(5)
    }
  }

  private async loop (): Promise<void> {
    let at = 0
    let cur: { fh: fs.promises.FileHandle, pos: number } | null = null
    try {
      cur = await this.open(this.targets[at])
      while (!this.stopped) {
        const line = Buffer.from(record(this.next))
        try {
          await cur.fh.write(line, 0, line.length, cur.pos)
          await cur.fh.sync()
        } catch (err) {
          if (this.opts.followRoles !== true || (err as NodeJS.ErrnoException).code !== 'EROFS') throw err
          const erofsAt = Date.now()
          await cur.fh.close().catch(() => {})
          cur = null
          const from = this.targets[at]
          at = (at + 1) % this.targets.length
          cur = await this.openWritable(this.targets[at])
          // A write the old host took whose fsync then failed would be there already: never twice.
          const tail = Buffer.alloc(REC_LEN)
          if (cur.pos >= REC_LEN) await cur.fh.read(tail, 0, REC_LEN, cur.pos - REC_LEN)
          this.moves.push({ from, to: this.targets[at], erofsAt, resumedAt: Date.now() })
          if (!tail.equals(line)) continue
          await cur.fh.sync()
          this.duplicatesAvoided++
          this.ack()
          continue
        }
        cur.pos += line.length
        this.ack()
        if (this.opts.pauseMs !== undefined) await sleep(this.opts.pauseMs)
      }
    } catch (err) {
      this.error = err as NodeJS.ErrnoException
    } finally {
      // (never leave a FileHandle to the GC: closing it there on a dead mount throws uncaught)
      await cur?.fh.close().catch(() => {})
      for (const w of this.waiters) w.resolve()
    }
  }

  private ack (): void {
    this.ackedAt.push(Date.now())
    this.acked.push(this.next++)
    for (const w of this.waiters.filter(w => this.acked.length >= w.n)) w.resolve()
  }


  /** Resolves once `count` more records were acknowledged (or the writer stopped on an error). */
  async more (count: number, timeoutMs = 60_000): Promise<void> {
    const target = this.acked.length + count
    if (this.error !== null) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      new Promise<void>(resolve => this.waiters.push({ n: target, resolve })),
      new Promise<void>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`writer made no progress to ${target} (at ${this.acked.length})`)), timeoutMs) })
    ]).finally(() => clearTimeout(timer))
  }

  async stop (): Promise<void> {
    this.stopped = true
    await this.done
  }
}

const repl = async (n: HostNode): Promise<Record<string, any>> => (await status(n)).replication as Record<string, any>

/** Names under .snapshots that a resync made of a side's diverged writes. */
async function divergedSnapshots (n: HostNode): Promise<string[]> {
  const r = await n.cli(['snapshot', 'list', n.mnt, '--json', '--no-space'])
  if (r.code !== 0) throw new Error(`snapshot list on ${n.host.name} exited ${String(r.code)}: ${r.stderr}`)
  return (JSON.parse(r.stdout) as Array<{ name: string }>).map(s => s.name).filter(s => s.startsWith('diverged-'))
}

/** `replfs verify` on `primary` exits 0 and says identical, and both mounts hold the same trees. */
async function assertSame (t: Test, primary: HostNode, secondary: HostNode): Promise<void> {
  const v = await primary.cli(['verify', primary.mnt], 60_000)
  t.equal(v.code, 0, `replfs verify on ${primary.host.name} exits 0 (${v.stdout.trim().split('\n')[0] ?? v.stderr.trim()})`)
  t.match(v.stdout, /seq \d+: identical/, 'verify says identical')
  // (both mounts run with --attr-timeout 0, so no cached size can hide a difference)
  const a = treeSnapshot(primary.mnt)
  const b = treeSnapshot(secondary.mnt)
  t.same(diffSnapshots(a, b), [], `same trees and file digests on both mounts (${Object.values(a).filter(e => e.type === 'file').length} files)`)
}

/** Creates files under dir/only-on-a, one after another, with no fsync; `done` lists what returned. */
class LooseWriter {
  readonly done: Array<{ name: string, sha: string }> = []
  error: NodeJS.ErrnoException | null = null
  stopped = false
  readonly finished: Promise<void>
  constructor (readonly dir: string) { this.finished = this.loop() }
  private async loop (): Promise<void> {
    try {
      await fs.promises.mkdir(join(this.dir, 'only-on-a'))
      for (let i = 0; !this.stopped; i++) {
        const c = randomBytes(3000 + i * 1000)
        await fs.promises.writeFile(join(this.dir, 'only-on-a', `u${i}`), c)
        this.done.push({ name: `u${i}`, sha: sha(c) })
      }
    } catch (err) {
      this.error = err as NodeJS.ErrnoException
    }
  }
}

/**
 * A=primary, B=secondary, 32 MiB of data, then a writer that fsyncs every record on A, and
 * kill -9 of A mid-write. `diverge`: the link is cut first and A takes writes that B never gets
 * (its fsync'd writer waits meanwhile: nothing is acknowledged), then A dies.
 */
async function failoverScenario (t: Test, o: { diverge: boolean }): Promise<void> {
  const began = Date.now()
  const { h, A, B } = await hostPair(t)

  // 32 MiB of bulk data before anything fails: a full copy would have to move all of it again.
  fs.mkdirSync(join(A.mnt, 'bulk'), { recursive: true })
  for (let i = 0; i < 8; i++) await fs.promises.writeFile(join(A.mnt, 'bulk', `f${i}`), randomBytes(4 * MiB))
  await waitCaughtUp(A, 60_000)
  const volumeBytes = Number((await status(A)).usedBytes)
  t.comment(`volume holds ${(volumeBytes / MiB).toFixed(1)} MiB before the failover`)

  const w = new RecordWriter([A.mnt], 'records.log')
  await w.more(150)
  let loose: LooseWriter | null = null
  if (o.diverge) {
    // Well inside --peer-timeout 3: A's fsync waits for B and never degrades to a local ack.
    h.cut()
    const cutAt = Date.now()
    loose = new LooseWriter(A.mnt)
    const l = loose
    await waitFor('A to take writes alone', async () => l.done.length, n => n >= 8 || l.error !== null || Date.now() - cutAt > 700, 2000, 10)
    t.comment(`link cut: A took ${l.done.length} files B never got in ${Date.now() - cutAt} ms (the fsync'd writer waited: ${w.acked.length} acknowledged)`)
  }
  const killedAt = Date.now()
  await A.kill9()
  await w.done
  if (loose !== null) {
    loose.stopped = true
    await loose.finished
    // Heal only once B has closed its end: the dead A's kernel still holds the unsent records in
    // its orphaned socket and would deliver them on a healed link; a closed socket answers RST.
    await waitFor('B to give up on its primary', async () => await repl(B), r => r.connected === false, 15_000)
    await h.heal()
  }
  const acked = w.acked.slice()
  t.ok(w.error !== null, `the writer stopped with ${String(w.error?.code)} when the primary died, after ${acked.length} acknowledged records`)

  await t.test('the secondary alone holds every record the dead primary acknowledged', async t => {
    const problems = checkRecords(readRecords(B.mnt), acked)
    t.same(problems, [], `records.log on B: all ${acked.length} acknowledged records, in order (B holds ${parseRecords(readRecords(B.mnt)).nums.length})`)
    const s = await waitFor('B to see its primary gone', async () => await repl(B), r => r.connected === false, 15_000)
    t.equal(s.role, 'secondary', 'B is still a secondary until told otherwise')
  })

  let bTail = -1
  await t.test('replfs promote --force on B (peer unreachable): B takes writes in a new generation', async t => {
    const before = await repl(B)
    const refused = await B.cli(['promote', B.mnt])
    t.equal(refused.code, 1, 'promote without --force is refused: the primary did not step down')
    t.match(refused.stderr, /cannot be reached[^]*--force/, `says why and names --force: ${refused.stderr.trim().split('\n')[0]}`)
    const r = await B.cli(['promote', B.mnt, '--force', '--json'])
    t.equal(r.code, 0, `promote --force exits 0 ${r.stderr.trim()}`)
    const out = JSON.parse(r.stdout || '{}') as { role?: string, changed?: boolean, generation?: { id: string } }
    t.equal(out.role, 'primary', 'promote answers role primary')
    t.not(out.generation?.id, before.generation?.id, 'a new generation began')
    t.comment(`promote returned ${Date.now() - killedAt} ms after the kill (this test's own status calls included)`)
    const s = await repl(B)
    t.equal(s.role, 'primary', 'B status: role primary')
    t.equal(s.fenced, false, 'B status: not fenced')
    fs.writeFileSync(join(B.mnt, 'after-failover.bin'), randomBytes(MiB))
    t.ok(fs.existsSync(join(B.mnt, 'after-failover.bin')), 'a file written on B\'s mount')
    bTail = parseRecords(readRecords(B.mnt)).nums.at(-1) ?? -1
    const wb = new RecordWriter([B.mnt], 'records.log', { from: bTail + 1 })
    await wb.more(200)
    await wb.stop()
    t.equal(wb.error, null, 'B took 200 more fsync\'d records')
    acked.push(...wb.acked)
    t.same(checkRecords(readRecords(B.mnt), acked), [], 'records.log on B: every acknowledged record, A\'s and B\'s, in order')
  })

  let bMark = 0
  await t.test('A restarted with the same command line (--role primary) comes back fenced, then rejoins as B\'s secondary by itself', async t => {
    const bBefore = await repl(B)
    bMark = B.log().length
    const restartedAt = Date.now()
    await A.restart()
    // Until it has rejoined, A must take no write: fenced first, then a secondary.
    let probes = 0
    let accepted = 0
    const otherErrors = new Set<string>()
    const s = await waitFor('A to rejoin as B\'s secondary', async () => {
      try {
        probes++
        await fs.promises.writeFile(join(A.mnt, 'written-on-the-old-primary'), 'must be refused')
        accepted++
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EROFS') otherErrors.add(String((err as NodeJS.ErrnoException).code))
      }
      return await repl(A)
    }, r => r.role === 'secondary' && r.connected === true && r.phase === 'streaming', 60_000, 50)
    const rejoinMs = Date.now() - restartedAt
    t.comment(`A rejoined as secondary ${rejoinMs} ms after its restart`)
    const started = logLine(A.log(), 'replication started')
    t.match(started, /"fenced":true/, 'A\'s log: replication started fenced')
    t.match(started, /"role":"primary"/, 'A\'s log: in its stored role, primary')
    t.equal(accepted, 0, `every one of ${probes} writes tried on A's mount until it rejoined was refused`)
    t.same([...otherErrors], [], 'and refused with EROFS')
    t.equal(s.role, 'secondary', 'A status: role secondary')
    t.match(A.log(), /the peer is newer: this node becomes its secondary/, 'A\'s log: it demoted itself')
    await waitCaughtUp(B, 60_000)
    t.equal((await repl(A)).role, 'secondary', 'A is still B\'s secondary once caught up')

    const bAfter = await repl(B)
    const sent = Number(bAfter.bytesOut) - Number(bBefore.bytesOut)
    const since = B.log().slice(bMark)
    const diff = logLine(since, 'resync by difference sent') || undefined
    const resyncSent = diff === undefined ? null : Number(/"bytesSent":(\d+)/.exec(diff)?.[1])
    const connected = logLine(A.log(), 'primary connected')
    t.comment(`B sent A ${(sent / MiB).toFixed(2)} MiB over the reconnection (bytesOut delta; ${diff === undefined ? 'resumed from the journal' : `resync by difference: bytesSent ${String(resyncSent)}, ${String(/"differing":(\d+)/.exec(diff)?.[1])} of ${String(/"ranges":(\d+)/.exec(diff)?.[1])} ranges`}); volume ${(volumeBytes / MiB).toFixed(1)} MiB`)
    const c = connected === '' ? {} : JSON.parse(connected) as Record<string, unknown>
    t.comment(`A's side of the reconnection: ${JSON.stringify({ mode: c.mode, from: c.from, diverged: c.diverged, reason: c.reason })}`)
    t.ok(sent > 0 && sent < 8 * MiB, `only the difference crossed: ${sent} bytes < 8 MiB (volume ${volumeBytes} bytes)`)
    if (resyncSent !== null) t.ok(resyncSent < 8 * MiB, `resync by difference sent ${resyncSent} bytes`)
    t.notMatch(since, /full copy/, 'no full copy')

    const divergedA = /"diverged":true/.test(connected)
    if (o.diverge) {
      t.ok(divergedA, 'A held writes B lacked, and says so (diverged: true)')
      t.ok(diff !== undefined, 'B resynced A by difference')
      t.match(since, /"msg":"the peer's diverged writes are kept as a read-only snapshot"/, 'B\'s log: A\'s diverged writes are kept as a snapshot')
    }
    const onA = await divergedSnapshots(A)
    const onB = await divergedSnapshots(B)
    if (divergedA) {
      t.equal(onB.length, 1, `A held records B lacked: B shows a diverged snapshot ${onB.join(', ')}`)
      t.same(onA, onB, 'and A shows the same one')
      for (const n of [A, B]) {
        const snap = join(n.mnt, '.snapshots', onB[0] ?? 'none')
        const kept = fs.readFileSync(join(snap, 'records.log'), 'utf8')
        t.same(checkRecords(kept, w.acked), [], `${n.host.name}: the diverged snapshot holds A's own records.log with every record it acknowledged`)
        if (loose !== null) {
          // (a killed process may lose the one latest change it had answered: README, Semantics)
          const want = loose.done.slice(0, -1)
          const bad = want.filter(f => { try { return sha(fs.readFileSync(join(snap, 'only-on-a', f.name))) !== f.sha } catch { return true } })
          t.same(bad, [], `${n.host.name}: the diverged snapshot holds the ${want.length}(+1) files A alone took`)
        }
      }
    } else {
      t.same([onA, onB], [[], []], 'A held nothing B lacked: no diverged snapshot on either host')
    }
    t.same(checkRecords(readRecords(A.mnt), acked), [], 'A\'s mount: every acknowledged record, in order')
    t.equal(readRecords(A.mnt), readRecords(B.mnt), 'records.log is the same on both mounts')
    t.ok(fs.existsSync(join(A.mnt, 'after-failover.bin')), 'A\'s mount shows B\'s new file')
    t.notOk(fs.existsSync(join(A.mnt, 'written-on-the-old-primary')), 'no write of A\'s own got through after its restart')
    t.notOk(fs.existsSync(join(A.mnt, 'only-on-a')) || fs.existsSync(join(B.mnt, 'only-on-a')), 'the live views hold B\'s history only')
    await assertSame(t, B, A)
  })

  await t.test('failback: replfs switchover on B makes A the primary again, B its secondary', async t => {
    // Since A rejoined on the connection it dialed, B has not dialed it again only to be turned away.
    t.notMatch(B.log().slice(bMark), /already replicating/, 'B\'s log: no redial refused while A\'s connection served it')
    t.notMatch(A.log(), /connection closed while waiting for HELLO/, 'A\'s log: no connection dropped before its handshake')
    const r = await B.cli(['switchover', B.mnt, '--json'], 60_000)
    t.equal(r.code, 0, `switchover on B exits 0 ${r.stderr.trim()}`)
    const out = JSON.parse(r.stdout || '{}') as { ms?: number, role?: string }
    t.equal(out.role, 'secondary', 'B answers: now secondary')
    t.comment(`failback switchover took ${String(out.ms)} ms`)
    const a = await waitFor('A to be the writable primary', async () => await repl(A), s => s.role === 'primary' && s.fenced === false, 20_000)
    t.equal(a.role, 'primary', 'A status: primary')
    t.equal((await repl(B)).role, 'secondary', 'B status: secondary')
    await waitCaughtUp(A, 30_000)
    fs.writeFileSync(join(A.mnt, 'after-failback'), 'written on A after the failback')
    const wa = new RecordWriter([A.mnt], 'records.log', { from: (parseRecords(readRecords(A.mnt)).nums.at(-1) ?? -1) + 1 })
    await wa.more(20)
    await wa.stop()
    t.equal(wa.error, null, 'A takes fsync\'d records again')
    acked.push(...wa.acked)
    await waitCaughtUp(A, 30_000)
    t.equal(fs.readFileSync(join(B.mnt, 'after-failback'), 'utf8'), 'written on A after the failback', 'B shows A\'s new write')
    t.same(checkRecords(readRecords(B.mnt), acked), [], 'B: every acknowledged record of the whole scenario, in order')
    await assertSame(t, A, B)
  })

  await t.test('both stores pass replfs fsck once stopped', async t => {
    await B.stop()
    await A.stop()
    for (const n of [A, B]) {
      const r = await cliAsync(['fsck', '--store', n.store], {}, 120_000)
      t.equal(r.code, 0, `fsck of ${n.host.name}'s store: ${r.stdout.trim().split('\n').at(-1) ?? ''} ${r.stderr.trim()}`)
    }
  })
  t.comment(`scenario took ${((Date.now() - began) / 1000).toFixed(1)} s`)
}

t.test('failover and failback under an fsync\'d writer (sync mode): kill -9 of the primary mid-write loses no acknowledged record; the old primary comes back fenced, rejoins as secondary by itself and receives only the difference', async t => {
  await failoverScenario(t, { diverge: false })
})

t.test('failover when the dead primary held writes its peer never got: they become the same diverged-* snapshot on both hosts, the resync by difference moves only the difference', async t => {
  await failoverScenario(t, { diverge: true })
})

t.test('planned switchover under load loses nothing and copies nothing', async t => {
  const { A, B } = await hostPair(t)
  await waitCaughtUp(A)
  const w = new RecordWriter([A.mnt, B.mnt], 'records.log', { followRoles: true })
  await w.more(100)
  const aMark = A.log().length
  const bMark = B.log().length
  const r = await A.cli(['switchover', A.mnt, '--json'], 60_000)
  t.equal(r.code, 0, `switchover on A exits 0 ${r.stderr.trim()}`)
  const out = JSON.parse(r.stdout || '{}') as { ms?: number, role?: string, seq?: number }
  t.equal(out.role, 'secondary', 'A answers: now secondary')
  t.ok(typeof out.ms === 'number', `switchover took ${String(out.ms)} ms (at seq ${String(out.seq)})`)
  await w.more(100)
  await w.stop()
  t.equal(w.error, null, `the writer carried on (${w.acked.length} records acknowledged)`)
  t.equal(w.moves.length, 1, 'it saw EROFS once and moved on')
  const mv = w.moves[0]
  t.same(mv === undefined ? null : [mv.from, mv.to], [A.mnt, B.mnt], 'from the old primary\'s mount to the new primary\'s')
  if (mv !== undefined) t.comment(`the writer waited ${mv.resumedAt - mv.erofsAt} ms between EROFS on A and B taking writes (${w.duplicatesAvoided} record found already there)`)
  const b = await repl(B)
  t.equal(b.role, 'primary', 'B status: primary')
  t.equal((await repl(A)).role, 'secondary', 'A status: secondary')
  await waitCaughtUp(B, 30_000)
  const since = B.log().slice(bMark)
  t.match(since, /"msg":"secondary connected; resuming"/, 'B\'s log: it resumed the old primary')
  const resumed = logLine(since, 'secondary connected; resuming')
  if (resumed !== '' && mv !== undefined) {
    const line = JSON.parse(resumed) as { peerSeq: number, primarySeq: number, time: number }
    const firstOnB = w.ackedAt.find(at => at >= mv.resumedAt)
    t.comment(`A reconnected as B's secondary ${line.time - mv.erofsAt} ms after the writer's EROFS, at seq ${line.peerSeq}; B had committed ${line.primarySeq - line.peerSeq} records by then`)
    t.ok(firstOnB !== undefined && firstOnB >= line.time, `B acknowledged no fsync before A was its secondary again (first ack on B ${String(firstOnB === undefined ? '-' : firstOnB - line.time)} ms after): sync mode never ran degraded`)
  }
  t.notMatch(since, /resync by difference|full copy/, 'no resync by difference, no full copy')
  t.match(A.log().slice(aMark), /"msg":"switchover: the peer is primary, this node its secondary"/, 'A\'s log: the switchover')
  t.same(checkRecords(readRecords(B.mnt), w.acked), [], `B: all ${w.acked.length} acknowledged records, in order, each once`)
  t.same(checkRecords(readRecords(A.mnt), w.acked), [], 'A: the same')
  t.equal(readRecords(A.mnt), readRecords(B.mnt), 'records.log is the same on both mounts')
  t.same([await divergedSnapshots(A), await divergedSnapshots(B)], [[], []], 'no diverged snapshot on either host')
  await assertSame(t, B, A)
})

t.test('bad input: role changes that would lose data or make no sense are refused, with a message and exit code 1', async t => {
  const { A, B } = await hostPair(t)
  await waitCaughtUp(A)
  fs.writeFileSync(join(A.mnt, 'f'), 'data')
  await waitCaughtUp(A)

  await t.test('promote without --force on a secondary streaming from its primary', async t => {
    const r = await B.cli(['promote', B.mnt])
    t.equal(r.code, 1, 'exit code 1')
    t.match(r.stderr, /primary is connected and streaming/, `says why: ${r.stderr.trim().split('\n')[0]}`)
    t.match(r.stderr, /switchover/, 'and names the fix')
    t.equal((await repl(B)).role, 'secondary', 'B stays secondary')
    t.equal((await repl(A)).phase, 'streaming', 'A still streams to it')
  })

  await t.test('demote without --force on a primary whose peer is down', async t => {
    await B.stop()
    await waitFor('A to see B gone', async () => await repl(A), r => r.connected === false, 15_000)
    const r = await A.cli(['demote', A.mnt])
    t.equal(r.code, 1, 'exit code 1')
    t.match(r.stderr, /peer is not connected/, `says why: ${r.stderr.trim().split('\n')[0]}`)
    t.match(r.stderr, /--force/, 'and names the way out')
    t.equal((await repl(A)).role, 'primary', 'A stays primary')
    fs.writeFileSync(join(A.mnt, 'still-writable'), 'yes')
    t.equal(fs.readFileSync(join(A.mnt, 'still-writable'), 'utf8'), 'yes', 'and still takes writes')
  })

  await t.test('a primary restarted while its peer is down stays fenced (EROFS) until forced', async t => {
    await A.kill9()
    await A.restart()
    const s = await repl(A)
    t.equal(s.role, 'primary', 'A status: primary')
    t.equal(s.fenced, true, 'A status: fenced')
    let code: string | undefined
    try { fs.writeFileSync(join(A.mnt, 'while-fenced'), 'x') } catch (err) { code = (err as NodeJS.ErrnoException).code }
    t.equal(code, 'EROFS', 'a write on the fenced primary gets EROFS')
    const snap = await A.cli(['snapshot', 'create', A.mnt, 'nope'])
    t.equal(snap.code, 1, 'snapshot create on the fenced primary is refused')
    const p = await A.cli(['promote', A.mnt])
    t.equal(p.code, 1, 'promote without --force on the fenced primary is refused')
    t.match(p.stderr, /has not confirmed[^]*--force/, `says why and names --force: ${p.stderr.trim().split('\n')[0]}`)
    const r = await A.cli(['promote', A.mnt, '--force', '--json'])
    t.equal(r.code, 0, `promote --force exits 0 ${r.stderr.trim()}`)
    t.equal((await repl(A)).fenced, false, 'A status: no longer fenced')
    fs.writeFileSync(join(A.mnt, 'after-force'), 'y')
    t.equal(fs.readFileSync(join(A.mnt, 'after-force'), 'utf8'), 'y', 'A takes writes again')
  })

  await t.test('promote on a volume that is not replicated, and on a path nothing serves', async t => {
    const solo = await mountVolume(t, {})
    const r = await cliAsync(['promote', solo.mnt], { REPLFS_RUN_DIR: solo.runDir })
    t.equal(r.code, 1, 'not replicated: exit code 1')
    t.match(r.stderr, /not replicated/, `says why: ${r.stderr.trim().split('\n')[0]}`)
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace')
    const dir = tempDir()
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
    for (const path of [dir, join(dir, 'does-not-exist')]) {
      const u = await cliAsync(['promote', path, '--force'], { REPLFS_RUN_DIR: join(dir, 'run') })
      t.equal(u.code, 1, `${path === dir ? 'an empty directory' : 'a missing path'}: exit code 1`)
      t.match(u.stderr, /is not a replfs mount served by a running process/, `says why: ${u.stderr.trim().split('\n')[0]}`)
      t.notMatch(u.stderr, /\n\s+at /, 'no stack trace')
    }
    await solo.stop()
    t.notOk(isMounted(solo.mnt), 'the standalone volume is unmounted')
  })
})

t.test('nothing is left behind: no namespace, mount or node process', async t => {
  t.ok(made.length >= 4, `${made.length} pairs of hosts were made`)
  const listed = netnsList()
  const links = fs.readdirSync('/sys/class/net')
  for (const h of made) {
    t.notOk(listed.includes(h.a.ns) || listed.includes(h.b.ns), `no namespace ${h.a.ns}/${h.b.ns}`)
    t.notOk(links.includes(h.a.veth) || links.includes(h.b.veth), 'no veth of the pair in the root namespace')
    for (const n of h.nodes) {
      t.notOk(isMounted(n.mnt), `${n.host.name}: ${n.mnt} is not mounted`)
      t.ok(n.m.child.exitCode !== null || n.m.child.signalCode !== null, `${n.host.name}: process ${String(n.m.child.pid)} has exited`)
    }
    t.notOk(fs.existsSync(h.base), 'the temp dir is removed')
  }
})
