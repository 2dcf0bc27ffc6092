// One segment file: a DuckDB database holding `events` and `event_details`.
//
// Invariants:
// - One DuckDBInstance per file per process; this class owns it.
// - The writer connection and its appenders are used only through
//   `appendCommitted`, which the Store calls only while holding the write gate
//   (store.ts asserts that). A write is one explicit transaction: all rows of
//   a group commit land, or none do.
// - Read connections are separate and never write; one query at a time per
//   connection (`read` hands each out once).
// - `lookup` (the exact dedupe probe) uses the writer connection, so it runs
//   only under the write gate too, and never waits on a query.
// - Close order: appenders -> connections -> instance, after a CHECKPOINT.

import { DuckDBAppender, DuckDBConnection, DuckDBDataChunk, DuckDBInstance, listValue, type DuckDBType } from '@duckdb/node-api'
import type { UsageEvent } from '../ingest/event.js'
import { DETAIL_COLUMNS, EVENT_COLUMNS, fillDetailChunk, fillEventChunk, SCHEMA_VERSION, SEGMENT_DDL } from './schema.js'
import { ConnectionPool } from './pool.js'

/** DuckDB's vector size: the most rows one data chunk holds. */
const CHUNK_ROWS = 2048

export interface SegmentOptions {
  memoryBytes: number
  threads: number
  readConnections: number
  /** Recorded as the segment's creation time when the file is new. */
  nowMs: number
}

export class Segment {
  private closed = false
  private readonly pool: ConnectionPool

  private constructor(
    readonly path: string,
    private readonly instance: DuckDBInstance,
    private readonly writer: DuckDBConnection,
    private readonly eventAppender: DuckDBAppender,
    private readonly detailAppender: DuckDBAppender,
    readers: readonly DuckDBConnection[],
    readonly createdMs: number,
  ) {
    this.pool = new ConnectionPool(readers)
  }

  static async open(path: string, opts: SegmentOptions): Promise<Segment> {
    const instance = await DuckDBInstance.create(path, {
      memory_limit: `${Math.floor(opts.memoryBytes / 1024 / 1024)}MiB`,
      threads: String(opts.threads),
      // Never load or install anything at run time: storage behaviour is pinned.
      autoinstall_known_extensions: 'false',
      autoload_known_extensions: 'false',
    })
    try {
      const writer = await instance.connect()
      for (const ddl of SEGMENT_DDL) await writer.run(ddl)
      const meta = await writer.runAndReadAll(`SELECT value FROM segment_meta WHERE key = 'schema_version'`)
      if (meta.currentRowCount === 0) {
        await writer.run(`INSERT INTO segment_meta VALUES ('schema_version', '${SCHEMA_VERSION}')`)
      }
      const created = await writer.runAndReadAll(`SELECT value FROM segment_meta WHERE key = 'created_ms'`)
      let createdMs = Number(created.getRows()[0]?.[0] ?? NaN)
      if (!Number.isFinite(createdMs)) {
        createdMs = opts.nowMs
        await writer.run(`INSERT INTO segment_meta VALUES ('created_ms', '${createdMs}')`)
      }
      const eventAppender = await writer.createAppender('events')
      const detailAppender = await writer.createAppender('event_details')
      const readers: DuckDBConnection[] = []
      for (let i = 0; i < opts.readConnections; i++) readers.push(await instance.connect())
      return new Segment(path, instance, writer, eventAppender, detailAppender, readers, createdMs)
    } catch (err) {
      instance.closeSync()
      throw err
    }
  }

  /** Every event_id stored: rebuilds the dedupe index after a restart. */
  scanIds(): AsyncGenerator<string[]> {
    return scanIds(this.writer, null)
  }

  /** Exact probe: the fingerprints of those `ids` that are stored here. Caller holds the write gate (active segment) or the store's retireLock (rolled over). */
  lookup(ids: readonly string[]): Promise<Map<string, string>> {
    if (this.closed) throw new Error(`segment ${this.path} is closed`)
    return lookupFingerprints(this.writer, null, ids)
  }

  /** Runs a read on one of this segment's read connections. */
  async read<T>(fn: (conn: DuckDBConnection) => Promise<T>): Promise<T> {
    if (this.closed) throw new Error(`invariant: read of closed segment ${this.path}`)
    return this.pool.run(fn)
  }

  /** Runs a statement on a read connection (a best-effort CHECKPOINT before rollover, for one). */
  async readRun(sql: string): Promise<void> {
    await this.read((conn) => conn.run(sql))
  }

  /**
   * Writes the rows in one transaction and returns once it has committed
   * (DuckDB writes and fsyncs its WAL on COMMIT). On failure the transaction
   * is rolled back and the error rethrown: nothing of `rows` is stored.
   * Caller must hold the store's write gate.
   */
  async appendCommitted(rows: readonly UsageEvent[]): Promise<void> {
    if (this.closed) throw new Error(`segment ${this.path} is closed`)
    if (rows.length === 0) return
    await this.writer.run('BEGIN TRANSACTION')
    try {
      appendChunks(this.eventAppender, EVENT_TYPES, rows, fillEventChunk)
      const details = rows.filter((r) => r.detail !== null)
      if (details.length > 0) appendChunks(this.detailAppender, DETAIL_TYPES, details, fillDetailChunk)
      this.eventAppender.flushSync()
      this.detailAppender.flushSync()
      await this.writer.run('COMMIT')
    } catch (err) {
      // A failed flush leaves the appender unusable; clear what it buffered.
      this.eventAppender.clear()
      this.detailAppender.clear()
      await this.writer.run('ROLLBACK').catch(() => undefined)
      throw err
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    try {
      await this.writer.run('CHECKPOINT')
    } finally {
      this.eventAppender.closeSync()
      this.detailAppender.closeSync()
      this.pool.closeAll()
      this.writer.closeSync()
      this.instance.closeSync()
    }
  }
}

/** Ids joined per group by scanIds: big enough to amortise the per-string cost, small enough to stream. */
const SCAN_IDS_GROUP = 16_384

/**
 * Streams every event_id of the segment's `events` table (`alias` null: the
 * connection's own database). Start-up runs this over every retained event, so it
 * is built for speed: DuckDB joins the ids of each rowid range with a space (ids are
 * printable ASCII without space: ID_RE in src/ingest/event.ts) and JS splits one long string, about 3x faster
 * than fetching one JS string per row (~0.6 against ~1.8 µs an id with the index
 * insert, measured on a 500k-row archive).
 */
export async function* scanIds(conn: DuckDBConnection, alias: string | null): AsyncGenerator<string[]> {
  const table = alias === null ? 'events' : `"${alias}".events`
  const reader = await conn.stream(`SELECT string_agg(event_id, ' ') FROM ${table} GROUP BY rowid // ${SCAN_IDS_GROUP}`)
  for (;;) {
    const chunk = await reader.fetchChunk()
    if (!chunk || chunk.rowCount === 0) break
    for (const joined of chunk.getColumnValues(0) as Array<string | null>) if (joined !== null) yield joined.split(' ')
  }
}

/** event_id -> fingerprint for those of `ids` stored in the segment. */
export async function lookupFingerprints(conn: DuckDBConnection, alias: string | null, ids: readonly string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  if (ids.length === 0) return out
  const table = alias === null ? 'events' : `"${alias}".events`
  const res = await conn.runAndReadAll(`SELECT event_id, fingerprint FROM ${table} WHERE event_id IN (SELECT unnest($1::VARCHAR[]))`, [listValue([...ids])])
  for (const [id, fp] of res.getRows() as Array<[string, string]>) out.set(id, fp)
  return out
}

const EVENT_TYPES = EVENT_COLUMNS.map((c) => c.type)
const DETAIL_TYPES = DETAIL_COLUMNS.map((c) => c.type)

function appendChunks(
  appender: DuckDBAppender,
  types: readonly DuckDBType[],
  rows: readonly UsageEvent[],
  fill: (chunk: DuckDBDataChunk, rows: readonly UsageEvent[]) => void,
): void {
  for (let start = 0; start < rows.length; start += CHUNK_ROWS) {
    const slice = rows.slice(start, start + CHUNK_ROWS)
    const chunk = DuckDBDataChunk.create(types, slice.length)
    fill(chunk, slice)
    appender.appendDataChunk(chunk)
  }
}
