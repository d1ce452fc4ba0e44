import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { ReplfsError } from '../errors.js'

/**
 * Tells systemd how a Type=notify service is doing (sd_notify(3)): READY=1 once the volume is
 * mounted and replication runs, STOPPING=1 when it begins to stop, STATUS=... for
 * `systemctl status`. Without NOTIFY_SOCKET (not run by systemd) nothing is sent.
 * The datagram goes through native/sd-notify (built at install by scripts/build-addons.mjs).
 */

interface SdNotifyAddon { notify: (socket: string, message: string) => void }

const require = createRequire(import.meta.url)
// From src/daemon (ts-node) or dist/src/daemon alike, the repository root holds native/.
const CANDIDATES = ['../../native/sd-notify/build/Release/replfs_sd_notify.node', '../../../native/sd-notify/build/Release/replfs_sd_notify.node']
  .map(p => new URL(p, import.meta.url).pathname)

let addon: SdNotifyAddon | null = null

function load (): SdNotifyAddon {
  if (addon !== null) return addon
  const path = CANDIDATES.find(p => existsSync(p))
  if (path === undefined) {
    throw new ReplfsError('MOUNT_FAILED', 'the native/sd-notify addon is not built', { hint: 'Run: npm install (or node scripts/build-addons.mjs)' })
  }
  addon = require(path) as SdNotifyAddon
  return addon
}

/** Whether systemd (or anything that set NOTIFY_SOCKET) waits for this process's notifications. */
export function notifyWanted (env: NodeJS.ProcessEnv = process.env): boolean {
  return env.NOTIFY_SOCKET !== undefined && env.NOTIFY_SOCKET !== ''
}

/**
 * Sends `fields` (e.g. { READY: '1', STATUS: 'mounted' }) as one notification, newline-separated
 * KEY=VALUE lines. A newline inside a value would start a field of its own, so it becomes a space.
 * Throws if the socket cannot be reached: a service systemd waits on must not fail silently.
 */
export function sdNotify (fields: Record<string, string>, env: NodeJS.ProcessEnv = process.env): boolean {
  if (!notifyWanted(env)) return false
  const message = Object.entries(fields).map(([k, v]) => `${k}=${v.replace(/\n/g, ' ')}`).join('\n')
  try {
    load().notify(env.NOTIFY_SOCKET!, message)
  } catch (err) {
    throw new ReplfsError('MOUNT_FAILED', `cannot notify systemd at NOTIFY_SOCKET=${env.NOTIFY_SOCKET!}: ${(err as Error).message}`, { cause: err })
  }
  return true
}

/** One line for `systemctl status`: role, link and lag, seq. */
export function statusLine (s: Record<string, unknown>): string {
  const r = s.replication as { role?: string, fenced?: boolean, splitBrain?: boolean, peer?: string | null, connected?: boolean, phase?: string, lagRecords?: number | null } | undefined
  if (r === undefined) return `standalone, seq ${String(s.seq)}${s.readOnly === true ? ', read-only' : ''}`
  const role = `${r.role ?? String(s.role)}${r.fenced === true ? ' (fenced)' : ''}${r.splitBrain === true ? ' (split brain)' : ''}`
  const link = r.connected === true ? `${r.phase ?? 'connected'} with ${r.peer ?? 'peer'}` : `peer ${r.peer ?? ''} not connected`.replace('  ', ' ')
  const lag = r.lagRecords === null || r.lagRecords === undefined ? '' : `, lag ${r.lagRecords} records`
  return `${role}, ${link}${lag}, seq ${String(s.seq)}`
}
