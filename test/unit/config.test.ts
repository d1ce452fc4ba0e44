import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Command } from 'commander'
import t from 'tap'
import { loadMountConfig } from '../../src/cli/config.js'
import { registerMount } from '../../src/cli/mount.js'
import { ReplfsError } from '../../src/errors.js'
import { cli } from '../helpers/mount.js'

const dir = mkdtempSync(join(tmpdir(), 'replfs-test-config-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

let n = 0
function confFile (text: string, name = `v${++n}`): string {
  const file = join(dir, `${name}.conf`)
  writeFileSync(file, text)
  return file
}

/**
 * Parses `argv` with the real `replfs mount` command (its action replaced, so nothing mounts) and
 * runs loadMountConfig as the action does: the options it would mount with.
 */
async function mountOptions (argv: string[]): Promise<{ mountpoint: string, volume?: string, o: Record<string, unknown> }> {
  const program = new Command().exitOverride()
  registerMount(program)
  const mount = program.commands.find(c => c.name() === 'mount')!
  let out: { mountpoint: string, volume?: string, o: Record<string, unknown> } | null = null
  mount.action((mnt: string | undefined, o: Record<string, unknown>, cmd: Command) => {
    out = { ...loadMountConfig(cmd, mnt, o), o }
  })
  await program.parseAsync(['node', 'replfs', 'mount', ...argv])
  return out!
}

/** The ReplfsError that `argv` is refused with. */
async function refusal (argv: string[]): Promise<ReplfsError> {
  try {
    await mountOptions(argv)
  } catch (err) {
    if (err instanceof ReplfsError) return err
    throw err
  }
  throw new Error(`accepted: ${argv.join(' ')}`)
}

const FULL = `# host A of the pair "data"
; both comment styles
mountpoint = /mnt/data
store = /var/lib/replfs/data
size = 10G
attr-timeout = 0.5
role = primary
listen = 0.0.0.0:7410
peer   =   hostB:7410
secret-file = /etc/replfs/data.secret
mode = async
journal-size = 2G
peer-timeout = 30
after-split-brain = discard-younger
allow-other = yes
create = no
metrics = 127.0.0.1:9410
`

t.test('every key of a config file reaches the mount options, under those given on the command line', async t => {
  const file = confFile(FULL)
  const r = await mountOptions(['--config', file, '--size', '20G', '--peer', 'hostC:7410'])
  t.equal(r.mountpoint, '/mnt/data', 'mount point from the file')
  t.equal(r.volume, 'v1', 'the volume is named by the file name')
  t.match(r.o, {
    store: '/var/lib/replfs/data',
    size: '20G', // command line wins
    peer: 'hostC:7410', // command line wins
    attrTimeout: '0.5', // the file beats the built-in default of 1
    role: 'primary',
    listen: '0.0.0.0:7410',
    secretFile: '/etc/replfs/data.secret',
    mode: 'async',
    journalSize: '2G',
    peerTimeout: '30',
    afterSplitBrain: 'discard-younger',
    allowOther: true,
    create: false, // `create = no` is --no-create
    metrics: '127.0.0.1:9410'
  })
  t.notOk('mountpoint' in r.o, 'the mount point is not passed on as an option')

  const arg = await mountOptions(['/mnt/other', '--config', file])
  t.equal(arg.mountpoint, '/mnt/other', 'a mount point argument overrides the file\'s')
  const noCfg = await mountOptions(['/mnt/x', '--store', '/s'])
  t.match(noCfg.o, { store: '/s', attrTimeout: '1', create: true, mode: 'sync' }, 'without a file: the defaults')
})

t.test('--name VOLUME reads REPLFS_CONFIG_DIR/VOLUME.conf; bad names and --config with --name are refused', async t => {
  confFile('store = /var/lib/replfs/web\nmountpoint = /mnt/web\n', 'web')
  process.env.REPLFS_CONFIG_DIR = dir
  t.teardown(() => { delete process.env.REPLFS_CONFIG_DIR })
  const r = await mountOptions(['--name', 'web'])
  t.equal(r.mountpoint, '/mnt/web')
  t.equal(r.volume, 'web')
  t.equal(r.o.store, '/var/lib/replfs/web')
  t.match((await refusal(['--name', '../etc/passwd'])).message, /--name "..\/etc\/passwd" is not a volume name/)
  t.match((await refusal(['--name', 'web', '--config', '/x.conf'])).message, /either --config FILE or --name VOLUME/)
  const missing = await refusal(['--name', 'nosuch'])
  t.match(missing.message, new RegExp(`cannot read the config file ${join(dir, 'nosuch.conf')} \\(ENOENT\\)`))
})

t.test('mistakes in a config file are refused with the file, the line and what is wrong', async t => {
  const cases: Array<[string, string, RegExp, RegExp?]> = [
    ['unknown key', 'store = /s\nstorage = /x\n', /line 2: unknown key "storage"/, /Known keys: .*secret-file/],
    ['an option spelled with dashes', '--store = /s\n', /line 1: unknown key "--store"/, /without the leading dashes: store = /],
    ['a duplicate key', 'store = /a\n\n# again\nstore = /b\n', /line 4: store is given twice \(first on line 1\)/],
    ['no "="', 'store /s\n', /line 1: expected "key = value"/],
    ['an empty value', 'store =\n', /line 1: store has no value/],
    ['a bad size', 'store = /s\nsize = lots\n', /line 2: size must be a size of at least 4K/],
    ['a size below the minimum', 'journal-size = 1K\n', /line 1: journal-size must be a size of at least/],
    ['a non-numeric timeout', 'attr-timeout = soon\n', /line 1: attr-timeout must be a number of seconds from 0 to 86400/],
    ['an infinite timeout', 'peer-timeout = Infinity\n', /line 1: peer-timeout must be a number of seconds/],
    ['a bad address', 'peer = hostB\n', /line 1: peer must be host:port/],
    ['a bad metrics address', 'metrics = 127.0.0.1:99999\n', /line 1: metrics must be host:port/],
    ['a bad fingerprint', 'peer-fingerprint = sha256:abc\n', /line 1: peer-fingerprint/],
    ['a bad role', 'role = master\n', /line 1: role must be one of primary, secondary, not "master"/],
    ['a bad mode', 'mode = fast\n', /line 1: mode must be one of sync, async/],
    ['a flag that is not yes or no', 'allow-other = maybe\n', /line 1: allow-other must be yes or no/],
    ['a relative path', 'store = data\n', /line 1: store must be an absolute path/],
    ['force (a decision of the moment, not of the file)', 'force = yes\n', /line 1: unknown key "force"/],
    ['foreground (how to run, not what)', 'foreground = yes\n', /line 1: unknown key "foreground"/]
  ]
  for (const [what, text, message, hint] of cases) {
    const file = confFile(text)
    const err = await refusal(['--config', file])
    t.equal(err.code, 'BAD_ARGUMENT', what)
    t.match(err.message, new RegExp(`^${file} ${message.source}`), `${what}: ${err.message}`)
    if (hint !== undefined) t.match(err.hint ?? '', hint, `${what}: hint ${err.hint ?? ''}`)
  }
})

t.test('without a store or a mount point from either place, mount says where to give them', async t => {
  const file = confFile('size = 1G\n')
  t.match((await refusal(['--config', file])).message, `no mount point: give it as the argument or mountpoint = in ${file}`)
  t.match((await refusal(['/mnt/x', '--config', file])).message, `no store: give --store DIR or store = in ${file}`)
  t.match((await refusal(['/mnt/x'])).message, /^no store: give --store DIR$/)
})

t.test('replfs mount --config with a bad line exits 1 naming the line, and creates nothing', async t => {
  const store = join(dir, 'never-created')
  const mnt = join(dir, 'never-mounted')
  const file = confFile(`store = ${store}\nmountpoint = ${mnt}\nsize = 0\n`)
  for (const extra of [[], ['--foreground']]) {
    const r = cli(['mount', '--config', file, ...extra], { REPLFS_RUN_DIR: join(dir, 'run') })
    t.equal(r.code, 1, `exit code (${extra.join(' ') || 'background'})`)
    t.match(r.stderr, `replfs: ${file} line 3: size must be a size of at least 4K`)
  }
  t.notOk(existsSync(store), 'no store was created')
  t.notOk(existsSync(mnt), 'no mount point was created')
})
