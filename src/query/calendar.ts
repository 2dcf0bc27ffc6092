// Local-calendar buckets in an IANA time zone, for time series.
//
// Invariants:
// - A zone's UTC offset is a step function of time. `Timeline` samples it (Intl,
//   the ICU data Node ships) every SAMPLE_MS and finds each change to the second
//   by bisection, so after that every offset lookup is a binary search in JS.
//   Sampling assumes no zone changes its offset twice within SAMPLE_MS (real zones
//   change at most a few times a year).
// - Buckets of 1d, 1w (Monday) and 1mo start at local midnight of their first day:
//   the first instant the wall clock reads that midnight (the earlier one when it
//   is read twice); when that midnight is skipped by a change, the change itself.
//   So days across DST last 23 or 25 hours.
// - Buckets of 15m and 1h start where the wall clock reads a multiple of the
//   unit, and at every offset change: the hour repeated when clocks go back is two
//   buckets, each with its own offset.
// - A bucket's `start` label is its first instant in local time with that
//   instant's offset (RFC 3339), so labels are unambiguous across a repeated hour.

export const BUCKETS = ['15m', '1h', '1d', '1w', '1mo'] as const
export type Bucket = (typeof BUCKETS)[number]

const MINUTE_MS = 60_000
export const HOUR_MS = 3_600_000
export const DAY_MS = 86_400_000
/** Offsets are sampled this far apart, then each change is bisected to the second. */
const SAMPLE_MS = 6 * HOUR_MS
/** Largest |UTC offset| of any zone, with room: wall times map to instants within it. */
const MAX_OFFSET_MS = 18 * HOUR_MS

const formatters = new Map<string, Intl.DateTimeFormat>()

/** The zone's formatter, or null when `tz` is not an IANA zone this runtime knows. */
function formatterOf(tz: string): Intl.DateTimeFormat | null {
  let f = formatters.get(tz)
  if (f) return f
  try {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
      era: 'short',
    })
  } catch {
    return null
  }
  if (formatters.size > 1000) formatters.clear() // bounded: zone names come from clients
  formatters.set(tz, f)
  return f
}

/**
 * The zone's name when `tz` is a known IANA zone, else null: spelled as ICU
 * spells it when that differs only in case ("europe/berlin" → "Europe/Berlin"),
 * otherwise as given (ICU would turn "Asia/Kolkata" into its old alias "Asia/Calcutta").
 */
export function canonicalZone(tz: string): string | null {
  if (tz.length === 0 || tz.length > 64) return null
  const resolved = formatterOf(tz)?.resolvedOptions().timeZone
  if (resolved === undefined) return null
  return resolved.toLowerCase() === tz.toLowerCase() ? resolved : tz
}

/** The zone's UTC offset at `ms`, in ms (whole seconds). */
function offsetAt(f: Intl.DateTimeFormat, ms: number): number {
  const p: Record<string, string> = {}
  for (const part of f.formatToParts(ms)) p[part.type] = part.value
  const year = p.era === 'BC' || p.era === 'B' ? 1 - Number(p.year) : Number(p.year)
  const wall = new Date(0)
  wall.setUTCFullYear(year, Number(p.month) - 1, Number(p.day))
  wall.setUTCHours(Number(p.hour), Number(p.minute), Number(p.second), 0)
  const whole = Math.floor(ms / 1000) * 1000
  return wall.getTime() - whole
}

interface YearSteps {
  /** Offset at the year's first instant. */
  first: number
  /** Changes within the year: when (ms) and the offset from then on. */
  changes: Array<[number, number]>
}

const yearCache = new Map<string, YearSteps>()

/** The zone's offset changes within one UTC calendar year (cached: zone rules are fixed for the process). */
function stepsOfYear(f: Intl.DateTimeFormat, tz: string, year: number): YearSteps {
  const cacheKey = `${tz}|${year}`
  const hit = yearCache.get(cacheKey)
  if (hit) return hit
  const start = Date.UTC(year, 0, 1)
  const end = Date.UTC(year + 1, 0, 1)
  let prevMs = start
  let prev = offsetAt(f, start)
  const steps: YearSteps = { first: prev, changes: [] }
  for (let t = Math.min(start + SAMPLE_MS, end); prevMs < end; t = Math.min(t + SAMPLE_MS, end)) {
    const o = offsetAt(f, t)
    if (o !== prev) {
      // First second in (prevMs, t] with the new offset.
      let lo = Math.floor(prevMs / 1000)
      let hi = Math.floor(t / 1000)
      while (hi - lo > 1) {
        const mid = Math.floor((lo + hi) / 2)
        if (offsetAt(f, mid * 1000) === prev) lo = mid
        else hi = mid
      }
      steps.changes.push([hi * 1000, o])
      prev = o
    }
    prevMs = t
  }
  if (yearCache.size > 20_000) yearCache.clear() // bounded: zone names come from clients
  yearCache.set(cacheKey, steps)
  return steps
}

/** The offset of a zone as a step function over a span: starts[i] is when offsets[i] begins. */
export class Timeline {
  private readonly starts: number[] = []
  private readonly offsets: number[] = []

  constructor(tz: string, fromMs: number, toMs: number) {
    const f = formatterOf(tz)
    if (!f) throw new Error(`invariant: unknown zone ${tz}`)
    const firstYear = new Date(fromMs).getUTCFullYear()
    const lastYear = new Date(toMs).getUTCFullYear()
    this.starts.push(Number.NEGATIVE_INFINITY)
    this.offsets.push(stepsOfYear(f, tz, firstYear).first)
    for (let year = firstYear; year <= lastYear; year++) {
      const steps = stepsOfYear(f, tz, year)
      // A change falling exactly on the new year is found as the year's first offset.
      if (steps.first !== this.offsets.at(-1)) {
        this.starts.push(Date.UTC(year, 0, 1))
        this.offsets.push(steps.first)
      }
      for (const [at, o] of steps.changes) {
        this.starts.push(at)
        this.offsets.push(o)
      }
    }
  }

  private indexAt(ms: number): number {
    let lo = 0
    let hi = this.starts.length - 1
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2)
      if (this.starts[mid]! <= ms) lo = mid
      else hi = mid - 1
    }
    return lo
  }

  offsetAt(ms: number): number {
    return this.offsets[this.indexAt(ms)]!
  }

  /** The last offset change at or before `ms` (-Infinity when none in the span). */
  changeAtOrBefore(ms: number): number {
    return this.starts[this.indexAt(ms)]!
  }

  /** The first offset change after `ms` (Infinity when none in the span). */
  changeAfter(ms: number): number {
    return this.starts[this.indexAt(ms) + 1] ?? Number.POSITIVE_INFINITY
  }

  /**
   * The first instant whose wall time is `wallMs` (a wall clock read as if UTC),
   * or, when a change skips that wall time, the change.
   */
  instantOfWall(wallMs: number): number {
    const candidates = new Set([this.offsetAt(wallMs - MAX_OFFSET_MS), this.offsetAt(wallMs), this.offsetAt(wallMs + MAX_OFFSET_MS)])
    let best = Number.POSITIVE_INFINITY
    for (const o of candidates) {
      const u = wallMs - o
      if (this.offsetAt(u) === o) best = Math.min(best, u)
    }
    if (best !== Number.POSITIVE_INFINITY) return best
    // Skipped: the change between the instants the wall time had under each offset.
    return this.changeAfter(wallMs - Math.max(...candidates))
  }
}

/** A span's buckets: their first instants (ms), ascending, and each one's offset. */
export interface BucketStarts {
  startsMs: number[]
  offsetsMs: number[]
}

const floorMod = (a: number, n: number): number => ((a % n) + n) % n

/** Wall time (ms, read as UTC) of local midnight starting the bucket that holds wall time `wall`. */
function floorWallToCalendar(wall: number, bucket: '1d' | '1w' | '1mo'): number {
  const d = new Date(wall)
  const day = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate())
  if (bucket === '1d') return day
  if (bucket === '1w') return day - floorMod(d.getUTCDay() - 1, 7) * DAY_MS // Monday
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1)
}

function nextWall(wall: number, bucket: '1d' | '1w' | '1mo'): number {
  if (bucket === '1d') return wall + DAY_MS
  if (bucket === '1w') return wall + 7 * DAY_MS
  const d = new Date(wall)
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1)
}

/**
 * The buckets of `bucket` in zone `tz` that overlap [fromMs, toMs): the first one
 * holds fromMs (it may start before it). Stops with null past `max` buckets.
 */
export function bucketStarts(tz: string, bucket: Bucket, fromMs: number, toMs: number, max: number): BucketStarts | null {
  // The first bucket starts at most a month (and a day of offsets) before `from`.
  const line = new Timeline(tz, fromMs - 33 * DAY_MS, toMs + 2 * DAY_MS)
  const startsMs: number[] = []
  const push = (s: number): boolean => {
    startsMs.push(s)
    return startsMs.length <= max
  }
  if (bucket === '15m' || bucket === '1h') {
    const unit = bucket === '15m' ? 15 * MINUTE_MS : HOUR_MS
    const floor = (t: number): number => t - floorMod(t + line.offsetAt(t), unit)
    let s = Math.max(floor(fromMs), line.changeAtOrBefore(fromMs))
    while (s < toMs) {
      if (!push(s)) return null
      s = Math.min(floor(s) + unit, line.changeAfter(s))
    }
  } else {
    let wall = floorWallToCalendar(fromMs + line.offsetAt(fromMs), bucket)
    for (let s = line.instantOfWall(wall); s < toMs; s = line.instantOfWall(wall)) {
      if (!push(s)) return null
      wall = nextWall(wall, bucket)
    }
  }
  return { startsMs, offsetsMs: startsMs.map((s) => line.offsetAt(s)) }
}

const pad = (n: number, w = 2): string => String(n).padStart(w, '0')

/** RFC 3339 local time with offset, e.g. 2026-10-25T02:00:00+01:00 (offsets in whole minutes). */
export function formatLocal(ms: number, offsetMs: number): string {
  const d = new Date(ms + offsetMs)
  const year = d.getUTCFullYear()
  const sign = offsetMs < 0 ? '-' : '+'
  const abs = Math.abs(Math.round(offsetMs / MINUTE_MS))
  return (
    `${pad(year, 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}` +
    `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`
  )
}
