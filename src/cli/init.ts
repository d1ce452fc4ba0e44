import type { Command } from 'commander'
import { openVolume } from '../daemon/open-volume.js'
import { ReplfsError } from '../errors.js'
import { Store } from '../store/store.js'
import { createLogger } from '../util/logger.js'

export function registerInit (program: Command): void {
  program.command('init')
    .description('create an empty volume in a new store directory')
    .requiredOption('--store <dir>', 'directory for the LevelDB store (must not hold a volume yet)')
    .action(async (o: { store: string }) => {
      const logger = createLogger({ level: 'warn' })
      // Refuse to touch an existing volume: init is for new stores only.
      const existing = await Store.open(o.store, { create: false }).catch(() => null)
      if (existing !== null) {
        await existing.close()
        throw new ReplfsError('STORE_EXISTS', `${o.store} already holds a store`, { hint: `Mount it: replfs mount MOUNTPOINT --store ${o.store}` })
      }
      const v = await openVolume(o.store, { create: true, logger })
      process.stdout.write(`created volume ${v.state.format!.volumeId} in ${o.store}\n`)
      await v.store.close()
    })
}
