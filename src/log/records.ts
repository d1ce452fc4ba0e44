/**
 * Every change to a volume is a Record: a plain value, with inode numbers and times decided when
 * it is made, so applying it is deterministic (see apply.ts). The same records, in the same order,
 * give the same store on any host.
 */

export const RECORD_VERSION = 1

export interface InitRecord {
  type: 'init'
  volumeId: string
  blockSize: number
  uid: number
  gid: number
  mode: number
  time: bigint
}

/** Creates a file, directory, symlink or special file and links it at parent/name. */
export interface MknodRecord {
  type: 'mknod'
  parent: number
  name: string
  ino: number
  mode: number
  uid: number
  gid: number
  rdev: number
  /** Symlink target (symlinks only). */
  target?: string
  time: bigint
}

export interface LinkRecord { type: 'link', ino: number, parent: number, name: string, time: bigint }

/**
 * Removes parent/name. When that drops the inode's last link, `keep` says whether the inode
 * survives as an orphan (still open somewhere; a later purge frees it) or is freed now.
 */
export interface UnlinkRecord { type: 'unlink', parent: number, name: string, time: bigint, keep: boolean }

export interface RmdirRecord { type: 'rmdir', parent: number, name: string, time: bigint }

/** Moves srcParent/srcName to dstParent/dstName, replacing what was there (`keep` as for unlink). */
export interface RenameRecord {
  type: 'rename'
  srcParent: number
  srcName: string
  dstParent: number
  dstName: string
  time: bigint
  keep: boolean
}

/** chmod, chown, truncate and utimens; absent fields are left alone; ctime becomes `time`. */
export interface SetattrRecord {
  type: 'setattr'
  ino: number
  mode?: number
  uid?: number
  gid?: number
  size?: number
  atime?: bigint
  mtime?: bigint
  time: bigint
}

export interface WriteRecord { type: 'write', ino: number, offset: number, data: Buffer, time: bigint }

export interface SetxattrRecord { type: 'setxattr', ino: number, name: string, value: Buffer, time: bigint }

export interface RemovexattrRecord { type: 'removexattr', ino: number, name: string, time: bigint }

/** Frees an orphan: an inode with no links whose last open handle has closed. */
export interface PurgeRecord { type: 'purge', ino: number }

/**
 * Snapshot commands. Each is applied at its exact place in the stream on every host, so every
 * host's snapshots hold the same writes. They change only the layer table (and drop what no view
 * can see any more): a restore of any size is a record of a few dozen bytes.
 */
export interface SnapshotCreateRecord { type: 'snapshot-create', name: string, time: bigint, writable?: boolean }
export interface SnapshotDeleteRecord { type: 'snapshot-delete', name: string }
/**
 * The live volume becomes what the snapshot holds; with `path` (components from the root), only
 * that file or tree does, including the removal of what was not there in the snapshot.
 */
export interface SnapshotRestoreRecord { type: 'snapshot-restore', name: string, time: bigint, path?: string[] }
/** The snapshot becomes what the live volume holds now. */
export interface SnapshotRefreshRecord { type: 'snapshot-refresh', name: string, time: bigint }

/**
 * After a split brain, on the host that survives: a read-only snapshot made to hold the yielding
 * host's live view (whose `inodes` it counts). Like a writable snapshot, it gets a top layer of
 * its own (the live view gets a new top too), empty until the snapshot-fill records that follow.
 * A name that exists is refused with SNAPSHOT_EXISTS.
 */
export interface SnapshotDivergedRecord { type: 'snapshot-diverged', name: string, time: bigint, inodes: number }

/**
 * Puts `entries` into a diverged snapshot's own top layer: each a layered state base (inode,
 * dirent, block or xattr, without a layer suffix) and its value there (empty: a tombstone),
 * strictly ascending by base, FILL_MAX_BYTES in all at most (src/store/diverged.ts). Together
 * the fills make the snapshot show the yielding host's view.
 */
export interface SnapshotFillRecord { type: 'snapshot-fill', name: string, entries: Array<[base: Buffer, value: Buffer]> }

/**
 * One bounded step of the garbage collection a delete, restore or refresh leaves pending (from
 * the cursor in the counters): a long collection is many small records with writes between
 * them, instead of one that stalls every writer. Without limits it takes the format's standard
 * step (GARBAGE_STEP), so both hosts take the same step and the record stays a few bytes.
 */
export interface CollectGarbageRecord { type: 'collect-garbage', maxKeys?: number, maxBlocks?: number }

export type LogRecord =
  | InitRecord | MknodRecord | LinkRecord | UnlinkRecord | RmdirRecord | RenameRecord
  | SetattrRecord | WriteRecord | SetxattrRecord | RemovexattrRecord | PurgeRecord
  | SnapshotCreateRecord | SnapshotDeleteRecord | SnapshotRestoreRecord | SnapshotRefreshRecord
  | SnapshotDivergedRecord | SnapshotFillRecord | CollectGarbageRecord

export type RecordType = LogRecord["type"]

/** Data records may be group-applied; commands (snapshot-diverged and snapshot-fill among them) are never batched across. */
export function isCommand (r: LogRecord): boolean {
  return r.type === 'init' || r.type.startsWith('snapshot-') || r.type === 'collect-garbage'
}
