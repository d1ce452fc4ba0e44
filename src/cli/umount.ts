import type { Command } from 'commander'
import { callControl } from '../daemon/control.js'
import { isMounted } from '../fuse/mount.js'
import { ReplfsError } from '../errors.js'

export function registerUmount (program: Command): void {
  program.command('umount')
    .alias('unmount')
    .description('unmount a volume cleanly: pending writes reach the store, then it is closed')
    .argument('<mountpoint>')
    .option('--timeout <seconds>', 'how long to wait for the volume process to finish', '60')
    .action(async (mnt: string, o: { timeout: string }) => {
      await callControl(mnt, { cmd: 'unmount' })
      const deadline = Date.now() + Number(o.timeout) * 1000
      // Done when the mount is gone and the process has released the control socket.
      while (isMounted(mnt) || await callControl(mnt, { cmd: 'status' }, 2000).then(() => true, () => false)) {
        if (Date.now() > deadline) throw new ReplfsError('MOUNTPOINT_BUSY', `${mnt} did not unmount within ${o.timeout}s`)
        await new Promise(resolve => setTimeout(resolve, 50))
      }
      process.stdout.write(`unmounted ${mnt}\n`)
    })
}
