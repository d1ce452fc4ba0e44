/**
 * The one place that spells LevelDB keys. See docs/store-layout.md for the design.
 *
 * State keys (replicated, digested) end in a 4-byte *layer* suffix stored inverted, so an
 * iterator over one logical key meets its newest layer first:
 *   i <ino:u64> <layer>                  inode attributes
 *   d <parent:u64> <name> 00 <layer>     directory entry -> child ino
 *   b <ino:u64> <block:u64> <layer>      file data block (BLOCK_SIZE bytes at most)
 *   x <ino:u64> <name> 00 <layer>        extended attribute
 *   m <name>                             volume metadata (format, layers, counters, applied seq)
 * Local keys (never replicated, not digested):
 *   j <seq:u64>                          journal: the record applied at seq
 *   l <name>                             host-local bookkeeping
 *   s <state key>                        resync staging: 01 + value (put) or 00 (del), see range-sync.ts
 */

export const BLOCK_SIZE = 64 * 1024
export const ROOT_INO = 1
export const NAME_MAX = 255

export const P_INODE = 0x69 // i
export const P_DIRENT = 0x64 // d
export const P_BLOCK = 0x62 // b
export const P_XATTR = 0x78 // x
export const P_META = 0x6d // m
export const P_JOURNAL = 0x6a // j
export const P_LOCAL = 0x6c // l
export const P_STAGE = 0x73 // s

const LAYER_MAX = 0xffffffff

function u64 (buf: Buffer, off: number, n: number): void {
  buf.writeUInt32BE(Math.floor(n / 0x100000000), off)
  buf.writeUInt32BE(n >>> 0, off + 4)
}

export function readU64 (buf: Buffer, off: number): number {
  return buf.readUInt32BE(off) * 0x100000000 + buf.readUInt32BE(off + 4)
}

/** The part of a state key before its layer suffix: identifies the logical key. */
export function inodeBase (ino: number): Buffer {
  const k = Buffer.allocUnsafe(9)
  k[0] = P_INODE
  u64(k, 1, ino)
  return k
}

export function direntBase (parent: number, name: Buffer): Buffer {
  const k = Buffer.allocUnsafe(10 + name.length)
  k[0] = P_DIRENT
  u64(k, 1, parent)
  name.copy(k, 9)
  k[9 + name.length] = 0
  return k
}

/** Prefix of every dirent of one directory. */
export function direntDirPrefix (parent: number): Buffer {
  const k = Buffer.allocUnsafe(9)
  k[0] = P_DIRENT
  u64(k, 1, parent)
  return k
}

export function blockBase (ino: number, block: number): Buffer {
  const k = Buffer.allocUnsafe(17)
  k[0] = P_BLOCK
  u64(k, 1, ino)
  u64(k, 9, block)
  return k
}

export function blockInodePrefix (ino: number): Buffer {
  const k = Buffer.allocUnsafe(9)
  k[0] = P_BLOCK
  u64(k, 1, ino)
  return k
}

export function xattrBase (ino: number, name: Buffer): Buffer {
  const k = Buffer.allocUnsafe(10 + name.length)
  k[0] = P_XATTR
  u64(k, 1, ino)
  name.copy(k, 9)
  k[9 + name.length] = 0
  return k
}

export function xattrInodePrefix (ino: number): Buffer {
  const k = Buffer.allocUnsafe(9)
  k[0] = P_XATTR
  u64(k, 1, ino)
  return k
}

/** Appends the layer suffix to a base key. */
export function withLayer (base: Buffer, layer: number): Buffer {
  const k = Buffer.allocUnsafe(base.length + 4)
  base.copy(k, 0)
  k.writeUInt32BE(LAYER_MAX - layer, base.length)
  return k
}

export function layerOf (key: Buffer): number {
  return LAYER_MAX - key.readUInt32BE(key.length - 4)
}

export function baseOf (key: Buffer): Buffer {
  return key.subarray(0, key.length - 4)
}

export function metaKey (name: string): Buffer {
  return Buffer.concat([Buffer.from([P_META]), Buffer.from(name)])
}

export function localKey (name: string): Buffer {
  return Buffer.concat([Buffer.from([P_LOCAL]), Buffer.from(name)])
}

/** Key ranges that hold the replicated state, in key order (journal and local keys lie between and after). */
export const STATE_RANGES: ReadonlyArray<readonly [Buffer, Buffer]> = [
  [Buffer.from([P_BLOCK]), Buffer.from([P_BLOCK + 1])],
  [Buffer.from([P_DIRENT]), Buffer.from([P_DIRENT + 1])],
  [Buffer.from([P_INODE]), Buffer.from([P_INODE + 1])],
  [Buffer.from([P_META]), Buffer.from([P_META + 1])],
  [Buffer.from([P_XATTR]), Buffer.from([P_XATTR + 1])]
]

/** The journal's key range. */
export const JOURNAL_RANGE: readonly [Buffer, Buffer] = [Buffer.from([P_JOURNAL]), Buffer.from([P_JOURNAL + 1])]

/**
 * Resync staging: a state key's incoming value (or deletion) waits under `s` + the key until the
 * whole new state is checked, so a resync that fails or dies half-way leaves the old state whole.
 * `s` + key sorts like key, so staged ops merge with the state in one ordered walk.
 */
export const STAGE_RANGE: readonly [Buffer, Buffer] = [Buffer.from([P_STAGE]), Buffer.from([P_STAGE + 1])]

export function stageKey (key: Buffer): Buffer {
  const k = Buffer.allocUnsafe(key.length + 1)
  k[0] = P_STAGE
  key.copy(k, 1)
  return k
}

/** The state key a staging key stands for. */
export function unstageKey (key: Buffer): Buffer {
  return key.subarray(1)
}

/** Present while a resync by difference is under way: its phase tells recovery what to do. */
export const RESYNC_MARKER = localKey('resync-in-progress')

export function journalKey (seq: number): Buffer {
  const k = Buffer.allocUnsafe(9)
  k[0] = P_JOURNAL
  u64(k, 1, seq)
  return k
}

/** The exclusive upper bound of all keys starting with `prefix`. */
export function prefixEnd (prefix: Buffer): Buffer {
  const end = Buffer.from(prefix)
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] !== 0xff) {
      end[i]++
      return end.subarray(0, i + 1)
    }
  }
  return Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
}

/** Is this key part of the replicated state (as opposed to the journal or host-local data)? */
export function isStateKey (key: Buffer): boolean {
  return isLayeredPrefix(key[0]) || key[0] === P_META
}

/** The prefixes of layered state keys (i, d, b, x), in key order; metadata and local keys are not layered. */
export const LAYERED_PREFIXES: readonly Buffer[] = [P_BLOCK, P_DIRENT, P_INODE, P_XATTR].map(p => Buffer.from([p]))

function isLayeredPrefix (p: number | undefined): boolean {
  return p === P_INODE || p === P_DIRENT || p === P_BLOCK || p === P_XATTR
}

/**
 * Why `base` is not shaped like the base of a layered state key (null: it is), by the layout
 * above: i and b bases have a fixed length, d and x bases a NUL-free name of 1..NAME_MAX bytes
 * and its 00. Says nothing of the numbers in it.
 */
export function layeredBaseProblem (base: Buffer): string | null {
  const p = base[0]
  if (!isLayeredPrefix(p)) return `prefix 0x${p?.toString(16) ?? '(none)'} is not a layered state prefix (i, d, b or x)`
  if (p === P_INODE && base.length !== 9) return `an inode base is 9 bytes, not ${base.length}`
  if (p === P_BLOCK && base.length !== 17) return `a block base is 17 bytes, not ${base.length}`
  if (p === P_DIRENT || p === P_XATTR) {
    const nameLen = base.length - 10
    if (nameLen < 1 || nameLen > NAME_MAX) return `name of ${nameLen} bytes (1..${NAME_MAX})`
    if (base[base.length - 1] !== 0 || base.subarray(9, base.length - 1).includes(0)) return 'name must be NUL-free and end with a NUL'
  }
  return null
}
