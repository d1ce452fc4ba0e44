import type { Command } from 'commander'
import { callControl } from '../daemon/control.js'
import type { SnapshotInfo } from '../fs/volume.js'

/**
 * Snapshot commands, addressed to a volume by its mount point. Each one that changes state is a
 * record in the volume's stream, so a replica performs it at the same point.
 */
export function registerSnapshot (program: Command): void {
  const snap = program.command('snapshot')
    .description('create, list, delete, restore and refresh snapshots (read them under <mountpoint>/.snapshots/NAME)')

  snap.command('create')
    .description('take a copy-on-write snapshot of the volume as it is now (O(1): nothing is copied)')
    .argument('<mountpoint>').argument('<name>', 'a directory name: no "/", not "." or "..", at most 255 bytes')
    .option('--writable', 'let .snapshots/NAME be written (its writes replicate like any other)')
    .action(async (mnt: string, name: string, o: { writable?: boolean }) => {
      const s = await callControl(mnt, { cmd: 'snapshot', op: 'create', name, writable: o.writable === true }) as SnapshotInfo
      process.stdout.write(`created ${s.writable ? 'writable ' : ''}snapshot ${s.name} at seq ${s.seq}\n`)
    })

  snap.command('list')
    .description('list snapshots: name, seq and time taken, ro/rw, and the data each alone holds (what deleting it frees)')
    .argument('<mountpoint>')
    .option('--json', 'print JSON')
    .option('--no-space', 'skip the space column (it reads every block key once)')
    .action(async (mnt: string, o: { json?: boolean, space: boolean }) => {
      const list = await callControl(mnt, { cmd: 'snapshot', op: 'list', space: o.space }) as SnapshotInfo[]
      if (o.json === true) { process.stdout.write(JSON.stringify(list, null, 2) + '\n'); return }
      process.stdout.write(`${'NAME'.padEnd(24)} ${'SEQ'.padStart(10)}  ${'CREATED'.padEnd(24)}  MODE  ${'HELD'.padStart(10)}\n`)
      for (const s of list) {
        const held = s.heldBytes === undefined ? '-' : formatBytes(s.heldBytes)
        process.stdout.write(`${s.name.padEnd(24)} ${String(s.seq).padStart(10)}  ${s.created.padEnd(24)}  ${s.writable ? 'rw' : 'ro'}    ${held.padStart(10)}\n`)
      }
    })

  snap.command('delete')
    .description('delete a snapshot and free the data only it held')
    .argument('<mountpoint>').argument('<name>')
    .action(async (mnt: string, name: string) => {
      const r = await callControl(mnt, { cmd: 'snapshot', op: 'delete', name }) as { freedBytes: number }
      process.stdout.write(`deleted snapshot ${name}; ${r.freedBytes} bytes freed\n`)
    })

  snap.command('restore')
    .description('make the whole volume (or, with --path, one file or tree) what the snapshot holds; the snapshot stays')
    .argument('<mountpoint>').argument('<name>')
    .option('--path <path>', 'restore only this file or directory tree (relative to the volume root); what is there now is replaced')
    .action(async (mnt: string, name: string, o: { path?: string }) => {
      const s = await callControl(mnt, { cmd: 'snapshot', op: 'restore', name, path: o.path }) as SnapshotInfo
      process.stdout.write(`restored ${o.path === undefined ? mnt : `${o.path} in ${mnt}`} from snapshot ${s.name} (taken at seq ${s.seq})\n`)
    })

  snap.command('refresh')
    .description('make the snapshot equal the volume as it is now')
    .argument('<mountpoint>').argument('<name>')
    .action(async (mnt: string, name: string) => {
      const s = await callControl(mnt, { cmd: 'snapshot', op: 'refresh', name }) as SnapshotInfo
      process.stdout.write(`refreshed snapshot ${s.name} at seq ${s.seq}\n`)
    })
}

function formatBytes (n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let u = 0
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++ }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`
}
