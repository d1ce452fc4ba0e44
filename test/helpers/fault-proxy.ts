import { fork, type ChildProcess } from 'node:child_process'
import { createServer, connect, type Server, type Socket } from 'node:net'
import { fileURLToPath, pathToFileURL } from 'node:url'

/**
 * A TCP proxy for the primary -> secondary replication connection, with switchable faults.
 * The primary's --peer points at the proxy; the proxy dials the secondary's --listen.
 *
 * It runs in its own child process, controlled over IPC: the test process often blocks in
 * synchronous fs calls (or spawnSync) on a sync-mode primary, whose writes wait for the
 * secondary's ACK, which travels through this proxy. An in-process proxy would deadlock that.
 *
 * "up" is primary -> secondary, "down" is secondary -> primary.
 */

export interface ProxyStats {
  /** bytes forwarded primary -> secondary / secondary -> primary, over all connections */
  up: number
  down: number
  /** connections accepted (including refused ones) and currently open */
  accepted: number
  open: number
  refused: number
  corrupted: number
  mode: string
}

export interface FaultProxy {
  port: number
  /** forward everything unchanged (also ends a stall or a delay) */
  pass: () => Promise<void>
  /** destroy all current connections; with refuseMs, also drop new ones for that long */
  cut: (refuseMs?: number) => Promise<void>
  /** add `ms` of latency to every chunk, each direction (order kept) */
  delay: (ms: number) => Promise<void>
  /** flip one byte in the primary -> secondary direction, `offset` bytes after what has been forwarded so far */
  corruptNext: (offset?: number) => Promise<void>
  /** stop forwarding on the current connections without closing them (new connections pass) */
  stall: () => Promise<void>
  stats: () => Promise<ProxyStats>
  close: () => Promise<void>
}

interface T { teardown: (fn: () => unknown) => void }

type Req = { id: number, op: 'pass' | 'cut' | 'delay' | 'corrupt' | 'stall' | 'stats' | 'close', arg?: number }

/** Starts a proxy child listening on a free 127.0.0.1 port that forwards to 127.0.0.1:targetPort. */
export async function startFaultProxy (t: T, targetPort: number): Promise<FaultProxy> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ['--fault-proxy-child', String(targetPort)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  let nextId = 1
  const waiting = new Map<number, (v: unknown) => void>()
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', code => reject(new Error(`fault proxy exited (${String(code)}) before listening`)))
    child.on('message', (m: { id?: number, port?: number, result?: unknown }) => {
      if (m.port !== undefined) resolve(m.port)
      else if (m.id !== undefined) { waiting.get(m.id)?.(m.result); waiting.delete(m.id) }
    })
  })
  const call = async (op: Req['op'], arg?: number): Promise<unknown> => {
    const id = nextId++
    const p = new Promise<unknown>(resolve => waiting.set(id, resolve))
    child.send({ id, op, arg } satisfies Req)
    return await p
  }
  return {
    port,
    pass: async () => { await call('pass') },
    cut: async (refuseMs = 0) => { await call('cut', refuseMs) },
    delay: async ms => { await call('delay', ms) },
    corruptNext: async (offset = 0) => { await call('corrupt', offset) },
    stall: async () => { await call('stall') },
    stats: async () => await call('stats') as ProxyStats,
    close: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      await call('close').catch(() => {})
      child.disconnect()
      await exited
    }
  }
}

// ---------------------------------------------------------------- the proxy process itself

interface Pair { up: Socket, down: Socket, stalled: boolean, held: Array<[Socket, Buffer]> }

function runProxy (targetPort: number): void {
  const pairs = new Set<Pair>()
  const stats: ProxyStats = { up: 0, down: 0, accepted: 0, open: 0, refused: 0, corrupted: 0, mode: 'pass' }
  let delayMs = 0
  let refuseUntil = 0
  /** absolute index (in the up byte count) of the byte to flip; -1: none */
  let corruptAt = -1
  // Each direction keeps order under delay: a chunk leaves no earlier than the one before it.
  const lastDue = new WeakMap<Socket, number>()

  const forward = (pair: Pair, to: Socket, chunk: Buffer, up: boolean): void => {
    if (up) {
      if (corruptAt >= stats.up && corruptAt < stats.up + chunk.length) {
        chunk = Buffer.from(chunk)
        chunk[corruptAt - stats.up] ^= 0x5a
        stats.corrupted++
        corruptAt = -1
      }
      stats.up += chunk.length
    } else stats.down += chunk.length
    if (pair.stalled) { pair.held.push([to, chunk]); return }
    if (delayMs <= 0) { if (!to.destroyed) to.write(chunk); return }
    const due = Math.max(Date.now() + delayMs, lastDue.get(to) ?? 0)
    lastDue.set(to, due)
    setTimeout(() => { if (!to.destroyed && !pair.stalled) to.write(chunk) }, due - Date.now())
  }

  const server: Server = createServer(up => {
    stats.accepted++
    if (Date.now() < refuseUntil) { stats.refused++; up.destroy(); return }
    up.setNoDelay(true)
    const down = connect({ host: '127.0.0.1', port: targetPort })
    down.setNoDelay(true)
    const pair: Pair = { up, down, stalled: false, held: [] }
    pairs.add(pair)
    stats.open++
    let closed = false
    const close = (): void => {
      if (closed) return
      closed = true
      pairs.delete(pair)
      stats.open--
      up.destroy()
      down.destroy()
    }
    up.on('data', (c: Buffer) => forward(pair, down, c, true))
    down.on('data', (c: Buffer) => forward(pair, up, c, false))
    for (const s of [up, down]) {
      s.on('error', close)
      s.on('close', close)
      s.on('end', close)
    }
  })
  server.listen(0, '127.0.0.1', () => {
    const addr = server.address()
    process.send!({ port: typeof addr === 'object' && addr !== null ? addr.port : 0 })
  })

  process.on('message', (m: Req) => {
    let result: unknown = null
    switch (m.op) {
      case 'pass':
        delayMs = 0
        refuseUntil = 0
        stats.mode = 'pass'
        for (const p of pairs) {
          if (p.stalled) {
            // a stalled connection is usually dead by now; if not, deliver what was held
            p.stalled = false
            for (const [to, c] of p.held.splice(0)) if (!to.destroyed) to.write(c)
          }
        }
        break
      case 'cut':
        refuseUntil = Date.now() + (m.arg ?? 0)
        stats.mode = 'cut'
        for (const p of [...pairs]) { p.up.destroy(); p.down.destroy() }
        break
      case 'delay':
        delayMs = m.arg ?? 0
        stats.mode = `delay ${delayMs}`
        break
      case 'corrupt':
        corruptAt = stats.up + (m.arg ?? 0)
        break
      case 'stall':
        stats.mode = 'stall'
        for (const p of pairs) p.stalled = true
        break
      case 'stats':
        result = { ...stats }
        break
      case 'close':
        for (const p of [...pairs]) { p.up.destroy(); p.down.destroy() }
        server.close()
        break
    }
    process.send!({ id: m.id, result })
    if (m.op === 'close') setImmediate(() => process.exit(0))
  })
  process.on('disconnect', () => process.exit(0))
}

if (process.argv[2] === '--fault-proxy-child' && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runProxy(Number(process.argv[3]))
}
