import { randomUUID } from 'node:crypto'

/**
 * Data generations, after DRBD's generation identifiers. Every promotion (and every loss of the
 * peer while primary) starts a generation; a node keeps a short history of them, each with the seq
 * it began after. Within one generation only one node wrote, so two nodes that share a generation
 * hold the same records up to where the shorter of them ends it. Comparing both sides' histories
 * and seqs therefore tells, with no operator, who must send, from which common point, and whether
 * both wrote past it (split brain). `decide` is a pure function of both sides' views.
 */

export interface Generation {
  id: string
  /** The seq this generation began after: its first record is since + 1. */
  since: number
  /** When it began (ISO time): discard-younger compares these. */
  at: string
}

export type NodeRole = 'primary' | 'secondary'

export type SplitBrainPolicy = 'disconnect' | 'discard-younger' | 'discard-least-changes'
export const SPLIT_BRAIN_POLICIES: readonly SplitBrainPolicy[] = ['disconnect', 'discard-younger', 'discard-least-changes']

/** What one side tells the other after authentication. */
export interface NodeView {
  role: NodeRole
  /** A primary that has not yet confirmed its peer holds nothing newer: it takes no writes. */
  fenced: boolean
  /** Oldest first; the last entry is the current generation. */
  history: Generation[]
  seq: number
  policy: SplitBrainPolicy
  /** Random per store: breaks the tie between two restarted primaries holding the same records. */
  nodeId: string
}

export type Decision =
  /** Same data on both sides: stream from `from` (nothing to send yet); the target adopts the source's history. */
  | { kind: 'source' | 'target', from: number, diverged: false, reason: string }
  /**
   * The target holds records past the common point that the source lacks (an old primary that
   * crashed, a side that yields a split brain): it keeps them as a diverged snapshot and resyncs.
   */
  | { kind: 'source' | 'target', from: number, diverged: true, reason: string }
  /** Neither may send: both keep running, status says why. */
  | { kind: 'refuse', code: 'SPLIT_BRAIN' | 'PEER_NEWER' | 'NO_VOLUME', reason: string }

export const HISTORY_MAX = 64

export function newGeneration (since: number, now = new Date()): Generation {
  return { id: randomUUID(), since, at: now.toISOString() }
}

/**
 * The first generation of a volume is named by the volume id, so both hosts agree on it without
 * exchanging anything (and a store made before generations existed gets the same one).
 */
export function rootGeneration (volumeId: string): Generation {
  return { id: volumeId, since: 0, at: new Date(0).toISOString() }
}

/**
 * The history after starting a generation at `seq`. Generations adopted from a peer that this
 * node holds no record of (they began past `seq`) are dropped first, so `since` stays ordered.
 */
export function startGeneration (history: readonly Generation[], seq: number, now = new Date()): Generation[] {
  const kept = history.filter(g => g.since <= seq)
  return [...kept, newGeneration(seq, now)].slice(-HISTORY_MAX)
}

/** Where a node's records of generation `i` end: the next generation's start, or its seq. */
function endOf (history: readonly Generation[], i: number, seq: number): number {
  const next = history[i + 1]
  return next === undefined ? seq : Math.min(next.since, seq)
}

/** Index in each history of the newest generation both hold, or null when none is shared. */
function lastCommon (a: readonly Generation[], b: readonly Generation[]): [number, number] | null {
  const inB = new Map(b.map((g, i) => [g.id, i]))
  for (let i = a.length - 1; i >= 0; i--) {
    const j = inB.get(a[i].id)
    if (j !== undefined) return [i, j]
  }
  return null
}

/** Seq up to which both sides hold the same records, or null when their histories share nothing. */
export function commonPoint (me: NodeView, peer: NodeView): number | null {
  const c = lastCommon(me.history, peer.history)
  if (c === null) return null
  return Math.min(endOf(me.history, c[0], me.seq), endOf(peer.history, c[1], peer.seq))
}

function isAncestor (h: readonly Generation[], of: readonly Generation[]): boolean {
  const current = h[h.length - 1]
  return current !== undefined && of.slice(0, -1).some(g => g.id === current.id)
}

const writable = (v: NodeView): boolean => v.role === 'primary' && !v.fenced

/**
 * Who sends to whom, seen from `me`. Mirrored calls agree: decide(a, b) is decide(b, a) with
 * source and target swapped, so both ends of a connection reach the same outcome on their own.
 * Only a primary ever sends; a primary that must receive demotes itself first.
 */
export function decide (me: NodeView, peer: NodeView): Decision {
  if (me.history.length === 0 && peer.history.length === 0) return { kind: 'refuse', code: 'NO_VOLUME', reason: 'neither node holds a volume yet' }
  if (peer.history.length === 0) return senderMustBePrimary(me, peer, flow('source', 0, false, 'the peer holds no volume yet'))
  if (me.history.length === 0) return senderMustBePrimary(me, peer, flow('target', 0, false, 'this node holds no volume yet'))
  const c = commonPoint(me, peer)
  if (c === null) return splitBrain(me, peer, 0, 'the nodes share no generation: they hold unrelated histories')
  if (writable(me) && writable(peer)) return splitBrain(me, peer, c, 'both nodes are writable primaries')
  const mine = me.seq - c
  const theirs = peer.seq - c
  if (mine === 0 && theirs === 0) return senderMustBePrimary(me, peer, flow(firstSends(me, peer) ? 'source' : 'target', c, false, 'both hold the same records'))
  // One side holds records past the common point. If the other is the writable primary (it was
  // promoted while this one was away), those records are an old primary's that went on alone.
  if (theirs === 0) return senderMustBePrimary(me, peer, writable(peer) ? flow('target', c, true, `this node holds ${mine} records the writable peer lacks`) : flow('source', c, false, `the peer is ${mine} records behind`))
  if (mine === 0) return senderMustBePrimary(me, peer, writable(me) ? flow('source', c, true, `the peer holds ${theirs} records this writable primary lacks`) : flow('target', c, false, `this node is ${theirs} records behind`))
  // Both wrote past the common point. A side whose current generation the other has moved past
  // went on in an old generation (it crashed, or was cut off, and its peer was promoted).
  if (isAncestor(peer.history, me.history) && !writable(peer)) return senderMustBePrimary(me, peer, flow('source', c, true, `the peer went on in an old generation (${theirs} records of its own)`))
  if (isAncestor(me.history, peer.history) && !writable(me)) return senderMustBePrimary(me, peer, flow('target', c, true, `this node went on in an old generation (${mine} records of its own)`))
  return splitBrain(me, peer, c, `both wrote past seq ${c} (${mine} records here, ${theirs} there)`)
}

/** With the same records on both sides: the writable side, else the primary, else the newer history, else the node id. */
function firstSends (me: NodeView, peer: NodeView): boolean {
  if (writable(me) !== writable(peer)) return writable(me)
  if ((me.role === 'primary') !== (peer.role === 'primary')) return me.role === 'primary'
  if (isAncestor(peer.history, me.history) !== isAncestor(me.history, peer.history)) return isAncestor(peer.history, me.history)
  return me.nodeId < peer.nodeId
}

function flow (kind: 'source' | 'target', from: number, diverged: boolean, reason: string): Decision {
  return diverged ? { kind, from, diverged: true, reason } : { kind, from, diverged: false, reason }
}

/**
 * Only a primary sends: a secondary that holds more than a restarted primary (which lost its last
 * records) waits for the operator to promote it, instead of swapping roles on its own.
 */
function senderMustBePrimary (me: NodeView, peer: NodeView, d: Decision): Decision {
  if (d.kind === 'refuse') return d
  const sender = d.kind === 'source' ? me : peer
  if (sender.role === 'primary') return d
  const where = d.kind === 'source' ? 'this node' : 'the peer'
  return { kind: 'refuse', code: 'PEER_NEWER', reason: `${where} (secondary) holds records the primary lacks (lost in a crash?): promote ${where} with replfs promote, then the other rejoins as its secondary` }
}

/**
 * Both sides hold records the other lacks. A secondary yields (an operator demoted it to say so);
 * otherwise the policy decides, and `disconnect` (the default, or policies that differ) refuses.
 */
function splitBrain (me: NodeView, peer: NodeView, c: number, why: string): Decision {
  if (me.role === 'secondary' && peer.role === 'primary') return flow('target', c, true, `split brain (${why}); this secondary yields`)
  if (peer.role === 'secondary' && me.role === 'primary') return flow('source', c, true, `split brain (${why}); the secondary yields`)
  const refuse: Decision = { kind: 'refuse', code: 'SPLIT_BRAIN', reason: `split brain: ${why}. Choose the survivor: replfs demote on the node whose writes should become a diverged snapshot` }
  if (me.policy !== peer.policy || me.policy === 'disconnect') return refuse
  const meYields = me.policy === 'discard-younger' ? younger(me, peer) : fewerChanges(me, peer, c)
  if (meYields === null) return refuse
  return senderMustBePrimary(me, peer, flow(meYields ? 'target' : 'source', c, true, `split brain (${why}); ${me.policy} chose ${meYields ? 'the peer' : 'this node'}`))
}

/** Whether `me` began its current generation later; null on a tie (then nobody yields). */
function younger (me: NodeView, peer: NodeView): boolean | null {
  const a = me.history[me.history.length - 1].at
  const b = peer.history[peer.history.length - 1].at
  return a === b ? null : a > b
}

function fewerChanges (me: NodeView, peer: NodeView, c: number): boolean | null {
  const a = me.seq - c
  const b = peer.seq - c
  return a === b ? younger(me, peer) : a < b
}
