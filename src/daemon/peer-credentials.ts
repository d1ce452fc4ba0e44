import { type PeerCredentials, loadProcessAddon } from '../util/process-addon.js'

/**
 * Who is at the other end of a unix socket, as the kernel recorded it when the peer connected,
 * and group ids by name (native/process, loaded by src/util/process-addon.ts). Node has neither.
 */

export type { PeerCredentials }

/** The pid, uid and gid of the process that connected a unix socket, from SO_PEERCRED. */
export function peerCredentials (fd: number): PeerCredentials {
  return loadProcessAddon().peerCredentials(fd)
}

/** The supplementary groups of the process that connected a unix socket, from SO_PEERGROUPS. */
export function peerGroups (fd: number): number[] {
  return loadProcessAddon().peerGroups(fd)
}

/** A group's id from the system's group database; null when there is no such group. */
export function groupId (name: string): number | null {
  return loadProcessAddon().groupId(name)
}

/** The file descriptor under a connected net.Socket (Node keeps it on the internal handle). */
export function socketFd (sock: object): number | null {
  const fd = (sock as { _handle?: { fd?: unknown } })._handle?.fd
  return typeof fd === 'number' && fd >= 0 ? fd : null
}
