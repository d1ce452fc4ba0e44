import { ROOT_INO } from '../store/keys.js'
import type { Inode } from '../store/inode.js'
import type { InodeVolume } from './inode-volume.js'

/** The inode a path's components lead to from the root, one lookup per component as the kernel does. */
export async function lookupPath (fs: InodeVolume, components: readonly string[]): Promise<Inode> {
  let n = await fs.inode(ROOT_INO)
  for (const name of components) n = await fs.lookup(n.ino, name)
  return n
}
