import { baseOf, layerOf, prefixEnd } from './keys.js'
import type { Store } from './store.js'

/** A logical key's visible value in a view and the chain position of the layer holding it. */
export interface Version { value: Buffer | undefined, depth: number }
const ABSENT: Version = { value: undefined, depth: -1 }

/**
 * Resolves layered keys for one view of the volume: a chain of layers, newest first. The value
 * of a logical key is the one in the first layer of the chain that has it; an empty value is a
 * tombstone ("absent in this view").
 */
export class LayerView {
  readonly chain: readonly number[]
  private readonly chainSet: Set<number>
  constructor (readonly store: Store, chain: readonly number[]) {
    this.chain = chain
    this.chainSet = new Set(chain)
  }

  get top (): number { return this.chain[0] }

  async get (keyFor: (layer: number) => Buffer): Promise<Buffer | undefined> {
    if (this.chain.length === 1) {
      const v = await this.store.get(keyFor(this.chain[0]))
      return v === undefined || v.length === 0 ? undefined : v
    }
    const vals = await this.store.getMany(this.chain.map(keyFor))
    for (const v of vals) if (v !== undefined) return v.length === 0 ? undefined : v
    return undefined
  }

  /** Looks up many logical keys at once; `keyFor(i, layer)` builds key i in a layer. */
  async getMany (n: number, keyFor: (i: number, layer: number) => Buffer): Promise<Array<Buffer | undefined>> {
    return (await this.versions(n, keyFor)).map(v => v.value)
  }

  /**
   * Like getMany, also telling where each visible version lives: depth 0 is the top layer,
   * -1 means absent (or tombstoned) in this view.
   */
  async versions (n: number, keyFor: (i: number, layer: number) => Buffer): Promise<Version[]> {
    const L = this.chain.length
    const keys: Buffer[] = new Array(n * L)
    for (let i = 0; i < n; i++) for (let j = 0; j < L; j++) keys[i * L + j] = keyFor(i, this.chain[j])
    const vals = await this.store.getMany(keys)
    const out: Version[] = new Array(n)
    for (let i = 0; i < n; i++) {
      out[i] = ABSENT
      for (let j = 0; j < L; j++) {
        const v = vals[i * L + j]
        if (v !== undefined) { out[i] = v.length === 0 ? ABSENT : { value: v, depth: j }; break }
      }
    }
    return out
  }

  /**
   * Scans the logical keys under `prefix` in this view: yields each base key once with its
   * visible value and the layer it came from; tombstoned keys are skipped.
   */
  async * scan (prefix: Buffer, opts: { values?: boolean, gte?: Buffer, lt?: Buffer } = {}): AsyncGenerator<{ base: Buffer, value: Buffer, layer: number }> {
    let lastBase: Buffer | null = null
    for await (const [k, v] of this.store.iterate(opts.gte ?? prefix, opts.lt ?? prefixEnd(prefix), { values: opts.values ?? true })) {
      const layer = layerOf(k)
      if (!this.chainSet.has(layer)) continue
      const base = baseOf(k)
      if (lastBase !== null && base.equals(lastBase)) continue
      lastBase = base
      if (opts.values !== false && v.length === 0) continue
      yield { base, value: v, layer }
    }
  }
}
