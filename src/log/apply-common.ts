import { ReplfsError } from '../errors.js'
import { type Inode, isDir } from '../store/inode.js'
import type { Tx } from '../store/volume-state.js'
import type { LogRecord, RecordType } from './records.js'

/** What applies one record type: its changes go on `tx`; a record that does not fit the state throws RECORD_INVALID. */
export type Handler<T extends RecordType> = (rec: Extract<LogRecord, { type: T }>, tx: Tx) => Promise<void>

/** One handler per record type: a type without one does not compile. */
export type Handlers = { [T in RecordType]: Handler<T> }

export async function dirInode (tx: Tx, ino: number, what: string): Promise<Inode> {
  const n = await tx.mustInode(ino, what)
  if (!isDir(n)) throw invalid(`${what}: inode ${ino} is not a directory`)
  return n
}

export function touchDir (d: Inode, time: bigint): void {
  d.mtime = time
  d.ctime = time
}

/** Drops one link of `n`; the last one frees it, or keeps it as an orphan when it is still open (`keep`). */
export async function dropLink (tx: Tx, n: Inode, time: bigint, keep: boolean): Promise<void> {
  n.nlink--
  n.ctime = time
  if (n.nlink > 0) { tx.putInode(n); return }
  if (keep) {
    tx.putInode(n)
    tx.addOrphan(n.ino)
    return
  }
  await tx.freeInode(n)
}

export function invalid (msg: string): ReplfsError {
  return new ReplfsError('RECORD_INVALID', msg)
}
