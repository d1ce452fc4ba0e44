// pjdfstest's link, rename, unlink, chmod and open groups on both kinds of mount: all groups run from
// scripts/pjdfstest.sh (docs/pjdfstest.md has the full results).
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const REPO = new URL('../../..', import.meta.url).pathname
const GROUPS = ['link', 'rename', 'unlink', 'chmod', 'open']
// How many tests each group holds at the vendored pjdfstest commit (test/pjdfstest/README.md),
// as counted on tmpfs and ext4: a group that ran fewer tests than this did not really run.
const TESTS_PER_GROUP: Record<string, number> = { link: 359, rename: 4857, unlink: 440, chmod: 327, open: 337 }
// A stuck mount must not hold the suite: bounds well above a normal run (durations in
// docs/pjdfstest.md), and both targets together under the runner's 15 minutes per file.
const GROUP_TIMEOUT_S = 240
const TARGET_TIMEOUT_MS = 6 * 60 * 1000
t.setTimeout(2 * TARGET_TIMEOUT_MS + 60_000)

interface GroupResult { tests: number, failed: number, proveExit: number, seconds: number, failures: Record<string, { failedTests: string, details: string[] }> }

/** Runs scripts/pjdfstest.sh (which mounts, runs prove and always unmounts) and reads its JSON. */
async function runPjdfstest (t: Test, args: string[]): Promise<{ code: number | null, out: string, groups: Record<string, GroupResult> }> {
  const dir = mkdtempSync(join(tmpdir(), 'replfs-pjdfstest-json-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const json = join(dir, 'result.json')
  const child = spawn('bash', [join(REPO, 'scripts/pjdfstest.sh'), '--groups', GROUPS.join(','), '--timeout', String(GROUP_TIMEOUT_S), '--json', json, ...args],
    { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  // SIGTERM lets the script's trap unmount and stop its daemons.
  t.teardown(async () => { if (child.exitCode === null && child.signalCode === null) { child.kill('SIGTERM'); await exited } })
  const timer = setTimeout(() => child.kill('SIGTERM'), TARGET_TIMEOUT_MS)
  const code = await exited
  clearTimeout(timer)
  if (!existsSync(json)) throw new Error(`scripts/pjdfstest.sh ended (${String(code ?? child.signalCode)}) without results:\n${out.slice(-4000)}`)
  const groups = (JSON.parse(readFileSync(json, 'utf8')) as { groups: Record<string, GroupResult> }).groups
  return { code, out, groups }
}

for (const [target, args] of [['the unreplicated mount', []], ['a replicated primary (sync mode, secondary on loopback)', ['--replicated']]] as const) {
  t.test(`pjdfstest ${GROUPS.join(', ')} on ${target}: every test passes`, async t => {
    const r = await runPjdfstest(t, [...args])
    for (const g of GROUPS) {
      const res = r.groups[g]
      t.equal(res.tests, TESTS_PER_GROUP[g], `${g}: all ${TESTS_PER_GROUP[g]} tests ran`)
      const failing = Object.entries(res.failures).flatMap(([file, f]) => f.details.length > 0 ? f.details.map(d => `${file}: ${d}`) : [`${file}: ${f.failedTests}`])
      t.same(failing, [], `${g}: 0 failed (${res.seconds}s)`)
      t.equal(res.proveExit, 0, `${g}: prove passed every file (plans complete)`)
    }
    t.equal(r.code, 0, 'scripts/pjdfstest.sh exits 0')
  })
}
