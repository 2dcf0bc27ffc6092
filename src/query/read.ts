// Read paths over the store: one event by id, and usage totals for a window.
// Reads go through Store.read (a bounded pool of read connections) and never
// take the write gate. Money is summed by DuckDB as DECIMAL(38,12), a 128-bit
// scaled integer, and formatted from the exact scaled value.

import { DuckDBDecimalValue, DuckDBTimestampValue, type DuckDBValue } from '@duckdb/node-api'
import { formatCost } from '../money.js'
import { formatTimestampUs } from '../ingest/timestamp.js'
import type { Store } from '../store/store.js'
import { whereClause, type EventFilter } from './filters.js'

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

const MEASURES = ['requests', 'errors', 'input_tokens', 'output_tokens', 'cache_read_tokens', 'cache_write_tokens', 'reasoning_tokens', 'cost_missing'] as const
type Measure = (typeof MEASURES)[number]

export type Totals = Record<Measure, Count> & {
  cost: string | null
  currency: string | null
  cost_by_currency: Record<string, string>
}

const SUMMARY_COLUMNS =
  'event_id, ts, key_id, provider, model, status_code, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, currency, team_id, user_id, customer_id, endpoint, latency_ms, ttft_ms, stream, tags, has_detail'

/** The event with its detail, or null when no retained segment holds it. */
export async function getEvent(store: Store, eventId: string): Promise<StoredEvent | null> {
  // The dedupe index knows every retained id: unknown ids never scan a file.
  if (!store.has(eventId)) return null
  return store.read(async (conn) => {
    const res = await conn.runAndReadAll(`SELECT ${SUMMARY_COLUMNS} FROM events WHERE event_id = $1 LIMIT 1`, [eventId])
    const row = res.getRowObjects()[0]
    if (!row) return null
    const event = toStoredEvent(row)
    event.detail = null
    if (row.has_detail === true) {
      const d = await conn.runAndReadAll('SELECT detail FROM event_details WHERE event_id = $1 LIMIT 1', [eventId])
      const text = d.getRows()[0]?.[0]
      if (typeof text === 'string') event.detail = JSON.parse(text) as Record<string, unknown>
    }
    return event
  })
}

export async function usageTotals(store: Store, filter: EventFilter): Promise<Totals> {
  const where = whereClause(filter)
  const rows = await store.read(async (conn) => {
    const res = await conn.runAndReadAll(
      `SELECT currency,
              count(*) AS requests,
              count(*) FILTER (WHERE status_code >= 400) AS errors,
              coalesce(sum(input_tokens), 0) AS input_tokens,
              coalesce(sum(output_tokens), 0) AS output_tokens,
              coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens,
              coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens,
              coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens,
              sum(cost) AS cost,
              count(*) FILTER (WHERE cost IS NULL) AS cost_missing
         FROM events WHERE ${where.sql} GROUP BY currency ORDER BY currency`,
      where.params,
    )
    return res.getRowObjects()
  })
  return combineTotals(rows)
}

type Row = Record<string, DuckDBValue>

function combineTotals(rows: Row[]): Totals {
  const sums = Object.fromEntries(MEASURES.map((m) => [m, 0n])) as Record<Measure, bigint>
  const costByCurrency: Record<string, string> = {}
  for (const r of rows) {
    for (const m of MEASURES) sums[m] += big(r[m])
    if (r.cost instanceof DuckDBDecimalValue) costByCurrency[String(r.currency)] = formatCost(r.cost.value)
  }
  const currencies = Object.keys(costByCurrency)
  const single = currencies.length === 1 ? currencies[0]! : null
  return {
    ...(Object.fromEntries(MEASURES.map((m) => [m, jsonInt(sums[m])])) as Record<Measure, Count>),
    // No known cost at all is an exact zero; several currencies have no single sum.
    cost: single !== null ? costByCurrency[single]! : currencies.length === 0 ? '0' : null,
    currency: single,
    cost_by_currency: costByCurrency,
  }
}

function toStoredEvent(r: Row): StoredEvent {
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
