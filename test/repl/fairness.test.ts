import t from 'tap'
import { caughtUp, connect, dumpsEqual, makePrimary, makeSecondary, writeFile } from '../helpers/replica.js'
import { LoopYield } from '../../src/util/loop-yield.js'

t.test('LoopYield gives the event loop a turn once its interval has passed, and only then', async t => {
  let now = 0
  const y = new LoopYield(2, () => now)
  t.equal(await y.pause(), false, 'no turn before 2 ms of work')
  now = 1.9
  t.equal(await y.pause(), false)
  now = 2.1
  let immediateRan = false
  setImmediate(() => { immediateRan = true })
  t.equal(await y.pause(), true, 'a turn after 2 ms')
  t.equal(immediateRan, true, 'and the event loop really turned: an immediate queued before it ran')
  t.equal(await y.pause(), false, 'the interval starts again from the turn')
})

t.test('a secondary working through a buffered backlog lets the event loop turn every few records, so its mount and its acks are not held up behind it', async t => {
  const p = await makePrimary(t)
  const s = await makeSecondary(t)
  const c = connect(p, s)
  await caughtUp(p, s)
  // Hold the stream while 48 MiB of 1 MiB writes pile up, then let it all through at once: the
  // secondary's channel buffers up to 16 MiB of frames and applies them back to back.
  c.pair.hold('toSecondary')
  await writeFile(p.vol, '/backlog', 48, 1 << 20, 3)
  await p.log.settle()
  const from = s.state.counters.seq
  let turns = 0
  let lastSeq = from
  let mostBetweenTurns = 0
  let ticking = true
  const tick = (): void => {
    turns++
    const seq = s.state.counters.seq
    mostBetweenTurns = Math.max(mostBetweenTurns, seq - lastSeq)
    lastSeq = seq
    if (ticking) setImmediate(tick)
  }
  setImmediate(tick)
  c.pair.release('toSecondary')
  await caughtUp(p, s, 60_000)
  ticking = false
  const applied = s.state.counters.seq - from
  t.ok(applied >= 48, `${applied} records applied from the backlog`)
  // A turn every 2 ms of work is a few records here (3-6 measured); without the turns the whole
  // buffered backlog (33 records) went through in one stretch.
  t.ok(mostBetweenTurns <= 12, `at most ${mostBetweenTurns} records (1 MiB each) were applied between two turns of the event loop (${turns} turns)`)
  t.ok(await dumpsEqual(p, s), 'and the states are identical')
})
