import { fork } from 'node:child_process'
import { mkdirSync, openSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import type { Command } from 'commander'
import type { ControlGroup } from '../daemon/control.js'
import { FUSE_BINDINGS, type FuseBinding, MountDaemon, type MountDaemonOptions } from '../daemon/mount-daemon.js'
import { sdNotify, statusLine } from '../daemon/sd-notify.js'
import { groupId } from '../daemon/peer-credentials.js'
import { ReplfsError } from '../errors.js'
import { createLogger } from '../util/logger.js'
import { formatSize, secondsOption, sizeOption } from './util.js'
import { MAX_TIMEOUT_S, loadMountConfig } from './config.js'
import type { ReplicationConfig } from '../daemon/replication.js'
import { FRSIZE } from '../fs/volume.js'
import { JOURNAL_SEGMENT_BYTES } from '../log/journal-file.js'
import { parseEndpoint, parseFingerprint } from '../net/transport.js'
import { readSecretFile } from '../repl/auth.js'
import { SPLIT_BRAIN_POLICIES, type SplitBrainPolicy } from '../repl/generations.js'

interface MountFlags {
  /** Set once the config file is read (loadMountConfig refuses a mount without one). */
  store: string
  config?: string
  name?: string
  metrics?: string
  size?: string
  foreground?: boolean
  create: boolean
  allowOther?: boolean
  attrTimeout: string
  fuseBinding: string
  logFile?: string
  role?: string
  listen?: string
  peer?: string
  secretFile?: string
  insecure?: boolean
  mode: string
  tlsCert?: string
  tlsKey?: string
  tlsCa?: string
  journalSize: string
  peerTimeout: string
  afterSplitBrain: string
  force?: boolean
  controlGroup?: string
  peerFingerprint?: string
}

export function registerMount (program: Command): void {
  program.command('mount')
    .description('mount a volume; returns once it is mounted (the volume process stays in the background)')
    .argument('[mountpoint]', 'an empty directory (or mountpoint = in the config file)')
    .option('--config <file>', 'read options from this file (key = value lines named like the options, e.g. store = /var/lib/replfs/data); options given here override it')
    .option('--name <volume>', 'the volume\'s name: its options come from /etc/replfs/<volume>.conf (as --config), and metrics carry it')
    .option('--store <dir>', 'the volume\'s LevelDB store (created if missing, unless --no-create)')
    .option('--size <bytes>', 'how much data the volume may hold, e.g. 10G (default: what the store\'s disk can take)')
    .option('--foreground', 'stay in the foreground (for systemd); logs go to stderr')
    .option('--no-create', 'fail if the store does not exist yet')
    .option('--allow-other', 'let other users use the mount (permissions still apply, as on ext4)')
    .option('--attr-timeout <seconds>', 'how long the kernel may cache attributes and names', '1')
    .option('--fuse-binding <binding>', `which FUSE binding serves the mount: ${FUSE_BINDINGS.join(' or ')} (the old path API, kept for comparison until it leaves)`, 'libfuse3')
    .option('--log-file <file>', 'where a background volume process logs (default /var/log/replfs/<mountpoint>.log)')
    .option('--role <role>', 'replicate: primary (writable, ships every change to --peer) or secondary (read-only replica)')
    .option('--listen <host:port>', 'replication address this node listens on (both roles)')
    .option('--peer <host:port>', 'the other node\'s --listen address')
    .option('--secret-file <file>', 'shared secret both nodes prove they hold (mode 0600; make one with: head -c 32 /dev/urandom | base64)')
    .option('--insecure', 'replicate without authentication (trusted test networks only)')
    .option('--mode <mode>', 'sync: a write returns once the secondary holds it durably; async: once it is committed here', 'sync')
    .option('--tls-cert <file>', 'this node\'s TLS certificate (with --tls-key and --tls-ca: replicate over TLS)')
    .option('--tls-key <file>', 'this node\'s TLS private key')
    .option('--tls-ca <file>', 'the CA that signed both nodes\' certificates')
    .option('--peer-fingerprint <sha256:hex>', 'with TLS: accept only the peer certificate with this SHA-256 fingerprint (openssl x509 -noout -fingerprint -sha256); without it the peer\'s certificate must name the --peer host')
    .option('--journal-size <bytes>', 'journal kept for a lagging or disconnected peer; beyond it the peer gets a full copy', '1G')
    .option('--peer-timeout <seconds>', 'drop the peer connection after this long without a frame (pings flow every 2 s)', '15')
    .option('--after-split-brain <policy>', 'when both nodes wrote on their own: disconnect (wait for an operator), discard-younger or discard-least-changes (that side\'s writes become a diverged snapshot)', 'disconnect')
    .option('--force', 'a restarted primary takes writes at once, without its peer\'s word that it holds nothing newer')
    .option('--control-group <group>', 'members of this group may run replfs commands on the mount too (the control socket becomes 0660); by default only root and the user it runs as')
    .option('--metrics <host:port>', 'serve Prometheus metrics at http://host:port/metrics, e.g. 127.0.0.1:9410')
    .action(async (mntArg: string | undefined, o: MountFlags, cmd: Command) => {
      const { mountpoint: mnt, volume } = loadMountConfig(cmd, mntArg, o as unknown as Record<string, unknown>)
      const metrics = o.metrics === undefined ? undefined : { at: parseEndpoint(o.metrics, '--metrics'), volume }
      if (o.foreground === true) await runForeground(mnt, o, metrics)
      else await runBackground(mnt, o)
    })
}

/** How often `systemctl status` gets a fresh STATUS= line (sent only when it changed). */
const NOTIFY_STATUS_MS = 5000

async function runForeground (mnt: string, o: MountFlags, metrics: MountDaemonOptions['metrics']): Promise<void> {
  const checked = await checkFlags(o)
  const logger = createLogger()
  const notify = (fields: Record<string, string>): void => {
    try { sdNotify(fields) } catch (err) { logger.error({ err }, 'systemd notification failed') }
  }
  const daemon = new MountDaemon({
    store: resolve(o.store),
    mountpoint: resolve(mnt),
    create: o.create,
    sizeLimit: checked.sizeLimit,
    allowOther: o.allowOther,
    attrTimeout: checked.attrTimeout,
    fuseBinding: checked.fuseBinding,
    replication: checked.replication,
    controlGroup: checked.controlGroup,
    metrics,
    onStopping: () => notify({ STOPPING: '1', STATUS: 'unmounting' }),
    logger
  })
  try {
    await daemon.start()
  } catch (err) {
    if (process.send !== undefined) {
      process.send({ error: { message: (err as Error).message, hint: (err as ReplfsError).hint, code: (err as ReplfsError).code } })
      process.disconnect()
      process.exitCode = 1
      return
    }
    throw err
  }
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(sig, () => { logger.info({ signal: sig }, 'stopping'); void daemon.stop() })
  }
  if (process.send !== undefined) {
    process.send({ ready: true, pid: process.pid })
    process.disconnect()
  }
  // Type=notify: systemd counts the volume started once it is mounted and replication runs.
  let shown = statusLine(daemon.status())
  notify({ READY: '1', STATUS: shown })
  const statusTimer = setInterval(() => {
    const line = statusLine(daemon.status())
    if (line !== shown) notify({ STATUS: shown = line })
  }, NOTIFY_STATUS_MS)
  statusTimer.unref()
  await daemon.stopped
  clearInterval(statusTimer)
  // fuse-native keeps a libuv handle after unmount; nothing is left to do, so leave.
  process.exit(process.exitCode ?? 0)
}


/**
 * Checks every flag's value, and the replication flags as a set, before anything is mounted (both
 * paths: the background one before it forks the volume process). A value out of range is an
 * error whether or not the feature it tunes is in use.
 */
async function checkFlags (o: MountFlags): Promise<{ sizeLimit?: number, attrTimeout: number, fuseBinding: FuseBinding, replication?: ReplicationConfig, controlGroup?: ControlGroup }> {
  const sizeLimit = o.size === undefined
    ? undefined
    : sizeOption('--size', o.size, FRSIZE, 'e.g. --size 10G; leave it out to let the volume take what the store\'s disk can')
  const attrTimeout = secondsOption('--attr-timeout', o.attrTimeout, { min: 0, max: MAX_TIMEOUT_S },
    'e.g. --attr-timeout 1 (the default), or 0 to let the kernel cache nothing')
  if (!(FUSE_BINDINGS as readonly string[]).includes(o.fuseBinding)) {
    throw new ReplfsError('BAD_ARGUMENT', `--fuse-binding must be ${FUSE_BINDINGS.join(' or ')}, not ${JSON.stringify(o.fuseBinding)}`, { hint: 'Leave it out: libfuse3 is the default' })
  }
  return { sizeLimit, attrTimeout, fuseBinding: o.fuseBinding as FuseBinding, replication: await replicationConfig(o), controlGroup: controlGroupOption(o.controlGroup) }
}

function controlGroupOption (name: string | undefined): ControlGroup | undefined {
  if (name === undefined) return undefined
  const gid = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/.test(name) ? groupId(name) : null
  if (gid === null) throw new ReplfsError('BAD_ARGUMENT', `--control-group ${JSON.stringify(name)} is not a group on this host`, { hint: 'Name an existing group (getent group), e.g. --control-group replfs after: groupadd --system replfs' })
  return { name, gid }
}

/** Checks the replication flags as a set; mistakes are reported before anything is mounted. */
async function replicationConfig (o: MountFlags): Promise<ReplicationConfig | undefined> {
  // The journal is trimmed a whole segment at a time and always keeps the one being written: it
  // cannot be held below one segment.
  const journalBytes = sizeOption('--journal-size', o.journalSize, JOURNAL_SEGMENT_BYTES,
    `e.g. --journal-size 1G (the default); the journal is kept in whole ${formatSize(JOURNAL_SEGMENT_BYTES)} segments`)
  const timeout = secondsOption('--peer-timeout', o.peerTimeout, { min: 0.1, max: MAX_TIMEOUT_S },
    'e.g. --peer-timeout 15 (the default); pings flow every 2 s, so a few seconds notices a dead peer')
  const given = [o.listen, o.peer, o.secretFile, o.insecure, o.tlsCert, o.tlsKey, o.tlsCa, o.peerFingerprint].some(v => v !== undefined)
  if (o.role === undefined) {
    if (given) throw new ReplfsError('BAD_ARGUMENT', 'replication flags need --role primary or --role secondary')
    return undefined
  }
  if (o.role !== 'primary' && o.role !== 'secondary') throw new ReplfsError('BAD_ARGUMENT', `--role must be primary or secondary, not '${o.role}'`)
  if (o.listen === undefined || o.peer === undefined) {
    throw new ReplfsError('BAD_ARGUMENT', '--role needs --listen and --peer', { hint: 'e.g. --listen 0.0.0.0:7410 --peer otherhost:7410' })
  }
  if (o.mode !== 'sync' && o.mode !== 'async') throw new ReplfsError('BAD_ARGUMENT', `--mode must be sync or async, not '${o.mode}'`)
  if (o.secretFile === undefined && o.insecure !== true) {
    throw new ReplfsError('BAD_ARGUMENT', 'replication needs --secret-file (or --insecure on a trusted network)', {
      hint: 'Make one on one host and copy it to the other: head -c 32 /dev/urandom | base64 > /etc/replfs/data.secret; chmod 600 /etc/replfs/data.secret'
    })
  }
  if (o.secretFile !== undefined && o.insecure === true) throw new ReplfsError('BAD_ARGUMENT', 'give either --secret-file or --insecure, not both')
  const tlsGiven = [o.tlsCert, o.tlsKey, o.tlsCa].filter(v => v !== undefined).length
  if (tlsGiven !== 0 && tlsGiven !== 3) throw new ReplfsError('BAD_ARGUMENT', 'TLS needs all three of --tls-cert, --tls-key and --tls-ca')
  if (o.peerFingerprint !== undefined && tlsGiven !== 3) throw new ReplfsError('BAD_ARGUMENT', '--peer-fingerprint pins the peer\'s TLS certificate: it needs --tls-cert, --tls-key and --tls-ca')
  const peerFingerprint = o.peerFingerprint === undefined ? undefined : parseFingerprint(o.peerFingerprint, '--peer-fingerprint')
  if (!(SPLIT_BRAIN_POLICIES as readonly string[]).includes(o.afterSplitBrain)) {
    throw new ReplfsError('BAD_ARGUMENT', `--after-split-brain must be one of ${SPLIT_BRAIN_POLICIES.join(', ')}, not '${o.afterSplitBrain}'`)
  }
  return {
    role: o.role,
    listen: parseEndpoint(o.listen, '--listen'),
    peer: parseEndpoint(o.peer, '--peer'),
    secret: o.secretFile === undefined ? null : await readSecretFile(o.secretFile),
    mode: o.mode,
    tls: tlsGiven === 3 ? { cert: o.tlsCert!, key: o.tlsKey!, ca: o.tlsCa!, peerFingerprint } : null,
    journalBytes,
    channel: { idleTimeoutMs: timeout * 1000, pingIntervalMs: Math.min(2000, timeout * 250) },
    policy: o.afterSplitBrain as SplitBrainPolicy,
    force: o.force === true
  }
}

async function runBackground (mnt: string, o: MountFlags): Promise<void> {
  await checkFlags(o)
  const logFile = o.logFile ?? `/var/log/replfs/${resolve(mnt).replace(/^\//, '').replace(/\//g, '-') || 'root'}.log`
  mkdirSync(dirname(logFile), { recursive: true })
  const fd = openSync(logFile, 'a')
  const args = process.argv.slice(2).concat(['--foreground'])
  const child = fork(process.argv[1], args, { detached: true, stdio: ['ignore', fd, fd, 'ipc'] })
  const msg = await new Promise<{ ready?: boolean, error?: { message: string, hint?: string, code?: string } }>((resolve) => {
    child.once('message', m => resolve(m as never))
    child.once('exit', code => resolve({ error: { message: `volume process exited (code ${String(code)}) before mounting; see ${logFile}` } }))
  })
  if (msg.error !== undefined) {
    throw new ReplfsError((msg.error.code ?? 'MOUNT_FAILED') as never, msg.error.message, { hint: msg.error.hint })
  }
  child.unref()
  child.disconnect?.()
  process.stdout.write(`mounted ${resolve(mnt)} (store ${resolve(o.store)}, pid ${String(child.pid)}, log ${logFile})\n`)
}
