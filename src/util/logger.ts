import { pino, type Logger } from 'pino'

/** The process's root logger: JSON lines to stderr (or a file), level from REPLFS_LOG_LEVEL. */
export function createLogger (opts: { file?: string, level?: string } = {}): Logger {
  const level = opts.level ?? process.env.REPLFS_LOG_LEVEL ?? 'info'
  const dest = opts.file !== undefined ? pino.destination({ dest: opts.file, mkdir: true, sync: true }) : pino.destination({ fd: 2, sync: true })
  return pino({ level, base: { pid: process.pid } }, dest)
}

export type { Logger }
