#!/usr/bin/env node
// Runs every compiled test file (dist/test/**/*.test.js) as its own process, one after another,
// streams its TAP output, counts its top-level tests, and cleans up any FUSE mount a test left
// behind (counting that as a failure). Ends with "tests: N passed, N failed".
// Usage: node scripts/run-tests.mjs [substring-filter ...]
import { spawn, execFileSync } from 'node:child_process'
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'

const root = new URL('..', import.meta.url).pathname
const filters = process.argv.slice(2)
const FILE_TIMEOUT_MS = Number(process.env.REPLFS_TEST_FILE_TIMEOUT_MS ?? 15 * 60 * 1000)

function find (dir) {
  let out = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out = out.concat(find(p))
    else if (name.endsWith('.test.js')) out.push(p)
  }
  return out
}

// Each run gets its own temp dir (TMPDIR for the test processes), so the leftover-mount cleanup
// below only ever touches this run's mounts, never those of another run on the same machine.
const runTmp = mkdtempSync(join(tmpdir(), 'replfs-run-'))
// Like /tmp itself: tests run commands as other users (permission tests) under it.
chmodSync(runTmp, 0o1777)

function fuseMounts () {
  return readFileSync('/proc/mounts', 'utf8').split('\n')
    .map(l => l.split(' ')).filter(f => f[2]?.startsWith('fuse') && f[1].startsWith(runTmp + '/'))
    .map(f => f[1].replace(/\\040/g, ' '))
}

const files = find(join(root, 'dist/test')).sort().filter(f => filters.length === 0 || filters.some(s => f.includes(s)))
let passed = 0; let failed = 0; let skipped = 0
const failures = []
const before = new Set(fuseMounts())

for (const file of files) {
  const rel = relative(root, file)
  process.stdout.write(`\n# ---- ${rel}\n`)
  const started = Date.now()
  const counts = await new Promise(resolve => {
    const c = { pass: 0, fail: 0, skip: 0, names: [] }
    const child = spawn(process.execPath, [file], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TAP_COLORS: '0', TMPDIR: runTmp } })
    const timer = setTimeout(() => { c.timedOut = true; child.kill('SIGKILL') }, FILE_TIMEOUT_MS)
    let buf = ''
    child.stdout.on('data', d => {
      process.stdout.write(d)
      buf += d
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 1)
        const m = /^(not )?ok \d+ - (.*?)(?: # (SKIP|TODO)\b.*)?(?: # time=.*)?$/.exec(line)
        if (m === null) continue
        if (m[3] !== undefined) c.skip++
        else if (m[1] !== undefined) { c.fail++; c.names.push(m[2]) } else c.pass++
      }
    })
    child.stderr.on('data', d => process.stderr.write(d))
    child.on('exit', code => { clearTimeout(timer); c.code = code; resolve(c) })
  })
  if (counts.timedOut) { counts.fail++; counts.names.push(`timed out after ${FILE_TIMEOUT_MS / 1000}s`) }
  if (counts.code !== 0 && counts.fail === 0) { counts.fail++; counts.names.push(`exited with code ${counts.code}`) }
  if (counts.pass + counts.fail + counts.skip === 0) { counts.fail++; counts.names.push('ran no test') }
  const stale = fuseMounts().filter(m => !before.has(m))
  for (const m of stale) {
    try { execFileSync('fusermount', ['-uz', m]) } catch { /* reported below either way */ }
    counts.fail++; counts.names.push(`left a FUSE mount behind at ${m}`)
  }
  passed += counts.pass; failed += counts.fail; skipped += counts.skip
  for (const n of counts.names) failures.push(`${rel}: ${n}`)
  process.stdout.write(`# ${rel}: ${counts.pass} passed, ${counts.fail} failed (${((Date.now() - started) / 1000).toFixed(1)}s)\n`)
}

try { rmSync(runTmp, { recursive: true, force: true }) } catch { /* a mount that would not go; reported above */ }

if (failures.length > 0) {
  process.stdout.write('\n# failures:\n')
  for (const f of failures) process.stdout.write(`#   ${f}\n`)
}
process.stdout.write(`\ntests: ${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}\n`)
process.exit(failed > 0 ? 1 : 0)
