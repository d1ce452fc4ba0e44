#!/usr/bin/env node
// Rebuild fuse-native's native binding from its (patch-package patched) C
// sources, against the libfuse headers and library shipped by
// fuse-shared-library, so that node-gyp-build loads build/Release/fuse.node
// instead of the stock prebuild (which does not match the patched index.js).
//
// Runs from "postinstall" after `patch-package`. Idempotent: skips the build
// when build/Release/fuse.node is newer than the sources and verifies; pass
// --force (or FUSE_NATIVE_FORCE_REBUILD=1) to rebuild anyway.
// Never downloads Node headers: uses a local node dir (e.g. /usr with
// /usr/include/node/node_api.h) or node-gyp's existing cache, else fails.
import { createRequire } from 'node:module'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const TAG = '[build-fuse-native]'
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const rootRequire = createRequire(path.join(root, 'package.json'))
const force = process.argv.includes('--force') || process.env.FUSE_NATIVE_FORCE_REBUILD === '1'

function fail (msg, output) {
  if (output) {
    const lines = output.trimEnd().split('\n')
    console.error(lines.slice(-40).join('\n'))
  }
  console.error(`${TAG} FAILED: ${msg}`)
  process.exit(1)
}

function rel (p) {
  return path.relative(root, p) || '.'
}

// 1. Locate fuse-native and the tools.
let pkgDir
try {
  pkgDir = path.dirname(rootRequire.resolve('fuse-native/package.json'))
} catch {
  fail('fuse-native is not installed under ' + root + ' (run npm install first)')
}
const binary = path.join(pkgDir, 'build', 'Release', 'fuse.node')

function findNodeGyp () {
  try {
    return rootRequire.resolve('node-gyp/bin/node-gyp.js')
  } catch {}
  // npm exports the node-gyp it bundles to lifecycle scripts.
  const fromNpm = process.env.npm_config_node_gyp
  if (fromNpm && fs.existsSync(fromNpm)) return fromNpm
  return null
}

function hasHeaders (dir) {
  return !!dir &&
    fs.existsSync(path.join(dir, 'include', 'node', 'node_api.h')) &&
    fs.existsSync(path.join(dir, 'include', 'node', 'common.gypi'))
}

const nodeDirCandidates = [...new Set([
  process.env.npm_config_nodedir,
  path.resolve(path.dirname(process.execPath), '..'), // e.g. /usr for /usr/bin/node
  '/usr'
].filter(Boolean).map(d => path.resolve(d)))]

function findNodeDir () {
  for (const dir of nodeDirCandidates) {
    if (hasHeaders(dir)) return { nodedir: dir }
  }
  // node-gyp's own header cache, if it was populated earlier.
  const cacheRoot = process.env.npm_config_devdir ||
    path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'node-gyp')
  if (hasHeaders(path.join(cacheRoot, process.versions.node))) return { devdir: cacheRoot }
  return null
}

// 2. Verify in a fresh process: the patched index.js loads (it throws itself
// if the binary's FUSE_NATIVE_ABI does not match), it is our build/Release
// binary and not a prebuild, and the patch's API is there.
function verify () {
  const code = `
    const path = require('path')
    const dir = path.dirname(require.resolve('fuse-native/package.json'))
    const Fuse = require('fuse-native')
    const ngb = require(require.resolve('node-gyp-build', { paths: [dir] }))
    console.log(JSON.stringify({
      resolved: ngb.resolve(dir),
      UTIME_NOW: Fuse.UTIME_NOW,
      UTIME_OMIT: Fuse.UTIME_OMIT
    }))`
  const env = { ...process.env }
  delete env.PREBUILDS_ONLY
  const r = spawnSync(process.execPath, ['-e', code], { cwd: root, env, encoding: 'utf8' })
  if (r.status !== 0) {
    return { ok: false, why: 'requiring fuse-native failed:\n' + (r.stderr || r.stdout).trim().split('\n').slice(0, 8).join('\n') }
  }
  let info
  try {
    info = JSON.parse(r.stdout.trim().split('\n').pop())
  } catch {
    return { ok: false, why: 'unexpected verification output: ' + r.stdout }
  }
  if (info.UTIME_NOW !== -1 || info.UTIME_OMIT !== -2) {
    return { ok: false, why: 'fuse-native is not patched (Fuse.UTIME_NOW/UTIME_OMIT missing): is patches/fuse-native+2.2.6.patch applied?' }
  }
  if (fs.realpathSync(info.resolved) !== fs.realpathSync(binary)) {
    return { ok: false, why: `node-gyp-build resolved ${info.resolved}, expected ${binary}` }
  }
  return { ok: true }
}

function upToDate () {
  if (!fs.existsSync(binary)) return false
  const built = fs.statSync(binary).mtimeMs
  for (const src of ['fuse-native.c', 'binding.gyp', 'index.js']) {
    if (fs.statSync(path.join(pkgDir, src)).mtimeMs > built) return false
  }
  return true
}

if (!force && upToDate() && verify().ok) {
  console.log(`${TAG} OK: ${rel(binary)} is up to date and verified (use --force to rebuild)`)
  process.exit(0)
}

// 3. Build.
const nodeGyp = findNodeGyp()
if (!nodeGyp) fail('node-gyp not found: add it to devDependencies or run this from an npm script')

const headers = findNodeDir()
if (!headers) {
  fail(`no local Node.js ${process.versions.node} headers (looked for include/node/{node_api.h,common.gypi} under ` +
    `${nodeDirCandidates.join(', ')} and the node-gyp cache); ` +
    'refusing to let node-gyp download them. Install them (e.g. the nodejs package that ships /usr/include/node) or point npm_config_nodedir at a Node.js source/headers dir.')
}

let fuseInclude
try {
  const pkgRequire = createRequire(path.join(pkgDir, 'package.json'))
  fuseInclude = pkgRequire('fuse-shared-library').include
} catch (err) {
  fail('fuse-shared-library (libfuse headers/library for fuse-native) is not usable: ' + err.message)
}

const args = [nodeGyp, 'rebuild']
if (headers.nodedir) args.push('--nodedir=' + headers.nodedir)
else args.push('--devdir=' + headers.devdir)

const env = { ...process.env }
// Make sure nothing makes node-gyp fetch headers.
delete env.npm_config_disturl
delete env.npm_config_tarball

const r = spawnSync(process.execPath, args, { cwd: pkgDir, env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
if (r.error) fail('could not run node-gyp: ' + r.error.message)
if (r.status !== 0) fail(`node-gyp rebuild exited with ${r.status} in ${rel(pkgDir)}`, (r.stdout || '') + (r.stderr || ''))
if (!fs.existsSync(binary)) fail(`node-gyp succeeded but ${rel(binary)} is missing`, (r.stdout || '') + (r.stderr || ''))

const v = verify()
if (!v.ok) fail(v.why)

console.log(`${TAG} OK: built ${rel(binary)} against ${rel(fuseInclude)} ` +
  `(node headers: ${headers.nodedir || headers.devdir}); loads, patched API present`)
