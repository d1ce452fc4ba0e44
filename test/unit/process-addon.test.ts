import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { constants, tmpdir } from 'node:os'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { ReplfsError } from '../../src/errors.js'
import { PROCESS_ADDON_PATHS, loadProcessAddon, releasePages } from '../../src/util/process-addon.js'

const MiB = 1024 * 1024

function tempDir (t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'replfs-test-addon-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Bytes of `path` in the page cache (util-linux fincore). */
function cachedBytes (path: string): number {
  return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path], { encoding: 'utf8' }).trim())
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** The error `fn` throws (failing the test when it returns). */
function thrown (t: Test, fn: () => unknown): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  t.fail('expected a throw')
  return undefined
}

t.test('releasePages starts writeback (wait=false) and then drops the written range from the page cache (wait=true); the file reads back unchanged', async t => {
  const path = join(tempDir(t), 'written')
  const data = Buffer.alloc(8 * MiB)
  for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i, i)
  const fd = openSync(path, 'w')
  t.teardown(() => { try { closeSync(fd) } catch {} })
  writeSync(fd, data)
  const before = cachedBytes(path)
  t.equal(releasePages(fd, 0, data.length, false), 0, 'wait=false: writeback started')
  t.equal(releasePages(fd, 0, data.length, true), 0, 'wait=true: written back and dropped')
  const after = cachedBytes(path)
  t.ok(before >= 7 * MiB, `written: ${(before / MiB).toFixed(1)} MiB of 8 cached`)
  t.ok(after <= 1 * MiB, `released: ${(after / MiB).toFixed(1)} MiB of 8 cached`)
  closeSync(fd)
  t.equal(sha(readFileSync(path)), sha(data), 'the file reads back byte-exact')
})

t.test('releasePages on a descriptor that is not open returns -EBADF instead of throwing', async t => {
  const path = join(tempDir(t), 'closed')
  writeFileSync(path, 'x')
  const fd = openSync(path, 'r')
  closeSync(fd)
  t.equal(releasePages(fd, 0, 0, false), -constants.errno.EBADF, 'closed fd, wait=false')
  t.equal(releasePages(fd, 0, 0, true), -constants.errno.EBADF, 'closed fd, wait=true')
  t.equal(releasePages(-1, 0, 4096, true), -constants.errno.EBADF, 'fd -1')
})

t.test('releasePages, tuneMalloc and prefaultHeap refuse arguments of the wrong type with a TypeError', async t => {
  const addon = loadProcessAddon()
  t.throws(() => addon.releasePages(0, -1, 0, true), TypeError, 'negative offset')
  t.throws(() => addon.releasePages(0, 0, 1.5, true), TypeError, 'fractional length')
  t.throws(() => (addon.releasePages as (...a: unknown[]) => number)(0, 0, 0, 1), TypeError, 'wait that is not a boolean')
  t.throws(() => (addon.releasePages as (...a: unknown[]) => number)('3', 0, 0, true), TypeError, 'fd that is not a number')
  t.throws(() => addon.tuneMalloc(2 ** 31, 128 * MiB), TypeError, 'mmap threshold past what mallopt takes')
  t.throws(() => (addon.tuneMalloc as (...a: unknown[]) => boolean)(32 * MiB), TypeError, 'missing trim threshold')
  t.throws(() => addon.prefaultHeap(Number.NaN), TypeError, 'NaN bytes')
  t.throws(() => addon.prefaultHeap(2 ** 32), TypeError, 'bytes past 2^32-1')
})

t.test('the loader names the missing native/process addon and how to build it', async t => {
  const missing = join(tempDir(t), 'build/Release/replfs_process.node')
  const err = thrown(t, () => loadProcessAddon([missing]))
  t.ok(err instanceof ReplfsError, 'a ReplfsError')
  const e = err as ReplfsError
  t.equal(e.code, 'MOUNT_FAILED')
  t.match(e.message, /native\/process addon is not built/)
  t.ok(e.message.includes(missing), 'the message names the path it looked for')
  t.match(e.hint ?? '', /npm install.*scripts\/build-addons\.mjs/, 'the hint names the install step')
})

t.test('the loader turns an addon file that does not load into a ReplfsError with the install hint and the cause', async t => {
  const broken = join(tempDir(t), 'replfs_process.node')
  writeFileSync(broken, 'not an ELF object')
  const err = thrown(t, () => loadProcessAddon([broken]))
  t.ok(err instanceof ReplfsError, 'a ReplfsError')
  const e = err as ReplfsError
  t.equal(e.code, 'MOUNT_FAILED')
  t.ok(e.message.includes(broken), 'the message names the file')
  t.match(e.hint ?? '', /build-addons\.mjs/)
  t.ok(e.cause instanceof Error, 'the loading error is kept as the cause')
})

t.test('the built addon loads from the default paths and has all six functions', async t => {
  const addon = loadProcessAddon()
  t.equal(loadProcessAddon(), addon, 'loaded once per process')
  t.ok(PROCESS_ADDON_PATHS.some(p => existsSync(p)), 'one of the default paths holds the built addon')
  t.same(Object.keys(addon).sort(), ['groupId', 'peerCredentials', 'peerGroups', 'prefaultHeap', 'releasePages', 'tuneMalloc'])
})
