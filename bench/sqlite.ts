// sqlite on a sync pair against the unreplicated mount: the `sqlite3` CLI runs 1,000 small
// transactions with `PRAGMA synchronous=FULL` (each commit fsyncs its journal and the database),
// alternating between the two targets, each target kept mounted on a fresh store. Beside the
// ratio: each mount process's CPU and disk bytes written per transaction (/proc/PID/io), the
// figures that do not depend on two "hosts" sharing this machine's cores and disk.
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fsp from 'node:fs/promises'
import { join } from 'node:path'
import { now } from './fsbench.js'
import { startMount, stopMount, type Mounted } from './mounts.js'
import { cpuSeconds, diskWriteBytes, pct, startPair, stopPair, waitCaughtUp } from './replication.js'

export interface SqliteRun { msPerTx: number, cpuMsPerTx: Record<string, number>, diskBytesPerTx: Record<string, number> }
export interface SqliteResults {
  transactions: number
  unreplicated: SqliteRun[]
  sync: SqliteRun[]
  /** Median over the rounds of (unreplicated ms per tx) / (sync ms per tx): the sync pair's speed as a fraction. */
  medianRatio: number
  sqliteVersion: string
}

function script (n: number): string {
  const lines = ['PRAGMA synchronous=FULL;', 'CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);']
  for (let i = 0; i < n; i++) lines.push(`BEGIN; INSERT INTO t (v) VALUES ('${'row ' + String(i).padStart(6, '0') + ' '.repeat(80)}'); COMMIT;`)
  lines.push('SELECT count(*) FROM t;')
  return lines.join('\n') + '\n'
}

async function run (dir: string, n: number, hosts: Record<string, Mounted>, sql: string): Promise<SqliteRun> {
  const db = join(dir, `bench-${process.hrtime.bigint()}.db`)
  const pids = Object.entries(hosts).map(([k, m]) => [k, m.child.pid!] as const)
  const cpu0 = pids.map(([, p]) => cpuSeconds(p))
  const io0 = pids.map(([, p]) => diskWriteBytes(p))
  const t0 = now()
  const out = execFileSync('sqlite3', [db], { input: sql, encoding: 'utf8', maxBuffer: 1 << 20 }).trim()
  const seconds = now() - t0
  if (out !== String(n)) throw new Error(`sqlite3 counted ${out} rows, expected ${n}`)
  const cpuMsPerTx: Record<string, number> = {}
  const diskBytesPerTx: Record<string, number> = {}
  pids.forEach(([k, p], i) => { cpuMsPerTx[k] = (cpuSeconds(p) - cpu0[i]) * 1000 / n; diskBytesPerTx[k] = (diskWriteBytes(p) - io0[i]) / n })
  await fsp.rm(db, { force: true })
  return { msPerTx: seconds * 1000 / n, cpuMsPerTx, diskBytesPerTx }
}

export async function sqliteBench (work: string): Promise<SqliteResults> {
  const secret = join(work, 'sqlite.secret')
  await fsp.writeFile(secret, randomBytes(32).toString('base64') + '\n', { mode: 0o600 })
  const n = Number(process.env.BENCH_SQLITE_TX ?? '1000')
  const rounds = Number(process.env.BENCH_SQLITE_ROUNDS ?? '3')
  const sql = script(n)
  const sqliteVersion = execFileSync('sqlite3', ['--version'], { encoding: 'utf8' }).split(' ')[0]
  const udir = join(work, 'sqlite-unrepl')
  await fsp.mkdir(join(udir, 'mnt'), { recursive: true })
  const u = await startMount('replfs', join(udir, 'mnt'), join(udir, 'store'), [], 'sqlite unreplicated')
  try {
    const p = await startPair(work, 'sqlite-sync', 'sync', secret)
    try {
      const res: SqliteResults = { transactions: n, unreplicated: [], sync: [], medianRatio: NaN, sqliteVersion }
      for (let i = 0; i < rounds; i++) {
        const order = i % 2 === 0 ? ['unreplicated', 'sync'] as const : ['sync', 'unreplicated'] as const
        for (const which of order) {
          const r = which === 'sync'
            ? await run(p.mntA, n, { primary: p.a, secondary: p.b }, sql)
            : await run(join(udir, 'mnt'), n, { mount: u }, sql)
          if (which === 'sync') await waitCaughtUp(p.mntA, now())
          res[which].push(r)
          console.error(`[sqlite] round ${i + 1}/${rounds} ${which}: ${r.msPerTx.toFixed(2)} ms per transaction`)
        }
      }
      res.medianRatio = pct(res.sync.map((s, i) => res.unreplicated[i].msPerTx / s.msPerTx), 0.5)
      return res
    } finally {
      await stopPair(p)
      await fsp.rm(join(work, 'sqlite-sync'), { recursive: true, force: true })
    }
  } finally {
    await stopMount(u)
    await fsp.rm(udir, { recursive: true, force: true })
  }
}

export function reportSqlite (r: SqliteResults): void {
  const ms = (xs: SqliteRun[]): string => xs.map(x => x.msPerTx.toFixed(2)).join('/')
  const per = (xs: SqliteRun[], f: (x: SqliteRun) => Record<string, number>, unit: (v: number) => string): string =>
    Object.keys(f(xs[0])).map(k => `${k} ${unit(pct(xs.map(x => f(x)[k]), 0.5))}`).join(', ')
  console.log(`sqlite ${r.sqliteVersion}, ${r.transactions} transactions (synchronous=FULL), alternating: sync pair ${ms(r.sync)} ms/tx vs unreplicated ${ms(r.unreplicated)} ms/tx;` +
    ` median ratio ${r.medianRatio.toFixed(2)}x (target >= 0.50 ${r.medianRatio >= 0.5 ? 'ok' : 'MISSED'})`)
  console.log(`  per transaction (medians): CPU ms: sync ${per(r.sync, x => x.cpuMsPerTx, v => v.toFixed(2))}; unreplicated ${per(r.unreplicated, x => x.cpuMsPerTx, v => v.toFixed(2))}`)
  console.log(`  disk bytes written: sync ${per(r.sync, x => x.diskBytesPerTx, v => v.toFixed(0))}; unreplicated ${per(r.unreplicated, x => x.diskBytesPerTx, v => v.toFixed(0))}`)
}
