// The window and filters shared by every query, and their SQL.
// Values always travel as bound parameters, never spliced into SQL text.

import { DuckDBTimestampValue, type DuckDBValue } from '@duckdb/node-api'
import { Errors } from '../errors.js'
import { parseTimestamp } from '../ingest/timestamp.js'

export const DIMENSIONS = ['key_id', 'team_id', 'user_id', 'customer_id', 'provider', 'model'] as const
export type Dimension = (typeof DIMENSIONS)[number]

export type StatusFilter = 'ok' | 'error' | number

export interface QueryWindow {
  /** Inclusive, microseconds since the epoch. */
  fromUs: number
  /** Exclusive, microseconds since the epoch. */
  toUs: number
}

export interface EventFilter extends QueryWindow {
  dims: Partial<Record<Dimension, string[]>>
  status: StatusFilter[]
}

export interface RawFilterInput {
  from?: string
  to?: string
  status?: string[]
  [dimension: string]: string | string[] | undefined
}

export interface WindowDefaults {
  nowMs: number
  eventRetentionMs: number
  maxFutureSkewMs: number
}

/** Parses `from`/`to` (RFC 3339 or epoch ms) and the filters; BadQuery names the parameter. */
export function parseFilter(q: RawFilterInput, d: WindowDefaults): EventFilter {
  const fromUs = q.from === undefined ? (d.nowMs - d.eventRetentionMs) * 1000 : parseBound('from', q.from)
  const toUs = q.to === undefined ? (d.nowMs + d.maxFutureSkewMs + 1) * 1000 : parseBound('to', q.to)
  if (fromUs >= toUs) throw new Errors.BadQuery('`from` must be earlier than `to`')
  const dims: Partial<Record<Dimension, string[]>> = {}
  for (const dim of DIMENSIONS) {
    const v = q[dim]
    if (v === undefined) continue
    dims[dim] = Array.isArray(v) ? v : [v]
  }
  const status = (q.status ?? []).map((s): StatusFilter => (s === 'ok' || s === 'error' ? s : Number(s)))
  return { fromUs, toUs, dims, status }
}

function parseBound(name: string, text: string): number {
  const value = /^-?\d{1,16}$/.test(text) ? Number(text) : text
  const res = parseTimestamp(value)
  if (!res.ok) throw new Errors.BadQuery(`\`${name}\` ${res.message}`)
  return res.us
}

export interface SqlWhere {
  sql: string
  params: DuckDBValue[]
}

export interface WhereOptions {
  /** `bucket` over rollups (default `ts`). */
  timeColumn?: string
  /**
   * The time ranges [from, to) to match instead of the filter's window: one
   * of them, ascending and disjoint, all within the window.
   */
  ranges?: ReadonlyArray<readonly [number, number]>
  /** Parameters of the statement so far: the clause's are appended and numbered after them. */
  params?: DuckDBValue[]
}

/** WHERE clause for the filter (alias-free column names). */
export function whereClause(f: EventFilter, opts: WhereOptions = {}): SqlWhere {
  const timeColumn = opts.timeColumn ?? 'ts'
  const params: DuckDBValue[] = opts.params ?? []
  const p = (v: DuckDBValue): string => {
    params.push(v)
    return `$${params.length}`
  }
  const ts = (us: number): string => p(new DuckDBTimestampValue(BigInt(us)))
  const ranges = opts.ranges ?? [[f.fromUs, f.toUs]]
  if (ranges.length === 0) throw new Error('invariant: a WHERE clause needs a time range')
  // The outer bounds first: DuckDB skips row groups on them (it may not on a disjunction).
  const parts = [`${timeColumn} >= ${ts(ranges[0]![0])}`, `${timeColumn} < ${ts(ranges[ranges.length - 1]![1])}`]
  if (ranges.length > 1) parts.push(`(${ranges.map(([a, b]) => `(${timeColumn} >= ${ts(a)} AND ${timeColumn} < ${ts(b)})`).join(' OR ')})`)
  for (const dim of DIMENSIONS) {
    const values = f.dims[dim]
    if (values && values.length > 0) parts.push(`${dim} IN (${values.map((v) => p(v)).join(', ')})`)
  }
  if (f.status.length > 0) {
    const ors = f.status.map((s) => (s === 'ok' ? 'status_code < 400' : s === 'error' ? 'status_code >= 400' : `status_code = ${p(s)}`))
    parts.push(`(${ors.join(' OR ')})`)
  }
  return { sql: parts.join(' AND '), params }
}
