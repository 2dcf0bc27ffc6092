// Whole-segment figures, computed by DuckDB over one segment's tables. The
// sealer compares them between a pending file and its archived copy (the copy
// is published only when they are equal), and the catalog keeps them so that
// whole-segment totals and time bounds come without opening files.

import { DuckDBDecimalValue, DuckDBTimestampValue, type DuckDBConnection } from '@duckdb/node-api'
import { formatCost } from '../money.js'
import { tableOf } from './relations.js'
import { TOKEN_COLUMNS, type TokenColumn } from './schema.js'


export interface SegmentStats {
  rowCount: number
  idCount: number
  detailCount: number
  /** Microseconds; null for an empty segment. */
  minTsUs: number | null
  maxTsUs: number | null
  /** Decimal strings (sums may pass 2^53). */
  tokens: Record<TokenColumn, string>
  /** Exact decimal string per currency. */
  costByCurrency: Record<string, string>
  costMissing: number
}

/**
 * The segment's figures. Details are counted in `detailsAlias`'s
 * `event_details` (by default the events database's own; `false`: a sealed
 * segment whose details were not kept, counted as 0).
 */
export async function computeStats(conn: DuckDBConnection, alias: string | null, detailsAlias: string | null | false = alias): Promise<SegmentStats> {
  const events = tableOf(alias, 'events')
  const main = await conn.runAndReadAll(
    `SELECT count(*) AS row_count, count(DISTINCT event_id) AS id_count, min(ts) AS min_ts, max(ts) AS max_ts,
            ${TOKEN_COLUMNS.map((c) => `coalesce(sum(${c}), 0)::VARCHAR AS ${c}`).join(', ')},
            count(*) FILTER (WHERE cost IS NULL) AS cost_missing
       FROM ${events}`,
  )
  const r = main.getRowObjects()[0]!
  const cost = await conn.runAndReadAll(`SELECT currency, sum(cost) AS cost FROM ${events} WHERE cost IS NOT NULL GROUP BY currency ORDER BY currency`)
  const costByCurrency: Record<string, string> = {}
  for (const row of cost.getRowObjects()) {
    if (row.cost instanceof DuckDBDecimalValue) costByCurrency[String(row.currency)] = formatCost(row.cost.value)
  }
  const detailCount = detailsAlias === false ? 0 : await countDetails(conn, detailsAlias)
  const us = (v: unknown): number | null => (v instanceof DuckDBTimestampValue ? Number(v.micros) : null)
  return {
    rowCount: Number(r.row_count),
    idCount: Number(r.id_count),
    detailCount,
    minTsUs: us(r.min_ts),
    maxTsUs: us(r.max_ts),
    tokens: Object.fromEntries(TOKEN_COLUMNS.map((c) => [c, String(r[c])])) as Record<TokenColumn, string>,
    costByCurrency,
    costMissing: Number(r.cost_missing),
  }
}

export async function countDetails(conn: DuckDBConnection, alias: string | null): Promise<number> {
  const res = await conn.runAndReadAll(`SELECT count(*) FROM ${tableOf(alias, 'event_details')}`)
  return Number(res.getRows()[0]![0])
}

/** The first difference between two stats, or null when they are equal. */
export function statsDifference(a: SegmentStats, b: SegmentStats): string | null {
  const left = JSON.stringify(a)
  const right = JSON.stringify(b)
  if (left === right) return null
  for (const k of Object.keys(a) as Array<keyof SegmentStats>) {
    if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) return `${k}: ${JSON.stringify(a[k])} != ${JSON.stringify(b[k])}`
  }
  return 'stats differ'
}
