import { ReplfsError } from '../errors.js'

/** Parses sizes like 512M, 10G, 1.5T or plain bytes. */
export function parseSize (s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?$/i.exec(s.trim())
  if (m === null) throw new ReplfsError('BAD_ARGUMENT', `not a size: '${s}'`, { hint: 'Use bytes or a suffix: 512M, 10G, 1T' })
  const mult = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 }[m[2].toLowerCase() as '' | 'k']
  return Math.floor(parseFloat(m[1]) * mult)
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
