// One segment file: a DuckDB database holding `events` and `event_details`.
//
// Invariants:
// - One DuckDBInstance per file per process; this class owns it.
// - The writer connection and its prepared inserts are used only through
//   `appendCommitted`, which takes the write gate's capability (gate.ts) and
//   refuses one that is released or names another segment. A write is one transaction: all rows of a group
//   commit land, or none do.
// - Read connections are separate and never write; one query at a time per
//   connection (`read` hands each out once).
// - `lookup` (the exact dedupe probe) uses the writer connection, so it runs
//   only under the write gate too, and never waits on a query.
// - Close order: prepared inserts -> connections -> instance, after a CHECKPOINT
//   (and after a live-rollup refresh in progress has finished).
// - live_rollups holds the rollup rows (coarse shape: no user_id) of exactly
//   the events whose rowid is below live_rollups_upto.rows, refreshed off the
//   commit path on a connection of its own. Rows of `events` are only ever
//   appended, by one writer, and an aborted append gives its rowids back, so
//   the committed rows are rowids 0..count-1: a read that takes the rollups
//   plus the events from `upto` on, in one statement, sees every event once.
//   A refresh that finds otherwise empties these tables and stops for good
//   (reads then see every event raw).
// - live_cells holds, per 15-minute cell, the oldest and newest timestamp of
//   the same rolled-up events, written in the same transactions: a read whose
//   window cuts through a cell can take the cell's rollups whole when they
//   provably hold only events inside the window (read.ts, liveTotals).
// - Queries take the rollups, their cells' bounds and their watermark as one
//   immutable LiveRollups, read in one transaction on a read connection the
//   first time a query asks after a refresh has committed, and shared by the
//   queries until the next one (no query asking: none is read). A query sums
//   its rows in JS and reads only the events from its `upto` on. Any
//   LiveRollups stays exact for as long as the segment is open, since the
//   events below its `upto` never change. Rollups of more than
//   LIVE_VIEW_MAX_ROWS rows are not read into memory (reads go to
//   live_rollups in DuckDB): reading them costs the event loop, which ingest
//   shares.

import { DuckDBConnection, DuckDBDecimalValue, DuckDBInstance, DuckDBPreparedStatement, listValue } from '@duckdb/node-api'
import type { EventBatch } from '../ingest/batch.js'
import { grants, type GateHeld } from './gate.js'
import { BUCKET_OF_TS, COARSE_COLUMNS, COARSE_KEY, compactedRollups, rollupOfEvents, rollupTokenSum } from './catalog.js'
import { DETAIL_INSERT, EVENT_INSERT, SCHEMA_VERSION, SEGMENT_DDL, TOKEN_COLUMNS } from './schema.js'
import { ConnectionPool } from './pool.js'
import { inTransaction } from './transaction.js'

export interface SegmentOptions {
  memoryBytes: number
  threads: number
  readConnections: number
  /** WAL size past which DuckDB checkpoints on its own (the store passes its rollover size: a rollover checkpoints first); default 64 MiB. */
  checkpointBytes?: number
  /** Recorded as the segment's creation time when the file is new. */
  nowMs: number
  /** Test seam: runs before each refresh of the live rollups writes (StoreHooks.beforeLiveRollupRefresh). */
  beforeRefresh?: () => Promise<void>
}

/** Refreshes between compactions of live_rollups. */
const LIVE_COMPACT_EVERY = 16

/** A live segment's own rollups (see the invariants above); never copied into an archive. */
const LIVE_ROLLUP_DDL = [
  `CREATE TABLE IF NOT EXISTS live_rollups (${COARSE_COLUMNS})`,
  `CREATE TABLE IF NOT EXISTS live_rollups_upto (rows BIGINT NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS live_cells (bucket TIMESTAMP NOT NULL, min_ts TIMESTAMP NOT NULL, max_ts TIMESTAMP NOT NULL)`,
]
const LIVE_TABLES = ['live_rollups', 'live_rollups_upto', 'live_cells']

/**
 * The active segment's live rollups are refreshed (off the commit path) once
 * this many events were appended since the last refresh: queries read them
 * plus the events appended since, instead of every event of the segment.
 */
export const LIVE_ROLLUP_EVERY_ROWS = 2000
/**
 * ...and at most once a second: at full ingest speed a refresh every 2,000
 * events kept a connection busy and cost ingest about a quarter of its rate
 * (bench/ingest, when this was chosen); a second of events in the tail costs a
 * query a few milliseconds.
 */
export const LIVE_ROLLUP_EVERY_MS = 1000

/**
 * Most rows (cells × keys, models, statuses, ...) a live segment's rollups may
 * hold in memory. Reading them costs about 5 µs a row, mostly on the event loop
 * (5,000 rows: a few tens of ms), at most once per refresh while queries ask.
 * A segment of a bigger variety reads them in DuckDB.
 */
export const LIVE_VIEW_MAX_ROWS = 5_000

/** One row of a live segment's rollups, summed per cell and coarse key (catalog.ts: COARSE_COLUMNS). */
export interface LiveRollupRow {
  /** The 15-minute cell's start, µs since the epoch. */
  bucketUs: number
  key_id: string
  team_id: string | null
  customer_id: string | null
  provider: string
  model: string
  status_code: number
  currency: string
  requests: bigint
  errors: bigint
  input_tokens: bigint
  output_tokens: bigint
  cache_read_tokens: bigint
  cache_write_tokens: bigint
  reasoning_tokens: bigint
  /** Sum of the known costs, scaled by COST_SCALE; null when none was known. */
  cost: bigint | null
  cost_missing: bigint
  /** The part of `cost` priced from the price table, scaled; null when none was. */
  cost_priced: bigint | null
}

/** A live segment's rollups as one refresh left them (see the invariants above). */
export interface LiveRollups {
  /** The rows hold exactly the events whose rowid is below this. */
  readonly upto: number
  /** Per cell start (µs): the oldest and newest timestamp (µs) of those events. */
  readonly cells: ReadonlyMap<number, readonly [number, number]>
  readonly rows: readonly LiveRollupRow[]
}

export class Segment {
  private closed = false
  /** Events appended since the last live-rollup refresh began. */
  private unrolled = 0
  private refreshing: Promise<void> | null = null
  private liveRollupsBroken = false
  /** Refreshes since live_rollups was last compacted (each adds partial rows for the cells it touched). */
  private partialRefreshes = 0
  /** When the last refresh began (performance.now()). */
  private lastRefreshMs = -Infinity
  /** live_rollups_upto as the last committed refresh (or open) left it. */
  private rolledUpto = 0
  /** The LiveRollups read for queries at `upto` (null: more than LIVE_VIEW_MAX_ROWS rows, or the read failed). */
  private view: { upto: number; rollups: Promise<LiveRollups | null> } | null = null
  private readonly pool: ConnectionPool
  /** Prepared on the first write: a segment of an older schema is opened (and moved on) but never written. */
  private inserts: { events: DuckDBPreparedStatement; details: DuckDBPreparedStatement } | null = null

  private constructor(
    readonly path: string,
    private readonly instance: DuckDBInstance,
    private readonly writer: DuckDBConnection,
    readers: readonly DuckDBConnection[],
    private readonly roller: DuckDBConnection,
    readonly createdMs: number,
    private readonly beforeRefresh: (() => Promise<void>) | undefined,
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
      // DuckDB checkpoints automatically once the WAL passes this; the default (16 MiB)
      // checkpointed the active segment every ~50k events, inside a commit (CPU and a
      // stall on the commit path). The rollover's size bound (file plus WAL) bounds the
      // WAL instead, and a rollover checkpoints before it closes the file. Measured with
      // bench/store-floor.ts (900-event groups, twice each, alternating): append CPU
      // 11.2 and 11.8 µs/event at 16 MiB, 6.4 and 7.0 at a threshold past the rollover.
      checkpoint_threshold: `${Math.max(1, Math.ceil((opts.checkpointBytes ?? 64 * 1024 * 1024) / 1024 / 1024))}MiB`,
    })
    try {
      const writer = await instance.connect()
      // A segment whose live rollups predate live_cells has cells without bounds: its rollups start over (the first refresh takes every event).
      const hadCells = Number((await writer.runAndReadAll(`SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND table_name = 'live_cells'`)).getRows()[0]![0]) > 0
      for (const ddl of [...SEGMENT_DDL, ...LIVE_ROLLUP_DDL]) await writer.run(ddl)
      if (!hadCells) for (const table of LIVE_TABLES) await writer.run(`DELETE FROM ${table}`)
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
      const readers: DuckDBConnection[] = []
      for (let i = 0; i < opts.readConnections; i++) readers.push(await instance.connect())
      const roller = await instance.connect()
      const seg = new Segment(path, instance, writer, readers, roller, createdMs, opts.beforeRefresh)
      // A segment reopened at start-up has events its rollups may lack: the first refresh takes them.
      seg.unrolled = Number((await writer.runAndReadAll('SELECT count(*) FROM events')).getRows()[0]![0])
      seg.rolledUpto = Number((await writer.runAndReadAll('SELECT coalesce(max(rows), 0) FROM live_rollups_upto')).getRows()[0]![0])
      return seg
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
   * (DuckDB writes and fsyncs its WAL on COMMIT). On failure nothing of `rows`
   * is stored and the error is rethrown. Only the write gate's holder can call it
   * (gate.ts: `held` must be live and name this segment).
   *
   * Rows without a detail take one statement in auto-commit mode: one trip to
   * the libuv pool instead of three, which matters because each trip waits for
   * the event loop, busy parsing the next requests (measured under the ingest
   * bench: a group commit took ~20 µs an event with BEGIN/INSERT/COMMIT against
   * ~7 µs on an idle loop). A single statement is its own transaction, and it
   * fails whole when a column splits into too many values (see rowInsert).
   */
  async appendCommitted(held: GateHeld<Segment>, parts: readonly EventBatch[]): Promise<void> {
    if (!grants(held, this)) throw new Error(`invariant: append to ${this.path} without the write gate guarding it`)
    if (this.closed) throw new Error(`segment ${this.path} is closed`)
    const rows = parts.filter((p) => p.ids.length > 0)
    if (rows.length === 0) return
    this.inserts ??= { events: await this.writer.prepare(EVENT_INSERT.sql), details: await this.writer.prepare(DETAIL_INSERT.sql) }
    const { events, details: detailsInsert } = this.inserts
    const eventCount = rows.reduce((n, p) => n + p.ids.length, 0)
    const eventParams = EVENT_INSERT.merge(rows.map((p) => p.columns))
    const withDetails = rows.filter((p) => p.detailRows.length > 0)
    if (withDetails.length === 0) {
      await insertRows(events, eventParams, eventCount)
      this.unrolled += eventCount
      return
    }
    const detailCount = withDetails.reduce((n, p) => n + p.detailRows.length, 0)
    const detailParams = DETAIL_INSERT.merge(withDetails.map((p) => p.detailColumns))
    await inTransaction(this.writer, async () => {
      await insertRows(events, eventParams, eventCount)
      await insertRows(detailsInsert, detailParams, detailCount)
    })
    this.unrolled += eventCount
  }

  /**
   * Starts a refresh of live_rollups when at least `minRows` events were
   * appended since the last one began, `minIntervalMs` have passed since it
   * began, and none is running; returns it (or the one running). Never takes the write gate: it reads committed events and
   * writes only its own tables, on its own connection.
   */
  refreshLiveRollups(minRows: number, minIntervalMs = 0): Promise<void> {
    if (this.refreshing) return this.refreshing
    if (this.closed || this.liveRollupsBroken || this.unrolled < Math.max(1, minRows)) return Promise.resolve()
    if (performance.now() - this.lastRefreshMs < minIntervalMs) return Promise.resolve()
    this.lastRefreshMs = performance.now()
    this.unrolled = 0
    this.refreshing = this.rollUp().finally(() => (this.refreshing = null))
    return this.refreshing
  }

  /**
   * The live rollups in memory as the last committed refresh left them (see
   * the invariants above), read now when no query has since; null: read
   * live_rollups instead. Only while the segment is open (a query pins it).
   */
  liveRollups(): Promise<LiveRollups | null> {
    if (this.closed || this.liveRollupsBroken) return Promise.resolve(null)
    if (this.view === null || this.view.upto !== this.rolledUpto) {
      const rollups = this.read((conn) => inTransaction(conn, () => readLiveRollups(conn))).catch(() => null)
      this.view = { upto: this.rolledUpto, rollups }
    }
    return this.view.rollups
  }

  /** The live rollups last read for queries, when that read is done; null when none is (or they are not in memory). */
  liveRollupsRead(): Promise<LiveRollups | null> {
    return this.view?.rollups ?? Promise.resolve(null)
  }

  /** Resolves once no refresh of the live rollups is running (whatever its outcome). */
  async liveRollupsIdle(): Promise<void> {
    await this.refreshing?.catch(() => undefined)
  }

  private async rollUp(): Promise<void> {
    const conn = this.roller
    await this.beforeRefresh?.()
    let disabled: string | null = null
    const rolled = await inTransaction(conn, async (): Promise<number | null> => {
      const upto = Number((await conn.runAndReadAll('SELECT coalesce(max(rows), 0) FROM live_rollups_upto')).getRows()[0]![0])
      const [count, end] = (await conn.runAndReadAll('SELECT count(*), coalesce(max(rowid) + 1, 0) FROM events')).getRows()[0]!.map(Number) as [number, number]
      if (count !== end || count < upto) {
        // Not the dense, append-only rowids the rollups rely on: empty them (committed,
        // so reads see every event raw from now on) and never refresh them again.
        this.liveRollupsBroken = true
        for (const table of LIVE_TABLES) await conn.run(`DELETE FROM ${table}`)
        disabled = `live rollups of ${this.path} disabled: ${count} events with rowids up to ${end - 1}, rolled up to ${upto}`
        return null
      }
      if (count === upto) return null
      await conn.run(`INSERT INTO live_rollups SELECT ${rollupOfEvents(false)} FROM events WHERE rowid >= ${upto} AND rowid < ${count} GROUP BY ALL`)
      await conn.run(`INSERT INTO live_cells SELECT ${BUCKET_OF_TS} AS bucket, min(ts), max(ts) FROM events WHERE rowid >= ${upto} AND rowid < ${count} GROUP BY bucket`)
      await conn.run('DELETE FROM live_rollups_upto')
      await conn.run(`INSERT INTO live_rollups_upto VALUES (${count})`)
      // Every so often the partial rows of a cell are summed into one, so reads stay small.
      if (++this.partialRefreshes >= LIVE_COMPACT_EVERY) {
        await replaceRows(conn, 'live_rollups', compactedRollups('live_rollups'))
        await replaceRows(conn, 'live_cells', 'SELECT bucket, min(min_ts) AS min_ts, max(max_ts) AS max_ts FROM live_cells GROUP BY bucket')
        this.partialRefreshes = 0
      }
      return count
    })
    // Committed: the next query reads these (one that took the last ones stays exact with them).
    if (rolled !== null) this.rolledUpto = rolled
    if (disabled !== null) throw new Error(disabled)
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    try {
      await this.liveRollupsIdle()
      await this.writer.run('CHECKPOINT')
    } finally {
      this.inserts?.events.destroySync()
      this.inserts?.details.destroySync()
      this.pool.closeAll()
      this.roller.closeSync()
      this.writer.closeSync()
      this.instance.closeSync()
    }
  }
}

/** The live rollups, summed per cell and key, with their cells' bounds and watermark; null past LIVE_VIEW_MAX_ROWS. Inside the caller's transaction. */
async function readLiveRollups(conn: DuckDBConnection): Promise<LiveRollups | null> {
  // Counted in DuckDB first: rows past the bound never reach the event loop.
  const keys = Number((await conn.runAndReadAll(`SELECT count(*) FROM (SELECT DISTINCT bucket, ${COARSE_KEY} FROM live_rollups)`)).getRows()[0]![0])
  if (keys > LIVE_VIEW_MAX_ROWS) return null
  const res = await conn.runAndReadAll(
    `SELECT epoch_us(bucket), key_id, team_id, customer_id, provider, model, status_code, currency, sum(requests)::BIGINT, sum(errors)::BIGINT, ` +
      `${TOKEN_COLUMNS.map((c) => rollupTokenSum(c)).join(', ')}, sum(cost), sum(cost_missing)::BIGINT, sum(cost_priced) ` +
      `FROM live_rollups GROUP BY ALL`,
  )
  const raw = res.getRows()
  const rows = raw.map((r): LiveRollupRow => {
    const cost = r[15]
    const priced = r[17]
    if ((cost !== null && !(cost instanceof DuckDBDecimalValue)) || (priced !== null && !(priced instanceof DuckDBDecimalValue))) throw new Error('invariant: a live rollup cost is a DECIMAL')
    return {
      bucketUs: Number(r[0]),
      key_id: String(r[1]),
      team_id: r[2] === null ? null : String(r[2]),
      customer_id: r[3] === null ? null : String(r[3]),
      provider: String(r[4]),
      model: String(r[5]),
      status_code: Number(r[6]),
      currency: String(r[7]),
      requests: BigInt(r[8] as bigint),
      errors: BigInt(r[9] as bigint),
      input_tokens: BigInt(r[10] as bigint),
      output_tokens: BigInt(r[11] as bigint),
      cache_read_tokens: BigInt(r[12] as bigint),
      cache_write_tokens: BigInt(r[13] as bigint),
      reasoning_tokens: BigInt(r[14] as bigint),
      cost: cost === null ? null : cost.value,
      cost_missing: BigInt(r[16] as bigint),
      cost_priced: priced === null ? null : priced.value,
    }
  })
  const cells = new Map<number, readonly [number, number]>()
  for (const [b, lo, hi] of (await conn.runAndReadAll('SELECT epoch_us(bucket), epoch_us(min(min_ts)), epoch_us(max(max_ts)) FROM live_cells GROUP BY bucket')).getRows()) {
    cells.set(Number(b), [Number(lo), Number(hi)])
  }
  const upto = Number((await conn.runAndReadAll('SELECT coalesce(max(rows), 0) FROM live_rollups_upto')).getRows()[0]![0])
  return { upto, cells, rows }
}

/** Replaces every row of `table` with the rows of `select` (which may read `table`), inside the caller's transaction. */
async function replaceRows(conn: DuckDBConnection, table: string, select: string): Promise<void> {
  await conn.run(`CREATE OR REPLACE TEMP TABLE ${table}_compacted AS ${select}`)
  await conn.run(`DELETE FROM ${table}`)
  await conn.run(`INSERT INTO ${table} SELECT * FROM ${table}_compacted`)
  await conn.run(`DROP TABLE ${table}_compacted`)
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

/**
 * Runs a prepared RowInsert with its merged column parameters, and throws
 * unless it wrote exactly `rows` rows (inside a transaction the caller then
 * rolls back; alone, the NOT NULL columns have already made a wrong split
 * fail: see rowInsert).
 */
async function insertRows(stmt: DuckDBPreparedStatement, columns: readonly string[], rows: number): Promise<void> {
  stmt.clearBindings()
  for (let i = 0; i < columns.length; i++) stmt.bindVarchar(i + 1, columns[i]!)
  const written = (await stmt.run()).rowsChanged
  if (written !== rows) throw new Error(`invariant: the insert wrote ${written} rows for ${rows} (a value contains a separator)`)
}
