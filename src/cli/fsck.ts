import type { Command } from 'commander'
import { Store } from '../store/store.js'
import { fsck } from '../store/fsck.js'
import { VolumeState } from '../store/volume-state.js'

export function registerFsck (program: Command): void {
  program.command('fsck')
    .description("check a store's invariants (the store must not be mounted); exit 0 when clean")
    .requiredOption('--store <dir>', 'store directory')
    .option('--json', 'print the report as JSON')
    .action(async (o: { store: string, json?: boolean }) => {
      const store = await Store.open(o.store, { create: false })
      try {
        const state = await VolumeState.load(store)
        const report = await fsck(state)
        if (o.json === true) {
          process.stdout.write(JSON.stringify(report, null, 2) + '\n')
        } else {
          process.stdout.write(`${o.store}: ${report.inodes} inodes (${report.directories} directories), ${report.blocks} blocks, ${report.dataBytes} data bytes, seq ${report.seq}\n`)
          for (const p of report.problems) process.stdout.write(`problem: ${p}\n`)
          process.stdout.write(report.ok ? 'clean\n' : `${report.problems.length} problem(s) found\n`)
        }
        if (!report.ok) process.exitCode = 1
      } finally {
        await store.close()
      }
    })
}
