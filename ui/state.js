// @ts-check
// The view's state and its home in the address bar: everything that decides
// what the page shows lives in the URL's hash (window, zone, bucket, measure,
// grouping, filters), so a copied link opens the same view. The hash never
// reaches the server and never holds a token.

export const DIMENSIONS = /** @type {const} */ (['model', 'key_id', 'team_id', 'customer_id', 'provider'])
/** Filters of /v1/usage the page keeps (user_id has no grouping in the chart, but a link may filter by it). */
export const FILTERS = /** @type {const} */ (['key_id', 'team_id', 'user_id', 'customer_id', 'provider', 'model', 'status'])
export const WINDOWS = /** @type {const} */ (['24h', '7d', '30d', 'custom'])
export const BUCKETS = /** @type {const} */ (['auto', '15m', '1h', '1d', '1w', '1mo'])
/** What the chart stacks: the API's own measures (its order_by picks the top N by the same one). */
export const MEASURES = /** @type {const} */ (['cost', 'requests', 'input_tokens', 'output_tokens', 'errors'])
/** What the groups table sorts by (every measure /v1/usage can order by). */
export const SORTS = /** @type {const} */ (['requests', 'errors', 'input_tokens', 'output_tokens', 'cache_read_tokens', 'cache_write_tokens', 'reasoning_tokens', 'cost', 'cost_missing'])

const MIN_MS = 60_000
const HOUR_MS = 60 * MIN_MS
const DAY_MS = 24 * HOUR_MS
const QUARTER_MS = 15 * MIN_MS
export const WINDOW_MS = { '24h': DAY_MS, '7d': 7 * DAY_MS, '30d': 30 * DAY_MS }
/** The service's own bounds on filters: values per filter and characters per value. */
const MAX_FILTER_VALUES = 100
const MAX_VALUE_CHARS = 128
const MAX_TOP = 20

/**
 * @typedef {{ window: typeof WINDOWS[number], from: string | null, to: string | null, tz: string,
 *   bucket: typeof BUCKETS[number], measure: typeof MEASURES[number], by: typeof DIMENSIONS[number], top: number,
 *   sort: typeof SORTS[number], filters: Record<string, string[]> }} ViewState
 */

/** @returns {string} */
export function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'
}

/** @param {string} tz */
export function isZone(tz) {
  if (tz.length === 0 || tz.length > 64) return false
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz })
    return true
  } catch {
    return false
  }
}

/**
 * @template {readonly string[]} T
 * @param {T} allowed
 * @param {string | null} value
 * @param {T[number]} fallback
 * @param {string[]} notes where a refused value is reported
 * @param {string} name
 * @returns {T[number]}
 */
function oneOf(allowed, value, fallback, notes, name) {
  if (value === null) return fallback
  if (allowed.includes(value)) return value
  notes.push(`${name}=${value.slice(0, 40)} (expected one of ${allowed.join(', ')})`)
  return fallback
}

/**
 * Reads the view from a hash such as "#window=7d&tz=Europe/Berlin&model=gpt-4o".
 * Values a link cannot mean are left out and named in `notes`, never guessed.
 * @param {string} hash
 * @returns {{ state: ViewState, notes: string[] }}
 */
export function parseHash(hash) {
  const q = new URLSearchParams(hash.replace(/^#/, ''))
  /** @type {string[]} */
  const notes = []
  const tzAsked = q.get('tz')
  let tz = browserZone()
  if (tzAsked !== null) {
    if (isZone(tzAsked)) tz = tzAsked
    else notes.push(`tz=${tzAsked.slice(0, 40)} (not a time zone)`)
  }
  let window = oneOf(WINDOWS, q.get('window'), '24h', notes, 'window')
  let from = q.get('from')
  let to = q.get('to')
  if (from !== null || to !== null) {
    if (from !== null && to !== null && !Number.isNaN(Date.parse(from)) && !Number.isNaN(Date.parse(to)) && Date.parse(from) < Date.parse(to)) window = 'custom'
    else {
      notes.push('from/to (both are needed, as RFC 3339 times, from before to)')
      from = to = null
      if (window === 'custom') window = '24h'
    }
  } else if (window === 'custom') window = '24h'
  const topAsked = Number(q.get('top') ?? '5')
  const top = Number.isInteger(topAsked) && topAsked >= 1 && topAsked <= MAX_TOP ? topAsked : 5
  if (top !== topAsked) notes.push(`top=${String(q.get('top')).slice(0, 10)} (1 to ${MAX_TOP})`)
  /** @type {Record<string, string[]>} */
  const filters = {}
  for (const name of FILTERS) {
    const values = q.getAll(name).filter((v) => {
      const ok = v.length >= 1 && v.length <= MAX_VALUE_CHARS && (name !== 'status' || /^(ok|error|[1-5]\d\d)$/.test(v))
      if (!ok) notes.push(`${name}=${v.slice(0, 40)}`)
      return ok
    })
    if (values.length > 0) filters[name] = [...new Set(values)].slice(0, MAX_FILTER_VALUES)
  }
  return {
    state: {
      window,
      from: window === 'custom' ? from : null,
      to: window === 'custom' ? to : null,
      tz,
      bucket: oneOf(BUCKETS, q.get('bucket'), 'auto', notes, 'bucket'),
      measure: oneOf(MEASURES, q.get('measure'), 'cost', notes, 'measure'),
      by: oneOf(DIMENSIONS, q.get('by'), 'model', notes, 'by'),
      top,
      sort: oneOf(SORTS, q.get('sort'), 'cost', notes, 'sort'),
      filters,
    },
    notes,
  }
}

/**
 * The hash for a view (defaults left out, so links stay short).
 * @param {ViewState} s
 * @returns {string}
 */
export function formatHash(s) {
  const q = new URLSearchParams()
  if (s.window === 'custom' && s.from && s.to) {
    q.set('from', s.from)
    q.set('to', s.to)
  } else if (s.window !== '24h') q.set('window', s.window)
  q.set('tz', s.tz)
  if (s.bucket !== 'auto') q.set('bucket', s.bucket)
  if (s.measure !== 'cost') q.set('measure', s.measure)
  if (s.by !== 'model') q.set('by', s.by)
  if (s.top !== 5) q.set('top', String(s.top))
  if (s.sort !== 'cost') q.set('sort', s.sort)
  for (const name of FILTERS) for (const v of s.filters[name] ?? []) q.append(name, v)
  return `#${q}`
}

/**
 * The instants a view covers. A preset window ends at the next quarter hour and
 * starts a whole window before: both on the 15-minute grid the service keeps
 * its rollups on, so totals outside the raw-event window can be answered too.
 * @param {ViewState} s
 * @param {number} nowMs
 * @returns {{ fromMs: number, toMs: number }}
 */
export function windowOf(s, nowMs) {
  if (s.window === 'custom' && s.from && s.to) return { fromMs: Date.parse(s.from), toMs: Date.parse(s.to) }
  const toMs = Math.ceil(nowMs / QUARTER_MS) * QUARTER_MS
  return { fromMs: toMs - WINDOW_MS[/** @type {'24h' | '7d' | '30d'} */ (s.window === 'custom' ? '24h' : s.window)], toMs }
}

/**
 * The bucket the chart uses: the one asked for, or a size giving a readable number of bars.
 * @param {ViewState} s
 * @param {number} spanMs
 * @returns {'15m' | '1h' | '1d' | '1w' | '1mo'}
 */
export function bucketOf(s, spanMs) {
  if (s.bucket !== 'auto') return s.bucket
  if (spanMs <= 6 * HOUR_MS) return '15m'
  if (spanMs <= 3 * DAY_MS) return '1h'
  if (spanMs <= 93 * DAY_MS) return '1d'
  if (spanMs <= 730 * DAY_MS) return '1w'
  return '1mo'
}

/** Intl formatters by zone: building one costs far more than using it (every event row's time is formatted). */
/** @type {Map<string, Intl.DateTimeFormat>} */
const OFFSET_FORMATS = new Map()
const MAX_OFFSET_FORMATS = 8

/**
 * The zone's UTC offset at an instant, in ms (from Intl's "GMT+05:30" names).
 * @param {string} tz
 * @param {number} ms
 */
export function offsetMs(tz, ms) {
  let format = OFFSET_FORMATS.get(tz)
  if (!format) {
    format = new Intl.DateTimeFormat('en-US', { timeZone: tz, timeZoneName: 'longOffset' })
    if (OFFSET_FORMATS.size >= MAX_OFFSET_FORMATS) OFFSET_FORMATS.clear()
    OFFSET_FORMATS.set(tz, format)
  }
  const name = format.formatToParts(ms).find((p) => p.type === 'timeZoneName')?.value ?? 'GMT'
  const m = /^GMT([+-])(\d{2}):(\d{2})$/.exec(name)
  if (!m) return 0
  return (m[1] === '-' ? -1 : 1) * (Number(m[2]) * HOUR_MS + Number(m[3]) * MIN_MS)
}

/**
 * An instant as local time in `tz` with its offset, e.g. "2026-10-25T00:00:00+02:00".
 * @param {number} ms
 * @param {string} tz
 */
export function zonedIso(ms, tz) {
  const off = offsetMs(tz, ms)
  const wall = new Date(ms + off).toISOString().slice(0, 19)
  const abs = Math.abs(off)
  const hh = String(Math.floor(abs / HOUR_MS)).padStart(2, '0')
  const mm = String(Math.floor((abs % HOUR_MS) / MIN_MS)).padStart(2, '0')
  return `${wall}${off < 0 ? '-' : '+'}${hh}:${mm}`
}

/**
 * A wall-clock time in `tz` ("2026-10-25T00:00", as a datetime-local input gives it) as an instant.
 * A time the zone skips (clocks going forward) lands just after the gap; a repeated one on its first occurrence.
 * @param {string} wall
 * @param {string} tz
 * @returns {number | null}
 */
export function wallToMs(wall, tz) {
  const asUtc = Date.parse(`${wall.length === 16 ? `${wall}:00` : wall}Z`)
  if (Number.isNaN(asUtc)) return null
  let ms = asUtc - offsetMs(tz, asUtc)
  ms = asUtc - offsetMs(tz, ms)
  return ms
}

/**
 * An instant as a datetime-local value in `tz` ("2026-10-25T00:00").
 * @param {number} ms
 * @param {string} tz
 */
export function msToWall(ms, tz) {
  return zonedIso(ms, tz).slice(0, 16)
}
