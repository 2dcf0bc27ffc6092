// Read paths over the store: one event by id, and usage totals for a window.
// Reads go through Store.snapshot (pinned segments, bounded connections) and
// never take the write gate. Money is summed by DuckDB as DECIMAL(38,12), a 128-bit
// scaled integer, and formatted from the exact scaled value.
//
// Retention: raw events before the event cutoff and details before the detail
// cutoff are never returned, whether or not a retention run has deleted them
// yet. Totals count every event within the rollup window: before the event
// cutoff they come from rollups (and from raw rows of segments not yet sealed,
// which the rollups will hold once they are), so a total does not change when
// retention deletes raw events. That is exact only on 15-minute boundaries,
// so an unaligned window edge before the event cutoff is refused.
//
// Over 500 lines: the usage answers' live path, archived path and their SQL are
// one module still; next, the window logic apart from the SQL and the catalog
// statements behind the Catalog interface (ARCHITECTURE.md).

import { DuckDBDecimalValue, DuckDBTimestampValue, type DuckDBConnection, type DuckDBValue } from '@duckdb/node-api'
import { Errors } from '../errors.js'
import { formatCost } from '../money.js'
import { formatTimestampUs } from '../ingest/timestamp.js'
import { BUCKET_US, COARSE_LEVELS, COUNT_MEASURES, PRUNING_DIMS, ROLLUP_TOKEN_COLUMNS, rollupTokenSum, USERS_DAILY } from '../store/catalog.js'
import { tableOf } from '../store/relations.js'
import { inTransaction } from '../store/transaction.js'
import type { AnswerCache, Row } from '../store/answers.js'
import type { Cutoffs } from '../store/retention.js'
import type { LiveRollups } from '../store/segment.js'
import type { Snapshot, SnapshotPart, Store } from '../store/store.js'
import { sumLiveRollups } from './live.js'
import { DIMENSIONS, whereClause, type Dimension, type EventFilter } from './filters.js'

export interface StoredEvent {
  event_id: string
  timestamp: string
  key_id: string
  provider: string
  model: string
  status_code: number
  input_tokens: number
  output_tokens: number
  cache_read_tokens: number
  cache_write_tokens: number
  reasoning_tokens: number
  cost: string | null
  currency: string
  team_id: string | null
  user_id: string | null
  customer_id: string | null
  endpoint: string | null
  latency_ms: number | null
  ttft_ms: number | null
  stream: boolean | null
  tags: Record<string, string> | null
  detail?: Record<string, unknown> | null
}

/**
 * A count or token sum: a number while it is a safe integer, a bigint beyond
 * (serialized as an exact JSON integer). Sums over many events may pass 2^53.
 */
export type Count = number | bigint

type Measure = (typeof COUNT_MEASURES)[number]

export type Totals = Record<Measure, Count> & {
  cost: string | null
  currency: string | null
  cost_by_currency: Record<string, string>
}

export const SUMMARY_COLUMNS =
  'event_id, ts, key_id, provider, model, status_code, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, currency, team_id, user_id, customer_id, endpoint, latency_ms, ttft_ms, stream, tags, has_detail'

/** The event with its detail (null once expired), or null when no retained segment holds it or it has expired. */
export async function getEvent(store: Store, eventId: string): Promise<StoredEvent | null> {
  // The dedupe index names the segments that may hold the id: unknown ids never open a file.
  const candidates = store.candidates(eventId)
  if (candidates.length === 0) return null
  return store.snapshot(async (snap) => {
    for (const part of snap.parts) {
      if (!candidates.includes(part.id)) continue
      if (part.maxTsUs !== null && part.maxTsUs < snap.cutoffs.eventsUs) continue
      const read = (conn: DuckDBConnection) => readEvent(conn, part, eventId, snap.cutoffs)
      const found = part.alias === null ? await part.live(read) : await snap.files(read)
      if (found) return found
    }
    return null
  })
}

async function readEvent(conn: DuckDBConnection, part: SnapshotPart, eventId: string, cutoffs: Cutoffs): Promise<StoredEvent | null> {
  const res = await conn.runAndReadAll(`SELECT ${SUMMARY_COLUMNS} FROM ${tableOf(part.alias, 'events')} WHERE event_id = $1 AND ts >= $2 LIMIT 1`, [
    eventId,
    new DuckDBTimestampValue(BigInt(cutoffs.eventsUs)),
  ])
  const row = res.getRowObjects()[0]
  if (!row) return null
  const event = toStoredEvent(row)
  event.detail = null
  const tsUs = Number((row.ts as DuckDBTimestampValue).micros)
  if (row.has_detail === true && part.detailsAt !== null && tsUs >= cutoffs.detailsUs) {
    const d = await conn.runAndReadAll(`SELECT detail FROM ${tableOf(part.detailsAt.alias, 'event_details')} WHERE event_id = $1 LIMIT 1`, [eventId])
    const text = d.getRows()[0]?.[0]
    if (typeof text === 'string') event.detail = JSON.parse(text) as Record<string, unknown>
  }
  return event
}

const RAW_MEASURES = `count(*) AS requests,
              count(*) FILTER (WHERE status_code >= 400) AS errors,
              coalesce(sum(input_tokens), 0) AS input_tokens,
              coalesce(sum(output_tokens), 0) AS output_tokens,
              coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens,
              coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens,
              coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens,
              sum(cost) AS cost,
              count(*) FILTER (WHERE cost IS NULL) AS cost_missing`

const ROLLUP_MEASURES = `sum(requests) AS requests, sum(errors) AS errors,
              ${ROLLUP_TOKEN_COLUMNS.map((c) => `${rollupTokenSum(c)} AS ${c}`).join(', ')},
              sum(cost) AS cost, sum(cost_missing) AS cost_missing`

export type TotalsSource = 'auto' | 'raw'

/**
 * Exact totals for the window and filters, across every tier. Archived
 * segments answer from their 15-minute rollups for the aligned middle of the
 * window and from raw rows for the unaligned edges; active and pending
 * segments from raw rows. `source: 'raw'` scans raw rows only (the reference
 * the rollup path must equal).
 */
export async function usageTotals(store: Store, requested: EventFilter, source: TotalsSource = 'auto', nowMs?: number): Promise<Totals> {
  return (await usage(store, requested, [], source, nowMs)).totals
}

/** One group of a grouped usage answer: its dimension values (null: the event had none) and its totals. */
export interface UsageGroup {
  key: Partial<Record<Dimension, string | null>>
  totals: Totals
}

/** Most distinct groups one answer may compute; past it `tooManyGroups` is set and no groups are given. */
export const MAX_GROUPS = 100_000

export interface UsageAnswer {
  totals: Totals
  /** Sorted by key; empty without groupBy, or when there are more than MAX_GROUPS of them. */
  groups: UsageGroup[]
  tooManyGroups: boolean
}

/**
 * Totals and, for `groupBy` (a subset of the dimensions), the totals of each
 * group, sorted by key. Same sources and exactness as usageTotals: every group
 * sums rollup rows and raw rows of the same window.
 */
export async function usage(
  store: Store,
  requested: EventFilter,
  groupBy: readonly Dimension[],
  source: TotalsSource = 'auto',
  nowMs?: number,
): Promise<UsageAnswer> {
  const rows = await gatherRows(store, requested, groupBy, source, nowMs, null)
  const { byKey, tooManyGroups } = groupRows(rows, groupBy)
  const groups = groupBy.length === 0 || tooManyGroups ? [] : sortedGroups(byKey, groupBy).map((g) => g.group)
  return { totals: combineTotals(rows), groups, tooManyGroups }
}

/** A value of a dimension and how many requests had it. */
export interface DimensionValue {
  value: string
  requests: Count
}

/**
 * The values of every dimension in use within the window and filters, each
 * with its request count, most used first (then by value); events without a
 * value are not counted. One grouped pass over every source (GROUPING SETS),
 * from the same sources as usage().
 */
export async function dimensionValues(store: Store, requested: EventFilter, nowMs?: number, source: TotalsSource = 'auto'): Promise<Record<Dimension, DimensionValue[]>> {
  const rows = await gatherRows(store, requested, [], source, nowMs, null, DIMENSIONS)
  const counts = new Map<Dimension, Map<string, bigint>>(DIMENSIONS.map((d) => [d, new Map()]))
  for (const r of rows) {
    for (const d of DIMENSIONS) {
      const v = r[d]
      if (v === null || v === undefined) continue
      const m = counts.get(d)!
      m.set(String(v), (m.get(String(v)) ?? 0n) + big(r.requests))
    }
  }
  const out = {} as Record<Dimension, DimensionValue[]>
  for (const d of DIMENSIONS) {
    out[d] = [...counts.get(d)!.entries()]
      .sort(([va, a], [vb, b]) => (a !== b ? (a > b ? -1 : 1) : va < vb ? -1 : va > vb ? 1 : 0))
      .map(([value, requests]) => ({ value, requests: jsonInt(requests) }))
  }
  return out
}

/** One series of a time series: its group's key, its totals, and one point per bucket (zeros where it had no events). */
export interface Series {
  key: Partial<Record<Dimension, string | null>>
  totals: Totals
  points: Totals[]
}

export interface SeriesAnswer {
  totals: Totals
  /** How many series (groups) the window has. */
  seriesCount: number
  /** The series `pick` chose, in its order, with their points; empty when there are more than MAX_GROUPS groups. */
  series: Series[]
  tooManyGroups: boolean
}

/**
 * Per-bucket totals: `startsUs` are the buckets' first instants, ascending,
 * every one on a 15-minute boundary, the first at or before the window's
 * start. An event belongs to the last bucket starting at or before it. The
 * rows are summed per 15 minutes first (rollups already are), so a bucket is
 * exactly the sum of the 15-minute buckets within it, from the same sources
 * as usage(). Every series' totals are computed (sorted by key); `pick`
 * chooses the ones answered, and only those get points (series × buckets is
 * what costs memory).
 */
export async function timeseries(
  store: Store,
  requested: EventFilter,
  groupBy: readonly Dimension[],
  startsUs: readonly number[],
  pick: (all: UsageGroup[]) => UsageGroup[],
  source: TotalsSource = 'auto',
  nowMs?: number,
): Promise<SeriesAnswer> {
  if (startsUs.length === 0 || startsUs[0]! > requested.fromUs) throw new Error('invariant: the first bucket must start at or before the window')
  for (let i = 0; i < startsUs.length; i++) {
    const s = startsUs[i]!
    if (!Number.isSafeInteger(s) || s % BUCKET_US !== 0 || (i > 0 && s <= startsUs[i - 1]!)) throw new Error('invariant: bucket starts are ascending 15-minute boundaries')
  }
  const rows = await gatherRows(store, requested, groupBy, source, nowMs, startsUs)
  const { byKey, tooManyGroups } = groupRows(rows, groupBy)
  if (tooManyGroups) return { totals: combineTotals(rows), seriesCount: byKey.size, series: [], tooManyGroups }
  if (groupBy.length === 0 && byKey.size === 0) byKey.set('[]', []) // ungrouped: one series, zeros when nothing happened
  const all = sortedGroups(byKey, groupBy)
  const listOf = new Map(all.map((s) => [s.group, s.list]))
  const index = new Map(startsUs.map((s, i) => [s, i]))
  const zero = combineTotals([]) // shared by every empty bucket (serialized, never mutated)
  const series = pick(all.map((s) => s.group)).map((group) => {
    const list = listOf.get(group)
    if (!list) throw new Error('invariant: pick must return series it was given')
    const perBucket = new Map<number, Row[]>()
    for (const r of list) {
      const i = index.get(Number(r.start))
      if (i === undefined) throw new Error('invariant: a row outside every bucket')
      const cell = perBucket.get(i)
      if (cell) cell.push(r)
      else perBucket.set(i, [r])
    }
    return { ...group, points: startsUs.map((_, i) => {
      const cell = perBucket.get(i)
      return cell ? combineTotals(cell) : zero
    }) }
  })
  return { totals: combineTotals(rows), seriesCount: all.length, series, tooManyGroups }
}

/** Most rows one SQL statement of a usage answer may return before the query is refused as too large. */
export const MAX_RESULT_ROWS = 1_000_000

/**
 * The rows (per currency and group, and per bucket when `startsUs` is given)
 * whose sum is the answer: raw rows of live and pending segments and of the
 * archived edges, rollup rows of the archived, aligned middle.
 */
async function gatherRows(
  store: Store,
  requested: EventFilter,
  groupBy: readonly Dimension[],
  source: TotalsSource,
  nowMs: number | undefined,
  startsUs: readonly number[] | null,
  sets: readonly Dimension[] | null = null,
): Promise<Row[]> {
  const cutoffs = store.cutoffs(nowMs)
  const filter = { ...requested, fromUs: source === 'auto' ? effectiveFromUs(requested.fromUs, cutoffs) : Math.max(requested.fromUs, cutoffs.rollupsUs) }
  if (filter.fromUs >= filter.toUs) return []
  const alignedFrom = Math.ceil(filter.fromUs / BUCKET_US) * BUCKET_US
  const alignedTo = Math.floor(filter.toUs / BUCKET_US) * BUCKET_US
  const useRollups = source === 'auto' && alignedFrom < alignedTo
  if (source === 'auto') refuseExpiredEdges(filter, alignedFrom, alignedTo, cutoffs)
  const whole: Range = [filter.fromUs, filter.toUs]
  const edges: Range[] = useRollups ? ([[filter.fromUs, alignedFrom], [alignedTo, filter.toUs]] as Range[]).filter(([a, b]) => a < b) : [whole]
  const shape: Shape = { groupBy, startsUs, sets }
  return store.snapshot(async (snap) => {
    const rows: Row[] = []
    const byRange = new Map<Range, string[]>()
    // Per edge: the archived segments whose events in the edge's cell all lie inside the window (their rollups of that cell answer).
    const wholeEdges = new Map<Range, number[]>(edges.map((r) => [r, []]))
    for (const part of snap.parts) {
      const ranges = (part.state === 'archived' ? edges : [whole]).filter((r) => mayMatch(part, filter, r))
      if (ranges.length === 0) continue
      if (part.alias === null) {
        if (useRollups && liveRollupsAnswer(filter, shape)) {
          const view = await part.liveRollups()
          if (view !== null) rows.push(...(await part.live((conn) => liveViewTotals(conn, view, filter, edges, [alignedFrom, alignedTo], shape))))
          else rows.push(...(await part.live((conn) => inTransaction(conn, () => liveTotals(conn, filter, edges, [alignedFrom, alignedTo], shape)))))
        }
        else for (const r of ranges) rows.push(...(await part.live((conn) => rawTotals(conn, [null], filter, r, shape))))
      } else {
        for (const r of ranges) {
          if (useRollups && part.state === 'archived' && edgeHoldsSegment(part, r, [alignedFrom, alignedTo])) {
            wholeEdges.get(r)!.push(part.id)
            continue
          }
          const list = byRange.get(r) ?? []
          list.push(part.alias)
          byRange.set(r, list)
        }
      }
    }
    for (const [range, aliases] of byRange) rows.push(...(await snap.files((conn) => rawTotals(conn, aliases, filter, range, shape))))
    if (useRollups) {
      // Rollups of segments this snapshot reads raw (archived after it was taken) must not count twice.
      const rawIds = snap.parts.filter((p) => p.state !== 'archived').map((p) => p.id)
      const edgeCells = [...wholeEdges].filter(([, ids]) => ids.length > 0).map(([r, ids]) => ({ cell: edgeCell(r, [alignedFrom, alignedTo]).cell, ids }))
      rows.push(...(await rollupRows(snap, store.answers, filter, [alignedFrom, alignedTo], rawIds, shape, edgeCells)))
    }
    return rows
  })
}

/** Rows by group key (JSON of the group's values); stops at MAX_GROUPS distinct keys. */
function groupRows(rows: Row[], groupBy: readonly Dimension[]): { byKey: Map<string, Row[]>; tooManyGroups: boolean } {
  const byKey = new Map<string, Row[]>()
  for (const r of rows) {
    const key = JSON.stringify(groupBy.map((d) => str(r[d])))
    let list = byKey.get(key)
    if (!list) {
      if (byKey.size >= MAX_GROUPS) return { byKey, tooManyGroups: true }
      byKey.set(key, (list = []))
    }
    list.push(r)
  }
  return { byKey, tooManyGroups: false }
}

/** Each group's key and totals, with its rows, sorted by key. */
function sortedGroups(byKey: Map<string, Row[]>, groupBy: readonly Dimension[]): Array<{ group: UsageGroup; list: Row[] }> {
  return [...byKey.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([key, list]) => {
      const values = JSON.parse(key) as Array<string | null>
      return { group: { key: Object.fromEntries(groupBy.map((d, i) => [d, values[i] ?? null])), totals: combineTotals(list) }, list }
    })
}

export type Range = [number, number]

/** How far before the event cutoff an unaligned `from` is moved up to it (a client's own "now - 30d" arrives a little late). */
export const FROM_GRACE_US = BUCKET_US

/**
 * The `from` that totals answer for: nothing is retained before the rollup
 * cutoff (a bucket boundary), and an unaligned `from` at most FROM_GRACE_US
 * before the event cutoff starts at the cutoff (every raw event from there on
 * is still stored, so the answer stays exact for that window).
 */
export function effectiveFromUs(fromUs: number, c: Cutoffs): number {
  const from = Math.max(fromUs, c.rollupsUs)
  const aligned = from % BUCKET_US === 0
  if (!aligned && from < c.eventsUs && c.eventsUs - from <= FROM_GRACE_US) return c.eventsUs
  return from
}

/** An edge of the window answered from raw rows must not reach before the event cutoff (those rows are gone, or going). */
function refuseExpiredEdges(f: EventFilter, alignedFrom: number, alignedTo: number, c: Cutoffs): void {
  const cutoff = new Date(Math.floor(c.eventsUs / 1000)).toISOString()
  const why = `is before the raw-event retention cutoff (${cutoff}); totals before it come from 15-minute rollups, so it must fall on a 15-minute boundary`
  if (f.fromUs < c.eventsUs && f.fromUs !== alignedFrom) throw new Errors.BadQuery(`\`from\` ${why}`)
  if (f.toUs !== alignedTo && Math.max(alignedTo, f.fromUs) < c.eventsUs) throw new Errors.BadQuery(`\`to\` ${why}`)
}

/** False when the segment's time bounds or pruning dims prove it holds nothing for the filter. */
export function mayMatch(part: SnapshotPart, f: EventFilter, [fromUs, toUs]: Range): boolean {
  // Bounds are exact (kept at commit, or computed from the file): no bounds, no rows.
  if (part.minTsUs === null || part.maxTsUs === null) return false
  if (part.maxTsUs < fromUs || part.minTsUs >= toUs) return false
  if (part.dims) {
    for (const dim of PRUNING_DIMS) {
      const wanted = f.dims[dim]
      if (wanted && wanted.length > 0 && !wanted.some((v) => part.dims![dim].has(v))) return false
    }
  }
  return true
}

/** `currency` plus the group-by columns (names from the fixed DIMENSIONS list, never from input). */
function groupColumns(groupBy: readonly Dimension[]): string {
  for (const d of groupBy) if (!DIMENSIONS.includes(d)) throw new Error(`invariant: unknown dimension ${String(d)}`)
  return ['currency', ...groupBy].join(', ')
}

/**
 * What one usage statement groups by: the dimensions (and currency), and the
 * buckets when a time series. With `sets`, each of those dimensions alone
 * instead (GROUPING SETS: a row holds one of them, the others NULL) and only
 * `requests` is counted: the values in use, ranked, in one pass.
 */
interface Shape {
  groupBy: readonly Dimension[]
  startsUs: readonly number[] | null
  sets: readonly Dimension[] | null
}

/** The inner statement's grouping: currency and dimensions, plus the 15-minute bucket `time` (as `b`) for a series. */
function grouping(time: string, shape: Shape): { cols: string; select: string; by: string } {
  if (shape.sets !== null) {
    if (shape.startsUs !== null || shape.sets.length === 0) throw new Error('invariant: grouping sets are one or more dimensions, never a series')
    const cols = shape.sets.join(', ')
    groupColumns(shape.sets) // checks the names
    return { cols, select: cols, by: `GROUPING SETS (${shape.sets.map((d) => `(${d})`).join(', ')})` }
  }
  const cols = groupColumns(shape.groupBy)
  return shape.startsUs === null ? { cols, select: cols, by: cols } : { cols, select: `${time} AS b, ${cols}`, by: `${time}, ${cols}` }
}

/** The measures over raw events, or only `requests` for grouping sets. */
function rawMeasures(shape: Shape): string {
  return shape.sets === null ? RAW_MEASURES : 'count(*) AS requests'
}

/** The measures over rollup rows (full or coarse), or only `requests` for grouping sets. */
function rollupMeasures(shape: Shape): string {
  return shape.sets === null ? ROLLUP_MEASURES : 'sum(requests) AS requests'
}

/** Re-sums rows that already hold the measures (one per 15-minute bucket) into coarser rows. */
const SUM_MEASURES = COUNT_MEASURES.map((m) => `sum(${m}) AS ${m}`).concat('sum(cost) AS cost').join(', ')

/**
 * The statement over `inner` (rows of measures grouped by currency, the
 * dimensions and, for a series, their 15-minute bucket `b`): for a series each
 * row is moved to the last bucket starting at or before `b` (an ASOF join on
 * the bucket starts, which are our own integers, never input) and summed there.
 */
function shaped(inner: string, cols: string, shape: Shape): string {
  const cap = ` LIMIT ${MAX_RESULT_ROWS + 1}`
  if (shape.startsUs === null) return inner + cap
  const starts = shape.startsUs.map((s) => String(Math.trunc(s))).join(', ')
  return (
    `WITH d AS (${inner}), s AS (SELECT unnest([${starts}]::BIGINT[]) AS start) ` +
    `SELECT s.start, ${cols}, ${SUM_MEASURES} FROM d ASOF JOIN s ON epoch_us(d.b) >= s.start GROUP BY s.start, ${cols}${cap}`
  )
}

async function readShaped(conn: DuckDBConnection, sql: string, params: DuckDBValue[]): Promise<Row[]> {
  const rows = (await conn.runAndReadAll(sql, params)).getRowObjects()
  if (rows.length > MAX_RESULT_ROWS) throw new Errors.QueryTooLarge(`the answer would hold more than ${MAX_RESULT_ROWS} rows; narrow the window, the filters, group_by or the bucket`)
  return rows
}

async function rawTotals(conn: DuckDBConnection, aliases: Array<string | null>, f: EventFilter, [fromUs, toUs]: Range, shape: Shape): Promise<Row[]> {
  const where = whereClause({ ...f, fromUs, toUs })
  const union = aliases.map((a) => `SELECT * FROM ${tableOf(a, 'events')} WHERE ${where.sql}`).join(' UNION ALL ')
  const g = grouping('time_bucket(INTERVAL 15 MINUTE, ts)', shape)
  return readShaped(conn, shaped(`SELECT ${g.select}, ${rawMeasures(shape)} FROM (${union}) GROUP BY ${g.by}`, g.cols, shape), where.params)
}

/** Whether the question filters or groups by user_id (which the coarse and live rollups do not hold). */
function involvesUser(f: EventFilter, shape: Shape): boolean {
  return (f.dims.user_id?.length ?? 0) > 0 || shape.groupBy.includes('user_id')
}

/**
 * Whether a live segment's live_rollups (no user_id) can answer: totals,
 * groups and series that involve no user. Not dimension values: measured on a
 * live segment of 110 k and 300 k events, one grouping-sets pass over its
 * events (10.4 and 10.7 ms) beat its live rollups for every dimension but
 * user_id plus a raw pass for user_id (14.9 ms both; .tmp/dimprof.ts).
 */
function liveRollupsAnswer(f: EventFilter, shape: Shape): boolean {
  return shape.sets === null && !involvesUser(f, shape)
}

/**
 * Rows of a live segment (its own database on `conn`) for the window: the
 * aligned `middle` from its live_rollups plus the events appended since they
 * were refreshed, and the `edges` (each inside one 15-minute cell). Runs in
 * the caller's read transaction, so its two statements see one snapshot of the
 * rollups, their watermark, their cell bounds and the events (see segment.ts).
 * An edge cell whose rolled-up events all lie inside the window (live_cells:
 * the cell's newest before `to`, or its oldest at or after `from`), or that
 * has none, is taken whole from the rollups too (liveParts), and only its
 * events appended since are read raw: a window ending now no longer scans the
 * last quarter hour of events, which at steady ingest is most of them.
 */
async function liveTotals(conn: DuckDBConnection, f: EventFilter, edges: Range[], middle: Range, shape: Shape): Promise<Row[]> {
  const cells = edges.map((edge) => edgeCell(edge, middle).cell)
  // The watermark and the edge cells' bounds first, in one statement, so the scans
  // below filter rowids by constants, which they can prune row groups by (a scalar
  // subquery in a scan's filter cannot be pruned by).
  const bounds = (
    await conn.runAndReadAll(
      `SELECT (SELECT coalesce(max(rows), 0) FROM live_rollups_upto)` +
        cells.map(([c]) => `, (SELECT epoch_us(min(min_ts)) FROM live_cells WHERE bucket = make_timestamp(${c}::BIGINT)), (SELECT epoch_us(max(max_ts)) FROM live_cells WHERE bucket = make_timestamp(${c}::BIGINT))`).join(''),
    )
  ).getRows()[0]!
  const boundsByCell = new Map(
    cells.map(([c], i): [number, readonly [number, number] | null] => {
      const [minUs, maxUs] = [bounds[1 + 2 * i], bounds[2 + 2 * i]]
      return [c, typeof minUs === 'bigint' && typeof maxUs === 'bigint' ? [Number(minUs), Number(maxUs)] : null]
    }),
  )
  const params: DuckDBValue[] = []
  const { rolled, raw } = liveParts(f, edges, middle, Number(bounds[0]), (cellUs) => boundsByCell.get(cellUs) ?? null, params)
  const rolledWhere = rolled.map((range) => `(${whereClause(f, { timeColumn: 'bucket', ranges: [range], params }).sql})`)
  const r = grouping('bucket', shape)
  const e = grouping('time_bucket(INTERVAL 15 MINUTE, ts)', shape)
  const inner =
    `SELECT ${r.select}, ${rollupMeasures(shape)} FROM live_rollups WHERE ${rolledWhere.join(' OR ')} GROUP BY ${r.by} ` +
    `UNION ALL SELECT ${e.select}, ${rawMeasures(shape)} FROM (${raw.join(' UNION ALL ')}) GROUP BY ${e.by}`
  return readShaped(conn, shaped(inner, r.cols, shape), params)
}

/**
 * How a live segment's window splits between its rollups (the events below
 * `upto`) and its raw events: the rollups answer the aligned middle and every
 * edge cell whose rolled-up events all lie inside the window (`boundsOf` the
 * cell: their oldest and newest µs, null when it has none); the raw SELECTs
 * (filters bound into `params`) read the events from `upto` on there, and
 * every event of the other edges.
 */
function liveParts(f: EventFilter, edges: Range[], middle: Range, upto: number, boundsOf: (cellUs: number) => readonly [number, number] | null, params: DuckDBValue[]): { rolled: Range[]; raw: string[] } {
  const rolled: Range[] = [middle]
  const raw = [`SELECT * FROM events WHERE rowid >= ${upto} AND ${whereClause(f, { ranges: [middle], params }).sql}`]
  for (const edge of edges) {
    const { cell, left } = edgeCell(edge, middle)
    const bounds = boundsOf(cell[0])
    // No rolled-up event in the cell, or all of them inside the window: the cell's rollups count exactly those.
    const whole = bounds === null || insideWindow(edge, left, bounds[0], bounds[1])
    if (whole) rolled.push(cell)
    raw.push(`SELECT * FROM events WHERE ${whole ? `rowid >= ${upto} AND ` : ''}${whereClause(f, { ranges: [edge], params }).sql}`)
  }
  return { rolled: rolled.sort((x, y) => x[0] - y[0]), raw }
}

/**
 * liveTotals over the segment's rollups in memory (`view`): the aligned middle
 * and every edge cell whose rolled-up events all lie inside the window (or
 * that has none) are summed in JS from the view's rows, and one statement
 * reads the events from the view's `upto` on in those ranges plus every event
 * of the other edges. One statement is one snapshot of the events, and the
 * view stays exact whenever it is read (segment.ts), so no transaction.
 */
async function liveViewTotals(conn: DuckDBConnection, view: LiveRollups, f: EventFilter, edges: Range[], middle: Range, shape: Shape): Promise<Row[]> {
  const params: DuckDBValue[] = []
  const { rolled, raw } = liveParts(f, edges, middle, view.upto, (cellUs) => view.cells.get(cellUs) ?? null, params)
  const e = grouping('time_bucket(INTERVAL 15 MINUTE, ts)', shape)
  const tail = await readShaped(conn, shaped(`SELECT ${e.select}, ${rawMeasures(shape)} FROM (${raw.join(' UNION ALL ')}) GROUP BY ${e.by}`, e.cols, shape), params)
  return [...sumLiveRollups(view.rows, f, rolled, shape.groupBy, shape.startsUs), ...tail]
}

/**
 * Rows of the aligned middle `range` from the rollups of archived segments
 * (segments in `rawIds` are read raw by the caller and left out). The coarse
 * rollups answer when the question involves no `user_id` and they provably
 * hold none of `rawIds`; otherwise the per-segment rollups. When the snapshot
 * knows its catalog generation and the cache holds every statement's answer
 * at it, those answer without DuckDB.
 */
async function rollupRows(snap: Snapshot, answers: AnswerCache, f: EventFilter, range: Range, rawIds: number[], shape: Shape, edgeCells: EdgeCell[]): Promise<Row[]> {
  const edgeStatements = edgeCells.map(({ cell, ids }) => segmentRollups(f, cell, ids, shape))
  if (snap.catalogGeneration !== null) {
    // The snapshot's archived segments are the generation's: none of rawIds is in its rollups.
    const kept = answers.cached(snap.catalogGeneration, [...rollupStatements(f, range, rawIds, shape, true), ...edgeStatements])
    if (kept !== undefined) return kept.flat()
  }
  // One transaction: its statements, and the generation the cache keys them by, see one snapshot of the catalog.
  return snap.files((conn) =>
    inTransaction(conn, async () => {
      const read = await answers.reader(conn)
      // Coarse rows are summed over segments, so they cannot leave one out: a
      // segment this snapshot reads raw that has been archived since (it is in
      // them, or about to be) sends the question to the per-segment rollups.
      // Checked in the transaction that reads them, so both see one catalog.
      let coarse = true
      if (!involvesUser(f, shape) && rawIds.length > 0) {
        const res = await conn.runAndReadAll(`SELECT count(*) FROM catalog.segments WHERE id IN (${idList(rawIds)}) AND state IN ('archived', 'deleted')`)
        coarse = Number(res.getRows()[0]?.[0] ?? 0) === 0
      }
      const rows: Row[] = []
      for (const st of [...rollupStatements(f, range, rawIds, shape, coarse), ...edgeStatements]) rows.push(...(await read(st.sql, st.params, () => readShaped(conn, st.sql, st.params))))
      return rows
    }),
  )
}

/** An edge's 15-minute cell and the archived segments whose rollups of it answer for the edge. */
interface EdgeCell {
  cell: Range
  ids: number[]
}

/**
 * Whether the archived segment's events in the cell of `edge` (an unaligned
 * edge of the window, bordering its aligned `middle`) all lie inside the
 * window: its oldest event at or after the window's start (left edge), or its
 * newest before the window's end (right edge). Then its rollups of that cell
 * count exactly its events in the edge, and its file is not read.
 */
function edgeHoldsSegment(part: SnapshotPart, edge: Range, middle: Range): boolean {
  return part.minTsUs !== null && part.maxTsUs !== null && insideWindow(edge, edgeCell(edge, middle).left, part.minTsUs, part.maxTsUs)
}

/** The 15-minute cell of an unaligned edge of the window, and whether it is the left (start) edge; the edge borders the aligned middle. */
function edgeCell(edge: Range, middle: Range): { cell: Range; left: boolean } {
  if (edge[1] === middle[0]) return { cell: [edge[1] - BUCKET_US, edge[1]], left: true }
  if (edge[0] === middle[1]) return { cell: [edge[0], edge[0] + BUCKET_US], left: false }
  throw new Error('invariant: an edge of the window borders its aligned middle')
}

/** Whether events of an edge's cell from `minUs` to `maxUs` all lie inside the window: at or after its start (left edge), before its end (right). */
function insideWindow(edge: Range, left: boolean, minUs: number, maxUs: number): boolean {
  return left ? minUs >= edge[0] : maxUs < edge[1]
}

/** The statement of one cell over the per-segment rollups of the segments `ids` only. */
function segmentRollups(f: EventFilter, cell: Range, ids: number[], shape: Shape): Statement {
  const where = whereClause(f, { timeColumn: 'bucket', ranges: [cell] })
  const g = grouping('bucket', shape)
  return { sql: shaped(`SELECT ${g.select}, ${rollupMeasures(shape)} FROM catalog.rollups WHERE ${where.sql} AND segment_id IN (${idList(ids)}) GROUP BY ${g.by}`, g.cols, shape), params: where.params }
}

/** Segment ids as an SQL list (integers of our own, never input). */
function idList(ids: readonly number[]): string {
  return ids.map((id) => String(Math.trunc(id))).join(', ')
}

/** One statement of a catalog read and its parameters. */
interface Statement {
  sql: string
  params: DuckDBValue[]
}

/**
 * The catalog statements whose rows are rollupRows' answer: the per-segment
 * rollups without `rawIds` when the question involves `user_id` or `coarse`
 * is false (the coarse rollups may hold one of them); otherwise the coarse
 * rollups, and the users' values (userValues) for grouping sets with user_id.
 */
function rollupStatements(f: EventFilter, range: Range, rawIds: number[], shape: Shape, coarse: boolean): Statement[] {
  if (involvesUser(f, shape) || !coarse) return [rollupTotals(f, [range], rawIds, shape)]
  const coarseSets = shape.sets?.filter((d) => d !== 'user_id') ?? null
  const out = coarseSets === null || coarseSets.length > 0 ? [coarseTotals(f, range, coarseSets === null ? shape : { ...shape, sets: coarseSets })] : []
  if (shape.sets?.includes('user_id')) out.push(...userValues(f, range, rawIds))
  return out
}

/** The coarse level whose cells are the users' daily rollup's. */
const DAY_LEVEL = COARSE_LEVELS.findIndex((l) => l.us === USERS_DAILY.us)
if (DAY_LEVEL < 0) throw new Error('invariant: a coarse level has the cells of the users\' daily rollup')

/**
 * Requests per user_id over `range` (grouping-set rows): with no filter but
 * the window, whole UTC days from the users' daily rollup and the rest from
 * the per-segment rollups; with filters, all from the per-segment rollups.
 * Only where the coarse rollups answer too (rollupStatements).
 */
function userValues(f: EventFilter, range: Range, rawIds: number[]): Statement[] {
  const shape: Shape = { groupBy: [], startsUs: null, sets: ['user_id'] }
  const filtered = f.status.length > 0 || DIMENSIONS.some((d) => (f.dims[d]?.length ?? 0) > 0)
  if (filtered) return [rollupTotals(f, [range], rawIds, shape)]
  const cells = coarseCells(range[0], range[1], null)
  const days = cells[DAY_LEVEL]!
  const out: Statement[] = []
  if (days.length > 0) {
    const where = whereClause(f, { timeColumn: 'bucket', ranges: days })
    out.push({ sql: `SELECT user_id, sum(requests) AS requests FROM catalog.${USERS_DAILY.table} WHERE ${where.sql} GROUP BY user_id`, params: where.params })
  }
  const rest = cells.filter((c) => c !== days).flat().sort((a, b) => a[0] - b[0])
  if (rest.length > 0) out.push(rollupTotals(f, rest, rawIds, shape))
  return out
}

/** The statement of the ranges (ascending, disjoint, within the filter's window) over the per-segment rollups, without the segments `excludeIds`. */
function rollupTotals(f: EventFilter, ranges: Range[], excludeIds: number[], shape: Shape): Statement {
  const where = whereClause(f, { timeColumn: 'bucket', ranges })
  const exclude = excludeIds.length > 0 ? ` AND segment_id NOT IN (${idList(excludeIds)})` : ''
  const g = grouping('bucket', shape)
  return { sql: shaped(`SELECT ${g.select}, ${rollupMeasures(shape)} FROM catalog.rollups WHERE ${where.sql}${exclude} GROUP BY ${g.by}`, g.cols, shape), params: where.params }
}

/** The statement of `range` over the coarse rollups: whole days, whole hours, then 15-minute cells (see coarseCells). */
function coarseTotals(f: EventFilter, [fromUs, toUs]: Range, shape: Shape): Statement {
  const perLevel = coarseCells(fromUs, toUs, shape.startsUs)
  const params: DuckDBValue[] = []
  const selects = COARSE_LEVELS.flatMap((level, i) =>
    perLevel[i]!.length === 0 ? [] : [`SELECT * FROM catalog.${level.table} WHERE ${whereClause(f, { timeColumn: 'bucket', ranges: perLevel[i]!, params }).sql}`],
  )
  if (selects.length === 0) throw new Error('invariant: an aligned, non-empty range has coarse cells')
  const g = grouping('bucket', shape)
  return { sql: shaped(`SELECT ${g.select}, ${rollupMeasures(shape)} FROM (${selects.join(' UNION ALL ')}) GROUP BY ${g.by}`, g.cols, shape), params }
}

/**
 * Covers [fromUs, toUs) (15-minute boundaries) with cells of the coarse
 * levels, coarsest first: from each end, finer cells up to the first boundary
 * of the next level, and the coarsest level in the middle; a cell never
 * crosses a break (a bucket start of a series, strictly inside the range), so
 * every cell lies within one bucket. Returns the ranges of each level, in
 * COARSE_LEVELS order, ascending, contiguous ones merged.
 */
export function coarseCells(fromUs: number, toUs: number, breaks: readonly number[] | null): Range[][] {
  const widths = COARSE_LEVELS.map((l) => l.us)
  const q = widths[0]!
  if (fromUs % q !== 0 || toUs % q !== 0 || fromUs >= toUs) throw new Error('invariant: coarse cells cover a non-empty range of 15-minute boundaries')
  const out: Range[][] = COARSE_LEVELS.map(() => [])
  const add = (level: number, a: number, b: number): void => {
    if (a >= b) return
    const list = out[level]!
    const last = list[list.length - 1]
    if (last && last[1] === a) last[1] = b
    else list.push([a, b])
  }
  const floorTo = (x: number, w: number): number => Math.floor(x / w) * w
  const ceilTo = (x: number, w: number): number => Math.ceil(x / w) * w
  const top = widths.length - 1
  const cuts = [fromUs, ...(breaks ?? []).filter((s) => s > fromUs && s < toUs), toUs]
  for (let i = 0; i + 1 < cuts.length; i++) {
    const b = cuts[i + 1]!
    let x = cuts[i]!
    if (x % q !== 0 || b % q !== 0) throw new Error('invariant: breaks fall on 15-minute boundaries')
    // Up from the start: each level to the first boundary of the next one (never past the last of its own before b).
    for (let l = 0; l < top; l++) {
      const next = Math.max(x, Math.min(floorTo(b, widths[l]!), ceilTo(x, widths[l + 1]!)))
      add(l, x, next)
      x = next
    }
    // The middle at the coarsest level, then down to b.
    for (let l = top; l >= 0; l--) {
      const next = Math.max(x, floorTo(b, widths[l]!))
      add(l, x, next)
      x = next
    }
  }
  return out
}

export type { Row } from '../store/answers.js'

function combineTotals(rows: Row[]): Totals {
  const sums = Object.fromEntries(COUNT_MEASURES.map((m) => [m, 0n])) as Record<Measure, bigint>
  const scaledCost = new Map<string, bigint>()
  for (const r of rows) {
    for (const m of COUNT_MEASURES) sums[m] += big(r[m])
    if (r.cost instanceof DuckDBDecimalValue) {
      const currency = String(r.currency)
      scaledCost.set(currency, (scaledCost.get(currency) ?? 0n) + r.cost.value)
    }
  }
  const costByCurrency: Record<string, string> = {}
  for (const currency of [...scaledCost.keys()].sort()) costByCurrency[currency] = formatCost(scaledCost.get(currency)!)
  const currencies = Object.keys(costByCurrency)
  const single = currencies.length === 1 ? currencies[0]! : null
  return {
    ...(Object.fromEntries(COUNT_MEASURES.map((m) => [m, jsonInt(sums[m])])) as Record<Measure, Count>),
    // No known cost at all is an exact zero; several currencies have no single sum.
    cost: single !== null ? costByCurrency[single]! : currencies.length === 0 ? '0' : null,
    currency: single,
    cost_by_currency: costByCurrency,
  }
}

export function toStoredEvent(r: Row): StoredEvent {
  return {
    event_id: String(r.event_id),
    timestamp: formatTimestampUs(Number((r.ts as DuckDBTimestampValue).micros)),
    key_id: String(r.key_id),
    provider: String(r.provider),
    model: String(r.model),
    status_code: Number(r.status_code),
    input_tokens: int(r.input_tokens),
    output_tokens: int(r.output_tokens),
    cache_read_tokens: int(r.cache_read_tokens),
    cache_write_tokens: int(r.cache_write_tokens),
    reasoning_tokens: int(r.reasoning_tokens),
    cost: r.cost instanceof DuckDBDecimalValue ? formatCost(r.cost.value) : null,
    currency: String(r.currency),
    team_id: str(r.team_id),
    user_id: str(r.user_id),
    customer_id: str(r.customer_id),
    endpoint: str(r.endpoint),
    latency_ms: r.latency_ms === null ? null : Number(r.latency_ms),
    ttft_ms: r.ttft_ms === null ? null : Number(r.ttft_ms),
    stream: r.stream === null ? null : Boolean(r.stream),
    tags: typeof r.tags === 'string' ? (JSON.parse(r.tags) as Record<string, string>) : null,
  }
}

function big(v: DuckDBValue | undefined): bigint {
  if (typeof v === 'bigint') return v
  if (v instanceof DuckDBDecimalValue && v.scale === 0) return v.value
  return typeof v === 'number' ? BigInt(v) : 0n
}

function jsonInt(v: bigint): Count {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v
}

/** One stored value: per-event counts are safe integers by validation. */
function int(v: DuckDBValue | undefined): number {
  return Number(big(v))
}

function str(v: DuckDBValue | undefined): string | null {
  return v === null || v === undefined ? null : String(v)
}
