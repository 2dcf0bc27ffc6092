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
// This module gathers a usage answer's rows from every tier of a snapshot and
// sums them; the window logic is window.ts, the statement shapes
// statements.ts, the live path live.ts and the catalog's statements rollups.ts.

import { DuckDBDecimalValue, DuckDBTimestampValue, type DuckDBConnection, type DuckDBValue } from '@duckdb/node-api'
import { formatCost } from '../money.js'
import { formatTimestampUs } from '../ingest/timestamp.js'
import { BUCKET_US, COUNT_MEASURES } from '../store/catalog.js'
import { tableOf } from '../store/relations.js'
import { COST_ORIGIN_SQL, REPORTED_COST_SQL, TOKEN_COLUMNS } from '../store/schema.js'
import { inTransaction } from '../store/transaction.js'
import type { Row } from '../store/answers.js'
import type { Cutoffs } from '../store/retention.js'
import type { SnapshotPart } from '../store/snapshot.js'
import type { Store } from '../store/store.js'
import { liveRollupsAnswer, liveTotals, liveViewTotals } from './live.js'
import { rollupRows } from './rollups.js'
import { rawTotals, type Shape } from './statements.js'
import { edgeCell, edgeHoldsSegment, effectiveFromUs, mayMatch, refuseExpiredEdges, type Range } from './window.js'
import { DIMENSIONS, type Dimension, type EventFilter } from './filters.js'

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
  cost_origin: 'reported' | 'priced' | null
  reported_cost: string | null
  price_ref: string | null
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

/** Every measure of a Totals, in the order answers list them (what groups and series can be sorted by). */
export const MEASURES = ['requests', 'errors', ...TOKEN_COLUMNS, 'cost', 'cost_missing'] as const

export type Totals = Record<Measure, Count> & {
  cost: string | null
  currency: string | null
  cost_by_currency: Record<string, string>
  /** The part of `cost` priced from the price table (the rest was reported by the gateway); null exactly when `cost` is. */
  cost_priced: string | null
  cost_priced_by_currency: Record<string, string>
}

export const SUMMARY_COLUMNS =
  `event_id, ts, key_id, provider, model, status_code, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, ${COST_ORIGIN_SQL} AS cost_origin, ${REPORTED_COST_SQL} AS reported_cost, price_ref, currency, team_id, user_id, customer_id, endpoint, latency_ms, ttft_ms, stream, tags, has_detail`

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

export type { Row } from '../store/answers.js'

function combineTotals(rows: Row[]): Totals {
  const sums = Object.fromEntries(COUNT_MEASURES.map((m) => [m, 0n])) as Record<Measure, bigint>
  const scaledCost = new Map<string, bigint>()
  const scaledPriced = new Map<string, bigint>()
  for (const r of rows) {
    for (const m of COUNT_MEASURES) sums[m] += big(r[m])
    if (r.cost instanceof DuckDBDecimalValue) {
      const currency = String(r.currency)
      scaledCost.set(currency, (scaledCost.get(currency) ?? 0n) + r.cost.value)
      const priced = r.cost_priced instanceof DuckDBDecimalValue ? r.cost_priced.value : 0n
      scaledPriced.set(currency, (scaledPriced.get(currency) ?? 0n) + priced)
    }
  }
  const pricedByCurrency: Record<string, string> = {}
  for (const currency of [...scaledPriced.keys()].sort()) pricedByCurrency[currency] = formatCost(scaledPriced.get(currency)!)
  const costByCurrency: Record<string, string> = {}
  for (const currency of [...scaledCost.keys()].sort()) costByCurrency[currency] = formatCost(scaledCost.get(currency)!)
  const currencies = Object.keys(costByCurrency)
  const single = currencies.length === 1 ? currencies[0]! : null
  return {
    ...(Object.fromEntries(COUNT_MEASURES.map((m) => [m, jsonInt(sums[m])])) as Record<Measure, Count>),
    // Several currencies have no single sum (see cost_by_currency); no known cost is an
    // exact zero only when nothing was unknown either (an empty window or bucket): events
    // whose every cost is unknown have an unknown total (cost_missing counts them), never 0.
    cost: single !== null ? costByCurrency[single]! : currencies.length === 0 && sums.cost_missing === 0n ? '0' : null,
    currency: single,
    cost_by_currency: costByCurrency,
    cost_priced: single !== null ? pricedByCurrency[single]! : currencies.length === 0 && sums.cost_missing === 0n ? '0' : null,
    cost_priced_by_currency: pricedByCurrency,
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
    cost_origin: r.cost_origin === 'priced' || r.cost_origin === 'reported' ? r.cost_origin : null,
    reported_cost: r.reported_cost instanceof DuckDBDecimalValue ? formatCost(r.reported_cost.value) : null,
    price_ref: str(r.price_ref),
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
