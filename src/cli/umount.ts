import { readFileSync } from 'node:fs'
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
      const { pid } = await callControl(mnt, { cmd: 'status' }) as { pid: number }
      await callControl(mnt, { cmd: 'unmount' })
      const deadline = Date.now() + Number(o.timeout) * 1000
      // Done when the mount is gone and the volume process has exited (so the store is closed
      // and can be mounted again at once).
      while (isMounted(mnt) || alive(pid)) {
        if (Date.now() > deadline) throw new ReplfsError('MOUNTPOINT_BUSY', `${mnt} did not unmount within ${o.timeout}s`)
        await new Promise(resolve => setTimeout(resolve, 50))
      }
      process.stdout.write(`unmounted ${mnt}\n`)
    })
}

/** Whether the volume process still runs (an exited one its parent has not reaped yet counts as gone). */
function alive (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}
