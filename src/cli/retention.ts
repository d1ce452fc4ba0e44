import { ReplfsError } from '../errors.js'

/**
 * Grid retention for scheduled snapshots, as zrepl's and ZFS snapshot tools' users know it: for
 * each period (hour, day, ISO week, month, year, in UTC) keep the newest snapshot of each of the
 * last N periods that have one. A snapshot is kept if any rule keeps it; the newest one is always
 * kept. Pure: it decides, the caller deletes.
 */

export const PERIODS = ['hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const
export type Period = typeof PERIODS[number]

/** How many periods of each kind keep a snapshot, in the order given. */
export type KeepRules = Map<Period, number>

/** Parses `hourly=24,daily=7[,weekly=4,monthly=6,yearly=1]`; any mistake is refused with what is wrong. */
export function parseKeep (spec: string): KeepRules {
  const rules: KeepRules = new Map()
  const hint = `e.g. --keep hourly=24,daily=7,weekly=4,monthly=6 (periods: ${PERIODS.join(', ')})`
  const bad = (message: string): ReplfsError => new ReplfsError('BAD_ARGUMENT', `--keep ${JSON.stringify(spec)}: ${message}`, { hint })
  if (spec.trim() === '') throw bad('names no period')
  for (const part of spec.split(',')) {
    const m = /^\s*([a-z]+)\s*=\s*(\d{1,6})\s*$/.exec(part)
    if (m === null) throw bad(`${JSON.stringify(part)} is not period=count`)
    const period = m[1] as Period
    if (!(PERIODS as readonly string[]).includes(period)) throw bad(`unknown period ${JSON.stringify(m[1])}`)
    if (rules.has(period)) throw bad(`${period} is given twice`)
    rules.set(period, Number(m[2]))
  }
  return rules
}

export interface Candidate { name: string, created: string, seq: number }

export interface Decision extends Candidate {
  /** Why it stays: "newest", "daily 2026-12-01", ...; empty for one that goes. */
  reasons: string[]
}

/** The UTC period a time falls in, named as people read it. */
export function periodOf (period: Period, t: Date): string {
  const iso = t.toISOString()
  switch (period) {
    case 'hourly': return iso.slice(0, 13)
    case 'daily': return iso.slice(0, 10)
    case 'monthly': return iso.slice(0, 7)
    case 'yearly': return iso.slice(0, 4)
    case 'weekly': {
      // ISO 8601 week: the week (Monday first) holding that week's Thursday, in the Thursday's year.
      const day = new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth(), t.getUTCDate()))
      day.setUTCDate(day.getUTCDate() + 3 - ((day.getUTCDay() + 6) % 7))
      const jan4 = new Date(Date.UTC(day.getUTCFullYear(), 0, 4))
      const week = 1 + Math.round(((day.getTime() - jan4.getTime()) / 86_400_000 - 3 + ((jan4.getUTCDay() + 6) % 7)) / 7)
      return `${day.getUTCFullYear()}-W${String(week).padStart(2, '0')}`
    }
  }
}

/**
 * Which of `snapshots` stay and which go under `rules`. Newest first by creation time, then by
 * seq (two snapshots taken within one millisecond), then by name. A snapshot whose creation
 * time cannot be read stays: nothing is deleted that cannot be placed.
 */
export function retain (snapshots: Candidate[], rules: KeepRules): { keep: Decision[], destroy: Decision[] } {
  const dated = snapshots.map(s => ({ ...s, reasons: [] as string[], at: Date.parse(s.created) }))
  for (const s of dated) if (Number.isNaN(s.at)) s.reasons.push('creation time unreadable')
  const ordered = dated.filter(s => !Number.isNaN(s.at))
    .sort((a, b) => b.at - a.at || b.seq - a.seq || (a.name < b.name ? 1 : a.name > b.name ? -1 : 0))
  if (ordered.length > 0) ordered[0].reasons.push('newest')
  for (const [period, count] of rules) {
    const seen = new Set<string>()
    for (const s of ordered) {
      if (seen.size >= count) break
      const p = periodOf(period, new Date(s.at))
      if (seen.has(p)) continue
      seen.add(p)
      s.reasons.push(`${period} ${p}`)
    }
  }
  const strip = ({ at: _at, ...d }: Decision & { at: number }): Decision => d
  const byAge = [...ordered, ...dated.filter(s => Number.isNaN(s.at))]
  return { keep: byAge.filter(s => s.reasons.length > 0).map(strip), destroy: byAge.filter(s => s.reasons.length === 0).map(strip) }
}
