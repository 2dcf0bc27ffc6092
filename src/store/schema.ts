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
  DuckDBDecimalValue,
  DuckDBTimestampValue,
  INTEGER,
  SMALLINT,
  TIMESTAMP,
  VARCHAR,
  type DuckDBType,
  type DuckDBValue,
} from '@duckdb/node-api'
import { COST_SCALE, COST_WIDTH } from '../money.js'
import type { UsageEvent } from '../ingest/event.js'

export const SCHEMA_VERSION = 1

interface Column {
  name: string
  sql: string
  type: DuckDBType
  value(e: UsageEvent): DuckDBValue
}

export const EVENT_COLUMNS: readonly Column[] = [
  { name: 'event_id', sql: 'VARCHAR NOT NULL', type: VARCHAR, value: (e) => e.event_id },
  { name: 'ts', sql: 'TIMESTAMP NOT NULL', type: TIMESTAMP, value: (e) => new DuckDBTimestampValue(BigInt(e.ts_us)) },
  { name: 'key_id', sql: 'VARCHAR NOT NULL', type: VARCHAR, value: (e) => e.key_id },
  { name: 'provider', sql: 'VARCHAR NOT NULL', type: VARCHAR, value: (e) => e.provider },
  { name: 'model', sql: 'VARCHAR NOT NULL', type: VARCHAR, value: (e) => e.model },
  { name: 'status_code', sql: 'SMALLINT NOT NULL', type: SMALLINT, value: (e) => e.status_code },
  { name: 'input_tokens', sql: 'BIGINT NOT NULL', type: BIGINT, value: (e) => BigInt(e.input_tokens) },
  { name: 'output_tokens', sql: 'BIGINT NOT NULL', type: BIGINT, value: (e) => BigInt(e.output_tokens) },
  { name: 'cache_read_tokens', sql: 'BIGINT NOT NULL', type: BIGINT, value: (e) => BigInt(e.cache_read_tokens) },
  { name: 'cache_write_tokens', sql: 'BIGINT NOT NULL', type: BIGINT, value: (e) => BigInt(e.cache_write_tokens) },
  { name: 'reasoning_tokens', sql: 'BIGINT NOT NULL', type: BIGINT, value: (e) => BigInt(e.reasoning_tokens) },
  {
    name: 'cost',
    sql: `DECIMAL(${COST_WIDTH},${COST_SCALE})`,
    type: DECIMAL(COST_WIDTH, COST_SCALE),
    value: (e) => (e.cost === null ? null : new DuckDBDecimalValue(e.cost, COST_WIDTH, COST_SCALE)),
  },
  { name: 'currency', sql: 'VARCHAR NOT NULL', type: VARCHAR, value: (e) => e.currency },
  { name: 'team_id', sql: 'VARCHAR', type: VARCHAR, value: (e) => e.team_id },
  { name: 'user_id', sql: 'VARCHAR', type: VARCHAR, value: (e) => e.user_id },
  { name: 'customer_id', sql: 'VARCHAR', type: VARCHAR, value: (e) => e.customer_id },
  { name: 'endpoint', sql: 'VARCHAR', type: VARCHAR, value: (e) => e.endpoint },
  { name: 'latency_ms', sql: 'INTEGER', type: INTEGER, value: (e) => e.latency_ms },
  { name: 'ttft_ms', sql: 'INTEGER', type: INTEGER, value: (e) => e.ttft_ms },
  { name: 'stream', sql: 'BOOLEAN', type: BOOLEAN, value: (e) => e.stream },
  { name: 'tags', sql: 'VARCHAR', type: VARCHAR, value: (e) => e.tags },
  { name: 'has_detail', sql: 'BOOLEAN NOT NULL', type: BOOLEAN, value: (e) => e.detail !== null },
  { name: 'fingerprint', sql: 'VARCHAR NOT NULL', type: VARCHAR, value: (e) => e.fingerprint },
]

export const DETAIL_COLUMNS: readonly Column[] = [
  { name: 'event_id', sql: 'VARCHAR NOT NULL', type: VARCHAR, value: (e) => e.event_id },
  { name: 'ts', sql: 'TIMESTAMP NOT NULL', type: TIMESTAMP, value: (e) => new DuckDBTimestampValue(BigInt(e.ts_us)) },
  { name: 'detail', sql: 'VARCHAR NOT NULL', type: VARCHAR, value: (e) => e.detail },
]

export const SEGMENT_DDL = [
  `CREATE TABLE IF NOT EXISTS events (${EVENT_COLUMNS.map((c) => `${c.name} ${c.sql}`).join(', ')})`,
  `CREATE TABLE IF NOT EXISTS event_details (${DETAIL_COLUMNS.map((c) => `${c.name} ${c.sql}`).join(', ')})`,
  `CREATE TABLE IF NOT EXISTS segment_meta (key VARCHAR NOT NULL, value VARCHAR NOT NULL)`,
]
