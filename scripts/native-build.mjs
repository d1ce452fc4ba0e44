// Shared by the scripts that rebuild a patched native dependency from its sources with node-gyp
// (build-fuse-native.mjs, build-classic-level.mjs): locate the package, node-gyp and local Node
// headers (never downloaded), rebuild, and check in a fresh process that the rebuilt binary is
// the one node-gyp-build loads.
import { createRequire } from 'node:module'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const rootRequire = createRequire(path.join(root, 'package.json'))

export function rel (p) {
  return path.relative(root, p) || '.'
}

export function failer (tag) {
  return (msg, output) => {
    if (output) {
      const lines = output.trimEnd().split('\n')
      console.error(lines.slice(-40).join('\n'))
    }
    console.error(`${tag} FAILED: ${msg}`)
    process.exit(1)
  }
}

/**
 * What a build script starts from: the installed package `name`, its binding `build/Release/<file>`,
 * a `fail` that prints under `tag` and exits, and whether --force or `<forceEnv>=1` asked for a rebuild.
 */
export function target (name, file, tag, forceEnv) {
  const fail = failer(tag)
  let pkgDir
  try {
    pkgDir = path.dirname(rootRequire.resolve(`${name}/package.json`))
  } catch {
    fail(`${name} is not installed (run npm install first)`)
  }
  const force = process.argv.includes('--force') || process.env[forceEnv] === '1'
  return { pkgDir, binary: path.join(pkgDir, 'build', 'Release', file), fail, force }
}

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

/** Whether `binary` exists and is newer than each of `sources` (paths relative to pkgDir). */
export function upToDate (pkgDir, binary, sources) {
  if (!fs.existsSync(binary)) return false
  const built = fs.statSync(binary).mtimeMs
  return sources.every(src => fs.statSync(path.join(pkgDir, src)).mtimeMs <= built)
}

/**
 * Runs `code` (CommonJS, printing one JSON line last) in a fresh Node process from the project
 * root, with prebuilds allowed to lose to build/Release as at run time. Returns the parsed line
 * or { error }.
 */
export function probe (code) {
  const env = { ...process.env }
  delete env.PREBUILDS_ONLY
  const r = spawnSync(process.execPath, ['-e', code], { cwd: root, env, encoding: 'utf8' })
  if (r.status !== 0) return { error: (r.stderr || r.stdout).trim().split('\n').slice(0, 8).join('\n') }
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop())
  } catch {
    return { error: 'unexpected output: ' + r.stdout }
  }
}

/** Where node-gyp-build resolves the binding of the package in pkgDir (from a fresh process). */
export function resolvedBinding (pkgDir) {
  return probe(`
    const dir = ${JSON.stringify(pkgDir)}
    const ngb = require(require.resolve('node-gyp-build', { paths: [dir] }))
    console.log(JSON.stringify({ resolved: ngb.resolve(dir) }))`)
}

export function sameFile (a, b) {
  return fs.realpathSync(a) === fs.realpathSync(b)
}

/** `node-gyp rebuild` in pkgDir against local headers; exits the process on failure. Returns a description of the headers used. */
export function rebuild (pkgDir, binary, fail, extraArgs = []) {
  const nodeGyp = findNodeGyp()
  if (!nodeGyp) fail('node-gyp not found: add it to devDependencies or run this from an npm script')
  const headers = findNodeDir()
  if (!headers) {
    fail(`no local Node.js ${process.versions.node} headers (looked for include/node/{node_api.h,common.gypi} under ` +
      `${nodeDirCandidates.join(', ')} and the node-gyp cache); ` +
      'refusing to let node-gyp download them. Install them (e.g. the nodejs package that ships /usr/include/node) or point npm_config_nodedir at a Node.js source/headers dir.')
  }
  const args = [nodeGyp, 'rebuild', ...extraArgs]
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
  return headers.nodedir || headers.devdir
}
