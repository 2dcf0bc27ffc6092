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
// - Schema 3 stores what cannot be derived, nothing more: a row's cost origin
//   follows from `price_ref` (priced iff it names a table version), and
//   `reported_cost` is stored only where the table priced over a cost the
//   gateway reported (otherwise it is `cost` when not priced, null when
//   priced from nothing). COST_ORIGIN_SQL and REPORTED_COST_SQL derive both,
//   over schema 2 (which stored them) and schema 3 alike. Measured with
//   bench/store-floor.ts: the stored origin and the duplicated reported cost
//   cost ~1.3 µs an event of DuckDB append.

import type { DuckDBConnection } from '@duckdb/node-api'
import { COST_SCALE, COST_WIDTH, formatCostFixed } from '../money.js'
import type { UsageEvent } from '../ingest/event.js'

export const SCHEMA_VERSION = 3

/** True for a row the price table priced (SQL over any events table since schema 2). */
export const PRICED_ROW_SQL = 'price_ref IS NOT NULL'
/** A row's cost origin, 'priced', 'reported' or null (unknown), derived. */
export const COST_ORIGIN_SQL = `CASE WHEN price_ref IS NOT NULL THEN 'priced' WHEN cost IS NOT NULL THEN 'reported' END`
/** The cost the gateway reported, derived: the cost itself unless the table priced the row. */
export const REPORTED_COST_SQL = `CASE WHEN price_ref IS NULL THEN cost ELSE reported_cost END`

/** The token counts of an event, in the order answers list them: the one list (stats, rollups, usage answers). */
export const TOKEN_COLUMNS = ['input_tokens', 'output_tokens', 'cache_read_tokens', 'cache_write_tokens', 'reasoning_tokens'] as const
export type TokenColumn = (typeof TOKEN_COLUMNS)[number]

interface Column {
  name: string
  sql: string
  /**
   * What a segment written before this column existed reads as (SQL; a
   * function of the columns the file has, for a value derived from them).
   * Columns without it are part of every schema version: a file lacking one is unreadable.
   */
  ifMissing?: string | ((present: ReadonlySet<string>) => string)
}

export const EVENT_COLUMNS: readonly Column[] = [
  { name: 'event_id', sql: 'VARCHAR NOT NULL' },
  { name: 'ts', sql: 'TIMESTAMP NOT NULL' },
  { name: 'key_id', sql: 'VARCHAR NOT NULL' },
  { name: 'provider', sql: 'VARCHAR NOT NULL' },
  { name: 'model', sql: 'VARCHAR NOT NULL' },
  { name: 'status_code', sql: 'SMALLINT NOT NULL' },
  { name: 'input_tokens', sql: 'BIGINT NOT NULL' },
  { name: 'output_tokens', sql: 'BIGINT NOT NULL' },
  { name: 'cache_read_tokens', sql: 'BIGINT NOT NULL', ifMissing: '0::BIGINT' },
  { name: 'cache_write_tokens', sql: 'BIGINT NOT NULL', ifMissing: '0::BIGINT' },
  { name: 'reasoning_tokens', sql: 'BIGINT NOT NULL', ifMissing: '0::BIGINT' },
  { name: 'cost', sql: `DECIMAL(${COST_WIDTH},${COST_SCALE})`, ifMissing: `NULL::DECIMAL(${COST_WIDTH},${COST_SCALE})` },
  { name: 'currency', sql: 'VARCHAR NOT NULL', ifMissing: `'USD'` },
  { name: 'team_id', sql: 'VARCHAR', ifMissing: 'NULL::VARCHAR' },
  { name: 'user_id', sql: 'VARCHAR', ifMissing: 'NULL::VARCHAR' },
  { name: 'customer_id', sql: 'VARCHAR', ifMissing: 'NULL::VARCHAR' },
  { name: 'endpoint', sql: 'VARCHAR', ifMissing: 'NULL::VARCHAR' },
  { name: 'latency_ms', sql: 'INTEGER', ifMissing: 'NULL::INTEGER' },
  { name: 'ttft_ms', sql: 'INTEGER', ifMissing: 'NULL::INTEGER' },
  { name: 'stream', sql: 'BOOLEAN', ifMissing: 'NULL::BOOLEAN' },
  { name: 'tags', sql: 'VARCHAR', ifMissing: 'NULL::VARCHAR' },
  { name: 'has_detail', sql: 'BOOLEAN NOT NULL', ifMissing: 'false' },
  { name: 'fingerprint', sql: 'VARCHAR NOT NULL' },
  // Schema version 2 (prices): the gateway's own figure where the table priced
  // over it, and the price table version that priced the row (null: not
  // priced). Schema 2 also stored cost_origin, which schema 3 derives
  // (COST_ORIGIN_SQL); a schema-2 file is read through the projection, without it.
  // Before them every known cost was reported, and nothing was priced.
  { name: 'reported_cost', sql: `DECIMAL(${COST_WIDTH},${COST_SCALE})`, ifMissing: `NULL::DECIMAL(${COST_WIDTH},${COST_SCALE})` },
  { name: 'price_ref', sql: 'VARCHAR', ifMissing: 'NULL::VARCHAR' },
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
    return `${typeof c.ifMissing === 'function' ? c.ifMissing(have) : c.ifMissing} AS ${c.name}`
  })
  return `(SELECT ${select.join(', ')} FROM ${table})`
}

export const DETAIL_COLUMNS: readonly Column[] = [
  { name: 'event_id', sql: 'VARCHAR NOT NULL' },
  { name: 'ts', sql: 'TIMESTAMP NOT NULL' },
  { name: 'detail', sql: 'VARCHAR NOT NULL' },
]

/**
 * How one column's values travel from JS to DuckDB in a group commit: all the
 * rows' values joined into one string (`encode` gives a value's text), split
 * back into a list by DuckDB, unnested, and turned into the column's value by
 * `sql`. One string parameter per column replaces thousands of per-value
 * N-API calls: the JS side costs a join, and DuckDB's split, unnest and casts
 * run on the libuv thread that runs the statement, off the event loop
 * (measured: 2.4 µs an event on the event loop against 6.5 for the Appender).
 *
 * - `text`: the values as they are, joined with U+001F; a nullable text is
 *   U+001E when null. Neither character can occur in a stored text (dimension
 *   strings and ids refuse control characters, tags and detail are JSON, where
 *   controls are escaped, the fingerprint is base64url); an insert whose
 *   columns split into more values than rows is refused (see rowInsert).
 * - `list`: digits, `t`/`f` or a decimal, comma-joined; null is the empty string.
 */
interface ColumnCodec<R> {
  /** The value's text, or null. */
  encode(row: R): string | null
  kind: 'text' | 'list'
  /** The element type the split list is cast to when no value can be null (`list` only). */
  listType?: string
  /** SQL turning the unnested element `x` into the column value. */
  sql: (x: string) => string
}

const NULL_TEXT = '\x1e'
const TEXT_SEP = '\x1f'
const int = (v: number | null): string | null => (v === null ? null : String(v))
const bool = (v: boolean | null): string | null => (v === null ? null : v ? 't' : 'f')

function text<R>(get: (r: R) => string | null, nullable: boolean): ColumnCodec<R> {
  return { encode: get, kind: 'text', sql: nullable ? (x) => `nullif(${x}, chr(30))` : (x) => x }
}
function required<R>(get: (r: R) => string, type: string, sql: (x: string) => string = (x) => x): ColumnCodec<R> {
  return { encode: get, kind: 'list', listType: type, sql }
}
function optional<R>(get: (r: R) => string | null, type: string): ColumnCodec<R> {
  return { encode: get, kind: 'list', sql: (x) => `nullif(${x}, '')::${type}` }
}

const EVENT_ID_CODEC = text<UsageEvent>((e) => e.event_id, false)
const TS_CODEC = required<UsageEvent>((e) => String(e.ts_us), 'BIGINT', (x) => `make_timestamp(${x})`)

const EVENT_CODECS: Record<string, ColumnCodec<UsageEvent>> = {
  event_id: EVENT_ID_CODEC,
  ts: TS_CODEC,
  key_id: text((e) => e.key_id, false),
  provider: text((e) => e.provider, false),
  model: text((e) => e.model, false),
  status_code: required((e) => String(e.status_code), 'SMALLINT'),
  input_tokens: required((e) => String(e.input_tokens), 'BIGINT'),
  output_tokens: required((e) => String(e.output_tokens), 'BIGINT'),
  cache_read_tokens: required((e) => String(e.cache_read_tokens), 'BIGINT'),
  cache_write_tokens: required((e) => String(e.cache_write_tokens), 'BIGINT'),
  reasoning_tokens: required((e) => String(e.reasoning_tokens), 'BIGINT'),
  cost: optional((e) => (e.cost === null ? null : formatCostFixed(e.cost)), `DECIMAL(${COST_WIDTH},${COST_SCALE})`),
  currency: text((e) => e.currency, false),
  team_id: text((e) => e.team_id, true),
  user_id: text((e) => e.user_id, true),
  customer_id: text((e) => e.customer_id, true),
  endpoint: text((e) => e.endpoint, true),
  latency_ms: optional((e) => int(e.latency_ms), 'INTEGER'),
  ttft_ms: optional((e) => int(e.ttft_ms), 'INTEGER'),
  stream: optional((e) => bool(e.stream), 'BOOLEAN'),
  tags: text((e) => e.tags, true),
  has_detail: required((e) => (e.detail !== null ? 't' : 'f'), 'BOOLEAN'),
  fingerprint: text((e) => e.fingerprint, false),
  // Only where the table priced over a reported cost: otherwise it is derived (REPORTED_COST_SQL).
  reported_cost: optional((e) => (e.reported_cost === null || e.price_ref === null ? null : formatCostFixed(e.reported_cost)), `DECIMAL(${COST_WIDTH},${COST_SCALE})`),
  price_ref: text((e) => e.price_ref, true),
}

const DETAIL_CODECS: Record<string, ColumnCodec<UsageEvent>> = {
  event_id: EVENT_ID_CODEC,
  ts: TS_CODEC,
  detail: text((e) => e.detail, false),
}

/**
 * A prepared INSERT of many rows into one table: its SQL, each column's
 * values joined (`encode`, per request, where the request is decoded), and
 * how joined columns combine (`merge`, one commit of several requests) or
 * lose rows (`filter`, a request's duplicates left out).
 */
export interface RowInsert<R> {
  /** Parameters $1..$n are the columns' joined values, in column order. */
  sql: string
  /** The joined values of `rows` (at least one), one string per column. */
  encode(rows: readonly R[]): string[]
  /** Parts of `encode` (each of at least one row) as one: the statement's parameters. */
  merge(parts: readonly (readonly string[])[]): string[]
  /** The encoded `columns` keeping the rows whose `keep` is true (at least one). */
  filter(columns: readonly string[], keep: readonly boolean[]): string[]
}

function rowInsert<R>(table: string, columns: readonly Column[], codecs: Record<string, ColumnCodec<R>>): RowInsert<R> {
  const names = columns.map((c) => c.name)
  const missing = names.filter((n) => codecs[n] === undefined)
  const extra = Object.keys(codecs).filter((n) => !names.includes(n))
  if (missing.length > 0 || extra.length > 0) throw new Error(`schema.ts: ${table} codecs do not match its columns (missing ${missing.join(', ') || '-'}, extra ${extra.join(', ') || '-'})`)
  const ordered = names.map((n) => codecs[n]!)
  const seps = ordered.map((c) => (c.kind === 'text' ? TEXT_SEP : ','))
  const lists = ordered.map((c, i) => {
    const split = c.kind === 'text' ? `string_split($${i + 1}, chr(31))` : `string_split($${i + 1}, ',')`
    return `unnest(${c.listType ? `${split}::${c.listType}[]` : split}) AS c${i}`
  })
  // Unnest over lists of unequal length pads the short ones with NULL. Each
  // list has at least one value per row (the join put rows - 1 separators), so
  // a value containing a separator can only make its list longer. The `ts`
  // list (digits joined with commas: never longer) is NOT NULL, so the extra
  // row then violates it and the whole statement fails, inside a transaction
  // or alone. insertRows (segment.ts) also checks the count it wrote.
  if (!names.includes('ts') || !columns.find((c) => c.name === 'ts')!.sql.includes('NOT NULL')) throw new Error(`schema.ts: ${table} needs its NOT NULL ts column to detect a wrong split`)
  const sql = `INSERT INTO ${table} SELECT ${ordered.map((c, i) => c.sql(`c${i}`)).join(', ')} FROM (SELECT ${lists.join(', ')})`
  return {
    sql,
    encode(rows) {
      const out: string[] = new Array(ordered.length)
      const values: string[] = new Array(rows.length)
      for (let c = 0; c < ordered.length; c++) {
        const codec = ordered[c]!
        const isText = codec.kind === 'text'
        for (let i = 0; i < rows.length; i++) values[i] = codec.encode(rows[i]!) ?? (isText ? NULL_TEXT : '')
        out[c] = values.join(seps[c]!)
      }
      return out
    },
    merge(parts) {
      if (parts.length === 1) return [...parts[0]!]
      return seps.map((sep, c) => parts.map((p) => p[c]!).join(sep))
    },
    filter(cols, keep) {
      return cols.map((joined, c) => {
        const values = joined.split(seps[c]!)
        if (values.length !== keep.length) throw new Error(`invariant: ${table}.${names[c]} splits into ${values.length} values for ${keep.length} rows (a value contains a separator)`)
        return values.filter((_, i) => keep[i] === true).join(seps[c])
      })
    },
  }
}

/** The group commit's insert into `events`. */
export const EVENT_INSERT = rowInsert('events', EVENT_COLUMNS, EVENT_CODECS)
/** The group commit's insert into `event_details` (only rows whose detail is not null). */
export const DETAIL_INSERT = rowInsert('event_details', DETAIL_COLUMNS, DETAIL_CODECS)

export const SEGMENT_DDL = [
  `CREATE TABLE IF NOT EXISTS events (${EVENT_COLUMNS.map((c) => `${c.name} ${c.sql}`).join(', ')})`,
  `CREATE TABLE IF NOT EXISTS event_details (${DETAIL_COLUMNS.map((c) => `${c.name} ${c.sql}`).join(', ')})`,
  `CREATE TABLE IF NOT EXISTS segment_meta (key VARCHAR NOT NULL, value VARCHAR NOT NULL)`,
]
