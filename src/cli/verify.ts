import type { Command } from 'commander'
import { callControl } from '../daemon/control.js'
import type { VerifyResult } from '../repl/primary.js'

export function registerVerify (program: Command): void {
  program.command('verify')
    .description('compare the state digests of the primary and its secondary at one sequence number (run on the primary); exit 0 = identical')
    .argument('<mountpoint>', 'the primary\'s mount point')
    .option('--json', 'print JSON')
    .action(async (mnt: string, o: { json?: boolean }) => {
      const r = await callControl(mnt, { cmd: 'verify' }) as VerifyResult
      if (o.json === true) process.stdout.write(JSON.stringify(r, null, 2) + '\n')
      else {
        process.stdout.write(`seq ${r.seq}: ${r.identical ? 'identical' : 'DIFFERENT'}\n`)
        process.stdout.write(`  primary   ${r.primary.digest} (${r.primary.entries} keys, ${r.primary.bytes} bytes)\n`)
        process.stdout.write(`  secondary ${r.secondary.digest} (${r.secondary.entries} keys, ${r.secondary.bytes} bytes)\n`)
      }
      if (!r.identical) process.exitCode = 1
    })
}
