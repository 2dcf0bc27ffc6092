// A live segment's rollups in memory (src/store/segment.ts: LiveRollups),
// filtered and summed in JS like the SQL over live_rollups would: the same
// rows, filters (whereClause in filters.ts), groups and buckets, so the raw
// events from the rollups' watermark on are all a query still reads in DuckDB.

import { DuckDBDecimalValue } from '@duckdb/node-api'
import { COST_SCALE, COST_WIDTH } from '../money.js'
import { COUNT_MEASURES } from '../store/catalog.js'
import type { Row } from '../store/answers.js'
import type { LiveRollupRow } from '../store/segment.js'
import type { Dimension, EventFilter } from './filters.js'

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
  const groups = new Map<string, { row: Row; sums: bigint[]; cost: bigint | null }>()
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
      groups.set(key, (g = { row, sums: COUNT_MEASURES.map(() => 0n), cost: null }))
    }
    for (let i = 0; i < COUNT_MEASURES.length; i++) g.sums[i]! += r[COUNT_MEASURES[i]!]
    if (r.cost !== null) g.cost = (g.cost ?? 0n) + r.cost
  }
  return [...groups.values()].map(({ row, sums, cost }) => {
    COUNT_MEASURES.forEach((m, i) => (row[m] = sums[i]!))
    row.cost = cost === null ? null : new DuckDBDecimalValue(cost, COST_WIDTH, COST_SCALE)
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
