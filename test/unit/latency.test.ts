import t from 'tap'
import { LatencySamples } from '../../src/repl/latency.js'

t.test('latency samples keep only the newest `capacity` durations and give numeric percentiles', async t => {
  const l = new LatencySamples(4)
  t.same(l.summary(), { p50: null, p99: null, samples: 0 }, 'nothing measured yet: no figures')
  for (let ms = 1; ms <= 10; ms++) l.add(ms)
  // Only 7, 8, 9, 10 remain: p50 is the third of them, p99 the last.
  t.same(l.summary(), { p50: 9, p99: 10, samples: 4 }, 'the ring dropped the six oldest')

  // Sorted as numbers, not as strings ("100" < "20" < "9" would put 100 first).
  const m = new LatencySamples(8)
  for (const ms of [100, 9, 20]) m.add(ms)
  t.same(m.summary(), { p50: 20, p99: 100, samples: 3 })
  m.add(0.123456)
  t.equal(m.summary().p50, 20, 'p50 of [0.12, 9, 20, 100] is the third')
  const one = new LatencySamples(8)
  one.add(1.23456)
  t.same(one.summary(), { p50: 1.23, p99: 1.23, samples: 1 }, 'rounded to hundredths of a millisecond')
})
