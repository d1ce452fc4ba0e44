import type { Command } from 'commander'
import { callControl } from '../daemon/control.js'

/** promote, demote and switchover: the changes of role an operator makes, as with drbdadm primary/secondary. */
export function registerRole (program: Command): void {
  program.command('promote')
    .description('make this secondary (or fenced primary) the writable primary, in a new generation')
    .argument('<mountpoint>')
    .option('--force', 'also when the peer cannot be reached to confirm, or a resync is under way (the state from before it is what you get)')
    .option('--json', 'print JSON')
    .action(async (mnt: string, o: { force?: boolean, json?: boolean }) => {
      print(await callControl(mnt, { cmd: 'promote', force: o.force === true }) as Record<string, unknown>, o.json, 'primary')
    })
  program.command('demote')
    .description('make this primary a read-only secondary; waits until the peer has acknowledged everything')
    .argument('<mountpoint>')
    .option('--force', 'do not wait for the peer (what it lacks comes back as a diverged snapshot at the next resync)')
    .option('--json', 'print JSON')
    .action(async (mnt: string, o: { force?: boolean, json?: boolean }) => {
      print(await callControl(mnt, { cmd: 'demote', force: o.force === true }) as Record<string, unknown>, o.json, 'secondary')
    })
  program.command('switchover')
    .description('planned role swap, run on the primary: stop writes, wait until the peer has everything, promote it, demote this node')
    .argument('<mountpoint>', 'the primary\'s mount point')
    .option('--json', 'print JSON')
    .action(async (mnt: string, o: { json?: boolean }) => {
      print(await callControl(mnt, { cmd: 'switchover' }) as Record<string, unknown>, o.json, 'secondary')
    })
}

function print (r: Record<string, unknown>, json: boolean | undefined, role: string): void {
  if (json === true) { process.stdout.write(JSON.stringify(r, null, 2) + '\n'); return }
  const gen = (r.generation as { id?: string } | undefined)?.id
  process.stdout.write(r.changed === false ? `already ${role}\n` : `now ${role}${gen === undefined ? '' : ` (generation ${gen})`}${r.seq === undefined ? '' : ` at seq ${String(r.seq)}`}\n`)
}
