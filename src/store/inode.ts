/** Inode attributes and their fixed binary encoding (see docs/store-layout.md). */

export const S_IFMT = 0o170000
export const S_IFREG = 0o100000
export const S_IFDIR = 0o040000
export const S_IFLNK = 0o120000
export const S_IFIFO = 0o010000
export const S_IFSOCK = 0o140000
export const S_IFCHR = 0o020000
export const S_IFBLK = 0o060000
export const S_ISUID = 0o4000
export const S_ISGID = 0o2000
export const S_ISVTX = 0o1000

export interface Inode {
  ino: number
  mode: number
  uid: number
  gid: number
  nlink: number
  /** Logical file size in bytes (for symlinks: the target's length). */
  size: number
  /** Bytes of file data stored for this inode in its view (holes store nothing). */
  bytes: number
  rdev: number
  /** Nanoseconds since the epoch, kept exactly as given. */
  atime: bigint
  mtime: bigint
  ctime: bigint
  btime: bigint
  /** Directories: the directory holding this one (the root is its own parent); 0 for others. */
  parent: number
  /** Symlink target (empty for other types). */
  target: Buffer
  /**
   * May have user.* xattrs: set by the first setxattr and never cleared, so freeing an inode
   * that never had any skips the scan for them (a LevelDB iterator: ~40% of an unlink).
   * Inodes stored before this flag existed (version 1) read as true.
   */
  xattrs: boolean
}

/** Version 2 added a flags byte after the parent (bit 0: `xattrs`); version 1 is still read. */
const VERSION = 2
const HEADER = 78
/** Version 1's header; version 2's flags byte sits right after it. */
const HEADER_V1 = 77
const FLAG_XATTRS = 1

export function encodeInode (n: Inode): Buffer {
  const b = Buffer.allocUnsafe(HEADER + n.target.length)
  b[0] = VERSION
  b.writeUInt32BE(n.mode >>> 0, 1)
  b.writeUInt32BE(n.uid >>> 0, 5)
  b.writeUInt32BE(n.gid >>> 0, 9)
  b.writeUInt32BE(n.nlink >>> 0, 13)
  b.writeBigUInt64BE(BigInt(n.size), 17)
  b.writeBigUInt64BE(BigInt(n.bytes), 25)
  b.writeUInt32BE(n.rdev >>> 0, 33)
  b.writeBigInt64BE(n.atime, 37)
  b.writeBigInt64BE(n.mtime, 45)
  b.writeBigInt64BE(n.ctime, 53)
  b.writeBigInt64BE(n.btime, 61)
  b.writeBigUInt64BE(BigInt(n.parent), 69)
  b[HEADER_V1] = n.xattrs ? FLAG_XATTRS : 0
  n.target.copy(b, HEADER)
  return b
}

export function decodeInode (ino: number, b: Buffer): Inode {
  const v1 = b[0] === 1
  if (b.length < (v1 ? HEADER_V1 : HEADER) || (b[0] !== VERSION && !v1)) throw new Error(`inode ${ino}: bad encoding (${b.length} bytes, version ${b[0]})`)
  return {
    ino,
    mode: b.readUInt32BE(1),
    uid: b.readUInt32BE(5),
    gid: b.readUInt32BE(9),
    nlink: b.readUInt32BE(13),
    size: Number(b.readBigUInt64BE(17)),
    bytes: Number(b.readBigUInt64BE(25)),
    rdev: b.readUInt32BE(33),
    atime: b.readBigInt64BE(37),
    mtime: b.readBigInt64BE(45),
    ctime: b.readBigInt64BE(53),
    btime: b.readBigInt64BE(61),
    parent: Number(b.readBigUInt64BE(69)),
    target: Buffer.from(b.subarray(v1 ? HEADER_V1 : HEADER)),
    xattrs: v1 || (b[HEADER_V1] & FLAG_XATTRS) !== 0
  }
}

export function isDir (n: Inode): boolean { return (n.mode & S_IFMT) === S_IFDIR }
export function isReg (n: Inode): boolean { return (n.mode & S_IFMT) === S_IFREG }
export function isLnk (n: Inode): boolean { return (n.mode & S_IFMT) === S_IFLNK }

/** Directory entry value: child inode number and its file type bits (for readdir without a lookup). */
export function encodeDirent (ino: number, mode: number): Buffer {
  const b = Buffer.allocUnsafe(12)
  b.writeBigUInt64BE(BigInt(ino), 0)
  b.writeUInt32BE((mode & S_IFMT) >>> 0, 8)
  return b
}

export function decodeDirent (b: Buffer): { ino: number, type: number } {
  return { ino: Number(b.readBigUInt64BE(0)), type: b.readUInt32BE(8) }
}
