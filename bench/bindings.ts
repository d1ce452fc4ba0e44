// The two FUSE bindings side by side, in one run: replfs mounted on the project's libfuse 3
// low-level binding (the default) and on fuse-native (libfuse 2's path API, kept until it
// leaves), alternating ABAB on fresh stores so the machine's drift falls on both alike.
// Env: BENCH_BINDING_ROUNDS (default 2).
import fsp from 'node:fs/promises'
import { join } from 'node:path'
import { dropCaches, seqRead, seqWrite, smallFiles, type SmallResult } from './fsbench.js'
import { startMount, stopMount } from './mounts.js'
import { pct } from './pair.js'

const ROUNDS = Number(process.env.BENCH_BINDING_ROUNDS ?? '2')
const BINDINGS = ['libfuse3', 'fuse-native'] as const
type Binding = typeof BINDINGS[number]

export interface BindingRun { write: number, read: number, small: SmallResult }
export interface BindingsResults {
  rounds: Array<Record<Binding, BindingRun>>
  /** libfuse3 / fuse-native, median over the rounds, per figure (above 1: the new binding is faster). */
  ratios: Record<'write' | 'read' | 'create' | 'stat' | 'delete', number>
}

async function one (work: string, binding: Binding, round: number, bytes: number, files: number): Promise<BindingRun> {
  const dir = join(work, `binding-${binding}-${round}`)
  const mnt = join(dir, 'mnt')
  const store = join(dir, 'store')
  await fsp.mkdir(mnt, { recursive: true })
  const args = ['--fuse-binding', binding]
  try {
    dropCaches()
    let m = await startMount('replfs', mnt, store, args, `replfs ${binding}`)
    const file = join(mnt, 'big.bin')
    const write = await seqWrite(file, bytes)
    await stopMount(m)
    m = await startMount('replfs', mnt, store, args, `replfs ${binding}`)
    dropCaches()
    const read = await seqRead(file, bytes)
    await fsp.unlink(file)
    const small = await smallFiles(join(mnt, 'small'), files)
    await stopMount(m)
    console.error(`[bindings] round ${round + 1} ${binding}: write ${write.toFixed(0)} MB/s, read ${read.toFixed(0)} MB/s, create ${small.create.toFixed(0)}, stat ${small.stat.toFixed(0)}, delete ${small.delete.toFixed(0)} files/s`)
    return { write, read, small }
  } finally {
    await fsp.rm(dir, { recursive: true, force: true })
  }
}

export async function bindingsBench (work: string, bytes: number, files: number): Promise<BindingsResults> {
  const rounds: BindingsResults['rounds'] = []
  for (let i = 0; i < ROUNDS; i++) {
    const order = i % 2 === 0 ? BINDINGS : [...BINDINGS].reverse()
    const r: Partial<Record<Binding, BindingRun>> = {}
    for (const b of order) r[b] = await one(work, b, i, bytes, files)
    rounds.push(r as Record<Binding, BindingRun>)
  }
  const ratio = (f: (x: BindingRun) => number): number => pct(rounds.map(r => f(r.libfuse3) / f(r['fuse-native'])), 0.5)
  return {
    rounds,
    ratios: { write: ratio(x => x.write), read: ratio(x => x.read), create: ratio(x => x.small.create), stat: ratio(x => x.small.stat), delete: ratio(x => x.small.delete) }
  }
}

export function reportBindings (b: BindingsResults): void {
  const f = (x: number): string => x.toFixed(2)
  console.log(`FUSE bindings (libfuse3 / fuse-native, median of ${b.rounds.length} ABAB rounds, same run): write ${f(b.ratios.write)}x, read ${f(b.ratios.read)}x, create ${f(b.ratios.create)}x, stat ${f(b.ratios.stat)}x, delete ${f(b.ratios.delete)}x`)
}
