import { statfs } from 'node:fs/promises'
import type { Logger } from 'pino'
import { ReplfsError } from '../errors.js'
import { Volume } from '../fs/volume.js'
import { nowNs } from '../fs/clock.js'
import { RecordLog } from '../log/record-log.js'
import { BLOCK_SIZE } from '../store/keys.js'
import { Store } from '../store/store.js'
import { StagedResync } from '../store/range-sync.js'
import { discardPartialCopy } from '../store/state-transfer.js'
import { VolumeState, newVolumeId } from '../store/volume-state.js'

export interface OpenedVolume {
  store: Store
  state: VolumeState
  log: RecordLog
  /** The volume was made by this open: no other host can hold a newer state of it. */
  created?: boolean
}

/**
 * Opens a store (creating and initialising it when `create`), ready for records. `replay`: leave
 * a new store empty, for a stream of records (starting with init) made elsewhere.
 */
export async function openVolume (dir: string, opts: { create: boolean, logger: Logger, mode?: number, replay?: boolean }): Promise<OpenedVolume> {
  const store = await Store.open(dir, { create: opts.create, logger: opts.logger })
  try {
    if (await discardPartialCopy(store)) {
      opts.logger.warn({ store: dir }, 'a full copy from the primary was interrupted; the store was emptied and will be copied again')
    }
    const resync = await StagedResync.recover(store)
    if (resync === 'applied') opts.logger.warn({ store: dir }, 'a resync was interrupted while its checked data went in: finished applying it')
    if (resync === 'kept') opts.logger.warn({ store: dir }, 'a resync was interrupted before its data was complete: the state from before it is what this store serves, and the next resync goes on from what it received')
    if (resync === 'emptied') opts.logger.warn({ store: dir }, 'a first copy by an older replfs was interrupted: the store was emptied and will be copied again')
    const state = await VolumeState.load(store)
    const log = new RecordLog(state, opts.logger)
    store.onReset = async err => {
      opts.logger.error({ err }, 'reloading volume state after a failed write')
      await state.reload()
      log.rolledBack()
    }
    let created = false
    if (state.format === null && opts.replay !== true) {
      created = true
      if (!opts.create) throw new ReplfsError('STORE_MISSING', `${dir} holds no replfs volume`, { hint: `Create one with: replfs init --store ${dir}` })
      const r = await log.submit(() => ({
        type: 'init', volumeId: newVolumeId(), blockSize: BLOCK_SIZE, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, mode: opts.mode ?? 0o755, time: nowNs()
      }))
      await r?.durable
      await store.sync()
      opts.logger.info({ volume: state.format!.volumeId, store: dir }, 'volume created')
    }
    return { store, state, log, created }
  } catch (err) {
    await store.close().catch(() => {})
    throw err
  }
}

/** The size a volume may grow to when none is configured: what its disk can still take. */
export async function defaultSizeLimit (dir: string, usedBytes: number): Promise<number> {
  const s = await statfs(dir)
  // Leave a tenth of the free space for LevelDB's compactions and logs.
  return usedBytes + Math.floor(s.bavail * s.bsize * 0.9)
}

export function makeVolume (opened: OpenedVolume, opts: { sizeLimit: number, readOnly?: boolean, logger: Logger }): Volume {
  return new Volume(opened.log, { sizeLimit: opts.sizeLimit, readOnly: opts.readOnly, logger: opts.logger })
}
