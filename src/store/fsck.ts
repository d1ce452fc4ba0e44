import { decodeRecord } from '../log/codec.js'
import {
  P_BLOCK, P_DIRENT, P_INODE, P_JOURNAL, P_XATTR, ROOT_INO, baseOf, layerOf, readU64
} from './keys.js'
import { type Inode, S_IFDIR, S_IFMT, decodeDirent, decodeInode, isDir } from './inode.js'
import { ownsTop } from './snapshots.js'
import type { VolumeState } from './volume-state.js'

export interface FsckReport {
  ok: boolean
  problems: string[]
  inodes: number
  directories: number
  blocks: number
  dataBytes: number
  journal: { first: number | null, last: number | null }
  seq: number
}

/**
 * Checks the store's invariants on the live view and on every snapshot's view: every entry points at an inode of its type;
 * link counts and directory parents match the entries; every block belongs to a live inode,
 * lies inside its size and has the length the size implies; byte and inode counters add up;
 * no view uses an inode number the counter will hand out; a snapshot's own top layer is its
 * alone; the journal is contiguous and ends at the applied seq. Reports every problem it finds.
 */
export async function fsck (state: VolumeState, opts: { maxProblems?: number } = {}): Promise<FsckReport> {
  const max = opts.maxProblems ?? 100
  const problems: string[] = []
  const problem = (p: string): void => { if (problems.length < max) problems.push(p) }
  if (state.format === null) problem('no format metadata: not a replfs store, or never initialised')

  // Whole store: the journal, and the bytes held in all layers.
  let usedBytes = 0
  let journalFirst: number | null = null
  let journalLast: number | null = null
  for await (const [k, v] of state.store.iterate(Buffer.from([0]), Buffer.from([0xff]))) {
    const p = k[0]
    if (p === P_JOURNAL) {
      const seq = readU64(k, 1)
      if (journalLast !== null && seq !== journalLast + 1) problem(`journal gap: ${journalLast} then ${seq}`)
      if (journalFirst === null) journalFirst = seq
      journalLast = seq
      try { decodeRecord(v) } catch (err) {
        if (!/without its payload/.test(String((err as Error).message))) problem(`journal entry ${seq} unreadable: ${(err as Error).message}`)
      }
    } else if (p === P_BLOCK) {
      usedBytes += v.length
    }
  }

  // Each view: the live volume, then every snapshot (a writable one changes like the live one).
  const live = await checkView(state, state.live.chain, '', ino => state.orphans.has(ino), problem)
  const c = state.counters
  // A snapshot may hold files that were open but unlinked when it was taken (nlink 0, freed in
  // the live view since): orphan bookkeeping is the live view's.
  for (const s of state.snapshots) {
    const v = await checkView(state, s.chain, `snapshot ${s.name}: `, null, problem)
    // A writable or diverged snapshot's inodes come from the same counter (a diverged one's fills
    // raise it), so a restore from any snapshot never meets a number the counter hands out again.
    if (c.nextIno <= v.maxIno) problem(`snapshot ${s.name}: next inode number ${c.nextIno} is not above the largest in use (${v.maxIno})`)
  }
  for (const p of sharedTops(state)) problem(p)

  if (c.inodes !== live.inodes) problem(`counter says ${c.inodes} inodes, store has ${live.inodes}`)
  if (c.usedBytes !== usedBytes) problem(`counter says ${c.usedBytes} bytes stored, blocks hold ${usedBytes}`)
  if (c.nextIno <= live.maxIno) problem(`next inode number ${c.nextIno} is not above the largest in use (${live.maxIno})`)
  if (journalLast !== null && journalLast !== c.seq) problem(`journal ends at ${journalLast} but the applied seq is ${c.seq}`)
  return {
    ok: problems.length === 0,
    problems,
    inodes: live.inodes,
    directories: live.directories,
    blocks: live.blocks,
    dataBytes: usedBytes,
    journal: { first: journalFirst, last: journalLast },
    seq: c.seq
  }
}

/**
 * The top layer of a snapshot that takes writes (writable, or diverged: its fills) belongs to it
 * alone: held by another view, a write there would show through in that view too.
 */
function sharedTops (state: VolumeState): string[] {
  const out: string[] = []
  const chains = [{ name: 'the live view', chain: state.live.chain }, ...state.snapshots.map(s => ({ name: `snapshot ${s.name}`, chain: s.chain }))]
  for (const s of state.snapshots.filter(ownsTop)) {
    const top = s.chain[0]
    const others = chains.filter(c => c.name !== `snapshot ${s.name}` && c.chain.includes(top)).map(c => c.name)
    if (others.length > 0) out.push(`snapshot ${s.name}: its own top layer ${top} is held by ${others.join(', ')} too`)
  }
  return out
}

interface ViewReport { inodes: number, directories: number, blocks: number, maxIno: number }

/** The invariants of one view (a chain of layers), problems prefixed with `label`. */
async function checkView (state: VolumeState, chain: readonly number[], label: string, isOrphan: ((ino: number) => boolean) | null, report: (p: string) => void): Promise<ViewReport> {
  const problem = (p: string): void => report(label + p)
  const BS = state.blockSize
  const inChain = new Set(chain)
  const inodes = new Map<number, Inode>()
  const linksSeen = new Map<number, number>()
  const subdirs = new Map<number, number>()
  const parentSeen = new Map<number, number>()
  const bytesSeen = new Map<number, number>()
  const dirents: Array<{ parent: number, name: string, ino: number, type: number }> = []
  const blockList: Array<{ ino: number, idx: number, len: number }> = []
  const xattrInos = new Set<number>()
  let lastBase: Buffer | null = null
  let blocks = 0

  for await (const [k, v] of state.store.iterate(Buffer.from([0]), Buffer.from([0xff]))) {
    const p = k[0]
    if (p !== P_INODE && p !== P_DIRENT && p !== P_BLOCK && p !== P_XATTR) continue
    if (!inChain.has(layerOf(k))) continue
    const base = baseOf(k)
    if (lastBase !== null && base.equals(lastBase)) continue
    lastBase = base
    if (v.length === 0) continue
    if (p === P_INODE) {
      const ino = readU64(k, 1)
      try { inodes.set(ino, decodeInode(ino, v)) } catch (err) { problem((err as Error).message) }
    } else if (p === P_DIRENT) {
      const e = decodeDirent(v)
      dirents.push({ parent: readU64(k, 1), name: base.subarray(9, base.length - 1).toString(), ino: e.ino, type: e.type })
    } else if (p === P_BLOCK) {
      blockList.push({ ino: readU64(k, 1), idx: readU64(k, 9), len: v.length })
    } else {
      xattrInos.add(readU64(k, 1))
    }
  }
  for (const d of dirents) {
    const n = inodes.get(d.ino)
    const parent = inodes.get(d.parent)
    if (parent === undefined || !isDir(parent)) problem(`entry '${d.name}' in ${d.parent}: parent is not a live directory`)
    if (n === undefined) { problem(`entry '${d.name}' in ${d.parent} points at missing inode ${d.ino}`); continue }
    if ((n.mode & S_IFMT) !== d.type) problem(`entry '${d.name}' in ${d.parent}: type ${d.type.toString(8)} but inode ${d.ino} is ${(n.mode & S_IFMT).toString(8)}`)
    linksSeen.set(d.ino, (linksSeen.get(d.ino) ?? 0) + 1)
    if (isDir(n)) {
      subdirs.set(d.parent, (subdirs.get(d.parent) ?? 0) + 1)
      if (parentSeen.has(d.ino)) problem(`directory ${d.ino} has more than one entry`)
      parentSeen.set(d.ino, d.parent)
    }
  }
  let maxIno = 0
  let directories = 0
  for (const [ino, n] of inodes) {
    maxIno = Math.max(maxIno, ino)
    const links = linksSeen.get(ino) ?? 0
    if (isDir(n)) {
      directories++
      const want = 2 + (subdirs.get(ino) ?? 0)
      if (n.nlink !== want) problem(`directory ${ino}: nlink ${n.nlink}, expected ${want}`)
      if (ino !== ROOT_INO && parentSeen.get(ino) !== n.parent) problem(`directory ${ino}: parent ${n.parent}, but its entry is in ${String(parentSeen.get(ino))}`)
      if (ino !== ROOT_INO && links === 0) problem(`directory ${ino} is unreachable`)
    } else if (n.nlink !== links) {
      problem(`inode ${ino}: nlink ${n.nlink}, but ${links} entries point at it`)
    }
    if (isOrphan !== null && n.nlink === 0 && !isDir(n) && !isOrphan(ino)) problem(`inode ${ino} has no links and is not an orphan`)
    if (isOrphan !== null && n.nlink > 0 && isOrphan(ino)) problem(`inode ${ino} is listed as an orphan but has ${n.nlink} links`)
  }
  if (!inodes.has(ROOT_INO) && state.format !== null) problem('root directory is missing')
  for (const b of blockList) {
    blocks++
    const n = inodes.get(b.ino)
    if (n === undefined) { problem(`block ${b.idx} of missing inode ${b.ino}`); continue }
    const want = Math.min(BS, n.size - b.idx * BS)
    if (want <= 0) problem(`inode ${b.ino}: block ${b.idx} lies past its size ${n.size}`)
    else if (b.len !== want) problem(`inode ${b.ino}: block ${b.idx} holds ${b.len} bytes, size implies ${want}`)
    bytesSeen.set(b.ino, (bytesSeen.get(b.ino) ?? 0) + b.len)
  }
  for (const ino of xattrInos) {
    const n = inodes.get(ino)
    // Freeing an inode scans for its xattrs only when it says it may have some.
    if (n === undefined) problem(`extended attributes of missing inode ${ino}`)
    else if (!n.xattrs) problem(`inode ${ino} has extended attributes but is not marked as having any`)
  }
  for (const [ino, n] of inodes) {
    if ((n.mode & S_IFMT) === S_IFDIR) continue
    const got = bytesSeen.get(ino) ?? 0
    if (got !== n.bytes) problem(`inode ${ino}: records ${n.bytes} stored bytes, blocks hold ${got}`)
  }
  return { inodes: inodes.size, directories, blocks, maxIno }
}
