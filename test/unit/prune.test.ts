import t from 'tap'
import { type Candidate, parseKeep, periodOf, retain } from '../../src/cli/retention.js'
import { ReplfsError } from '../../src/errors.js'

let seq = 0
const snap = (name: string, created: string, s?: number): Candidate => ({ name, created, seq: s ?? ++seq })

/** The names kept and deleted, each newest first. */
function decide (snaps: Candidate[], keep: string): { keep: string[], destroy: string[] } {
  const r = retain(snaps, parseKeep(keep))
  return { keep: r.keep.map(d => d.name), destroy: r.destroy.map(d => d.name) }
}

t.test('grid retention: which snapshots stay, per rule and together', async t => {
  const cases: Array<{ what: string, snaps: Candidate[], keep: string, expect: { keep: string[], destroy: string[] } }> = [
    { what: 'no snapshots: nothing to keep or delete', snaps: [], keep: 'hourly=24', expect: { keep: [], destroy: [] } },
    {
      what: 'hourly=3 of five hours: the newest three hours stay',
      snaps: ['01', '02', '03', '04', '05'].map(h => snap(`h${h}`, `2026-12-01T${h}:10:00.000Z`)),
      keep: 'hourly=3',
      expect: { keep: ['h05', 'h04', 'h03'], destroy: ['h02', 'h01'] }
    },
    {
      what: 'several in one hour: only the newest of that hour counts for it',
      snaps: [snap('a', '2026-12-01T10:05:00Z'), snap('b', '2026-12-01T10:55:00Z'), snap('c', '2026-12-01T09:30:00Z')],
      keep: 'hourly=2',
      expect: { keep: ['b', 'c'], destroy: ['a'] }
    },
    {
      what: 'empty periods are not counted: daily=2 keeps the two newest days that have a snapshot',
      snaps: [snap('d1', '2026-11-01T12:00:00Z'), snap('d5', '2026-11-05T12:00:00Z'), snap('d5early', '2026-11-05T01:00:00Z')],
      keep: 'daily=2',
      expect: { keep: ['d5', 'd1'], destroy: ['d5early'] }
    },
    {
      what: 'rules add up: hourly=2 plus daily=3',
      snaps: [
        snap('mon-08', '2026-11-30T08:00:00Z'), snap('mon-20', '2026-11-30T20:00:00Z'),
        snap('tue-08', '2026-12-01T08:00:00Z'), snap('tue-20', '2026-12-01T20:00:00Z'),
        snap('wed-08', '2026-12-02T08:00:00Z'), snap('wed-09', '2026-12-02T09:00:00Z'), snap('wed-10', '2026-12-02T10:00:00Z')
      ],
      keep: 'hourly=2,daily=3',
      expect: { keep: ['wed-10', 'wed-09', 'tue-20', 'mon-20'], destroy: ['wed-08', 'tue-08', 'mon-08'] }
    },
    {
      what: 'the same creation time: the higher seq is the newer one',
      snaps: [snap('first', '2026-12-01T10:00:00.000Z', 7), snap('second', '2026-12-01T10:00:00.000Z', 8)],
      keep: 'hourly=1',
      expect: { keep: ['second'], destroy: ['first'] }
    },
    {
      what: 'every count 0: the newest still stays',
      snaps: [snap('old', '2026-01-01T00:00:00Z'), snap('new', '2026-06-01T00:00:00Z')],
      keep: 'hourly=0,daily=0',
      expect: { keep: ['new'], destroy: ['old'] }
    },
    {
      what: 'a creation time that cannot be read: kept, never deleted',
      snaps: [snap('odd', 'yesterday'), snap('x1', '2026-12-01T01:00:00Z'), snap('x2', '2026-12-01T01:30:00Z')],
      keep: 'hourly=1',
      expect: { keep: ['x2', 'odd'], destroy: ['x1'] }
    },
    {
      what: 'weekly and monthly: the newest of each ISO week / month',
      snaps: [
        snap('w48a', '2026-11-23T10:00:00Z'), snap('w48b', '2026-11-29T10:00:00Z'), // Mon, Sun of week 48
        snap('w49', '2026-11-30T10:00:00Z'), snap('oct', '2026-10-15T10:00:00Z'), snap('sep', '2026-09-15T10:00:00Z')
      ],
      keep: 'weekly=2,monthly=2',
      expect: { keep: ['w49', 'w48b', 'oct'], destroy: ['w48a', 'sep'] }
    }
  ]
  for (const c of cases) t.same(decide(c.snaps, c.keep), c.expect, c.what)
  const r = retain([snap('p', '2026-12-01T10:00:00Z'), snap('q', '2026-12-01T11:00:00Z')], parseKeep('hourly=2,daily=1'))
  t.same(r.keep.map(d => [d.name, d.reasons]), [['q', ['newest', 'hourly 2026-12-01T11', 'daily 2026-12-01']], ['p', ['hourly 2026-12-01T10']]], 'each kept snapshot says which rules keep it')
})

t.test('periods are UTC calendar periods; ISO weeks across year ends', async t => {
  const at = (s: string): Date => new Date(s)
  t.equal(periodOf('hourly', at('2026-12-02T19:59:59.999Z')), '2026-12-02T19')
  t.equal(periodOf('daily', at('2026-12-02T23:59:59Z')), '2026-12-02')
  t.equal(periodOf('monthly', at('2026-12-31T23:59:59Z')), '2026-12')
  t.equal(periodOf('yearly', at('2027-01-01T00:00:00Z')), '2027')
  t.equal(periodOf('weekly', at('2026-01-01T12:00:00Z')), '2026-W01', 'a Thursday 1 January is in week 1')
  t.equal(periodOf('weekly', at('2024-12-30T12:00:00Z')), '2025-W01', 'Monday 30 December 2024 is in week 1 of 2025')
  t.equal(periodOf('weekly', at('2021-01-03T12:00:00Z')), '2020-W53', 'Sunday 3 January 2021 is in week 53 of 2020')
  t.equal(periodOf('weekly', at('2026-11-29T23:00:00Z')), '2026-W48', 'Sunday ends the week')
  t.equal(periodOf('weekly', at('2026-11-30T00:00:00Z')), '2026-W49', 'Monday starts the next')
})

t.test('--keep syntax: every mistake is refused with what is wrong', async t => {
  t.same([...parseKeep('hourly=24,daily=7').entries()], [['hourly', 24], ['daily', 7]])
  t.same([...parseKeep(' weekly = 4 , monthly=6,yearly=1').entries()], [['weekly', 4], ['monthly', 6], ['yearly', 1]])
  const bad: Array<[string, RegExp]> = [
    ['', /names no period/],
    ['hourly', /"hourly" is not period=count/],
    ['hourly=', /"hourly=" is not period=count/],
    ['hourly=-1', /is not period=count/],
    ['hourly=1.5', /is not period=count/],
    ['hourly=24;daily=7', /is not period=count/],
    ['minutely=60', /unknown period "minutely"/],
    ['hourly=1,hourly=2', /hourly is given twice/],
    ['hourly=24,', /"" is not period=count/]
  ]
  for (const [spec, message] of bad) {
    let err: unknown = null
    try { parseKeep(spec) } catch (e) { err = e }
    t.ok(err instanceof ReplfsError && err.code === 'BAD_ARGUMENT', `${JSON.stringify(spec)} refused as BAD_ARGUMENT`)
    t.match((err as Error).message, message, `${JSON.stringify(spec)}: ${(err as Error).message}`)
    t.match((err as ReplfsError).hint ?? '', /e\.g\. --keep hourly=24,daily=7/, 'with an example')
  }
})
