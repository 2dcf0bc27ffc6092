// The live path of usage answers: a live segment (active, or rolled over and
// not yet closed) answers from its live_rollups plus the events appended since
// their watermark, either in DuckDB (liveTotals) or from the rollups in memory
// (src/store/segment.ts: LiveRollups) summed in JS like the SQL over
// live_rollups would (sumLiveRollups: the same rows, filters, groups and
// buckets), so the raw tail is all a query still reads in DuckDB.
//
// Invariants:
// - The live rollups hold no user_id: a question involving it reads raw.
// - One read sees one snapshot of the rollups, their watermark, their cell
//   bounds and the events (a read transaction, or one statement over an
//   immutable LiveRollups).

import { DuckDBDecimalValue, type DuckDBConnection, type DuckDBValue } from '@duckdb/node-api'
import { COST_SCALE, COST_WIDTH } from '../money.js'
import { COUNT_MEASURES } from '../store/catalog.js'
import type { Row } from '../store/answers.js'
import type { LiveRollupRow, LiveRollups } from '../store/segment.js'
import { whereClause, type Dimension, type EventFilter } from './filters.js'
import { grouping, involvesUser, rawMeasures, readShaped, rollupMeasures, shaped, type Shape } from './statements.js'
import { edgeCell, insideWindow, type Range } from './window.js'

/** The dimensions a live rollup row holds (every one but user_id). */
type RowDimension = Exclude<Dimension, 'user_id'>


/**
 * The rows in `ranges` (15-minute aligned [from, to), ascending) that match
 * the filter's dimensions and statuses, summed per currency and `groupBy`
 * (and, with `startsUs`, per series bucket: the last start at or before the
 * row's cell, as `start`), shaped like read.ts' statements' rows. The filter
 * and the grouping never involve user_id (the rows have none).
 */
export function sumLiveRollups(rows: readonly LiveRollupRow[], f: EventFilter, ranges: ReadonlyArray<readonly [number, number]>, groupBy: readonly Dimension[], startsUs: readonly number[] | null): Row[] {
  if ((f.dims.user_id?.length ?? 0) > 0 || groupBy.includes('user_id')) throw new Error('invariant: live rollups hold no user_id')
  const dims = groupBy as readonly RowDimension[]
  const wanted = (Object.entries(f.dims) as Array<[RowDimension, string[] | undefined]>).filter(([, v]) => v !== undefined && v.length > 0).map(([d, v]) => [d, new Set(v)] as const)
  const statusOk = (code: number): boolean =>
    f.status.length === 0 || f.status.some((s) => (s === 'ok' ? code < 400 : s === 'error' ? code >= 400 : code === s))
  const groups = new Map<string, { row: Row; sums: bigint[]; cost: bigint | null; priced: bigint | null }>()
  for (const r of rows) {
    if (!ranges.some(([a, b]) => r.bucketUs >= a && r.bucketUs < b)) continue
    if (!statusOk(r.status_code) || !wanted.every(([d, values]) => r[d] !== null && values.has(r[d]))) continue
    const start = startsUs === null ? null : lastStartAtOrBefore(startsUs, r.bucketUs)
    const key = JSON.stringify([start, r.currency, ...dims.map((d) => r[d])])
    let g = groups.get(key)
    if (!g) {
      const row: Row = { currency: r.currency }
      for (const d of dims) row[d] = r[d]
      if (start !== null) row.start = BigInt(start)
      groups.set(key, (g = { row, sums: COUNT_MEASURES.map(() => 0n), cost: null, priced: null }))
    }
    for (let i = 0; i < COUNT_MEASURES.length; i++) g.sums[i]! += r[COUNT_MEASURES[i]!]
    if (r.cost !== null) g.cost = (g.cost ?? 0n) + r.cost
    if (r.cost_priced !== null) g.priced = (g.priced ?? 0n) + r.cost_priced
  }
  return [...groups.values()].map(({ row, sums, cost, priced }) => {
    COUNT_MEASURES.forEach((m, i) => (row[m] = sums[i]!))
    row.cost = cost === null ? null : new DuckDBDecimalValue(cost, COST_WIDTH, COST_SCALE)
    row.cost_priced = priced === null ? null : new DuckDBDecimalValue(priced, COST_WIDTH, COST_SCALE)
    return row
  })
}

/** The last of the ascending `startsUs` at or before `us` (the first is at or before every row asked about). */
function lastStartAtOrBefore(startsUs: readonly number[], us: number): number {
  let lo = 0
  let hi = startsUs.length - 1
  if (startsUs[0]! > us) throw new Error('invariant: a row before the first bucket')
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1
    if (startsUs[mid]! <= us) lo = mid
    else hi = mid - 1
  }
  return startsUs[lo]!
}

/**
 * Whether a live segment's live_rollups (no user_id) can answer: totals,
 * groups and series that involve no user. Not dimension values: measured on a
 * live segment of 110 k and 300 k events, one grouping-sets pass over its
 * events (10.4 and 10.7 ms) beat its live rollups for every dimension but
 * user_id plus a raw pass for user_id (14.9 ms both; .tmp/dimprof.ts).
 */
export function liveRollupsAnswer(f: EventFilter, shape: Shape): boolean {
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
export async function liveTotals(conn: DuckDBConnection, f: EventFilter, edges: Range[], middle: Range, shape: Shape): Promise<Row[]> {
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
export function liveParts(f: EventFilter, edges: Range[], middle: Range, upto: number, boundsOf: (cellUs: number) => readonly [number, number] | null, params: DuckDBValue[]): { rolled: Range[]; raw: string[] } {
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
export async function liveViewTotals(conn: DuckDBConnection, view: LiveRollups, f: EventFilter, edges: Range[], middle: Range, shape: Shape): Promise<Row[]> {
  const params: DuckDBValue[] = []
  const { rolled, raw } = liveParts(f, edges, middle, view.upto, (cellUs) => view.cells.get(cellUs) ?? null, params)
  const e = grouping('time_bucket(INTERVAL 15 MINUTE, ts)', shape)
  const tail = await readShaped(conn, shaped(`SELECT ${e.select}, ${rawMeasures(shape)} FROM (${raw.join(' UNION ALL ')}) GROUP BY ${e.by}`, e.cols, shape), params)
  return [...sumLiveRollups(view.rows, f, rolled, shape.groupBy, shape.startsUs), ...tail]
}
