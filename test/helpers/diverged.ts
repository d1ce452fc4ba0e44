/**
 * Split-brain fixtures: a volume that journals its records, its twin replayed from them (the
 * other host of the pair before they diverged), and the survivor's side of the resync: a
 * snapshot-diverged record, then snapshot-fill records worked out from both stores' logical
 * content, range by range, as the replication code does it.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeVolume, openVolume, type OpenedVolume } from '../../src/daemon/open-volume.js'
import type { Volume } from '../../src/fs/volume.js'
import { decodeRecord } from '../../src/log/codec.js'
import type { LogRecord } from '../../src/log/records.js'
import { divergedOverlay, fillChunks, logicalEntries } from '../../src/store/diverged.js'
import { journalKey } from '../../src/store/keys.js'
import { digestAt } from '../../src/store/state-transfer.js'
import { quietLogger, tempVolume } from './volume.js'

export interface Host extends OpenedVolume { vol: Volume, close: () => Promise<void> }

/** A volume whose every record (init included) is kept in `records`, to make twins and replicas of it. */
export interface RecordingHost extends Host { records: LogRecord[] }

export async function recordingHost (): Promise<RecordingHost> {
  const a = await tempVolume()
  a.state.journalPayloads = true
  // The init record was applied before anyone could listen: it comes from the journal.
  const records: LogRecord[] = [decodeRecord((await a.store.get(journalKey(1)))!)]
  a.log.onRecord((_seq, rec) => records.push(rec))
  return { ...a, records }
}

/** An empty store with `records` applied: the same volume on another host. */
export async function replicaOf (records: readonly LogRecord[]): Promise<Host> {
  const dir = mkdtempSync(join(tmpdir(), 'replfs-diverged-'))
  const opened = await openVolume(dir, { create: true, logger: quietLogger, replay: true })
  for (const rec of records) await opened.log.apply(rec)
  await opened.log.settle()
  return {
    ...opened,
    vol: makeVolume(opened, { sizeLimit: 2 ** 40, logger: quietLogger }),
    close: async () => {
      await opened.store.close()
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

export async function submit (h: OpenedVolume, rec: LogRecord): Promise<void> {
  const r = await h.log.submit(() => rec)
  await r?.durable
}

async function collect (it: AsyncIterable<[Buffer, Buffer]>): Promise<Array<[Buffer, Buffer]>> {
  const out: Array<[Buffer, Buffer]> = []
  for await (const e of it) out.push(e)
  return out
}

/**
 * The fill records that make diverged snapshot `name` of `survivor` show `victim`'s live view:
 * both sides' logical entries compared in the ranges between `bounds` (null: open ends), against
 * the snapshot's base chain (its own top left out: what the survivor held when it was made).
 */
export async function fillRecords (survivor: OpenedVolume, name: string, victim: OpenedVolume, bounds: Array<Buffer | null>, maxBytes?: number): Promise<LogRecord[]> {
  const snap = survivor.state.snapshot(name)
  if (snap === undefined) throw new Error(`no snapshot ${name}`)
  const overlay: Array<[Buffer, Buffer]> = []
  for (let i = 0; i + 1 < bounds.length; i++) {
    const s = await collect(logicalEntries(survivor.store, snap.chain.slice(1), bounds[i], bounds[i + 1]))
    const v = await collect(logicalEntries(victim.store, victim.state.live.chain, bounds[i], bounds[i + 1]))
    overlay.push(...divergedOverlay(s, v))
  }
  return fillChunks(overlay, maxBytes).map(entries => ({ type: 'snapshot-fill', name, entries }))
}

/** Every logical entry of a view, in order (for comparing ranges with the whole). */
export async function allLogical (h: OpenedVolume, chain: readonly number[], start: Buffer | null = null, end: Buffer | null = null): Promise<Array<[Buffer, Buffer]>> {
  return await collect(logicalEntries(h.store, chain, start, end))
}

/** The state digest at the last applied record (what verify compares across hosts). */
export async function digestOf (h: OpenedVolume): Promise<string> {
  await h.log.settle()
  const { snap } = await h.log.snapshotAt()
  try {
    return (await digestAt(h.store, snap)).digest
  } finally {
    await snap.close()
  }
}
