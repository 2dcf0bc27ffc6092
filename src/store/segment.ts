// One segment file: a DuckDB database holding `events` and `event_details`.
//
// Invariants:
// - One DuckDBInstance per file per process; this class owns it.
// - The writer connection and its appenders are used only through
//   `appendCommitted`, which the Store calls only while holding the write gate
//   (store.ts asserts that). A write is one explicit transaction: all rows of
//   a group commit land, or none do.
// - Read connections are separate and never write; one query at a time per
//   connection (the Store's read pool guarantees that).
// - Close order: appenders -> connections -> instance, after a CHECKPOINT.

import { DuckDBAppender, DuckDBConnection, DuckDBDataChunk, DuckDBInstance, type DuckDBType } from '@duckdb/node-api'
import type { UsageEvent } from '../ingest/event.js'
import { DETAIL_COLUMNS, EVENT_COLUMNS, fillDetailChunk, fillEventChunk, SCHEMA_VERSION, SEGMENT_DDL } from './schema.js'

/** DuckDB's vector size: the most rows one data chunk holds. */
const CHUNK_ROWS = 2048

export interface SegmentOptions {
  memoryBytes: number
  threads: number
  readConnections: number
}

export class Segment {
  private closed = false

  private constructor(
    readonly path: string,
    private readonly instance: DuckDBInstance,
    private readonly writer: DuckDBConnection,
    private readonly eventAppender: DuckDBAppender,
    private readonly detailAppender: DuckDBAppender,
    readonly readers: readonly DuckDBConnection[],
  ) {}

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
      const eventAppender = await writer.createAppender('events')
      const detailAppender = await writer.createAppender('event_details')
      const readers: DuckDBConnection[] = []
      for (let i = 0; i < opts.readConnections; i++) readers.push(await instance.connect())
      return new Segment(path, instance, writer, eventAppender, detailAppender, readers)
    } catch (err) {
      instance.closeSync()
      throw err
    }
  }

  /** Every (event_id, fingerprint) stored: rebuilds the dedupe index after a restart. */
  async *scanIds(): AsyncGenerator<Array<[string, string]>> {
    const reader = await this.writer.stream('SELECT event_id, fingerprint FROM events')
    for (;;) {
      const chunk = await reader.fetchChunk()
      if (!chunk || chunk.rowCount === 0) break
      const ids = chunk.getColumnValues(0) as string[]
      const fps = chunk.getColumnValues(1) as string[]
      yield ids.map((id, i) => [id, fps[i]!])
    }
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
      for (const r of this.readers) r.closeSync()
      this.writer.closeSync()
      this.instance.closeSync()
    }
  }
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
