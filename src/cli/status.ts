import type { Command } from 'commander'
import { callControl } from '../daemon/control.js'

export function registerStatus (program: Command): void {
  program.command('status')
    .description('show the state of a mounted volume')
    .argument('<mountpoint>')
    .option('--json', 'print JSON')
    .action(async (mnt: string, o: { json?: boolean }) => {
      const s = await callControl(mnt, { cmd: 'status' }) as Record<string, unknown>
      if (o.json === true) { process.stdout.write(JSON.stringify(s, null, 2) + '\n'); return }
      for (const [k, v] of Object.entries(s)) process.stdout.write(`${k}: ${String(v)}\n`)
    })
}
