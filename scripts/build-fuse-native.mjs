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
import path from 'node:path'
import { probe, rebuild, rel, sameFile, target, upToDate } from './native-build.mjs'

const TAG = '[build-fuse-native]'
const { pkgDir, binary, fail, force } = target('fuse-native', 'fuse.node', TAG, 'FUSE_NATIVE_FORCE_REBUILD')

// Verify in a fresh process: the patched index.js loads (it throws itself
// if the binary's FUSE_NATIVE_ABI does not match), it is our build/Release
// binary and not a prebuild, and the patch's API is there.
function verify () {
  const info = probe(`
    const path = require('path')
    const dir = path.dirname(require.resolve('fuse-native/package.json'))
    const Fuse = require('fuse-native')
    const ngb = require(require.resolve('node-gyp-build', { paths: [dir] }))
    console.log(JSON.stringify({
      resolved: ngb.resolve(dir),
      UTIME_NOW: Fuse.UTIME_NOW,
      UTIME_OMIT: Fuse.UTIME_OMIT,
      releasePages: typeof Fuse.releasePages,
      prefaultHeap: typeof Fuse.prefaultHeap
    }))`)
  if (info.error !== undefined) return { ok: false, why: 'requiring fuse-native failed:\n' + info.error }
  if (info.UTIME_NOW !== -1 || info.UTIME_OMIT !== -2) {
    return { ok: false, why: 'fuse-native is not patched (Fuse.UTIME_NOW/UTIME_OMIT missing): is patches/fuse-native+2.2.6.patch applied?' }
  }
  if (info.releasePages !== 'function' || info.prefaultHeap !== 'function') return { ok: false, why: 'fuse-native lacks Fuse.releasePages or Fuse.prefaultHeap: the patch is older than this tree' }
  if (!sameFile(info.resolved, binary)) {
    return { ok: false, why: `node-gyp-build resolved ${info.resolved}, expected ${binary}` }
  }
  return { ok: true }
}

if (!force && upToDate(pkgDir, binary, ['fuse-native.c', 'binding.gyp', 'index.js']) && verify().ok) {
  console.log(`${TAG} OK: ${rel(binary)} is up to date and verified (use --force to rebuild)`)
  process.exit(0)
}

let fuseInclude
try {
  const pkgRequire = createRequire(path.join(pkgDir, 'package.json'))
  fuseInclude = pkgRequire('fuse-shared-library').include
} catch (err) {
  fail('fuse-shared-library (libfuse headers/library for fuse-native) is not usable: ' + err.message)
}

const headers = rebuild(pkgDir, binary, fail)
const v = verify()
if (!v.ok) fail(v.why)

console.log(`${TAG} OK: built ${rel(binary)} against ${rel(fuseInclude)} ` +
  `(node headers: ${headers}); loads, patched API present`)
