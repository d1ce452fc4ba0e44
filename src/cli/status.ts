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
      print(s, '')
    })
}

function print (o: Record<string, unknown>, indent: string): void {
  for (const [k, v] of Object.entries(o)) {
    if (v !== null && typeof v === 'object') {
      process.stdout.write(`${indent}${k}:\n`)
      print(v as Record<string, unknown>, indent + '  ')
    } else {
      process.stdout.write(`${indent}${k}: ${String(v)}\n`)
    }
  }
}
