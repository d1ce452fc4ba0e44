import t, { type Test } from 'tap'
import fc from 'fast-check'
import { type Decision, type Generation, type NodeView, commonPoint, decide, startGeneration } from '../../src/repl/generations.js'

const g = (id: string, since: number, at = `2026-01-01T00:00:${String(since % 60).padStart(2, '0')}Z`): Generation => ({ id, since, at })
const root = g('vol', 0, '1970-01-01T00:00:00.000Z')

function view (role: NodeView['role'], history: Generation[], seq: number, o: Partial<NodeView> = {}): NodeView {
  return { role, fenced: false, history, seq, policy: 'disconnect', nodeId: role === 'primary' ? 'n-a' : 'n-b', ...o }
}

/** What the other side must conclude from the same two views (reasons are worded per side). */
function mirror (d: Decision): object {
  if (d.kind === 'refuse') return { kind: d.kind, code: d.code }
  return { kind: d.kind === 'source' ? 'target' : 'source', from: d.from, diverged: d.diverged }
}

function outcome (d: Decision): object {
  return d.kind === 'refuse' ? { kind: d.kind, code: d.code } : { kind: d.kind, from: d.from, diverged: d.diverged }
}

function check (t: Test, me: NodeView, peer: NodeView, want: Partial<Decision> & { kind: Decision['kind'] }, what: string): void {
  const d = decide(me, peer)
  t.match(d, want, `${what}: ${d.kind} (${'reason' in d ? d.reason : ''})`)
  t.same(outcome(decide(peer, me)), mirror(d), `${what}: the peer decides the mirror image`)
}

t.test('the decision table, a row each', async t => {
  const g1 = g('g1', 100)
  const g2 = g('g2', 150)
  check(t, view('primary', [root], 120), view('secondary', [root], 120), { kind: 'source', from: 120, diverged: false }, 'same generation, same seq: in sync, the primary sends')
  check(t, view('primary', [root], 120), view('secondary', [root], 80), { kind: 'source', from: 80, diverged: false }, 'same generation, secondary behind: resume from its seq')
  check(t, view('primary', [root, g1], 130), view('secondary', [root], 90), { kind: 'source', from: 90, diverged: false }, 'a promoted primary, its secondary behind in the old generation')
  check(t, view('primary', [root, g1], 130, { fenced: true }), view('primary', [root, g1, g2], 170), { kind: 'target', from: 130, diverged: false }, 'a fenced primary whose peer went on in a newer generation: it follows')
  check(t, view('primary', [root], 140, { fenced: true }), view('primary', [root, g1], 120), { kind: 'target', from: 100, diverged: true }, 'an old primary that crashed with 40 records its promoted peer lacks: it yields, keeping them')
  check(t, view('primary', [root], 100, { fenced: true }), view('primary', [root, g1], 100), { kind: 'target', from: 100, diverged: false }, 'an old primary with nothing past the promotion point just follows')
  check(t, view('primary', [root], 130, { fenced: true }), view('primary', [root, g1], 100), { kind: 'target', from: 100, diverged: true }, 'the promoted peer wrote nothing yet: the old primary\'s 30 extra records still become a diverged snapshot')
  check(t, view('primary', [root, g('a', 100)], 130), view('primary', [root, g('b', 100)], 140), { kind: 'refuse', code: 'SPLIT_BRAIN' }, 'both promoted and written: split brain, disconnect by default')
  check(t, view('primary', [root, g('a', 100)], 130), view('secondary', [root, g('b', 100)], 140), { kind: 'source', from: 100, diverged: true }, 'split brain where the operator demoted one side: that side yields')
  check(t, view('primary', [root], 90, { fenced: true }), view('secondary', [root], 120), { kind: 'refuse', code: 'PEER_NEWER' }, 'a restarted primary that lost records its secondary holds: the secondary must be promoted, no one sends')
  check(t, view('primary', [g('x', 0)], 5), view('primary', [g('y', 0)], 5, { fenced: true }), { kind: 'refuse', code: 'SPLIT_BRAIN' }, 'no common generation: unrelated histories are a split brain')
  check(t, view('primary', [g('x', 0)], 5), view('secondary', [g('y', 0)], 5), { kind: 'source', from: 0, diverged: true }, 'no common generation, one side secondary: it yields, keeping its state as a diverged snapshot')
  check(t, view('primary', [root], 7), view('secondary', [], 0), { kind: 'source', from: 0, diverged: false }, 'an empty secondary gets everything')
  check(t, view('primary', [root, g('a', 100)], 130), view('primary', [root, g('b', 100)], 130), { kind: 'refuse', code: 'SPLIT_BRAIN' }, 'two writable primaries never replicate, even with equal counts')
  check(t, view('primary', [root], 50, { fenced: true, nodeId: 'a' }), view('primary', [root], 50, { fenced: true, nodeId: 'b' }), { kind: 'source', from: 50, diverged: false }, 'two restarted primaries with the same records: one is chosen the same way on both sides')
})

t.test('split-brain policies pick the same survivor on both sides, and disconnect when they differ', async t => {
  const a = view('primary', [root, g('a', 100, '2026-01-01T00:00:10Z')], 130, { policy: 'discard-younger' })
  const b = view('primary', [root, g('b', 100, '2026-01-01T00:00:20Z')], 110, { policy: 'discard-younger' })
  check(t, a, b, { kind: 'source', from: 100, diverged: true }, 'discard-younger: b was promoted later, it yields')
  check(t, { ...a, policy: 'discard-least-changes' }, { ...b, policy: 'discard-least-changes' }, { kind: 'source', from: 100, diverged: true }, 'discard-least-changes: b wrote 10 records, a 30; b yields')
  check(t, { ...a, policy: 'discard-least-changes', seq: 105 }, { ...b, policy: 'discard-least-changes' }, { kind: 'target', from: 100, diverged: true }, 'discard-least-changes: a wrote 5 records, b 10; a yields')
  check(t, a, { ...b, policy: 'disconnect' }, { kind: 'refuse', code: 'SPLIT_BRAIN' }, 'policies that differ: disconnect')
})

t.test('the common point is where the shorter side ends the newest shared generation', async t => {
  t.equal(commonPoint(view('primary', [root, g('g1', 100)], 130), view('secondary', [root], 95)), 95)
  t.equal(commonPoint(view('primary', [root, g('g1', 100)], 130), view('secondary', [root], 120)), 100)
  t.equal(commonPoint(view('primary', [g('x', 0)], 5), view('secondary', [g('y', 0)], 5)), null)
  // A history adopted ahead of the records it names (a resuming target) still gives the right point.
  t.equal(commonPoint(view('primary', [root, g('g1', 100)], 130), view('secondary', [root, g('g1', 100)], 95)), 95)
})

t.test('a promotion drops adopted generations the node holds no record of, so starts stay ordered', async t => {
  const h = startGeneration([root, g('g1', 100)], 95)
  t.same(h.map(x => x.since), [0, 95])
  t.equal(h[0].id, 'vol')
  t.not(h[1].id, 'g1', 'a fresh generation id')
})

t.test('for any two views, both sides reach mirrored decisions and only a primary sends', async t => {
  // Histories as they arise: a shared lineage, then each side's own generations (promotions,
  // losses of the peer), each starting at or after the one before it.
  const steps = fc.array(fc.record({ gap: fc.integer({ min: 0, max: 20 }), at: fc.constantFrom('t1', 't2', 't3') }), { maxLength: 3 })
  const lineage = (prefix: string, from: Generation[], s: Array<{ gap: number, at: string }>): Generation[] => {
    const out = [...from]
    for (const [i, x] of s.entries()) out.push({ id: `${prefix}${i}`, since: (out.at(-1)?.since ?? 0) + x.gap, at: x.at })
    return out
  }
  const side = (h: Generation[]) => fc.record({
    role: fc.constantFrom('primary' as const, 'secondary' as const),
    fenced: fc.boolean(),
    empty: fc.boolean(),
    extra: fc.integer({ min: 0, max: 30 }),
    policy: fc.constantFrom('disconnect' as const, 'discard-younger' as const, 'discard-least-changes' as const)
  }).map(v => {
    const history = v.empty && v.role === 'secondary' ? [] : h
    return { role: v.role, fenced: v.role === 'primary' && v.fenced, history, seq: history.length === 0 ? 0 : history.at(-1)!.since + v.extra, policy: v.policy }
  })
  const pair = fc.tuple(steps, steps, steps).chain(([shared, mineSteps, theirSteps]) => {
    const common = lineage('s', [root], shared)
    return fc.tuple(side(lineage('a', common, mineSteps)).map(v => ({ ...v, nodeId: 'n1' })), side(lineage('b', common, theirSteps)).map(v => ({ ...v, nodeId: 'n2' })))
  })
  t.doesNotThrow(() => fc.assert(fc.property(pair, ([a, b]) => {
    const d = decide(a, b)
    const e = decide(b, a)
    if (JSON.stringify(mirror(d)) !== JSON.stringify(outcome(e))) return false
    if (d.kind === 'refuse') return true
    const sender = d.kind === 'source' ? a : b
    const receiver = d.kind === 'source' ? b : a
    // A secondary never sends; a writable primary is only overwritten keeping its writes (a policy chose it).
    return sender.role === 'primary' && (!(receiver.role === 'primary' && !receiver.fenced) || d.diverged)
  }), { numRuns: 3000 }), 'mirrored decisions over 3000 random pairs of views')
})
