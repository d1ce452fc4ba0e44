#!/usr/bin/env node
// Builds the project's own native addons: every folder native/<name>/ with a binding.gyp. Each is
// built with node-gyp against local Node headers (never downloaded) from system headers that apt
// installs (scripts/setup.sh), then loaded in a fresh process, which must succeed: an addon that
// builds but cannot load fails the install, not the first mount.
// Runs from "postinstall". Skips an addon whose build/Release/<target>.node is newer than all of its
// sources; --force (or REPLFS_ADDONS_FORCE_REBUILD=1) rebuilds anyway.
import fs from 'node:fs'
import path from 'node:path'
import { failer, probe, rebuild, rel, root } from './native-build.mjs'

const TAG = '[build-addons]'
const fail = failer(TAG)
const force = process.argv.includes('--force') || process.env.REPLFS_ADDONS_FORCE_REBUILD === '1'
const nativeDir = path.join(root, 'native')

function sources (dir) {
  const out = []
  for (const name of fs.readdirSync(dir)) {
    const p = path.join(dir, name)
    if (name === 'build' || name === 'node_modules') continue
    if (fs.statSync(p).isDirectory()) out.push(...sources(p))
    else if (/\.(c|cc|h|gyp)$/.test(name)) out.push(p)
  }
  return out
}

/** The .node file a binding.gyp names: its first target's target_name. */
function binaryOf (dir) {
  const gyp = fs.readFileSync(path.join(dir, 'binding.gyp'), 'utf8')
  const m = /["']target_name["']\s*:\s*["']([A-Za-z0-9_]+)["']/.exec(gyp)
  if (m === null) fail(`${rel(dir)}/binding.gyp names no target_name`)
  return path.join(dir, 'build', 'Release', `${m[1]}.node`)
}

const addons = fs.existsSync(nativeDir)
  ? fs.readdirSync(nativeDir).map(n => path.join(nativeDir, n)).filter(d => fs.existsSync(path.join(d, 'binding.gyp')))
  : []
for (const dir of addons) {
  const binary = binaryOf(dir)
  const built = fs.existsSync(binary) ? fs.statSync(binary).mtimeMs : -1
  const stale = force || sources(dir).some(s => fs.statSync(s).mtimeMs > built)
  if (stale) {
    const headers = rebuild(dir, binary, fail)
    console.log(`${TAG} built ${rel(binary)} (headers: ${headers})`)
  }
  const loaded = probe(`require(${JSON.stringify(binary)}); console.log(JSON.stringify({ ok: true }))`)
  if (loaded.error !== undefined) fail(`${rel(binary)} does not load:\n${loaded.error}`)
  if (!stale) console.log(`${TAG} ${rel(binary)} is up to date and loads`)
}
