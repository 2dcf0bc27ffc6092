// Query benchmark (not a test): what the dashboard questions of the query API cost on a
// large store, on an idle server and while ingest runs at a steady rate, and whether
// they answer right. Every figure is printed with a baseline measured in the same run
// (these machines are noisy):
//
//   1. a store of --events (default 10 million) in --segments files (default 720: one
//      per hour over 30 days, what the default 1 h age rollover cuts at this rate) is
//      written straight into pending/ (bench/lib/bigstore.ts), timestamps spanning
//      [now - 29.5 d, now - 1 min): inside the default 30-day event window for hours.
//      Its sums are read back from the files by a separate DuckDB.
//   2. the server starts on it (TOKENLEDGER_RETENTION_INTERVAL=off: nothing expires
//      mid-run), rebuilds its dedupe index, and the bench waits until every segment is
//      sealed (GET /v1/status), so archives answer from their rollups as in
//      production. Reported: generation, start-up and seal times, store size, RSS.
//   3. checks on the idle server (each a failure when wrong): totals by key over the
//      30 days = the generated sums (every measure, exact cost), the groups add up to
//      the totals, 50 keys; each time series adds up, per series, to GET /v1/usage
//      over the window it answered, with one point per local day / hour whose start
//      carries the zone's offset; pages are newest first and filtered; details equal
//      the generated rows; dimensions list the generated keys, providers, models, teams.
//   4. idle baselines: each query below, one call at a time, for --duration s (at least
//      5, at most --samples calls), after --warmup calls (at most --duration s of them):
//      p50, p95, p99, max, and the first call (cold).
//   5. ingest alone: an open loop (bench/lib/load.ts) of --rate events/s in --batch
//      batches with fresh ids, for --ingest-duration s: the rate achieved and the
//      latency of each batch from its scheduled time (p50, p95, p99, max).
//   6. the same open loop again, and each query measured as in 4 while it runs:
//      p50..max, p95 loaded / idle, the target (p95 < --target-ms), and the ingest p99
//      while that query ran against phase 5's.
//   7. settle: unanswered batches are resent, then the checks of 3 again with the
//      acknowledged events added (totals = generated + acknowledged: lost = 0,
//      double-counted = 0), and a few ingested ids read back by id.
//
// The queries (from/to in ms; each call draws its key or id afresh):
//   totals_by_key   GET /v1/usage?from=<now - 30 d, on a 15 min boundary>&to=<now>&group_by=key_id
//   daily_by_model  GET /v1/usage/timeseries?bucket=1d&tz=Europe/Berlin&group_by=model  (30 local days, today's included)
//   hourly_one_key  GET /v1/usage/timeseries?bucket=1h&tz=Asia/Kolkata&key_id=<k>    (168 local hours, this one included)
//   newest_page     GET /v1/events?limit=100
//   key_page        GET /v1/events?limit=100&key_id=<k>
//   detail          GET /v1/events/<id>   (generated ids, all archived; under load 1 in 10 a just-ingested one)
//   dimensions      GET /v1/usage/dimensions   (the default window: 30 days)
// Answers over archived segments are kept by the server's answer cache (exact: keyed by
// the catalog generation), so repeated calls measure mostly its hits; phases 4 and 6
// print how many catalog statements it served. TOKENLEDGER_QUERY_CACHE_ROWS=0 in the
// bench's environment (passed on to the server) measures every call uncached.
// A 404 from /v1/usage/timeseries means the route does not exist yet: those queries
// are reported "skipped (route missing)" and the bench goes on.
//
// Run:   npm run bench:query                          (10 M events; ~15 min on 2 cores)
//        npm run bench:query -- --events 500000       (a quick look)
//        BENCH_SERVER_ENTRY=dist runs the built server (npm run build first).
// Flags: --events N (10000000) --segments N (720, at most events / 1000) --duration S (10)
//        --samples N (200) --warmup N (3) --rate N (2000) --batch B (100)
//        --ingest-duration S (20) --detail-ids N (2000) --target-ms MS (50) --threads N (2)
//        --keep (keep the data directory)
// Output: a report, and as the last line one JSON summary.
// Exit:   0 ok (targets missed are warnings), 1 a correctness failure (a wrong answer,
//         a non-2xx answer, lost or double-counted events), 2 setup.
//
// Over 500 lines: the phases above and the checks of their answers are one script a
// reader follows top to bottom; its reusable parts (the store builder, the load, the
// sums, the server, the report) are in bench/lib/. Its measure list and zone
// arithmetic are its own on purpose: a check must not reuse the code it checks.

import { randomBytes, randomInt } from 'node:crypto'
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import type { RunningServer } from './lib/child.js'
import { toScaled12 } from './lib/decimal.js'
import { BatchFactory, KEY_COUNT, TEAM_COUNT, TEMPLATE_COUNT } from './lib/events.js'
import { IngestLedger, type OpenLoopResult } from './lib/load.js'
import { computeRows, writePendingSegments, type BigStoreSpec, type EventJson } from './lib/bigstore.js'
import { f1, fail, failures, int, integerFlags, log, mib, percentile, warn, warnings } from './lib/report.js'
import { getJson, httpTimeoutMs, settleLedger, startTokenledger, waitSealed, type ServerStatus } from './lib/server.js'
import { plusAcked, sumsDiff, sumsOf, sumsOfFiles, zero, type Sums } from './lib/sums.js'
import { segmentPath } from '../src/store/layout.js'
import { rssMiB, runMain } from './lib/cli.js'

const DAY_MS = 86_400_000
const HOUR_MS = 3_600_000
const BUCKET_MS = 15 * 60_000
/** The generated rows span [now - spanStartAgoMs, now - spanEndAgoMs): inside the 30-day event window. */
const spanStartAgoMs = 29.5 * DAY_MS
const spanEndAgoMs = 60_000
/** Segments per 30 days when the default 1 h age rollover cuts them. */
const hourlySegments = 720
/** Fewest generated rows per segment. */
const rowsPerSegmentMin = 1_000
/** What bigstore.ts generates (key_<0..49>, team_<0..9>, five models, three providers), and bench/lib/events.ts sends too. */
const KEYS = Array.from({ length: KEY_COUNT }, (_, k) => `key_${k}`)
const TEAMS = Array.from({ length: TEAM_COUNT }, (_, t) => `team_${t}`)
const MODELS = ['gpt-4o-mini', 'o4-mini', 'claude-sonnet-4', 'claude-haiku-3.5', 'gemini-2.5-flash']
const PROVIDERS = ['openai', 'anthropic', 'google']
/** Under load, one detail call in this many reads a just-ingested (active-segment) id. */
const freshDetailEvery = 10
const TIMESERIES_PATH = '/v1/usage/timeseries'
/** Most characters of an answer quoted in a failure. */
const bodySampleChars = 300
/** Fewest measured calls of a query per phase, however slow it is. */
const minMeasuredCalls = 5

const { values: argv } = parseArgs({
  options: {
    events: { type: 'string' },
    segments: { type: 'string' },
    duration: { type: 'string' },
    samples: { type: 'string' },
    warmup: { type: 'string' },
    rate: { type: 'string' },
    batch: { type: 'string' },
    'ingest-duration': { type: 'string' },
    'detail-ids': { type: 'string' },
    'target-ms': { type: 'string' },
    threads: { type: 'string' },
    keep: { type: 'boolean' },
  },
  strict: true,
})

const num = integerFlags('bench:query', argv)

const opts = {
  events: num('events', 10_000_000, 10_000, 200_000_000),
  durationS: num('duration', 10, 1, 600),
  samples: num('samples', 200, 5, 100_000),
  warmup: num('warmup', 3, 0, 100),
  rate: num('rate', 2_000, 1, 1_000_000),
  batch: num('batch', 100, 1, 10_000),
  ingestDurationS: num('ingest-duration', 20, 1, 3_600),
  detailIds: num('detail-ids', 2_000, 10, 1_000_000),
  targetMs: num('target-ms', 50, 1, 60_000),
  threads: num('threads', 2, 1, 64),
}
const segments = num('segments', Math.max(1, Math.min(hourlySegments, Math.floor(opts.events / rowsPerSegmentMin))), 1, 10_000)

// ---------------------------------------------------------------------- small helpers

const ms1 = (n: number): string => (Number.isNaN(n) ? '-' : n < 10 ? n.toFixed(2) : n.toFixed(1))
const floorBucketMs = (ms: number): number => Math.floor(ms / BUCKET_MS) * BUCKET_MS
const pick = <T>(items: readonly T[]): T => items[randomInt(items.length)]!


/** Bytes of every file under `dir`. */
async function dirBytes(dir: string): Promise<number> {
  let n = 0
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue
    const s = await stat(join(e.parentPath, e.name)).catch(() => undefined)
    n += s?.size ?? 0
  }
  return n
}

// ---------------------------------------------------------------------- local time

const zoneFormats = new Map<string, Intl.DateTimeFormat>()

/** The zone's offset from UTC at the instant `utcMs`, in ms (local = UTC + offset). */
function offsetMs(tz: string, utcMs: number): number {
  let fmt = zoneFormats.get(tz)
  if (fmt === undefined) {
    fmt = new Intl.DateTimeFormat('en-US', { timeZone: tz, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' })
    zoneFormats.set(tz, fmt)
  }
  const parts = fmt.formatToParts(new Date(utcMs))
  const get = (type: Intl.DateTimeFormatPartTypes): number => Number(parts.find((p) => p.type === type)?.value)
  const wallMs = Date.UTC(get('year'), get('month') - 1, get('day'), get('hour'), get('minute'), get('second'))
  return wallMs - Math.floor(utcMs / 1000) * 1000
}

/** The instant of local midnight `dayDelta` local days after the local day holding `utcMs` (midnight exists in every zone used here). */
function localMidnightMs(tz: string, utcMs: number, dayDelta: number): number {
  const wall = new Date(utcMs + offsetMs(tz, utcMs))
  const wallMidnight = Date.UTC(wall.getUTCFullYear(), wall.getUTCMonth(), wall.getUTCDate() + dayDelta)
  let guess = wallMidnight - offsetMs(tz, wallMidnight)
  guess = wallMidnight - offsetMs(tz, guess)
  return guess
}

/** The instant the local hour holding `utcMs` began (zones whose offset is whole quarter hours). */
function localHourStartMs(tz: string, utcMs: number): number {
  const local = utcMs + offsetMs(tz, utcMs)
  return utcMs - (((local % HOUR_MS) + HOUR_MS) % HOUR_MS)
}

/** `+05:30` for the zone's offset at `utcMs`. */
function offsetText(tz: string, utcMs: number): string {
  const off = offsetMs(tz, utcMs) / 60_000
  const a = Math.abs(off)
  return `${off < 0 ? '-' : '+'}${String(Math.floor(a / 60)).padStart(2, '0')}:${String(a % 60).padStart(2, '0')}`
}

/** The 30 local days ending with today's, in Europe/Berlin: [first midnight, tomorrow's midnight) and each day's start. */
function berlinDays(nowMs: number): { fromMs: number; toMs: number; starts: number[] } {
  const starts = Array.from({ length: 30 }, (_, i) => localMidnightMs('Europe/Berlin', nowMs, i - 29))
  return { fromMs: starts[0]!, toMs: localMidnightMs('Europe/Berlin', nowMs, 1), starts }
}

/** The 168 local hours ending with the current one, in Asia/Kolkata. */
function kolkataHours(nowMs: number): { fromMs: number; toMs: number; starts: number[] } {
  const current = localHourStartMs('Asia/Kolkata', nowMs)
  const starts = Array.from({ length: 168 }, (_, i) => current - (167 - i) * HOUR_MS)
  return { fromMs: starts[0]!, toMs: current + HOUR_MS, starts }
}

// ---------------------------------------------------------------------- answers

type Json = Record<string, unknown>

interface UsageAnswer {
  from: string
  to: string
  totals: Json
  group_count?: number
  groups?: { key: Record<string, string | null>; totals: Json }[]
}

interface SeriesAnswer {
  from?: string
  to?: string
  bucket?: string
  tz?: string
  series_count?: number
  series: { key: Record<string, string | null>; points: Json[] }[]
}

interface EventOut {
  event_id: string
  timestamp: string
  key_id: string
  model: string
  status_code: number
  input_tokens: number
  output_tokens: number
  cost: string | null
  user_id: string | null
}

interface PageAnswer {
  events: EventOut[]
  next_cursor: string | null
}

interface DimensionsAnswer {
  dimensions: Record<string, { values: string[]; truncated: boolean }>
}

/** The measures a series point and a usage total share, as exact integers (cost × 10^12). */
const SERIES_MEASURES = ['requests', 'errors', 'input_tokens', 'output_tokens', 'cache_read_tokens', 'cache_write_tokens', 'reasoning_tokens', 'cost', 'cost_missing'] as const
type SeriesMeasure = (typeof SERIES_MEASURES)[number]

function measuresOf(x: Json): Record<SeriesMeasure, bigint> | string {
  const out = {} as Record<SeriesMeasure, bigint>
  for (const m of SERIES_MEASURES) {
    const v = x[m]
    if (m === 'cost') {
      const c = v === null || v === undefined ? 0n : toScaled12(v)
      if (c === undefined) return `cost ${JSON.stringify(v)} is not a decimal`
      out.cost = c
    } else if (typeof v === 'number' && Number.isSafeInteger(v)) {
      out[m] = BigInt(v)
    } else {
      return `${m} ${JSON.stringify(v)} is not an integer`
    }
  }
  return out
}

function addMeasures(a: Record<SeriesMeasure, bigint>, b: Record<SeriesMeasure, bigint>): Record<SeriesMeasure, bigint> {
  const out = { ...a }
  for (const m of SERIES_MEASURES) out[m] += b[m]
  return out
}

const noMeasures = (): Record<SeriesMeasure, bigint> => Object.fromEntries(SERIES_MEASURES.map((m) => [m, 0n])) as Record<SeriesMeasure, bigint>

function measuresDiff(want: Record<SeriesMeasure, bigint>, got: Record<SeriesMeasure, bigint>): string[] {
  return SERIES_MEASURES.filter((m) => want[m] !== got[m]).map((m) => `${m} ${got[m]} ≠ ${want[m]}`)
}

// ---------------------------------------------------------------------- the queries

/** What a query's answers are checked against. */
interface Context {
  url: string
  /** Generated events by id (a sample), as bigstore computed them. */
  generated: Map<string, EventJson>
  generatedIds: string[]
  /** Ids acknowledged by the running ingest, for detail calls under load. */
  freshIds: () => string[]
}

interface Call {
  path: string
  /** A cheap check of the parsed answer; a message when it is wrong. */
  check?: (body: unknown) => string | undefined
}

interface QuerySpec {
  name: string
  label: string
  /** A timeseries query: a 404 means the route is missing, not a wrong answer. */
  routeMayBeMissing: boolean
  call: (ctx: Context, loaded: boolean) => Call
}

function pageCheck(limit: number, keyId?: string): (body: unknown) => string | undefined {
  return (body) => {
    const page = body as PageAnswer
    if (!Array.isArray(page.events)) return 'no events array'
    if (page.events.length !== limit) return `${page.events.length} events, expected ${limit}`
    for (let i = 0; i < page.events.length; i++) {
      const e = page.events[i]!
      if (keyId !== undefined && e.key_id !== keyId) return `event ${e.event_id} has key_id ${e.key_id}, the filter is ${keyId}`
      if (i > 0) {
        const p = page.events[i - 1]!
        const a = Date.parse(p.timestamp)
        const b = Date.parse(e.timestamp)
        if (a < b || (a === b && p.timestamp === e.timestamp && p.event_id <= e.event_id)) return `not newest first at ${i}: ${p.timestamp} ${p.event_id} then ${e.timestamp} ${e.event_id}`
      }
    }
    if (page.next_cursor === null) return 'next_cursor is null on a store with more events'
    return undefined
  }
}

function detailCheck(want: EventJson | undefined, id: string): (body: unknown) => string | undefined {
  return (body) => {
    const e = body as EventOut
    if (e.event_id !== id) return `asked ${id}, got ${e.event_id}`
    if (want === undefined) return undefined
    const bad: string[] = []
    if (Date.parse(e.timestamp) !== want['timestamp']) bad.push(`timestamp ${e.timestamp} ≠ ${new Date(Number(want['timestamp'])).toISOString()}`)
    for (const k of ['key_id', 'model', 'status_code', 'input_tokens', 'output_tokens'] as const) if (e[k] !== want[k]) bad.push(`${k} ${String(e[k])} ≠ ${String(want[k])}`)
    if ((e.user_id ?? undefined) !== want['user_id']) bad.push(`user_id ${String(e.user_id)} ≠ ${String(want['user_id'])}`)
    const wantCost = want['cost'] === undefined ? undefined : toScaled12(want['cost'])
    const gotCost = e.cost === null ? undefined : toScaled12(e.cost)
    if (wantCost !== gotCost) bad.push(`cost ${String(e.cost)} ≠ ${String(want['cost'])}`)
    return bad.length > 0 ? `${id}: ${bad.join('; ')}` : undefined
  }
}

const QUERIES: QuerySpec[] = [
  {
    name: 'totals_by_key',
    label: 'totals by key, 30 d',
    routeMayBeMissing: false,
    call: () => {
      const now = Date.now()
      return {
        path: `/v1/usage?from=${floorBucketMs(now - 30 * DAY_MS)}&to=${now}&group_by=key_id`,
        check: (body) => {
          const b = body as UsageAnswer
          return b.group_count === KEY_COUNT && Array.isArray(b.groups) ? undefined : `group_count ${String(b.group_count)}, expected ${KEY_COUNT}`
        },
      }
    },
  },
  {
    name: 'daily_by_model',
    label: 'daily by model, Berlin, 30 d',
    routeMayBeMissing: true,
    call: () => {
      const w = berlinDays(Date.now())
      return {
        path: `${TIMESERIES_PATH}?bucket=1d&tz=Europe/Berlin&group_by=model&from=${w.fromMs}&to=${w.toMs}`,
        check: (body) => ((body as SeriesAnswer).series?.length === MODELS.length ? undefined : `${String((body as SeriesAnswer).series?.length)} series, expected ${MODELS.length}`),
      }
    },
  },
  {
    name: 'hourly_one_key',
    label: 'hourly, one key, Kolkata, 7 d',
    routeMayBeMissing: true,
    call: () => {
      const w = kolkataHours(Date.now())
      return {
        path: `${TIMESERIES_PATH}?bucket=1h&tz=Asia/Kolkata&key_id=${pick(KEYS)}&from=${w.fromMs}&to=${w.toMs}`,
        check: (body) => ((body as SeriesAnswer).series?.length === 1 ? undefined : `${String((body as SeriesAnswer).series?.length)} series, expected 1`),
      }
    },
  },
  {
    name: 'newest_page',
    label: 'newest page (100)',
    routeMayBeMissing: false,
    call: () => ({ path: '/v1/events?limit=100', check: pageCheck(100) }),
  },
  {
    name: 'key_page',
    label: 'page for one key (100)',
    routeMayBeMissing: false,
    call: () => {
      const key = pick(KEYS)
      return { path: `/v1/events?limit=100&key_id=${key}`, check: pageCheck(100, key) }
    },
  },
  {
    name: 'detail',
    label: 'detail by id',
    routeMayBeMissing: false,
    call: (ctx, loaded) => {
      const fresh = loaded ? ctx.freshIds() : []
      if (fresh.length > 0 && randomInt(freshDetailEvery) === 0) {
        const id = pick(fresh)
        return { path: `/v1/events/${id}`, check: detailCheck(undefined, id) }
      }
      const id = pick(ctx.generatedIds)
      return { path: `/v1/events/${id}`, check: detailCheck(ctx.generated.get(id), id) }
    },
  },
  {
    name: 'dimensions',
    label: 'dimensions, 30 d',
    routeMayBeMissing: false,
    call: () => ({
      path: '/v1/usage/dimensions',
      check: (body) => {
        const d = (body as DimensionsAnswer).dimensions
        return d?.['key_id']?.values.length === KEY_COUNT ? undefined : `key_id has ${String(d?.['key_id']?.values.length)} values, expected ${KEY_COUNT}`
      },
    }),
  },
]

/** Queries whose route answered 404 (the timeseries route not written yet). */
const missingRoutes = new Set<string>()

interface QueryFigures {
  calls: number
  p50: number
  p95: number
  p99: number
  max: number
  firstMs: number
  /** performance.now() when measuring began and ended. */
  startedAt: number
  endedAt: number
  skipped: boolean
}

/** One call: latency to the whole body, then the parse and check (outside the timing). */
async function callOnce(ctx: Context, q: QuerySpec, loaded: boolean): Promise<{ ms: number; status: number; text: string; problem?: string }> {
  const c = q.call(ctx, loaded)
  const t0 = performance.now()
  const res = await fetch(`${ctx.url}${c.path}`, { signal: AbortSignal.timeout(httpTimeoutMs) })
  const text = await res.text()
  const ms = performance.now() - t0
  if (res.status !== 200) return { ms, status: res.status, text, problem: `GET ${c.path}: ${res.status} ${text.slice(0, bodySampleChars)}` }
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    return { ms, status: res.status, text, problem: `GET ${c.path}: not JSON: ${text.slice(0, bodySampleChars)}` }
  }
  const problem = c.check?.(body)
  return problem === undefined ? { ms, status: 200, text } : { ms, status: 200, text, problem: `GET ${c.path}: ${problem}` }
}

/**
 * Runs `q` one call at a time: warm-up calls (at most --warmup, and no longer than
 * --duration s), then measured calls for --duration s, at least minMeasuredCalls and at
 * most --samples. A wrong answer fails the bench and ends the query's phase.
 */
async function measureQuery(ctx: Context, q: QuerySpec, phase: string, loaded: boolean): Promise<QueryFigures> {
  const latencies: number[] = []
  const startedAt = performance.now()
  const skip = (): QueryFigures => ({ calls: 0, p50: NaN, p95: NaN, p99: NaN, max: NaN, firstMs: NaN, startedAt, endedAt: performance.now(), skipped: true })
  if (missingRoutes.has(q.name)) return skip()
  let firstMs = NaN
  let measuredFrom = NaN
  for (let i = 0; latencies.length < opts.samples; i++) {
    const warming = i < opts.warmup && performance.now() - startedAt < opts.durationS * 1000
    if (!warming && Number.isNaN(measuredFrom)) measuredFrom = performance.now()
    if (!warming && latencies.length >= minMeasuredCalls && performance.now() - measuredFrom >= opts.durationS * 1000) break
    const r = await callOnce(ctx, q, loaded)
    if (i === 0) firstMs = r.ms
    if (r.status === 404 && q.routeMayBeMissing) {
      missingRoutes.add(q.name)
      log(`  ${q.name}: 404 from ${TIMESERIES_PATH}: skipped (route missing) — ${r.text.slice(0, 120)}`)
      return skip()
    }
    if (r.problem !== undefined) {
      fail(`${phase}, ${q.name}: ${r.problem}`)
      break
    }
    if (!warming) latencies.push(r.ms)
  }
  return {
    calls: latencies.length,
    p50: percentile(latencies, 50),
    p95: percentile(latencies, 95),
    p99: percentile(latencies, 99),
    max: latencies.length > 0 ? Math.max(...latencies) : NaN,
    firstMs,
    startedAt,
    endedAt: performance.now(),
    skipped: false,
  }
}

// ---------------------------------------------------------------------- exact checks

async function usageAt(url: string, params: string): Promise<UsageAnswer> {
  return getJson<UsageAnswer>(`${url}/v1/usage?${params}`)
}

/** Totals by key over the 30 days = `want`, and the key groups add up to them. */
async function checkTotals(url: string, want: Sums, label: string): Promise<void> {
  const now = Date.now()
  const t0 = performance.now()
  const b = await usageAt(url, `from=${floorBucketMs(now - 30 * DAY_MS)}&to=${now}&group_by=key_id&limit=1000`)
  const ms = performance.now() - t0
  const got = sumsOf(b.totals)
  if (got === undefined) return fail(`${label}: totals not in the expected shape: ${JSON.stringify(b.totals).slice(0, bodySampleChars)}`)
  const bad = sumsDiff(want, got)
  if (bad.length > 0) fail(`${label}: totals by key over 30 days differ from what was stored: ${bad.join('; ')}`)
  else log(`  ${label}: totals over 30 days = expected (${int(Number(want.requests))} requests, tokens, exact cost), answered in ${int(ms)} ms`)
  let sum = zero()
  const keys = new Set<string>()
  for (const g of b.groups ?? []) {
    const s = sumsOf(g.totals)
    if (s === undefined) return fail(`${label}: a group's totals are not in the expected shape`)
    for (const k of Object.keys(sum) as (keyof Sums)[]) sum[k] += s[k]
    keys.add(String(g.key['key_id']))
  }
  const groupBad = sumsDiff(got, sum)
  if (groupBad.length > 0) fail(`${label}: the key groups do not add up to the totals: ${groupBad.join('; ')}`)
  if (b.group_count !== KEY_COUNT || keys.size !== KEY_COUNT || KEYS.some((k) => !keys.has(k))) fail(`${label}: expected the ${KEY_COUNT} keys key_0..key_${KEY_COUNT - 1}, got group_count ${String(b.group_count)}, ${keys.size} keys`)
  else if (groupBad.length === 0) log(`  ${label}: ${KEY_COUNT} key groups, adding up to the totals`)
}

/**
 * A time series answer against GET /v1/usage over the window it answered: per series
 * (the groups of `groupBy`, or the one series of a filter) the points add up to the
 * group's totals; one point per expected bucket start, each with the zone's offset.
 */
async function checkSeries(url: string, label: string, path: string, tz: string, starts: number[], usageParams: string, groupBy: string | undefined): Promise<boolean> {
  const res = await fetch(`${url}${path}`, { signal: AbortSignal.timeout(httpTimeoutMs) })
  const text = await res.text()
  if (res.status === 404) {
    log(`  ${label}: skipped (route missing): ${res.status} ${text.slice(0, 120)}`)
    return false
  }
  if (res.status !== 200) {
    fail(`${label}: GET ${path}: ${res.status} ${text.slice(0, bodySampleChars)}`)
    return false
  }
  const b = JSON.parse(text) as SeriesAnswer
  const problems: string[] = []
  if (!Array.isArray(b.series)) {
    fail(`${label}: no series array: ${text.slice(0, bodySampleChars)}`)
    return false
  }
  if (b.series_count !== undefined && b.series_count !== b.series.length) problems.push(`series_count ${b.series_count} ≠ ${b.series.length} series listed`)
  const from = b.from ?? new Date(starts[0]!).toISOString()
  const to = b.to ?? new Date(starts.at(-1)! + (starts.length > 1 ? starts[1]! - starts[0]! : HOUR_MS)).toISOString()
  const u = await usageAt(url, `from=${Date.parse(from)}&to=${Date.parse(to)}&${usageParams}${groupBy ? `&group_by=${groupBy}&limit=1000` : ''}`)
  const wantByKey = new Map<string, Json>()
  if (groupBy) for (const g of u.groups ?? []) wantByKey.set(String(g.key[groupBy]), g.totals)
  else wantByKey.set('', u.totals)
  let points = 0
  for (const s of b.series) {
    const name = groupBy ? String(s.key?.[groupBy]) : ''
    let sum = noMeasures()
    if (s.points.length !== starts.length) problems.push(`series ${name || '(all)'}: ${s.points.length} points, expected ${starts.length}`)
    s.points.forEach((p, i) => {
      points++
      const start = String(p['start'])
      const at = Date.parse(start)
      if (i < starts.length && at !== starts[i]) problems.push(`series ${name || '(all)'} point ${i}: start ${start}, expected ${new Date(starts[i]!).toISOString()}`)
      else if (!start.endsWith(offsetText(tz, at)) && !(offsetText(tz, at) === '+00:00' && start.endsWith('Z'))) problems.push(`point ${start} does not carry ${tz}'s offset ${offsetText(tz, at)}`)
      const m = measuresOf(p)
      if (typeof m === 'string') problems.push(`series ${name} point ${start}: ${m}`)
      else sum = addMeasures(sum, m)
    })
    const want = wantByKey.get(name)
    wantByKey.delete(name)
    if (want === undefined) {
      problems.push(`series ${name}: no such group in GET /v1/usage`)
      continue
    }
    const w = measuresOf(want)
    if (typeof w === 'string') problems.push(`GET /v1/usage ${name}: ${w}`)
    else {
      const d = measuresDiff(w, sum)
      if (d.length > 0) problems.push(`series ${name || '(all)'} adds up to ${d.join('; ')} (GET /v1/usage over ${from} .. ${to})`)
    }
  }
  for (const [k, t] of wantByKey) if (Number(t['requests']) > 0) problems.push(`group ${k} of GET /v1/usage has no series`)
  if (groupBy && b.series.length !== MODELS.length) problems.push(`${b.series.length} series, expected ${MODELS.length}`)
  if (problems.length > 0) fail(`${label}: ${problems.slice(0, 5).join(' | ')}${problems.length > 5 ? ` (+${problems.length - 5} more)` : ''}`)
  else log(`  ${label}: ${b.series.length} series × ${starts.length} points (${points} in all), starts at local ${tz} boundaries with offset, each series = GET /v1/usage over ${from} .. ${to}`)
  return true
}

/** Every check of an idle server; `want` is what it must hold. */
async function checkAll(ctx: Context, want: Sums, label: string): Promise<void> {
  await checkTotals(ctx.url, want, label)
  const now = Date.now()
  const days = berlinDays(now)
  await checkSeries(ctx.url, `${label}, daily by model (Europe/Berlin)`, `${TIMESERIES_PATH}?bucket=1d&tz=Europe/Berlin&group_by=model&from=${days.fromMs}&to=${days.toMs}`, 'Europe/Berlin', days.starts, '', 'model')
  const hours = kolkataHours(now)
  const key = pick(KEYS)
  await checkSeries(ctx.url, `${label}, hourly for ${key} (Asia/Kolkata)`, `${TIMESERIES_PATH}?bucket=1h&tz=Asia/Kolkata&key_id=${key}&from=${hours.fromMs}&to=${hours.toMs}`, 'Asia/Kolkata', hours.starts, `key_id=${key}`, undefined)
  // Pages, details and dimensions: the per-call checks, a few calls each.
  for (const name of ['newest_page', 'key_page', 'detail', 'dimensions']) {
    const q = QUERIES.find((x) => x.name === name)!
    let bad = 0
    const calls = name === 'detail' ? 50 : 5
    for (let i = 0; i < calls; i++) {
      const r = await callOnce(ctx, q, false)
      if (r.problem !== undefined) {
        bad++
        fail(`${label}, ${name}: ${r.problem}`)
        break
      }
    }
    if (bad === 0) log(`  ${label}, ${name}: ${calls} answers checked`)
  }
  const dims = await getJson<DimensionsAnswer>(`${ctx.url}/v1/usage/dimensions?limit=1000`)
  const sameSet = (dim: string, values: string[]): void => {
    const got = dims.dimensions[dim]
    const set = new Set(got?.values ?? [])
    if (got === undefined || got.truncated || set.size !== values.length || values.some((v) => !set.has(v))) fail(`${label}: dimension ${dim} is ${JSON.stringify(got).slice(0, 200)}, expected ${values.length} values ${values.slice(0, 3).join(', ')}…`)
  }
  sameSet('key_id', KEYS)
  sameSet('team_id', TEAMS)
  sameSet('model', MODELS)
  sameSet('provider', PROVIDERS)
  const unknown = await fetch(`${ctx.url}/v1/events/evt_no_such_id_${randomBytes(6).toString('hex')}`, { signal: AbortSignal.timeout(httpTimeoutMs) })
  await unknown.text()
  if (unknown.status !== 404) fail(`${label}: an unknown id answered ${unknown.status}, expected 404`)
}

// ---------------------------------------------------------------------- printing

const HEADER = `  ${'query'.padEnd(31)} ${'calls'.padStart(5)} ${'p50'.padStart(7)} ${'p95'.padStart(7)} ${'p99'.padStart(7)} ${'max'.padStart(7)}`

function queryLine(q: QuerySpec, f: QueryFigures, extra: string): string {
  if (f.skipped) return `  ${q.label.padEnd(31)} skipped (route missing)`
  return `  ${q.label.padEnd(31)} ${String(f.calls).padStart(5)} ${ms1(f.p50).padStart(7)} ${ms1(f.p95).padStart(7)} ${ms1(f.p99).padStart(7)} ${ms1(f.max).padStart(7)}${extra}`
}

interface IngestFigures {
  eventsPerS: number
  batches: number
  p50: number
  p95: number
  p99: number
  max: number
}

function ingestFigures(r: OpenLoopResult): IngestFigures {
  return {
    eventsPerS: r.stats.eventsAccepted / r.durationS,
    batches: r.latenciesMs.length,
    p50: percentile(r.latenciesMs, 50),
    p95: percentile(r.latenciesMs, 95),
    p99: percentile(r.latenciesMs, 99),
    max: r.latenciesMs.length > 0 ? Math.max(...r.latenciesMs) : NaN,
  }
}

/** Prints one open-loop phase and fails on any batch not answered 2xx with every event accepted. */
function ingestLine(label: string, r: OpenLoopResult): IngestFigures {
  const f = ingestFigures(r)
  log(
    `  ${label}: ${int(f.eventsPerS)} events/s acknowledged (asked ${int(opts.rate)}) over ${f1(r.durationS)} s, ${f.batches} batches of ${opts.batch}; ` +
      `latency from schedule p50 ${ms1(f.p50)} ms, p95 ${ms1(f.p95)} ms, p99 ${ms1(f.p99)} ms, max ${ms1(f.max)} ms; ` +
      `unanswered ${r.unanswered}, not sent (too many on the wire) ${r.skipped}, generator lag max ${ms1(r.sendLagMsMax)} ms`,
  )
  const non2xx = Object.values(r.stats.non2xxByStatus).reduce((a, b) => a + b, 0)
  if (non2xx > 0 || r.stats.mismatches > 0) fail(`${label}: ${non2xx} non-2xx ${JSON.stringify(r.stats.non2xxByStatus)}, ${r.stats.mismatches} batches not fully accepted: ${[...r.stats.non2xxSamples, ...r.stats.mismatchSamples].slice(0, 2).join(' | ')}`)
  if (r.skipped > 0) warn(`${label}: ${r.skipped} batches were not sent: ${r.skipped} due batches found too many on the wire (the server fell behind the rate)`)
  if (f.eventsPerS < opts.rate * 0.95) warn(`${label}: ingest reached ${int(f.eventsPerS)} events/s of the ${int(opts.rate)} asked`)
  return f
}

// ---------------------------------------------------------------------- main

async function main(): Promise<number> {
  const runId = randomBytes(4).toString('hex')
  log(
    `tokenledger query bench: ${int(opts.events)} events in ${segments} segments over ${spanStartAgoMs / DAY_MS} days; queries one at a time, ${opts.durationS} s or ${opts.samples} calls each; ` +
      `ingest ${int(opts.rate)} events/s open loop in ${opts.batch}-event batches; node ${process.version}, ${os.cpus().length} CPUs; server ${process.env.BENCH_SERVER_ENTRY === 'dist' ? 'dist' : 'tsx'}`,
  )
  const summary: Record<string, unknown> = { events: opts.events, segments, rate: opts.rate, batch: opts.batch }
  const dataDir = await mkdtemp(join(os.tmpdir(), 'tokenledger-query-'))
  let server: RunningServer | undefined
  try {
    // 1. The store.
    log(`\n[1] ${int(opts.events)} events written into pending/`)
    const now = Date.now()
    const spec: BigStoreSpec = { events: opts.events, segments, seed: `q${runId}`, startMs: now - spanStartAgoMs, endMs: now - spanEndAgoMs, threads: opts.threads }
    let t0 = performance.now()
    const written = await writePendingSegments(dataDir, spec)
    const genS = (performance.now() - t0) / 1000
    const genBytes = written.reduce((n, s) => n + s.bytes, 0)
    log(`  generated ${written.length} segments in ${f1(genS)} s (${int(opts.events / genS)} events/s), ${mib(genBytes)} (${f1(genBytes / opts.events)} bytes/event)`)
    t0 = performance.now()
    const generated = await sumsOfFiles(written.map((s) => segmentPath(dataDir, 'pending', s.id)), opts.threads)
    log(`  sums of the generated files read back in ${f1((performance.now() - t0) / 1000)} s`)
    // A sample of generated rows, for detail calls and their checks.
    const ns = Array.from({ length: Math.min(opts.detailIds, opts.events) }, () => randomInt(opts.events))
    const { events: sample } = await computeRows(spec, ns)
    const generatedMap = new Map(sample.map((e) => [String(e['event_id']), e]))
    Object.assign(summary, { generate_s: Number(genS.toFixed(1)), generated_bytes: genBytes })

    // 2. Start and seal.
    log('\n[2] server start-up and sealing (retention scheduler off)')
    // The generated segments all start out pending: above TOKENLEDGER_MAX_PENDING_SEGMENTS
    // the server is unready until sealing catches up (at 100 M events, more than the start
    // bound's 30 min). Ready once the index has loaded; waitSealed waits for the seals.
    server = await startTokenledger('query', dataDir, { env: { TOKENLEDGER_RETENTION_INTERVAL: 'off', TOKENLEDGER_MAX_PENDING_SEGMENTS: String(written.length + 1) } })
    const st0 = await getJson<ServerStatus>(`${server.url}/v1/status`)
    log(
      `  listening after ${f1(server.listeningMs / 1000)} s, ready after ${f1(server.readyMs / 1000)} s: ${st0.tiers.pending} pending segments, ` +
        `dedupe index ${int(st0.ingest.indexed_events)} ids in ${mib(st0.ingest.index_bytes)}; RSS ${f1(rssMiB(server.pid) ?? NaN)} MiB`,
    )
    const sealed = await waitSealed(server)
    const st = sealed.status
    const dataBytes = await dirBytes(dataDir)
    log(
      `  sealed ${st.tiers.archived} segments in ${f1(sealed.ms / 1000)} s after ready (${int(opts.events / (sealed.ms / 1000))} events/s); ` +
        `${int(st.tiers.rows)} rows, ${mib(st.tiers.bytes)} in segments (${f1(st.tiers.bytes / opts.events)} bytes/event), data dir ${mib(dataBytes)}; RSS ${f1(rssMiB(server.pid) ?? NaN)} MiB`,
    )
    if (st.tiers.rows !== opts.events) fail(`the store lists ${st.tiers.rows} rows, ${opts.events} were generated`)
    Object.assign(summary, {
      start_s: Number((server.readyMs / 1000).toFixed(1)),
      seal_s: Number((sealed.ms / 1000).toFixed(1)),
      archived_segments: st.tiers.archived,
      segment_bytes: st.tiers.bytes,
      data_dir_bytes: dataBytes,
    })

    const ledger = new IngestLedger(new BatchFactory(`${runId}q`, opts.batch), TEMPLATE_COUNT)
    let freshIds: string[] = []
    const ctx: Context = { url: server.url, generated: generatedMap, generatedIds: [...generatedMap.keys()], freshIds: () => freshIds }

    // 3. Checks on the idle server.
    log('\n[3] answers on the idle server')
    await checkAll(ctx, generated, 'idle')

    // 4. Idle baselines.
    log(`\n[4] queries on the idle server (ms; one call at a time, ${opts.warmup} warm-up calls, then ${opts.durationS} s: ${minMeasuredCalls} to ${opts.samples} calls)`)
    log(`${HEADER} ${'first'.padStart(7)}`)
    const cpu4 = server.cpuSeconds()
    const cache4 = await cacheCounts(server.url)
    const idle = new Map<string, QueryFigures>()
    for (const q of QUERIES) {
      const f = await measureQuery(ctx, q, 'idle', false)
      idle.set(q.name, f)
      log(queryLine(q, f, ` ${ms1(f.firstMs).padStart(7)}`))
    }
    const cpu4b = server.cpuSeconds()
    summary.answer_cache_idle = cacheLine('phase 4', cache4, await cacheCounts(server.url))

    // 5. Ingest alone.
    log(`\n[5] ingest alone: open loop, ${int(opts.rate)} events/s for ${opts.ingestDurationS} s`)
    let loop = ledger.startOpenLoop(server.url, opts.rate)
    await new Promise((r) => setTimeout(r, opts.ingestDurationS * 1000))
    const alone = ingestLine('ingest, no queries', await loop.stop())

    // 6. Queries under ingest.
    log(`\n[6] the same ingest, each query measured in turn while it runs (ms)`)
    const cpu6 = server.cpuSeconds()
    const cache6 = await cacheCounts(server.url)
    loop = ledger.startOpenLoop(server.url, opts.rate)
    const loopT0 = performance.now()
    // Ids of batches acknowledged so far, for detail calls (one event of each batch is enough to draw from).
    const running = loop
    const freshTimer = setInterval(() => {
      freshIds = running.ackedBatchNos().map((b) => `bench-${runId}q-${b * opts.batch + randomInt(opts.batch)}`)
    }, 500)
    const loaded = new Map<string, QueryFigures>()
    for (const q of QUERIES) loaded.set(q.name, await measureQuery(ctx, q, 'under ingest', true))
    clearInterval(freshTimer)
    const under = await loop.stop()
    const cpu6b = server.cpuSeconds()
    summary.answer_cache_loaded = cacheLine('phase 6', cache6, await cacheCounts(server.url))
    const underF = ingestLine('ingest with queries', under)
    log(`${HEADER} ${'p95 ×idle'.padStart(10)} ${`<${opts.targetMs} ms`.padStart(9)}   ingest p99 meanwhile`)
    const perQuery: Record<string, unknown> = {}
    const missed: string[] = []
    for (const q of QUERIES) {
      const f = loaded.get(q.name)!
      const base = idle.get(q.name)!
      if (f.skipped || base.skipped) {
        log(queryLine(q, f, ''))
        perQuery[q.name] = 'skipped (route missing)'
        continue
      }
      // Ingest batches scheduled while this query was measured.
      const fromMs = f.startedAt - loopT0
      const toMs = f.endedAt - loopT0
      const meanwhile = under.latenciesMs.filter((_, i) => under.scheduledAtMs[i]! >= fromMs && under.scheduledAtMs[i]! < toMs)
      const ratio = f.p95 / base.p95
      const ok = f.p95 < opts.targetMs
      log(queryLine(q, f, ` ${ratio.toFixed(2).padStart(10)} ${(ok ? 'ok' : 'MISSED').padStart(9)}   ${ms1(percentile(meanwhile, 99))} (${meanwhile.length} batches)`))
      if (!ok) missed.push(`${q.name}: p95 ${ms1(f.p95)} ms under ingest, target < ${opts.targetMs} ms`)
      perQuery[q.name] = {
        idle_p50_ms: round1(base.p50),
        idle_p95_ms: round1(base.p95),
        p50_ms: round1(f.p50),
        p95_ms: round1(f.p95),
        p99_ms: round1(f.p99),
        max_ms: round1(f.max),
        loaded_over_idle_p95: Number(ratio.toFixed(2)),
        ingest_p99_ms: round1(percentile(meanwhile, 99)),
      }
    }
    for (const m of missed) warn(m)
    log(
      `  ingest p99 ${ms1(underF.p99)} ms with queries vs ${ms1(alone.p99)} ms without (${(underF.p99 / alone.p99).toFixed(2)}×), p95 ${ms1(underF.p95)} vs ${ms1(alone.p95)} ms, max ${ms1(underF.max)} vs ${ms1(alone.max)} ms; ` +
        `${int(underF.eventsPerS)} vs ${int(alone.eventsPerS)} events/s`,
    )
    if (cpu4 !== undefined && cpu4b !== undefined && cpu6 !== undefined && cpu6b !== undefined) {
      log(`  server CPU: ${f1(cpu4b - cpu4)} s over the idle queries (phase 4), ${f1(cpu6b - cpu6)} s over phase 6 (${f1(under.durationS)} s)`)
    }
    log(`  server RSS ${f1(rssMiB(server.pid) ?? NaN)} MiB`)
    Object.assign(summary, {
      ingest_alone_events_per_s: Math.round(alone.eventsPerS),
      ingest_alone_p99_ms: round1(alone.p99),
      ingest_loaded_events_per_s: Math.round(underF.eventsPerS),
      ingest_loaded_p99_ms: round1(underF.p99),
      queries: perQuery,
      timeseries: missingRoutes.size > 0 ? 'route missing' : 'measured',
    })

    // 7. Settle and check again.
    log('\n[7] settle: resend unanswered batches, then the checks again')
    const acked = await settleLedger(server, ledger, true)
    if (acked !== undefined) {
      log(`  acknowledged ${int(acked.events)} fresh events in phases 5 and 6`)
      await checkAll(ctx, plusAcked(generated, acked), 'after ingest')
      // Ingested ids read back by id (they live in the active segment).
      const ids = under.ackedBatchNos.slice(-20).map((b) => `bench-${runId}q-${b * opts.batch}`)
      let found = 0
      for (const id of ids) {
        const res = await fetch(`${server.url}/v1/events/${id}`, { signal: AbortSignal.timeout(httpTimeoutMs) })
        await res.text()
        if (res.status === 200) found++
        else fail(`after ingest: acknowledged id ${id} answered ${res.status}`)
      }
      log(`  after ingest: ${found} of ${ids.length} acknowledged ids read back by id`)
    }
    await stopServer(server)
    server = undefined
  } finally {
    if (server !== undefined) await server.stop()
    if (argv.keep === true) log(`\nkept ${dataDir}`)
    else await rm(dataDir, { recursive: true, force: true })
  }

  log()
  if (missingRoutes.size > 0) log(`skipped (route missing): ${[...missingRoutes].join(', ')}`)
  if (warnings.length > 0) log(`${warnings.length} warning(s): ${warnings.join('; ')}`)
  log(failures.length === 0 ? 'all correctness checks passed' : `${failures.length} CORRECTNESS FAILURE(S)`)
  log(JSON.stringify({ ...summary, warnings: warnings.length, failures: failures.length }))
  return failures.length === 0 ? 0 : 1
}

const round1 = (n: number): number | null => (Number.isFinite(n) ? Number(n.toFixed(1)) : null)

/** The answer cache's counters (/v1/status), or null for a server without one. */
async function cacheCounts(url: string): Promise<{ hits: number; misses: number } | null> {
  const st = await getJson<ServerStatus>(`${url}/v1/status`)
  return st.answer_cache ? { hits: st.answer_cache.hits, misses: st.answer_cache.misses } : null
}

/** Prints what the answer cache served over a phase; its figures for the summary. */
function cacheLine(phase: string, before: { hits: number; misses: number } | null, after: { hits: number; misses: number } | null): { hits: number; misses: number } | null {
  if (before === null || after === null) return null
  const hits = after.hits - before.hits
  const misses = after.misses - before.misses
  const share = hits + misses === 0 ? 0 : (100 * hits) / (hits + misses)
  log(
    `  answer cache over ${phase}: ${int(hits)} catalog statements served from it, ${int(misses)} run (${f1(share)}% served); ` +
      `TOKENLEDGER_QUERY_CACHE_ROWS=0 measures without it`,
  )
  return { hits, misses }
}

/** Stops the server and prints what it logged at warn and above. */
async function stopServer(server: RunningServer): Promise<void> {
  const stop = await server.stop()
  const l = server.logs
  log(`  ${server.name} stopped in ${int(stop.stopMs)} ms${stop.forced ? ' (SIGKILL)' : ''}; it logged ${l.warnLines} warnings, ${l.errorLines} errors, ${l.stderrLines} stderr lines`)
  for (const s of l.samples) log(`    ${s}`)
  if (l.errorLines > 0) warn(`${server.name} logged ${l.errorLines} errors`)
}

runMain('bench:query', main)
