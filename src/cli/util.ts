import { ReplfsError } from '../errors.js'

/** Parses sizes like 512M, 10G, 1.5T or plain bytes. */
export function parseSize (s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?$/i.exec(s.trim())
  if (m === null) throw new ReplfsError('BAD_ARGUMENT', `not a size: '${s}'`, { hint: 'Use bytes or a suffix: 512M, 10G, 1T' })
  const mult = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 }[m[2].toLowerCase() as '' | 'k']
  return Math.floor(parseFloat(m[1]) * mult)
}

/**
 * A size option's value in bytes (any form parseSize reads): a whole number of bytes, at least
 * `min`. Anything else is refused with a message that names the option and what it takes.
 */
export function sizeOption (option: string, value: string, min: number, hint: string): number {
  let bytes: number | null = null
  try { bytes = parseSize(value) } catch { /* refused below */ }
  if (bytes === null || !Number.isSafeInteger(bytes) || bytes < min) {
    throw new ReplfsError('BAD_ARGUMENT', `${option} must be a size of at least ${formatSize(min)} (bytes, or with a suffix: 512M, 10G, 1T), not '${value}'`, { hint })
  }
  return bytes
}

/**
 * A number of seconds from `min` to `max` (plain decimal: no sign, exponent, Infinity or NaN);
 * anything else is refused with a message that names the option and the range.
 */
export function secondsOption (option: string, value: string, range: { min: number, max: number }, hint: string): number {
  const seconds = /^(?:\d+(?:\.\d*)?|\.\d+)$/.test(value) ? Number(value) : NaN
  if (!(seconds >= range.min && seconds <= range.max)) {
    throw new ReplfsError('BAD_ARGUMENT', `${option} must be a number of seconds from ${range.min} to ${range.max}, not '${value}'`, { hint })
  }
  return seconds
}

/** 67108864 -> '64M', 4096 -> '4K', 1000 -> '1000' (the form parseSize reads back). */
export function formatSize (bytes: number): string {
  for (const [suffix, mult] of [['P', 2 ** 50], ['T', 2 ** 40], ['G', 2 ** 30], ['M', 2 ** 20], ['K', 2 ** 10]] as const) {
    if (bytes >= mult && bytes % mult === 0) return `${bytes / mult}${suffix}`
  }
  return String(bytes)
}

/** Prints an error for people (message, then the hint that names the fix) and sets the exit code. */
export function reportError (err: unknown): void {
  if (err instanceof ReplfsError) {
    process.stderr.write(`replfs: ${err.message}\n`)
    if (err.hint !== undefined) process.stderr.write(`  ${err.hint}\n`)
  } else {
    process.stderr.write(`replfs: ${(err as Error)?.stack ?? String(err)}\n`)
  }
  process.exitCode = 1
}
