// The on-disk schema of a segment, and the mapping of a UsageEvent to a row.
//
// Invariants:
// - `events` holds summary columns only; heavy `detail` payloads live in
//   `event_details` so lists and aggregates never read them and they can
//   expire on their own schedule.
// - No PRIMARY KEY or UNIQUE index: DuckDB's ART indexes halve append speed
//   and have had fatal bugs; uniqueness of event_id is enforced by the store
//   under the write gate (see store.ts).
// - `fingerprint` is stored so the dedupe index can be rebuilt from the file
//   alone after a restart.
// - SCHEMA_VERSION grows when a column is added; readers of older segments
//   must treat missing columns as null/default.

import {
  BIGINT,
  BOOLEAN,
  DECIMAL,
  DuckDBDataChunk,
  DuckDBDecimalValue,
  DuckDBTimestampValue,
  INTEGER,
  SMALLINT,
  TIMESTAMP,
  VARCHAR,
  type DuckDBConnection,
  type DuckDBType,
  type DuckDBVector,
  type DuckDBValue,
} from '@duckdb/node-api'
import { COST_SCALE, COST_WIDTH } from '../money.js'
import type { UsageEvent } from '../ingest/event.js'

export const SCHEMA_VERSION = 1

interface Column {
  name: string
  sql: string
  type: DuckDBType
  /**
   * What a segment written before this column existed reads as (SQL). Columns
   * without it are part of every schema version: a file lacking one is unreadable.
   */
  ifMissing?: string
}

const DECIMAL_COST = DECIMAL(COST_WIDTH, COST_SCALE)

export const EVENT_COLUMNS: readonly Column[] = [
  { name: 'event_id', sql: 'VARCHAR NOT NULL', type: VARCHAR },
  { name: 'ts', sql: 'TIMESTAMP NOT NULL', type: TIMESTAMP },
  { name: 'key_id', sql: 'VARCHAR NOT NULL', type: VARCHAR },
  { name: 'provider', sql: 'VARCHAR NOT NULL', type: VARCHAR },
  { name: 'model', sql: 'VARCHAR NOT NULL', type: VARCHAR },
  { name: 'status_code', sql: 'SMALLINT NOT NULL', type: SMALLINT },
  { name: 'input_tokens', sql: 'BIGINT NOT NULL', type: BIGINT },
  { name: 'output_tokens', sql: 'BIGINT NOT NULL', type: BIGINT },
  { name: 'cache_read_tokens', sql: 'BIGINT NOT NULL', type: BIGINT, ifMissing: '0::BIGINT' },
  { name: 'cache_write_tokens', sql: 'BIGINT NOT NULL', type: BIGINT, ifMissing: '0::BIGINT' },
  { name: 'reasoning_tokens', sql: 'BIGINT NOT NULL', type: BIGINT, ifMissing: '0::BIGINT' },
  { name: 'cost', sql: `DECIMAL(${COST_WIDTH},${COST_SCALE})`, type: DECIMAL_COST, ifMissing: `NULL::DECIMAL(${COST_WIDTH},${COST_SCALE})` },
  { name: 'currency', sql: 'VARCHAR NOT NULL', type: VARCHAR, ifMissing: `'USD'` },
  { name: 'team_id', sql: 'VARCHAR', type: VARCHAR, ifMissing: 'NULL::VARCHAR' },
  { name: 'user_id', sql: 'VARCHAR', type: VARCHAR, ifMissing: 'NULL::VARCHAR' },
  { name: 'customer_id', sql: 'VARCHAR', type: VARCHAR, ifMissing: 'NULL::VARCHAR' },
  { name: 'endpoint', sql: 'VARCHAR', type: VARCHAR, ifMissing: 'NULL::VARCHAR' },
  { name: 'latency_ms', sql: 'INTEGER', type: INTEGER, ifMissing: 'NULL::INTEGER' },
  { name: 'ttft_ms', sql: 'INTEGER', type: INTEGER, ifMissing: 'NULL::INTEGER' },
  { name: 'stream', sql: 'BOOLEAN', type: BOOLEAN, ifMissing: 'NULL::BOOLEAN' },
  { name: 'tags', sql: 'VARCHAR', type: VARCHAR, ifMissing: 'NULL::VARCHAR' },
  { name: 'has_detail', sql: 'BOOLEAN NOT NULL', type: BOOLEAN, ifMissing: 'false' },
  { name: 'fingerprint', sql: 'VARCHAR NOT NULL', type: VARCHAR },
]

/** The columns of the `events` table in `database` (null: the connection's own), in table order; empty when it has none. */
export async function eventColumns(conn: DuckDBConnection, database: string | null): Promise<string[]> {
  const res = await conn.runAndReadAll(
    `SELECT column_name FROM duckdb_columns() WHERE database_name = ${database === null ? 'current_database()' : '$1'} AND schema_name = 'main' AND table_name = 'events' ORDER BY column_index`,
    database === null ? [] : [database],
  )
  return res.getRows().map((r) => String(r[0]))
}

/** True when `columns` (in table order) are exactly the current EVENT_COLUMNS, in order. */
export function isCurrentEventsTable(columns: readonly string[]): boolean {
  return columns.length === EVENT_COLUMNS.length && EVENT_COLUMNS.every((c, i) => columns[i] === c.name)
}

/**
 * How to read an `events` table whose columns are `present` (in table order)
 * as the current schema: the table itself when it is exactly the current one,
 * otherwise a projection giving every EVENT_COLUMNS column in order (so
 * positional copies such as the sealer's stay right), the missing ones as
 * their `ifMissing` value. Throws naming a missing column that has no such value.
 */
export function eventsRelation(table: string, present: readonly string[]): string {
  if (isCurrentEventsTable(present)) return table
  const have = new Set(present)
  const select = EVENT_COLUMNS.map((c) => {
    if (have.has(c.name)) return c.name
    if (c.ifMissing === undefined) throw new Error(`${table} has no column ${c.name}, which every schema version has: not a segment this service can read`)
    return `${c.ifMissing} AS ${c.name}`
  })
  return `(SELECT ${select.join(', ')} FROM ${table})`
}

export const DETAIL_COLUMNS: readonly Column[] = [
  { name: 'event_id', sql: 'VARCHAR NOT NULL', type: VARCHAR },
  { name: 'ts', sql: 'TIMESTAMP NOT NULL', type: TIMESTAMP },
  { name: 'detail', sql: 'VARCHAR NOT NULL', type: VARCHAR },
]

const EVENT_COLUMN_INDEX = new Map(EVENT_COLUMNS.map((c, i) => [c.name, i]))

/**
 * Writes rows into a data chunk of EVENT_COLUMNS types, column vectors filled
 * in one pass over the rows (the append hot path: no per-column closures, no
 * intermediate arrays). Vectors are found by column name, so the column order
 * lives in EVENT_COLUMNS alone.
 */
export function fillEventChunk(chunk: DuckDBDataChunk, rows: readonly UsageEvent[]): void {
  const vectors: DuckDBVector[] = []
  const col = (name: string): { setItem(i: number, value: DuckDBValue): void } => {
    const index = EVENT_COLUMN_INDEX.get(name)
    if (index === undefined) throw new Error(`schema.ts: no event column "${name}"`)
    const vector = chunk.getColumnVector(index)
    vectors.push(vector)
    return vector as { setItem(i: number, value: DuckDBValue): void }
  }
  const [id, ts, key, provider, model, status, input, output, cacheRead, cacheWrite, reasoning] = [
    'event_id', 'ts', 'key_id', 'provider', 'model', 'status_code', 'input_tokens', 'output_tokens', 'cache_read_tokens', 'cache_write_tokens', 'reasoning_tokens',
  ].map(col)
  const [cost, currency, team, user, customer, endpoint, latency, ttft, stream, tags, hasDetail, fp] = [
    'cost', 'currency', 'team_id', 'user_id', 'customer_id', 'endpoint', 'latency_ms', 'ttft_ms', 'stream', 'tags', 'has_detail', 'fingerprint',
  ].map(col)
  if (vectors.length !== EVENT_COLUMNS.length) throw new Error('schema.ts: fillEventChunk must write every event column')
  for (let i = 0; i < rows.length; i++) {
    const e = rows[i]!
    id!.setItem(i, e.event_id)
    ts!.setItem(i, new DuckDBTimestampValue(BigInt(e.ts_us)))
    key!.setItem(i, e.key_id)
    provider!.setItem(i, e.provider)
    model!.setItem(i, e.model)
    status!.setItem(i, e.status_code)
    input!.setItem(i, BigInt(e.input_tokens))
    output!.setItem(i, BigInt(e.output_tokens))
    cacheRead!.setItem(i, BigInt(e.cache_read_tokens))
    cacheWrite!.setItem(i, BigInt(e.cache_write_tokens))
    reasoning!.setItem(i, BigInt(e.reasoning_tokens))
    cost!.setItem(i, e.cost === null ? null : new DuckDBDecimalValue(e.cost, COST_WIDTH, COST_SCALE))
    currency!.setItem(i, e.currency)
    team!.setItem(i, e.team_id)
    user!.setItem(i, e.user_id)
    customer!.setItem(i, e.customer_id)
    endpoint!.setItem(i, e.endpoint)
    latency!.setItem(i, e.latency_ms)
    ttft!.setItem(i, e.ttft_ms)
    stream!.setItem(i, e.stream)
    tags!.setItem(i, e.tags)
    hasDetail!.setItem(i, e.detail !== null)
    fp!.setItem(i, e.fingerprint)
  }
  for (const vector of vectors) vector.flush()
}

/** Writes the detail rows (only events that carry a detail) into a chunk of DETAIL_COLUMNS types. */
export function fillDetailChunk(chunk: DuckDBDataChunk, rows: readonly UsageEvent[]): void {
  chunk.setColumns([
    rows.map((e) => e.event_id),
    rows.map((e) => new DuckDBTimestampValue(BigInt(e.ts_us))),
    rows.map((e) => e.detail),
  ])
}

export const SEGMENT_DDL = [
  `CREATE TABLE IF NOT EXISTS events (${EVENT_COLUMNS.map((c) => `${c.name} ${c.sql}`).join(', ')})`,
  `CREATE TABLE IF NOT EXISTS event_details (${DETAIL_COLUMNS.map((c) => `${c.name} ${c.sql}`).join(', ')})`,
  `CREATE TABLE IF NOT EXISTS segment_meta (key VARCHAR NOT NULL, value VARCHAR NOT NULL)`,
]
