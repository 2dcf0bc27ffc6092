// GET /v1/export: every matching event, oldest first by (timestamp, event_id).
//
// Invariants:
// - CSV and NDJSON are streamed page by page (an ascending keyset walk, one
//   short snapshot per page), so memory is one page whatever the export's size,
//   a slow reader holds no query slot or pinned segment between pages, and the
//   walk has the list's guarantee: no event that existed when it began is
//   skipped or repeated, whatever is ingested meanwhile.
// - Parquet is written by DuckDB (COPY ... ORDER BY ts, event_id) into a file
//   under <data>/exports/, then streamed from disk and removed; one snapshot
//   covers the whole COPY, under the export time bound.
// - Columns come in one fixed order (EXPORT_COLUMNS), the same in every format.
// - An export holds at most `maxEvents` events: counted before the first byte
//   (a 400 when over), and if events arriving meanwhile would carry it past the
//   bound the stream is broken off, so a client never takes a cut export for
//   a whole one.

import { randomUUID } from 'node:crypto'
import { rm } from 'node:fs/promises'
import path from 'node:path'
import type { DuckDBConnection } from '@duckdb/node-api'
import { Errors } from '../errors.js'
import { COST_ORIGIN_SQL, EVENT_COLUMNS, REPORTED_COST_SQL } from '../store/schema.js'
import { sqlString, tableOf } from '../store/relations.js'
import type { Snapshot, SnapshotPart } from '../store/snapshot.js'
import type { Store } from '../store/store.js'
import { whereClause, type EventFilter } from './filters.js'
import { decodeCursor, pageEvents } from './list.js'
import type { StoredEvent } from './read.js'
import { mayMatch } from './window.js'

export const EXPORT_FORMATS = ['csv', 'ndjson', 'parquet'] as const
export type ExportFormat = (typeof EXPORT_FORMATS)[number]

/** Column order of every export format. */
export const EXPORT_COLUMNS = [
  'event_id',
  'timestamp',
  'key_id',
  'team_id',
  'user_id',
  'customer_id',
  'provider',
  'model',
  'endpoint',
  'status_code',
  'input_tokens',
  'output_tokens',
  'cache_read_tokens',
  'cache_write_tokens',
  'reasoning_tokens',
  'cost',
  'cost_origin',
  'reported_cost',
  'price_ref',
  'currency',
  'latency_ms',
  'ttft_ms',
  'stream',
  'tags',
] as const satisfies ReadonlyArray<keyof StoredEvent>

/** Events per page of a streamed export. */
export const EXPORT_PAGE = 5000

/** The window a snapshot can answer (never before its event cutoff), and its parts that may hold matches: live ones, and the aliases of attached files. */
function matchingParts(snap: Snapshot, filter: EventFilter): { window: EventFilter; live: SnapshotPart[]; files: string[] } {
  const window: EventFilter = { ...filter, fromUs: Math.max(filter.fromUs, snap.cutoffs.eventsUs) }
  const live: SnapshotPart[] = []
  const files: string[] = []
  if (window.fromUs < window.toUs) {
    for (const part of snap.parts) {
      if (!mayMatch(part, window, [window.fromUs, window.toUs])) continue
      if (part.alias === null) live.push(part)
      else files.push(part.alias)
    }
  }
  return { window, live, files }
}

/** Events in the window and filters now (before the event cutoff: none). */
export async function countEvents(store: Store, filter: EventFilter): Promise<number> {
  return store.snapshot(async (snap) => {
    const { window, live, files } = matchingParts(snap, filter)
    const where = whereClause(window)
    const count = async (conn: DuckDBConnection, aliases: Array<string | null>): Promise<number> => {
      const union = aliases.map((a) => `SELECT count(*) AS n FROM ${tableOf(a, 'events')} WHERE ${where.sql}`).join(' UNION ALL ')
      const rows = (await conn.runAndReadAll(`SELECT coalesce(sum(n), 0)::BIGINT FROM (${union})`, where.params)).getRows()
      return Number(rows[0]![0])
    }
    let n = 0
    for (const part of live) n += await part.live((conn) => count(conn, [null]))
    if (files.length > 0) n += await snap.files((conn) => count(conn, files))
    return n
  })
}

/** The matching events, oldest first, one page at a time; throws QueryTooLarge past `maxEvents`. */
export async function* walkEvents(store: Store, filter: EventFilter, maxEvents: number): AsyncGenerator<StoredEvent[]> {
  let cursor: string | null = null
  let sent = 0
  do {
    const after = cursor === null ? null : decodeCursor(cursor)
    // A slow reader must not let the retention cutoff overtake the walk: the
    // events between the last one sent and the cutoff would be skipped silently.
    if (after !== null && store.cutoffs().eventsUs > after.tsUs) {
      throw new Errors.QueryTooLarge('the export ran so long that the retention cutoff passed the events it had reached; export a later or shorter window')
    }
    const page = await pageEvents(store, filter, { limit: EXPORT_PAGE, cursor: after, source: 'all', order: 'asc' })
    sent += page.events.length
    if (sent > maxEvents) throw new Errors.QueryTooLarge(`the export passed ${maxEvents} events while it ran`)
    if (page.events.length > 0) yield page.events
    cursor = page.next_cursor
  } while (cursor !== null)
}

/** RFC 4180: a field is quoted when it holds a comma, a quote or a line break; quotes are doubled. */
function csvField(v: unknown): string {
  if (v === null || v === undefined) return ''
  const text = typeof v === 'object' ? JSON.stringify(v) : String(v)
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text
}

export const csvHeader = (): string => `${EXPORT_COLUMNS.join(',')}\r\n`

export function csvRows(events: readonly StoredEvent[]): string {
  let out = ''
  for (const e of events) out += `${EXPORT_COLUMNS.map((c) => csvField(e[c])).join(',')}\r\n`
  return out
}

export function ndjsonRows(events: readonly StoredEvent[]): string {
  let out = ''
  for (const e of events) out += `${JSON.stringify(Object.fromEntries(EXPORT_COLUMNS.map((c) => [c, e[c]])))}\n`
  return out
}

/** DuckDB expressions of the export columns over an `events` table (timestamps as UTC TIMESTAMPTZ). */
const DERIVED: Partial<Record<(typeof EXPORT_COLUMNS)[number], string>> = {
  timestamp: `timezone('UTC', ts) AS "timestamp"`,
  cost_origin: `${COST_ORIGIN_SQL} AS cost_origin`,
  reported_cost: `${REPORTED_COST_SQL} AS reported_cost`,
}
const PARQUET_SELECT = EXPORT_COLUMNS.map((c) => DERIVED[c] ?? c).join(', ')

/**
 * Writes the matching events as one Parquet file (zstd), oldest first, with
 * DuckDB; returns how many it holds. Live segments are first copied to their
 * own Parquet parts (they are read through their own connections), then one
 * COPY merges them with the attached files. Throws QueryTooLarge past
 * `maxEvents` (the file is then removed by the caller).
 */
export async function writeParquet(store: Store, filter: EventFilter, dir: string, file: string, maxEvents: number, timeoutMs: number): Promise<number> {
  return store.snapshot(
    async (snap) => {
      const { window, live, files } = matchingParts(snap, filter)
      const where = whereClause(window)
      const sources: string[] = []
      const liveParts: string[] = []
      try {
        for (const part of live) {
          const livePart = path.join(dir, `${randomUUID()}.live.parquet`)
          liveParts.push(livePart)
          await part.live((conn) => conn.run(`COPY (SELECT * FROM events WHERE ${where.sql}) TO ${sqlString(livePart)} (FORMAT parquet)`, where.params))
          sources.push(`SELECT * FROM read_parquet(${sqlString(livePart)})`)
        }
        for (const alias of files) sources.push(`SELECT * FROM ${tableOf(alias, 'events')} WHERE ${where.sql}`)
        // An empty export still has its columns: a source that matches nothing.
        if (sources.length === 0) sources.push(emptyEvents())
        const body = `SELECT ${PARQUET_SELECT} FROM (${sources.join(' UNION ALL BY NAME ')}) ORDER BY ts, event_id`
        const params = files.length > 0 ? where.params : []
        return await snap.files(async (conn) => {
          const res = await conn.run(`COPY (${body}) TO ${sqlString(file)} (FORMAT parquet, COMPRESSION zstd)`, params)
          const rows = Number(res.rowsChanged)
          if (rows > maxEvents) throw new Errors.QueryTooLarge(`the export holds ${rows} events; at most ${maxEvents} are allowed`)
          return rows
        })
      } finally {
        for (const p of liveParts) await rm(p, { force: true })
      }
    },
    { timeoutMs },
  )
}

/** A relation with the events table's columns and no rows (no segment matched). */
function emptyEvents(): string {
  return `SELECT ${EVENT_COLUMNS.map((c) => `NULL::${c.sql.replace(' NOT NULL', '')} AS ${c.name}`).join(', ')} WHERE false`
}
