import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { ReplfsError } from '../errors.js'

/**
 * Typed access to native/process (built at install by scripts/build-addons.mjs): who is at the
 * other end of a unix socket, as the kernel recorded it when the peer connected, and group ids
 * by name. Node has neither.
 */

export interface PeerCredentials { pid: number, uid: number, gid: number }

interface ProcessAddon {
  peerCredentials: (fd: number) => PeerCredentials
  peerGroups: (fd: number) => number[]
  groupId: (name: string) => number | null
}

const require = createRequire(import.meta.url)
// From src/daemon (ts-node) or dist/src/daemon alike, the repository root holds native/.
const CANDIDATES = ['../../native/process/build/Release/replfs_process.node', '../../../native/process/build/Release/replfs_process.node']
  .map(p => new URL(p, import.meta.url).pathname)

let addon: ProcessAddon | null = null

function load (): ProcessAddon {
  if (addon !== null) return addon
  const path = CANDIDATES.find(p => existsSync(p))
  if (path === undefined) {
    throw new ReplfsError('MOUNT_FAILED', 'the native/process addon is not built', { hint: 'Run: npm install (or node scripts/build-addons.mjs)' })
  }
  addon = require(path) as ProcessAddon
  return addon
}

/** The pid, uid and gid of the process that connected a unix socket, from SO_PEERCRED. */
export function peerCredentials (fd: number): PeerCredentials {
  return load().peerCredentials(fd)
}

/** The supplementary groups of the process that connected a unix socket, from SO_PEERGROUPS. */
export function peerGroups (fd: number): number[] {
  return load().peerGroups(fd)
}

/** A group's id from the system's group database; null when there is no such group. */
export function groupId (name: string): number | null {
  return load().groupId(name)
}

/** The file descriptor under a connected net.Socket (Node keeps it on the internal handle). */
export function socketFd (sock: object): number | null {
  const fd = (sock as { _handle?: { fd?: unknown } })._handle?.fd
  return typeof fd === 'number' && fd >= 0 ? fd : null
}
