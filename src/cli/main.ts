import { Command } from 'commander'
import { registerFsck } from './fsck.js'
import { registerInit } from './init.js'
import { registerMount } from './mount.js'
import { registerRole } from './role.js'
import { registerStatus } from './status.js'
import { registerSnapshot } from './snapshot.js'
import { registerUmount } from './umount.js'
import { registerVerify } from './verify.js'
import { reportError } from './util.js'

// `replfs status | head`: a closed pipe ends the output, it is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => { if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0); else throw err })

const program = new Command()
program
  .name('replfs')
  .description('A replicated filesystem: a FUSE mount whose files live as blocks in LevelDB')
  .showHelpAfterError()
registerInit(program)
registerMount(program)
registerUmount(program)
registerStatus(program)
registerFsck(program)
registerVerify(program)
registerSnapshot(program)
registerRole(program)

program.parseAsync(process.argv).catch(reportError)
