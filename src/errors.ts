import { constants } from 'node:os'

/** POSIX error names we raise at the filesystem boundary. */
export type ErrnoName =
  | 'EPERM' | 'ENOENT' | 'EIO' | 'EBADF' | 'EACCES' | 'EEXIST' | 'EXDEV' | 'ENOTDIR' | 'EISDIR'
  | 'EINVAL' | 'EFBIG' | 'ENOSPC' | 'EROFS' | 'EMLINK' | 'ERANGE' | 'ENAMETOOLONG' | 'ENOSYS'
  | 'ENOTEMPTY' | 'ELOOP' | 'ENODATA' | 'EOPNOTSUPP' | 'EBUSY' | 'E2BIG' | 'ESTALE'

/**
 * A filesystem error: carries the errno the FUSE adapter returns to the kernel, so the layers
 * below never need to know about FUSE.
 */
export class FsError extends Error {
  readonly code: ErrnoName
  readonly errno: number
  constructor (code: ErrnoName, message?: string) {
    super(message ?? code)
    this.name = 'FsError'
    this.code = code
    this.errno = (constants.errno as Record<string, number>)[code] ?? constants.errno.EIO
  }
}

/** Shorthand used by the fs layer: `throw fsError('ENOENT', 'no such entry: a/b')`. */
export function fsError (code: ErrnoName, message?: string): FsError {
  return new FsError(code, message)
}

/** Stable codes of operational errors (CLI, store lifecycle, replication). */
export type ReplfsErrorCode =
  | 'STORE_LOCKED' | 'STORE_MISSING' | 'STORE_EXISTS' | 'STORE_CORRUPT' | 'STORE_FORMAT'
  | 'MOUNTPOINT_INVALID' | 'MOUNTPOINT_BUSY' | 'MOUNT_FAILED' | 'NOT_MOUNTED' | 'BAD_ARGUMENT'
  | 'FSCK_FAILED' | 'RECORD_INVALID' | 'DISK_FULL' | 'FRAME_INVALID' | 'PEER_REFUSED' | 'AUTH_FAILED' | 'JOURNAL_SEQUENCE' | 'JOURNAL_TRIMMED' | 'SNAPSHOT_EXISTS' | 'SNAPSHOT_MISSING' | 'CONTROL_DENIED'

/** An operational error with a message for people and, where one exists, a hint naming the fix. */
export class ReplfsError extends Error {
  readonly code: ReplfsErrorCode
  readonly hint?: string
  constructor (code: ReplfsErrorCode, message: string, opts: { hint?: string, cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.name = 'ReplfsError'
    this.code = code
    this.hint = opts.hint
  }
}

/** Maps any error to a negative errno for the kernel. Unknown errors become EIO (and must be logged). */
export function toErrno (err: unknown): number {
  if (err instanceof FsError) return -err.errno
  if (err instanceof ReplfsError && err.code === 'DISK_FULL') return -constants.errno.ENOSPC
  return -constants.errno.EIO
}
