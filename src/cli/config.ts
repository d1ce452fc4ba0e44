import { readFileSync } from 'node:fs'
import { basename, isAbsolute, join } from 'node:path'
import type { Command, Option } from 'commander'
import { ReplfsError } from '../errors.js'
import { FRSIZE } from '../fs/volume.js'
import { JOURNAL_SEGMENT_BYTES } from '../log/journal-file.js'
import { parseEndpoint, parseFingerprint } from '../net/transport.js'
import { SPLIT_BRAIN_POLICIES } from '../repl/generations.js'
import { formatSize, secondsOption, sizeOption } from './util.js'

/**
 * Per-volume config files (`/etc/replfs/<name>.conf`): one `key = value` per line, keys named
 * like the command's long options without the dashes (`store = /var/lib/replfs/data`), boolean
 * options as `yes`/`no`, whole-line comments starting with `#` or `;`. The same shape serves both
 * hosts of a pair. Options given on the command line override the file's.
 */

export function configDir (): string {
  return process.env.REPLFS_CONFIG_DIR ?? '/etc/replfs'
}

/** `--name data` -> /etc/replfs/data.conf. A name is one path component, as systemd's %i is. */
export function configPathOf (volume: string): string {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}$/.test(volume)) {
    throw new ReplfsError('BAD_ARGUMENT', `--name ${JSON.stringify(volume)} is not a volume name`, {
      hint: 'A volume name is letters, digits, "_", "-", "." and "@" (not starting with "." or "-"), as in /etc/replfs/<name>.conf'
    })
  }
  return join(configDir(), `${volume}.conf`)
}

/** The volume a config file is for: its file name without `.conf`. */
export function volumeOfConfig (file: string): string {
  return basename(file).replace(/\.conf$/, '')
}

/** What a key takes: a value (a string option), or yes/no (a flag). */
export interface ConfigKey { attribute: string, kind: 'value' | 'flag' }

export interface ConfigEntry { key: string, value: string | boolean, line: number }

export interface VolumeConfig { file: string, entries: Map<string, ConfigEntry> }

/** Checks one value beyond its syntax (a size, a timeout, an address); throws a ReplfsError saying what is wrong. */
export type ValueCheck = (value: string, key: string) => void

const TRUE = new Set(['yes', 'true', 'on', '1'])
const FALSE = new Set(['no', 'false', 'off', '0'])

/**
 * The keys a config file may hold for `cmd`: its long options, less `excluded` (the ones that
 * say how or where to run rather than what the volume is, or that must be a decision of the moment).
 * `extra` adds keys for positional arguments (taking a value).
 */
export function configKeys (cmd: Command, excluded: string[], extra: string[] = []): Map<string, ConfigKey> {
  const keys = new Map<string, ConfigKey>()
  for (const opt of cmd.options as Option[]) {
    const key = opt.long?.replace(/^--(no-)?/, '')
    if (key === undefined || excluded.includes(key)) continue
    keys.set(key, { attribute: opt.attributeName(), kind: opt.required || opt.optional ? 'value' : 'flag' })
  }
  for (const key of extra) keys.set(key, { attribute: key, kind: 'value' })
  return keys
}

/** Parses a config file's text; every mistake names the file and the line. */
export function parseConfig (text: string, file: string, keys: Map<string, ConfigKey>, checks: Record<string, ValueCheck> = {}): VolumeConfig {
  const entries = new Map<string, ConfigEntry>()
  const bad = (line: number, message: string, hint?: string): ReplfsError =>
    new ReplfsError('BAD_ARGUMENT', `${file} line ${line}: ${message}`, { hint })
  text.split('\n').forEach((raw, i) => {
    const line = i + 1
    const s = raw.trim()
    if (s === '' || s.startsWith('#') || s.startsWith(';')) return
    const eq = s.indexOf('=')
    if (eq < 0) throw bad(line, `expected "key = value", not ${JSON.stringify(s)}`, 'Comments start with # or ; at the beginning of a line')
    const key = s.slice(0, eq).trim()
    const value = s.slice(eq + 1).trim()
    const spec = keys.get(key)
    if (spec === undefined) {
      const asOption = key.replace(/^--?/, '')
      throw bad(line, `unknown key ${JSON.stringify(key)}`, keys.has(asOption)
        ? `Keys are option names without the leading dashes: ${asOption} = ...`
        : `Known keys: ${[...keys.keys()].sort().join(', ')}`)
    }
    const earlier = entries.get(key)
    if (earlier !== undefined) throw bad(line, `${key} is given twice (first on line ${earlier.line})`, 'Keep one of them')
    if (value === '') throw bad(line, `${key} has no value`, spec.kind === 'flag' ? `e.g. ${key} = yes` : undefined)
    if (spec.kind === 'flag') {
      const v = value.toLowerCase()
      if (!TRUE.has(v) && !FALSE.has(v)) throw bad(line, `${key} must be yes or no, not ${JSON.stringify(value)}`)
      // For a --no-... option the key names the feature: `create = no` is --no-create.
      entries.set(key, { key, value: TRUE.has(v), line })
      return
    }
    try {
      checks[key]?.(value, key)
    } catch (err) {
      if (err instanceof ReplfsError) throw bad(line, err.message, err.hint)
      throw err
    }
    entries.set(key, { key, value, line })
  })
  return { file, entries }
}

export function readConfig (file: string, keys: Map<string, ConfigKey>, checks: Record<string, ValueCheck> = {}): VolumeConfig {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new ReplfsError('BAD_ARGUMENT', `cannot read the config file ${file} (${code ?? (err as Error).message})`, {
      hint: code === 'ENOENT' ? `Create it (see the README, "Config files"), or give the options on the command line` : undefined
    })
  }
  return parseConfig(text, file, keys, checks)
}

/**
 * Fills `flags` (commander's parsed options of `cmd`) from the file, for every option not given on
 * the command line: command-line values win, the file's beat the built-in defaults. A flag that is
 * `no` in the file is set false (for a --no-... option: the feature is off).
 */
export function applyConfig (cmd: Command, flags: Record<string, unknown>, config: VolumeConfig, keys: Map<string, ConfigKey>): void {
  for (const entry of config.entries.values()) {
    const spec = keys.get(entry.key)!
    if (cmd.getOptionValueSource(spec.attribute) === 'cli') continue
    flags[spec.attribute] = entry.value
  }
}

/** Throws unless `value` is an absolute path (a config file is read by a service whose working directory is /). */
export function absolutePath (value: string, key: string): void {
  if (!isAbsolute(value)) throw new ReplfsError('BAD_ARGUMENT', `${key} must be an absolute path, not ${JSON.stringify(value)}`)
}

/** The longest timeout taken: a day (Node's timers fire at once past 2^31 ms, about 24.8 days, and at Infinity). */
export const MAX_TIMEOUT_S = 86_400

/** Mount options that say how to run this once, not what the volume is: never in a file. */
const NOT_IN_FILE = ['config', 'name', 'foreground', 'force']

const oneOf = (allowed: readonly string[]): ValueCheck => (value, key) => {
  if (!allowed.includes(value)) throw new ReplfsError('BAD_ARGUMENT', `${key} must be one of ${allowed.join(', ')}, not ${JSON.stringify(value)}`)
}

/** Value checks of `replfs mount`'s keys: the same ones its options get, so a bad value is refused with its line. */
const MOUNT_CHECKS: Record<string, ValueCheck> = {
  mountpoint: absolutePath,
  store: absolutePath,
  'secret-file': absolutePath,
  'tls-cert': absolutePath,
  'tls-key': absolutePath,
  'tls-ca': absolutePath,
  'log-file': absolutePath,
  size: (v, k) => { sizeOption(k, v, FRSIZE, 'e.g. size = 10G; leave it out to let the volume take what the store\'s disk can') },
  'journal-size': (v, k) => { sizeOption(k, v, JOURNAL_SEGMENT_BYTES, `e.g. journal-size = 1G; the journal is kept in whole ${formatSize(JOURNAL_SEGMENT_BYTES)} segments`) },
  'attr-timeout': (v, k) => { secondsOption(k, v, { min: 0, max: MAX_TIMEOUT_S }, 'e.g. attr-timeout = 1') },
  'peer-timeout': (v, k) => { secondsOption(k, v, { min: 0.1, max: MAX_TIMEOUT_S }, 'e.g. peer-timeout = 15') },
  listen: (v, k) => { parseEndpoint(v, k) },
  peer: (v, k) => { parseEndpoint(v, k) },
  metrics: (v, k) => { parseEndpoint(v, k) },
  'peer-fingerprint': (v, k) => { parseFingerprint(v, k) },
  role: oneOf(['primary', 'secondary']),
  mode: oneOf(['sync', 'async']),
  'after-split-brain': oneOf(SPLIT_BRAIN_POLICIES)
}

/**
 * Reads the config file `replfs mount` was pointed at (--config FILE, or --name VOLUME for
 * /etc/replfs/VOLUME.conf) into its parsed options, under those given on the command line.
 * Returns the mount point (the argument, else the file's `mountpoint`) and the volume's name
 * (for metrics), and makes sure a store is named.
 */
export function loadMountConfig (cmd: Command, mountpoint: string | undefined, flags: Record<string, unknown>): { mountpoint: string, volume?: string } {
  const { config, name } = flags as { config?: string, name?: string }
  if (config !== undefined && name !== undefined) throw new ReplfsError('BAD_ARGUMENT', 'give either --config FILE or --name VOLUME, not both')
  const file = config ?? (name === undefined ? undefined : configPathOf(name))
  let mnt = mountpoint
  if (file !== undefined) {
    const keys = configKeys(cmd, NOT_IN_FILE, ['mountpoint'])
    const parsed = readConfig(file, keys, MOUNT_CHECKS)
    applyConfig(cmd, flags, parsed, keys)
    mnt ??= flags.mountpoint as string | undefined
    delete flags.mountpoint
  }
  const where = file === undefined ? '' : ` or mountpoint = in ${file}`
  if (mnt === undefined) throw new ReplfsError('BAD_ARGUMENT', `no mount point: give it as the argument${where}`, { hint: 'e.g. replfs mount /mnt/data --store /var/lib/replfs/data' })
  if (flags.store === undefined) {
    throw new ReplfsError('BAD_ARGUMENT', `no store: give --store DIR${file === undefined ? '' : ` or store = in ${file}`}`, { hint: 'e.g. --store /var/lib/replfs/data' })
  }
  return { mountpoint: mnt, volume: name ?? (file === undefined ? undefined : volumeOfConfig(file)) }
}
