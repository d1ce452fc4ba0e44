import t from 'tap'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'

// Page faults per freshly allocated, filled and freed 1 MiB Buffer, in a child process that
// first applies (or not) the mount's malloc thresholds through tuneMalloc.
const REPO = new URL('../../..', import.meta.url).pathname
const child = `
  const { tuneMalloc } = await import(${JSON.stringify(join(REPO, 'dist/src/fuse/mount.js'))})
  const log = { info () {}, warn () {} }
  const tuned = process.argv[1] === 'tune' ? tuneMalloc(log) : null
  const cycle = () => { for (let i = 0; i < 100; i++) { Buffer.allocUnsafeSlow(1 << 20).fill(i); globalThis.gc() } }
  cycle()
  const before = process.resourceUsage().minorPageFault
  cycle()
  console.log(JSON.stringify({ tuned, faults: (process.resourceUsage().minorPageFault - before) / 100 }))
`
function run (arg: string, env: NodeJS.ProcessEnv = {}): { tuned: boolean | null, faults: number } {
  const clean = { ...process.env }
  delete clean.MALLOC_MMAP_THRESHOLD_
  delete clean.MALLOC_TRIM_THRESHOLD_
  const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', child, arg], { env: { ...clean, ...env }, encoding: 'utf8' })
  return JSON.parse(out.trim().split('\n').pop() as string)
}

t.test('tuneMalloc keeps freed request buffers for reuse: a new 1 MiB buffer costs no page faults; an operator\'s MALLOC_* environment wins', async t => {
  const plain = run('plain')
  const tuned = run('tune')
  t.equal(tuned.tuned, true, 'the thresholds took')
  t.ok(tuned.faults <= 1, `tuned: ${tuned.faults} page faults per 1 MiB buffer`)
  t.ok(plain.faults >= 10 * Math.max(tuned.faults, 0.1), `glibc's defaults: ${plain.faults} page faults per 1 MiB buffer`)
  const operator = run('tune', { MALLOC_MMAP_THRESHOLD_: '131072' })
  t.equal(operator.tuned, false, 'with MALLOC_MMAP_THRESHOLD_ set, tuneMalloc leaves the settings alone')
  t.ok(operator.faults >= 10 * Math.max(tuned.faults, 0.1), `and the operator's 128 KiB threshold is what applies: ${operator.faults} faults per buffer`)
})
