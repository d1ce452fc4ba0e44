import t from 'tap'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'

// Page faults per freshly allocated, filled and freed 1 MiB Buffer, in a child process that
// first applies (or not) the mount's malloc thresholds through tuneMalloc.
const REPO = new URL('../../..', import.meta.url).pathname
const child = `
  const { tuneMalloc } = await import(${JSON.stringify(join(REPO, 'dist/src/util/malloc-tuning.js'))})
  const log = { info () {}, warn () {}, debug () {} }
  const tuned = process.argv[1] === 'tune' ? tuneMalloc(log) : null
  const cycle = () => { for (let i = 0; i < 100; i++) { Buffer.allocUnsafeSlow(1 << 20).fill(i); globalThis.gc() } }
  cycle()
  const before = process.resourceUsage().minorPageFault
  cycle()
  console.log(JSON.stringify({ tuned, faults: (process.resourceUsage().minorPageFault - before) / 100 }))
`
/** Runs `script` in a fresh node without an operator's MALLOC_* thresholds (plus `env`); its last line as JSON. */
function runChild<T> (script: string, arg: string, env: NodeJS.ProcessEnv = {}): T {
  const clean = { ...process.env }
  delete clean.MALLOC_MMAP_THRESHOLD_
  delete clean.MALLOC_TRIM_THRESHOLD_
  const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script, arg], { env: { ...clean, ...env }, encoding: 'utf8' })
  return JSON.parse(out.trim().split('\n').pop() as string)
}

const run = (arg: string, env: NodeJS.ProcessEnv = {}): { tuned: boolean | null, faults: number } => runChild(child, arg, env)

t.test('tuneMalloc keeps freed request buffers for reuse: a new 1 MiB buffer costs no page faults; an operator\'s MALLOC_* environment wins', async t => {
  const plain = run('plain')
  const tuned = run('tune')
  t.equal(tuned.tuned, true, 'the thresholds took')
  // A 1 MiB buffer is 256 pages: a few faults are the child's own other allocations (GC), not the buffers.
  t.ok(tuned.faults <= 4, `tuned: ${tuned.faults} page faults per 1 MiB buffer`)
  t.ok(plain.faults >= 10 * Math.max(tuned.faults, 0.1), `glibc's defaults: ${plain.faults} page faults per 1 MiB buffer`)
  const operator = run('tune', { MALLOC_MMAP_THRESHOLD_: '131072' })
  t.equal(operator.tuned, false, 'with MALLOC_MMAP_THRESHOLD_ set, tuneMalloc leaves the settings alone')
  t.ok(operator.faults >= 10 * Math.max(tuned.faults, 0.1), `and the operator's 128 KiB threshold is what applies: ${operator.faults} faults per buffer`)
})

// The first 48 MiB of buffers a fresh process keeps live at once (as a mount does, until V8's
// next GC frees them): with the thresholds alone each is new heap, every page faulting on first
// touch; after tuneMalloc's pre-fault they come from pages already written.
const growth = `
  const { tuneMalloc, HEAP_PREFAULT, MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD } = await import(${JSON.stringify(join(REPO, 'dist/src/util/malloc-tuning.js'))})
  const { setMallocThresholds } = await import(${JSON.stringify(join(REPO, 'dist/src/util/process-addon.js'))})
  const log = { info () {}, warn () {}, debug () {} }
  const tuned = process.argv[1] === 'prefault' ? tuneMalloc(log) : setMallocThresholds(MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD)
  const before = process.resourceUsage().minorPageFault
  const live = []
  for (let i = 0; i < 48; i++) live.push(Buffer.allocUnsafeSlow(1 << 20).fill(i))
  console.log(JSON.stringify({ tuned, prefault: HEAP_PREFAULT, faults: (process.resourceUsage().minorPageFault - before) / 48, held: live.length }))
`

t.test('a fresh mount process finds its first 48 MiB of request buffers already faulted in: tuneMalloc pre-faults the heap', async t => {
  const grow = (arg: string): { tuned: boolean, prefault: number, faults: number } => runChild(growth, arg)
  const cold = grow('thresholds-only')
  const warm = grow('prefault')
  t.equal(warm.tuned, true)
  t.ok(warm.prefault >= 48 << 20, 'the pre-fault covers the 48 MiB this test holds')
  t.ok(cold.faults >= 200, `thresholds alone: ${cold.faults} page faults per new 1 MiB buffer (256 pages)`)
  t.ok(warm.faults <= 8, `after the pre-fault: ${warm.faults} page faults per new 1 MiB buffer`)
})
