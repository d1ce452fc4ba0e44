import { Command } from 'commander'
import { registerFsck } from './fsck.js'
import { registerInit } from './init.js'
import { registerMount } from './mount.js'
import { registerStatus } from './status.js'
import { registerUmount } from './umount.js'
import { registerVerify } from './verify.js'
import { reportError } from './util.js'

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

program.parseAsync(process.argv).catch(reportError)
