// The SQL vocabulary of usage answers over raw events and rollups: the
// measures, the grouping (dimensions, currency, 15-minute buckets, grouping
// sets), the shaping of rows into series buckets, and the bound on result rows.
// Every statement of the live, raw and catalog paths is built from these, so
// each path's rows have one shape and sum alike (read.ts combineTotals).
//
// Invariants:
// - Column names come from fixed lists (DIMENSIONS, COUNT_MEASURES,
//   TOKEN_COLUMNS), never from input; values are bound as parameters.
// - No statement returns more than MAX_RESULT_ROWS rows (QueryTooLarge).

import type { DuckDBConnection, DuckDBValue } from '@duckdb/node-api'
import { Errors } from '../errors.js'
import type { Row } from '../store/answers.js'
import { COUNT_MEASURES, rollupTokenSum } from '../store/catalog.js'
import { tableOf } from '../store/relations.js'
import { PRICED_ROW_SQL, TOKEN_COLUMNS } from '../store/schema.js'
import { DIMENSIONS, whereClause, type Dimension, type EventFilter } from './filters.js'
import type { Range } from './window.js'

/** Most rows one SQL statement of a usage answer may return before the query is refused as too large. */
export const MAX_RESULT_ROWS = 1_000_000

export const RAW_MEASURES = `count(*) AS requests,
              count(*) FILTER (WHERE status_code >= 400) AS errors,
              coalesce(sum(input_tokens), 0) AS input_tokens,
              coalesce(sum(output_tokens), 0) AS output_tokens,
              coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens,
              coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens,
              coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens,
              sum(cost) AS cost,
              count(*) FILTER (WHERE cost IS NULL) AS cost_missing,
              sum(cost) FILTER (WHERE ${PRICED_ROW_SQL}) AS cost_priced`

export const ROLLUP_MEASURES = `sum(requests) AS requests, sum(errors) AS errors,
              ${TOKEN_COLUMNS.map((c) => `${rollupTokenSum(c)} AS ${c}`).join(', ')},
              sum(cost) AS cost, sum(cost_missing) AS cost_missing, sum(cost_priced) AS cost_priced`

/** `currency` plus the group-by columns (names from the fixed DIMENSIONS list, never from input). */
export function groupColumns(groupBy: readonly Dimension[]): string {
  for (const d of groupBy) if (!DIMENSIONS.includes(d)) throw new Error(`invariant: unknown dimension ${String(d)}`)
  return ['currency', ...groupBy].join(', ')
}

/**
 * What one usage statement groups by: the dimensions (and currency), and the
 * buckets when a time series. With `sets`, each of those dimensions alone
 * instead (GROUPING SETS: a row holds one of them, the others NULL) and only
 * `requests` is counted: the values in use, ranked, in one pass.
 */
export interface Shape {
  groupBy: readonly Dimension[]
  startsUs: readonly number[] | null
  sets: readonly Dimension[] | null
}

/** The inner statement's grouping: currency and dimensions, plus the 15-minute bucket `time` (as `b`) for a series. */
export function grouping(time: string, shape: Shape): { cols: string; select: string; by: string } {
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
export function rawMeasures(shape: Shape): string {
  return shape.sets === null ? RAW_MEASURES : 'count(*) AS requests'
}

/** The measures over rollup rows (full or coarse), or only `requests` for grouping sets. */
export function rollupMeasures(shape: Shape): string {
  return shape.sets === null ? ROLLUP_MEASURES : 'sum(requests) AS requests'
}

/** Re-sums rows that already hold the measures (one per 15-minute bucket) into coarser rows. */
export const SUM_MEASURES = COUNT_MEASURES.map((m) => `sum(${m}) AS ${m}`).concat('sum(cost) AS cost', 'sum(cost_priced) AS cost_priced').join(', ')

/**
 * The statement over `inner` (rows of measures grouped by currency, the
 * dimensions and, for a series, their 15-minute bucket `b`): for a series each
 * row is moved to the last bucket starting at or before `b` (an ASOF join on
 * the bucket starts, which are our own integers, never input) and summed there.
 */
export function shaped(inner: string, cols: string, shape: Shape): string {
  const cap = ` LIMIT ${MAX_RESULT_ROWS + 1}`
  if (shape.startsUs === null) return inner + cap
  const starts = shape.startsUs.map((s) => String(Math.trunc(s))).join(', ')
  return (
    `WITH d AS (${inner}), s AS (SELECT unnest([${starts}]::BIGINT[]) AS start) ` +
    `SELECT s.start, ${cols}, ${SUM_MEASURES} FROM d ASOF JOIN s ON epoch_us(d.b) >= s.start GROUP BY s.start, ${cols}${cap}`
  )
}

export async function readShaped(conn: DuckDBConnection, sql: string, params: DuckDBValue[]): Promise<Row[]> {
  const rows = (await conn.runAndReadAll(sql, params)).getRowObjects()
  if (rows.length > MAX_RESULT_ROWS) throw new Errors.QueryTooLarge(`the answer would hold more than ${MAX_RESULT_ROWS} rows; narrow the window, the filters, group_by or the bucket`)
  return rows
}

export async function rawTotals(conn: DuckDBConnection, aliases: Array<string | null>, f: EventFilter, [fromUs, toUs]: Range, shape: Shape): Promise<Row[]> {
  const where = whereClause({ ...f, fromUs, toUs })
  const union = aliases.map((a) => `SELECT * FROM ${tableOf(a, 'events')} WHERE ${where.sql}`).join(' UNION ALL ')
  const g = grouping('time_bucket(INTERVAL 15 MINUTE, ts)', shape)
  return readShaped(conn, shaped(`SELECT ${g.select}, ${rawMeasures(shape)} FROM (${union}) GROUP BY ${g.by}`, g.cols, shape), where.params)
}

/** Whether the question filters or groups by user_id (which the coarse and live rollups do not hold). */
export function involvesUser(f: EventFilter, shape: Shape): boolean {
  return (f.dims.user_id?.length ?? 0) > 0 || shape.groupBy.includes('user_id')
}

/** One statement of a catalog read and its parameters. */
export interface Statement {
  sql: string
  params: DuckDBValue[]
}

/** Segment ids as an SQL list (integers of our own, never input). */
export function idList(ids: readonly number[]): string {
  return ids.map((id) => String(Math.trunc(id))).join(', ')
}
