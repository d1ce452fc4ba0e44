import t from 'tap'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { cliAsync, sleep, status, verify, waitCaughtUp, waitFor } from '../helpers/replicated.js'
import { type HostNode, startHostPair, twoHosts } from '../helpers/netns.js'

t.setTimeout(900_000)

// A seeded schedule of faults and operator actions on two real hosts (network namespaces), under a
// writer that appends numbered records and fsyncs each: whatever fsync acknowledged must be on
// both hosts at the end, the stores identical (verify) and fsck-clean. Failover happens only
// while the secondary is caught up, as an operator following the runbook would do it.

const EVENTS = Number(process.env.REPLFS_FAULT_EVENTS ?? '50')
const SEED = Number(process.env.REPLFS_FAULT_SEED ?? '20261202')
const FILES = 8

function prng (seed: number): () => number {
  let x = seed >>> 0
  return () => { x = (x * 1664525 + 1013904223) >>> 0; return x / 2 ** 32 }
}

interface Writer {
  acked: number[]
  attempts: number
  failures: number
  target: HostNode | null
  /** Takes the writer off its target and waits for its write in flight: a write after the mount is detached would land in the bare directory. */
  park: () => Promise<void>
  stop: () => Promise<void>
}

/** Appends "rec N" to one of FILES files on whichever node is the target, fsyncing each; records what was acknowledged. */
function startWriter (): Writer {
  let running = true
  let idle: () => void = () => {}
  let busy = false
  const w: Writer = {
    acked: [], attempts: 0, failures: 0, target: null, stop: async () => {},
    park: async () => {
      w.target = null
      if (busy) await new Promise<void>(resolve => { idle = resolve })
    }
  }
  const loop = (async () => {
    let n = 0
    while (running) {
      busy = false
      idle()
      const node = w.target
      if (node === null) { await sleep(20); continue }
      busy = true
      n++
      w.attempts++
      try {
        const fh = await fs.promises.open(join(node.mnt, `f-${n % FILES}`), 'a')
        try {
          await fh.appendFile(`rec ${n}\n`)
          await fh.sync()
        } finally {
          await fh.close()
        }
        w.acked.push(n)
      } catch {
        // EROFS (fenced, secondary), ENOTCONN (killed): not acknowledged, so not promised.
        w.failures++
        await sleep(30)
      }
    }
  })()
  w.stop = async () => { running = false; await loop }
  return w
}

async function isWritable (n: HostNode): Promise<boolean> {
  const s = await status(n).catch(() => null)
  return s !== null && s.readOnly === false
}

async function roleOf (n: HostNode): Promise<string | null> {
  const s = await status(n).catch(() => null)
  return s === null ? null : String(s.role)
}

t.test(`${EVENTS} seeded faults and role changes under an fsync'd writer: nothing acknowledged is lost, verify identical, fsck clean`, async t => {
  const hosts = await twoHosts(t)
  const pair = await startHostPair(hosts, { mode: 'sync', peerTimeout: 2 })
  const nodes: [HostNode, HostNode] = [pair.primary, pair.secondary]
  let primary = 0
  const rnd = prng(SEED)
  const w = startWriter()
  t.teardown(async () => { await w.stop() })
  w.target = nodes[primary]
  await waitCaughtUp(nodes[primary], 60_000)
  const counts: Record<string, number> = {}
  const waitPrimaryReady = async (i: number): Promise<void> => {
    await waitFor(`node ${i} writable`, async () => await isWritable(nodes[i]), ok => ok, 60_000)
    w.target = nodes[i]
    await waitCaughtUp(nodes[i], 60_000)
  }
  for (let e = 0; e < EVENTS; e++) {
    const p = nodes[primary]
    const s = nodes[1 - primary]
    const kinds = ['kill-secondary', 'kill-primary', 'cut', 'failover', 'switchover', 'demote-promote'] as const
    const kind = kinds[Math.floor(rnd() * kinds.length)]
    counts[kind] = (counts[kind] ?? 0) + 1
    const pause = 100 + Math.floor(rnd() * 400)
    switch (kind) {
      case 'kill-secondary':
        await sleep(pause)
        await s.kill9()
        await sleep(pause)
        nodes[1 - primary] = await s.restart()
        await waitCaughtUp(p, 60_000)
        break
      case 'kill-primary':
        // Restarted, it is fenced until its secondary confirms it holds nothing newer.
        await sleep(pause)
        await w.park()
        await p.kill9()
        nodes[primary] = await p.restart()
        await waitPrimaryReady(primary)
        break
      case 'cut':
        hosts.cut()
        await sleep(pause + 2500)
        await hosts.heal()
        await waitCaughtUp(p, 60_000)
        break
      case 'failover': {
        // The runbook: the secondary is caught up, the primary dies, the secondary is promoted.
        await waitCaughtUp(p, 60_000)
        await sleep(pause)
        await w.park()
        await p.kill9()
        const r = await cliAsync(['promote', s.mnt, '--force'], { REPLFS_RUN_DIR: s.runDir }, 60_000)
        if (r.code !== 0) throw new Error(`promote --force failed: ${r.stderr}`)
        primary = 1 - primary
        w.target = s
        await sleep(pause)
        // The old primary comes back with its own command line, and follows the new one by itself.
        nodes[1 - primary] = await p.restart()
        await waitFor('the old primary to rejoin as secondary', async () => await roleOf(nodes[1 - primary]), r => r === 'secondary', 60_000)
        await waitCaughtUp(nodes[primary], 60_000)
        break
      }
      case 'switchover': {
        await waitCaughtUp(p, 60_000)
        const r = await cliAsync(['switchover', p.mnt, '--json'], { REPLFS_RUN_DIR: p.runDir }, 90_000)
        if (r.code !== 0) throw new Error(`switchover failed: ${r.stderr}`)
        primary = 1 - primary
        await waitPrimaryReady(primary)
        break
      }
      case 'demote-promote': {
        await waitCaughtUp(p, 60_000)
        const d = await cliAsync(['demote', p.mnt], { REPLFS_RUN_DIR: p.runDir }, 90_000)
        if (d.code !== 0) throw new Error(`demote failed: ${d.stderr}`)
        // The peer stepped down with everything here: no --force needed.
        const r = await cliAsync(['promote', s.mnt], { REPLFS_RUN_DIR: s.runDir }, 60_000)
        if (r.code !== 0) throw new Error(`promote after demote failed: ${r.stderr}`)
        primary = 1 - primary
        await waitPrimaryReady(primary)
        break
      }
    }
  }
  await sleep(300)
  await w.stop()
  const p = nodes[primary]
  const s = nodes[1 - primary]
  t.comment(`events: ${JSON.stringify(counts)}; writes: ${w.acked.length} acknowledged of ${w.attempts} attempts`)
  t.ok(w.acked.length > EVENTS, `${w.acked.length} records acknowledged by fsync`)
  await waitCaughtUp(p, 60_000)
  const v = await verify(p)
  t.equal(v.code, 0, `verify on the final primary: ${v.output.trim().split('\n')[0]}`)
  for (const n of [p, s]) {
    const have = new Set<number>()
    for (let f = 0; f < FILES; f++) {
      const path = join(n.mnt, `f-${f}`)
      if (!fs.existsSync(path)) continue
      for (const line of fs.readFileSync(path, 'utf8').split('\n')) if (line.startsWith('rec ')) have.add(Number(line.slice(4)))
    }
    const missing = w.acked.filter(x => !have.has(x))
    t.same(missing.slice(0, 20), [], `${n === p ? 'primary' : 'secondary'} (${n.host.name}): ${missing.length} acknowledged records missing`)
  }
  await s.stop()
  await p.stop()
  for (const n of [p, s]) {
    const r = await cliAsync(['fsck', '--store', n.store], {}, 120_000)
    t.equal(r.code, 0, `fsck of ${n.host.name}'s store: ${(r.stdout + r.stderr).trim().split('\n').slice(-1)[0]}`)
  }
})
