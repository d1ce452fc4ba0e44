import type { Command } from 'commander'
import { callControl } from '../daemon/control.js'
import { ReplfsError } from '../errors.js'
import type { SnapshotInfo } from '../fs/volume.js'
import { type Decision, parseKeep, retain } from './retention.js'

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
    .option('--json', 'print JSON')
    .action(async (mnt: string, name: string, o: { writable?: boolean, json?: boolean }) => {
      const s = await callControl(mnt, { cmd: 'snapshot', op: 'create', name, writable: o.writable === true }) as SnapshotInfo
      if (o.json === true) { printJson(s); return }
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
    .option('--json', 'print JSON')
    .action(async (mnt: string, name: string, o: { json?: boolean }) => {
      const r = await callControl(mnt, { cmd: 'snapshot', op: 'delete', name }) as { freedBytes: number }
      if (o.json === true) { printJson({ name, ...r }); return }
      process.stdout.write(`deleted snapshot ${name}; ${r.freedBytes} bytes freed\n`)
    })

  snap.command('restore')
    .description('make the whole volume (or, with --path, one file or tree) what the snapshot holds; the snapshot stays')
    .argument('<mountpoint>').argument('<name>')
    .option('--path <path>', 'restore only this file or directory tree (relative to the volume root); what is there now is replaced')
    .option('--json', 'print JSON')
    .action(async (mnt: string, name: string, o: { path?: string, json?: boolean }) => {
      const s = await callControl(mnt, { cmd: 'snapshot', op: 'restore', name, path: o.path }) as SnapshotInfo
      if (o.json === true) { printJson(s); return }
      process.stdout.write(`restored ${o.path === undefined ? mnt : `${o.path} in ${mnt}`} from snapshot ${s.name} (taken at seq ${s.seq})\n`)
    })

  snap.command('prune')
    .description('delete old snapshots whose name starts with --prefix, keeping the newest of each of the last N hours, days, weeks, months, years (never others, never the newest)')
    .argument('<mountpoint>')
    .requiredOption('--keep <rules>', 'hourly=N,daily=N,weekly=N,monthly=N,yearly=N (any of them), e.g. hourly=24,daily=7; periods are in UTC')
    .option('--prefix <prefix>', 'only snapshots whose name starts with this are considered', 'auto-')
    .option('--dry-run', 'print what would be deleted, delete nothing')
    .option('--json', 'print JSON')
    .action(async (mnt: string, o: { keep: string, prefix: string, dryRun?: boolean, json?: boolean }) => {
      const rules = parseKeep(o.keep)
      if (o.prefix === '') throw new ReplfsError('BAD_ARGUMENT', '--prefix must not be empty: it would make every snapshot a candidate', { hint: 'Name the prefix your schedule uses, e.g. --prefix auto-' })
      const list = await callControl(mnt, { cmd: 'snapshot', op: 'list', space: false }) as SnapshotInfo[]
      // A diverged snapshot holds writes nobody else has: it is the operator's to delete.
      const matching = list.filter(s => s.name.startsWith(o.prefix) && s.diverged !== true)
      const { keep, destroy } = retain(matching, rules)
      const deleted: Decision[] = []
      const report = (): void => printPrune({ prefix: o.prefix, dryRun: o.dryRun === true, keep, deleted: o.dryRun === true ? destroy : deleted, ignored: list.length - matching.length }, o.json === true)
      if (o.dryRun !== true) {
        for (const d of destroy) {
          try {
            await callControl(mnt, { cmd: 'snapshot', op: 'delete', name: d.name })
          } catch (err) {
            report()
            throw err
          }
          deleted.push(d)
        }
      }
      report()
    })

  snap.command('refresh')
    .description('make the snapshot equal the volume as it is now')
    .argument('<mountpoint>').argument('<name>')
    .option('--json', 'print JSON')
    .action(async (mnt: string, name: string, o: { json?: boolean }) => {
      const s = await callControl(mnt, { cmd: 'snapshot', op: 'refresh', name }) as SnapshotInfo
      if (o.json === true) { printJson(s); return }
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

function printJson (v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + '\n')
}

function printPrune (r: { prefix: string, dryRun: boolean, keep: Decision[], deleted: Decision[], ignored: number }, json: boolean): void {
  if (json) { printJson(r); return }
  for (const d of r.keep) process.stdout.write(`keep          ${d.name.padEnd(32)} ${d.created}  (${d.reasons.join(', ')})\n`)
  for (const d of r.deleted) process.stdout.write(`${r.dryRun ? 'would delete' : 'deleted     '}  ${d.name.padEnd(32)} ${d.created}\n`)
  process.stdout.write(`${r.keep.length} kept, ${r.deleted.length} ${r.dryRun ? 'would be deleted (dry run)' : 'deleted'}; ${r.ignored} not matching ${JSON.stringify(r.prefix)} left alone\n`)
}
