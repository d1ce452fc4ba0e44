import * as fs from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { mountVolume, tempDir } from '../helpers/mount.js'
import { cliAsync, freePort, waitFor, writeSecret } from '../helpers/replicated.js'

t.setTimeout(120_000)

t.test('a pair mounted with --name from config files of the same shape (role, listen and peer swapped) replicates', async t => {
  const base = tempDir()
  t.teardown(() => fs.rmSync(base, { recursive: true, force: true }))
  const secret = writeSecret(join(base, 'data.secret'))
  const [portA, portB] = [await freePort(), await freePort()]
  // One file per host, as /etc/replfs/data.conf on each; REPLFS_CONFIG_DIR stands for /etc/replfs.
  const conf = (host: 'a' | 'b', role: string, listen: number, peer: number): string => {
    const dir = join(base, `etc-${host}`)
    fs.mkdirSync(dir)
    fs.writeFileSync(join(dir, 'data.conf'), [
      '# volume data',
      `store = ${join(base, `store-${host}`)}`,
      `role = ${role}`,
      `listen = 127.0.0.1:${listen}`,
      `peer = 127.0.0.1:${peer}`,
      `secret-file = ${secret}`,
      'mode = async',
      'peer-timeout = 3',
      'attr-timeout = 0',
      ''
    ].join('\n'))
    return dir
  }
  const etcB = conf('b', 'secondary', portB, portA)
  const etcA = conf('a', 'primary', portA, portB)
  const mount = async (host: 'a' | 'b', etc: string): Promise<Awaited<ReturnType<typeof mountVolume>>> => {
    process.env.REPLFS_CONFIG_DIR = etc
    try {
      return await mountVolume(t, { mnt: join(base, `mnt-${host}`), runDir: join(base, `run-${host}`), store: join(base, `store-${host}`), extraArgs: ['--name', 'data'] })
    } finally {
      delete process.env.REPLFS_CONFIG_DIR
    }
  }
  const b = await mount('b', etcB)
  const a = await mount('a', etcA)
  const body = Buffer.alloc(300_000, 42)
  fs.writeFileSync(join(a.mnt, 'f'), body)
  const st = async (m: typeof a): Promise<{ role: string, seq: number, replication: { role: string, connected: boolean, phase: string, mode: string, lagRecords: number | null } }> =>
    JSON.parse((await cliAsync(['status', m.mnt, '--json'], { REPLFS_RUN_DIR: m.runDir })).stdout)
  const sa = await waitFor('B to acknowledge everything', async () => await st(a), s => s.replication.phase === 'streaming' && s.replication.lagRecords === 0)
  const sb = await st(b)
  t.equal(sa.replication.role, 'primary', 'A: primary, from its file')
  t.equal(sb.replication.role, 'secondary', 'B: secondary, from its file')
  t.ok(sb.replication.connected, 'B connected')
  t.equal(sb.seq, sa.seq, 'B applied everything A has')
  t.ok(fs.readFileSync(join(b.mnt, 'f')).equals(body), 'B reads the file A wrote')
  t.equal(sa.replication.mode, 'async', 'mode = async (not the default) came from the file')
})
