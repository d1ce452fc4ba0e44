import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { openVolume, makeVolume, type OpenedVolume } from '../../src/daemon/open-volume.js'
import type { Volume } from '../../src/fs/volume.js'

export const quietLogger = pino({ level: process.env.REPLFS_TEST_LOG ?? 'silent' })

export const ROOT = { uid: 0, gid: 0 }

export interface TestVolume extends OpenedVolume { vol: Volume, dir: string, close: () => Promise<void> }

/** A volume on a fresh store in a temp dir, without FUSE. */
export async function tempVolume (opts: { sizeLimit?: number, dir?: string } = {}): Promise<TestVolume> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'replfs-test-'))
  const opened = await openVolume(dir, { create: true, logger: quietLogger })
  const vol = makeVolume(opened, { sizeLimit: opts.sizeLimit ?? 2 ** 40, logger: quietLogger })
  return {
    ...opened,
    vol,
    dir,
    close: async () => {
      await opened.store.close()
      if (opts.dir === undefined) rmSync(dir, { recursive: true, force: true })
    }
  }
}

export async function stateDump (v: OpenedVolume): Promise<Array<[string, string]>> {
  const out: Array<[string, string]> = []
  for await (const [k, val] of v.state.stateEntries()) out.push([k.toString('hex'), val.toString('hex')])
  return out
}

/** Creates `path` holding `data` (through the Volume API, as the kernel would). */
export async function putFile (vol: Volume, path: string, data: string | Buffer): Promise<void> {
  const fh = await vol.create(path, 0o644, ROOT)
  const b = Buffer.from(data)
  try {
    await vol.write(fh, b, b.length, 0)
  } finally {
    await vol.release(fh)
  }
}
