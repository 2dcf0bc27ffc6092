// The catalog: what segments exist, in which state, with their figures,
// their distinct key/provider/model values (for pruning), the 15-minute
// usage rollups of every archived segment, and the coarse rollups derived
// from them (per 15 minutes, hour and day over all segments, without user_id;
// requests per day and user).
//
// Invariants:
// - Files are the truth for active and pending segments (the catalog mirrors
//   them and is corrected at start-up); the catalog is the truth for
//   archived and deleted ones.
// - `archive` is one transaction: the segment's row, its dims and its rollups
//   appear together or not at all, and only once: a segment already archived
//   (or deleted) is left untouched, so a retried seal never double-counts.
// - Rollups are rows tagged with their segment id; they are never removed with
//   the segment's raw events, only by rollup retention, whole buckets older
//   than its cutoff (`deleteRollupsBefore`).
// - The coarse rollups always equal the sums of the rollups over their cells:
//   every transaction that changes rollups recomputes the cells it touched.
// - A deleted segment keeps its row (state 'deleted') until its files are
//   gone: start-up removes files the catalog calls deleted, so the decision
//   survives a crash between it and the file removal. Then `forgetDeleted`.
// - No PRIMARY KEY: tables are small or append-only; uniqueness of a
//   segment's row is kept by the delete-then-insert inside one transaction.
//
// `Catalog` is the seam for a shared (PostgreSQL) catalog later; the DuckDB
// implementation lives in `catalog.duckdb`, attached to the FileTier's
// instance so that `archive` can read rollups straight from the sealed file.
//
// Over 500 lines: the catalog's DDL and migrations, the rollup vocabulary the
// query path shares and the DuckDB implementation of the interface; the
// vocabulary is the part to move out.

import { Mutex } from 'async-mutex'
import { listValue, type DuckDBConnection } from '@duckdb/node-api'
import { COST_SCALE, COST_WIDTH } from '../money.js'
import { tableOf } from './relations.js'
import { inTransaction } from './transaction.js'
import { PRICED_ROW_SQL, TOKEN_COLUMNS, type TokenColumn } from './schema.js'
import type { SegmentStats } from './stats.js'

export type SegmentState = 'active' | 'pending' | 'archived' | 'deleted'

/**
 * Where an archived segment's detail payloads are: in their own file (`file`),
 * none to keep (`none`), expired and deleted (`expired`), or inside the events
 * file (`inline`: archives sealed before details had their own file).
 */
export type DetailsState = 'file' | 'none' | 'expired' | 'inline'

export interface SegmentRecord {
  id: number
  state: SegmentState
  /** Relative to the data directory. */
  path: string
  createdMs: number
  sealedMs: number | null
  bytes: number | null
  stats: SegmentStats | null
  /** Archived segments only (null otherwise). */
  details: DetailsState | null
}

/** Distinct values of the pruning dimensions within one segment. */
export type SegmentDims = Record<'key_id' | 'provider' | 'model', Set<string>>

export const PRUNING_DIMS = ['key_id', 'provider', 'model'] as const

/** How many distinct values per dimension a segment records; past it the dimension cannot prune that segment. */
export const MAX_DIM_VALUES = 10_000

export interface Catalog {
  list(): Promise<SegmentRecord[]>
  /** Records an active or pending segment; never downgrades an archived or deleted one. */
  putLive(id: number, state: 'active' | 'pending', path: string, createdMs: number): Promise<void>
  /**
   * Records the segment as archived with its figures, dims and rollups (read
   * from the sealed file attached as `sourceAlias`) in one transaction.
   * Returns false when it was already archived or deleted (nothing changed).
   */
  archive(rec: ArchiveRecord, sourceAlias: string): Promise<boolean>
  /**
   * Re-priced: the archived segment's events are now those of the file
   * attached as `sourceAlias` (its `.reprice` copy): its figures and rollups
   * are replaced (coarse levels refreshed) and an intent is recorded, in one
   * transaction, the commit point of a reprice (reprice.ts). False when the
   * segment is no longer archived (nothing changed).
   */
  reprice(id: number, stats: SegmentStats, bytes: number, sourceAlias: string): Promise<boolean>
  /** Segments whose reprice committed but whose `.reprice` file may not yet have replaced the archive. */
  repriceIntents(): Promise<number[]>
  /** The reprice of `id` is complete on disk: forget its intent. */
  repriceDone(id: number): Promise<void>
  /** Retention decided: these segments' raw events are gone (their dims too; their rollups stay). One transaction. */
  markDeleted(ids: readonly number[], nowMs: number): Promise<void>
  /** Drops the rows of deleted segments once their files are removed. */
  forgetDeleted(ids: readonly number[]): Promise<void>
  /** Retention decided: the archived segment's detail file is gone. */
  expireDetails(id: number): Promise<void>
  /** Deletes rollup rows of buckets starting before `bucketUs`; returns how many. */
  deleteRollupsBefore(bucketUs: number): Promise<number>
  /** Forgets a live segment row (its file vanished before it held anything). */
  forget(id: number): Promise<void>
  /** Pruning dims per archived segment (only `onlyId`'s when given). */
  dims(onlyId?: number): Promise<Map<number, SegmentDims | null>>
  checkpoint(): Promise<void>
  /**
   * The generation (catalog_meta) of the last transaction this process
   * committed, known here before the call that committed it returns; read
   * without DuckDB. A snapshot whose segment states match it may be served
   * cached answers of it without opening a transaction (store.ts, snapshot).
   */
  committedGeneration(): bigint
  /** Whether the segment is archived (or deleted) in the catalog as far as this process knows: at open, or by a committed archive(). */
  isArchived(id: number): boolean
}

export interface ArchiveRecord {
  id: number
  path: string
  sealedMs: number
  bytes: number
  stats: SegmentStats
  details: 'file' | 'none'
}

/**
 * Token sums in rollups are exact but must read fast: a HUGEINT column (what
 * sum(BIGINT) gives) is bit-packed by DuckDB and reads at ~300 ns a value, 70x
 * slower than BIGINT (20 M-event bench: 16.7 s against 0.7 s for a whole-range
 * total). So each sum is stored as two BIGINTs, the sums of the high and low 32
 * bits of every event's count: sum = hi * 2^32 + lo, exact. Counts are safe
 * integers (< 2^53), so hi stays below n * 2^21 and lo below n * 2^32: neither
 * overflows below 2^31 events in one rollup row. rollupTokenSum reads one back.
 */
export function rollupTokenSum(c: TokenColumn): string {
  return `(coalesce(sum(${c}_hi), 0)::HUGEINT * 4294967296 + coalesce(sum(${c}_lo), 0))`
}

/** The counted measures of a rollup row, in the order a usage answer lists them (cost is summed apart, per currency). */
export const COUNT_MEASURES = ['requests', 'errors', ...TOKEN_COLUMNS, 'cost_missing'] as const

const DDL = [
  `CREATE TABLE IF NOT EXISTS segments (
     id BIGINT NOT NULL, state VARCHAR NOT NULL, path VARCHAR NOT NULL,
     created_ms BIGINT NOT NULL, sealed_ms BIGINT, deleted_ms BIGINT, bytes BIGINT, stats VARCHAR)`,
  `CREATE TABLE IF NOT EXISTS segment_dims (segment_id BIGINT NOT NULL, dim VARCHAR NOT NULL, value VARCHAR)`,
  // One row: bumped by every transaction that changes a rollup table (see bumpGeneration).
  `CREATE TABLE IF NOT EXISTS catalog_meta (generation BIGINT NOT NULL)`,
  // A committed reprice whose file is not yet renamed over the archive (reprice.ts).
  `CREATE TABLE IF NOT EXISTS reprice_intents (segment_id BIGINT NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS rollups (
     segment_id BIGINT NOT NULL, bucket TIMESTAMP NOT NULL,
     key_id VARCHAR NOT NULL, team_id VARCHAR, user_id VARCHAR, customer_id VARCHAR,
     provider VARCHAR NOT NULL, model VARCHAR NOT NULL, status_code SMALLINT NOT NULL, currency VARCHAR NOT NULL,
     requests BIGINT NOT NULL, errors BIGINT NOT NULL,
     ${TOKEN_COLUMNS.map((c) => `${c}_hi BIGINT NOT NULL, ${c}_lo BIGINT NOT NULL`).join(', ')},
     cost DECIMAL(${COST_WIDTH},${COST_SCALE}), cost_missing BIGINT NOT NULL, cost_priced DECIMAL(${COST_WIDTH},${COST_SCALE}))`,
]

/** The part of `cost` the price table priced (null: none was): rows of catalogs from before prices have none. */
const PRICED_SUM = `sum(cost) FILTER (WHERE ${PRICED_ROW_SQL})`


/**
 * Catalogs written before the hi/lo split hold HUGEINT token sums: rewrite the
 * table once, in one transaction (a crash leaves the old table, and this runs again).
 */
async function migrateHugeintRollups(conn: DuckDBConnection): Promise<void> {
  const cols = await conn.runAndReadAll(
    `SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main' AND table_name = 'rollups'`,
  )
  const names = new Set(cols.getRows().map((r) => String(r[0])))
  if (!names.has('input_tokens')) return
  const split = TOKEN_COLUMNS.map((c) => `(${c} >> 32)::BIGINT AS ${c}_hi, (${c} & 4294967295)::BIGINT AS ${c}_lo`).join(', ')
  await inTransaction(conn, async () => {
    await conn.run('DROP TABLE IF EXISTS rollups_migrating')
    await conn.run(`CREATE TABLE rollups_migrating AS
      SELECT segment_id, bucket, key_id, team_id, user_id, customer_id, provider, model, status_code, currency, requests, errors,
             ${split}, cost, cost_missing FROM rollups`)
    await conn.run('DROP TABLE rollups')
    await conn.run('ALTER TABLE rollups_migrating RENAME TO rollups')
  })
}

/** Width of a rollup bucket: every real UTC offset is a multiple of it. */
export const BUCKET_US = 15 * 60 * 1_000_000

/**
 * The SELECT list of rollup rows over an events table, grouped by (GROUP BY
 * ALL) 15-minute bucket and key: the columns of `rollups` after segment_id
 * (`withUser`), or of a coarse table (without user_id).
 */
/** An event's 15-minute bucket (its rollup cell), from its `ts`. */
export const BUCKET_OF_TS = `make_timestamp((epoch_us(ts) // ${BUCKET_US}) * ${BUCKET_US})`

export function rollupOfEvents(withUser: boolean): string {
  return `${BUCKET_OF_TS} AS bucket,
          key_id, team_id, ${withUser ? 'user_id, ' : ''}customer_id, provider, model, status_code, currency,
          count(*), count(*) FILTER (WHERE status_code >= 400),
          ${TOKEN_COLUMNS.map((c) => `sum(${c} >> 32), sum(${c} & 4294967295)`).join(', ')},
          sum(cost), count(*) FILTER (WHERE cost IS NULL), ${PRICED_SUM}`
}

/**
 * Coarse rollups: the rollups summed over every segment and without `user_id`
 * (the one high-cardinality dimension), per 15 minutes, per UTC hour and per
 * UTC day; each width divides the next. For 10 M events over 30 days with 50
 * keys, 5 models, 3 statuses and 5,000 users, `rollups` holds 8.4 M rows;
 * these hold 1.1 M, 0.44 M and 23 k. A question that neither filters nor
 * groups by user reads each part of its window from the coarsest level whose
 * cells fit (a day in Berlin, 23:00 to 23:00 UTC, is read as 24 hours).
 *
 * They are derived, never a source: each cell is the sum of the finer cells
 * within it, recomputed whole (delete, then insert) in the transaction that
 * changes them (`archive`, `deleteRollupsBefore`), and built once from
 * `rollups` when a catalog from before them is opened. A cell of a coarser
 * level that rollup retention cut through is dropped with the cells before
 * the cutoff: no window at or after the cutoff holds it whole.
 */
export const COARSE_LEVELS = [
  { table: 'rollups_q', us: BUCKET_US },
  { table: 'rollups_h', us: 4 * BUCKET_US },
  { table: 'rollups_d', us: 96 * BUCKET_US },
] as const

/**
 * Derived tables of earlier versions, dropped at open. A six-hour level was
 * tried and measured no faster: a level's table is scanned over the whole
 * window whichever of its cells are picked (its row groups span days), so
 * fewer hour cells saved nothing, and more time ranges cost per row.
 */
const RETIRED_TABLES = ['rollups_6h']

/**
 * Requests per UTC day and user (users with a value only): the values of
 * user_id in a window (GET /v1/usage/dimensions) when no filter narrows them,
 * with the days' edges read from `rollups`. Derived like the coarse levels,
 * in the same transactions.
 */
export const USERS_DAILY = { table: 'rollups_users_d', us: 96 * BUCKET_US } as const

/** Every table derived from `rollups`. */
const DERIVED_TABLES = [...COARSE_LEVELS, USERS_DAILY].map((l) => l.table)

/** The dimensions a coarse rollup row is keyed by (besides its cell). */
/** The key columns of a coarse row (and of a live rollup row). */
export const COARSE_KEY = 'key_id, team_id, customer_id, provider, model, status_code, currency'

/** The measures of finer rollup rows summed into one coarser row (same columns, same types). */
const COARSE_SUMS = [
  'sum(requests)::BIGINT',
  'sum(errors)::BIGINT',
  ...TOKEN_COLUMNS.flatMap((c) => [`sum(${c}_hi)::BIGINT`, `sum(${c}_lo)::BIGINT`]),
  'sum(cost)',
  'sum(cost_missing)::BIGINT',
  'sum(cost_priced)',
].join(', ')

/** The rows of `table` (coarse columns) summed into one row per bucket and key. */
export function compactedRollups(table: string): string {
  return `SELECT bucket, ${COARSE_KEY}, ${COARSE_SUMS} FROM ${table} GROUP BY ALL`
}

/** The columns of a coarse table (and of a live segment's live_rollups): a rollup row without segment and user. */
export const COARSE_COLUMNS = `bucket TIMESTAMP NOT NULL,
     key_id VARCHAR NOT NULL, team_id VARCHAR, customer_id VARCHAR,
     provider VARCHAR NOT NULL, model VARCHAR NOT NULL, status_code SMALLINT NOT NULL, currency VARCHAR NOT NULL,
     requests BIGINT NOT NULL, errors BIGINT NOT NULL,
     ${TOKEN_COLUMNS.map((c) => `${c}_hi BIGINT NOT NULL, ${c}_lo BIGINT NOT NULL`).join(', ')},
     cost DECIMAL(${COST_WIDTH},${COST_SCALE}), cost_missing BIGINT NOT NULL, cost_priced DECIMAL(${COST_WIDTH},${COST_SCALE})`

/**
 * Recomputes the coarse cells holding the 15-minute buckets `quartersUs` (all
 * of them when null) from the level below, finest first. Runs inside the
 * caller's transaction.
 */
async function refreshCoarse(conn: DuckDBConnection, quartersUs: readonly number[] | null): Promise<void> {
  if (quartersUs !== null && quartersUs.length === 0) return
  const cells = quartersUs === null ? null : [...new Set(quartersUs)]
  let source = 'rollups'
  for (const level of COARSE_LEVELS) {
    await refreshCells(conn, level, cells, source, `${COARSE_KEY}, ${COARSE_SUMS}`)
    source = level.table
  }
  await refreshCells(conn, USERS_DAILY, cells, 'rollups', 'user_id, sum(requests)::BIGINT', 'user_id IS NOT NULL')
}

/** Deletes and recomputes from `source` the cells of `level` holding the instants `atUs` (every cell when null). */
async function refreshCells(
  conn: DuckDBConnection,
  level: { table: string; us: number },
  atUs: readonly number[] | null,
  source: string,
  columns: string,
  where = 'true',
): Promise<void> {
  const cell = `make_timestamp((epoch_us(bucket) // ${level.us}) * ${level.us})`
  if (atUs === null) {
    await conn.run(`DELETE FROM ${level.table}`)
    await conn.run(`INSERT INTO ${level.table} SELECT ${cell} AS cell, ${columns} FROM ${source} WHERE ${where} GROUP BY ALL`)
    return
  }
  const cells = [...new Set(atUs.map((c) => Math.floor(c / level.us) * level.us))].sort((a, b) => a - b)
  // The range bound lets DuckDB skip row groups by their min/max; the list picks the cells.
  const params = [listValue(cells.map((c) => BigInt(c))), BigInt(cells[0]!), BigInt(cells[cells.length - 1]! + level.us)]
  const within = 'bucket >= make_timestamp($2::BIGINT) AND bucket < make_timestamp($3::BIGINT)'
  await conn.run(`DELETE FROM ${level.table} WHERE ${within} AND epoch_us(bucket) IN (SELECT unnest($1::BIGINT[]))`, params)
  await conn.run(
    `INSERT INTO ${level.table} SELECT ${cell} AS cell, ${columns} FROM ${source}
      WHERE ${within} AND ${where} AND epoch_us(${cell}) IN (SELECT unnest($1::BIGINT[])) GROUP BY ALL`,
    params,
  )
}

/**
 * Creates and fills the derived rollups unless the catalog has every one of
 * them (one transaction: all or none; a set written by another version is
 * dropped and rebuilt whole).
 */
async function createCoarseRollups(conn: DuckDBConnection): Promise<void> {
  const res = await conn.runAndReadAll(
    `SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main' AND table_name IN (${DERIVED_TABLES.map((t) => `'${t}'`).join(', ')})`,
  )
  for (const table of RETIRED_TABLES) await conn.run(`DROP TABLE IF EXISTS ${table}`)
  const present = res.getRows().map((r) => String(r[0]))
  // Coarse levels of another shape (an earlier build kept the cost as BIGINT limbs) are rebuilt too.
  // ... and so are levels from before prices (no cost_priced).
  const shaped = await conn.runAndReadAll(
    `SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main' AND column_name IN ('cost', 'cost_priced')
        AND table_name IN (${COARSE_LEVELS.map((l) => `'${l.table}'`).join(', ')})`,
  )
  if (present.length === DERIVED_TABLES.length && Number(shaped.getRows()[0]?.[0] ?? 0) === 2 * COARSE_LEVELS.length) return
  await inTransaction(conn, async () => {
    for (const table of present) await conn.run(`DROP TABLE ${table}`)
    for (const level of COARSE_LEVELS) await conn.run(`CREATE TABLE ${level.table} (${COARSE_COLUMNS})`)
    await conn.run(`CREATE TABLE ${USERS_DAILY.table} (bucket TIMESTAMP NOT NULL, user_id VARCHAR NOT NULL, requests BIGINT NOT NULL)`)
    await refreshCoarse(conn, null)
  })
}

/**
 * Marks, inside the transaction that changes rollups or a derived table, that
 * answers read from them before are stale (src/store/answers.ts keys its entries
 * by this generation). Changes made while the catalog is opened (migrations,
 * rebuilds) need none: no answer of this process exists yet.
 */
async function bumpGeneration(conn: DuckDBConnection): Promise<bigint> {
  return generationOf(await conn.runAndReadAll('UPDATE catalog_meta SET generation = generation + 1 RETURNING generation'))
}

/** The catalog's generation, read on `conn` (in its transaction); `schema`: the catalog's name there, when it is not the default database. */
export async function readGeneration(conn: DuckDBConnection, schema: string | null = null): Promise<bigint> {
  return generationOf(await conn.runAndReadAll(`SELECT max(generation) FROM ${schema === null ? '' : `${schema}.`}catalog_meta`))
}

function generationOf(res: { getRows(): unknown[][] }): bigint {
  const g = res.getRows()[0]?.[0]
  if (typeof g !== 'bigint') throw new Error('invariant: the catalog has one generation')
  return g
}

export class DuckDBCatalog implements Catalog {
  /** One statement at a time on the connection; taken under the write gate by rollover, never the reverse. */
  private readonly lock = new Mutex()

  /** Segments archived (or deleted) in the catalog: at open, and by every committed archive() since. */
  private readonly archived = new Set<number>()

  private constructor(
    private readonly conn: DuckDBConnection,
    private generation: bigint,
  ) {}

  /** `conn` must have the catalog database as its default (`USE catalog`). */
  static async open(conn: DuckDBConnection): Promise<DuckDBCatalog> {
    await migrateHugeintRollups(conn)
    for (const ddl of DDL) await conn.run(ddl)
    // Added with retention; archived rows from before read NULL, i.e. 'inline'.
    await conn.run('ALTER TABLE segments ADD COLUMN IF NOT EXISTS details VARCHAR')
    // Added with prices; rollup rows from before read NULL: nothing of theirs was priced.
    await conn.run(`ALTER TABLE rollups ADD COLUMN IF NOT EXISTS cost_priced DECIMAL(${COST_WIDTH},${COST_SCALE})`)
    await createCoarseRollups(conn)
    await conn.run('INSERT INTO catalog_meta SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM catalog_meta)')
    const catalog = new DuckDBCatalog(conn, await readGeneration(conn))
    const archived = await conn.runAndReadAll(`SELECT id FROM segments WHERE state IN ('archived', 'deleted')`)
    for (const [id] of archived.getRows()) catalog.archived.add(Number(id))
    return catalog
  }

  committedGeneration(): bigint {
    return this.generation
  }

  isArchived(id: number): boolean {
    return this.archived.has(id)
  }

  async list(): Promise<SegmentRecord[]> {
    return this.lock.runExclusive(async () => {
      const res = await this.conn.runAndReadAll('SELECT id, state, path, created_ms, sealed_ms, bytes, stats, details FROM segments ORDER BY id')
      return res.getRowObjects().map((r) => ({
        id: Number(r.id),
        state: String(r.state) as SegmentState,
        path: String(r.path),
        createdMs: Number(r.created_ms),
        sealedMs: r.sealed_ms === null ? null : Number(r.sealed_ms),
        bytes: r.bytes === null ? null : Number(r.bytes),
        stats: typeof r.stats === 'string' ? (JSON.parse(r.stats) as SegmentStats) : null,
        details: r.state !== 'archived' ? null : r.details === null ? 'inline' : (String(r.details) as DetailsState),
      }))
    })
  }

  async putLive(id: number, state: 'active' | 'pending', path: string, createdMs: number): Promise<void> {
    return this.lock.runExclusive(async () => {
      await inTransaction(this.conn, async () => {
        const current = await this.stateOf(id)
        if (current === 'archived' || current === 'deleted') return
        await this.conn.run('DELETE FROM segments WHERE id = $1', [id])
        await this.conn.run('INSERT INTO segments (id, state, path, created_ms) VALUES ($1, $2, $3, $4)', [id, state, path, createdMs])
      })
    })
  }

  async archive(rec: ArchiveRecord, sourceAlias: string): Promise<boolean> {
    return this.lock.runExclusive(async () => {
      const events = tableOf(sourceAlias, 'events')
      const generation = await inTransaction(this.conn, async (): Promise<bigint | null> => {
        const current = await this.stateOf(rec.id)
        if (current === 'archived' || current === 'deleted') return null
        const created = await this.conn.runAndReadAll('SELECT created_ms FROM segments WHERE id = $1', [rec.id])
        const createdMs = Number(created.getRows()[0]?.[0] ?? rec.sealedMs)
        await this.conn.run('DELETE FROM segments WHERE id = $1', [rec.id])
        await this.conn.run(
          `INSERT INTO segments (id, state, path, created_ms, sealed_ms, bytes, stats, details) VALUES ($1, 'archived', $2, $3, $4, $5, $6, $7)`,
          [rec.id, rec.path, createdMs, rec.sealedMs, rec.bytes, JSON.stringify(rec.stats), rec.details],
        )
        for (const dim of ['key_id', 'provider', 'model']) {
          // Past MAX_DIM_VALUES one NULL row marks "too many to prune on".
          await this.conn.run(
            `INSERT INTO segment_dims
               SELECT $1, '${dim}', v FROM (SELECT DISTINCT ${dim} AS v FROM ${events}) WHERE (SELECT count(DISTINCT ${dim}) FROM ${events}) <= ${MAX_DIM_VALUES}
               UNION ALL
               SELECT $1, '${dim}', NULL WHERE (SELECT count(DISTINCT ${dim}) FROM ${events}) > ${MAX_DIM_VALUES}`,
            [rec.id],
          )
        }
        await this.conn.run(`INSERT INTO rollups SELECT $1, ${rollupOfEvents(true)} FROM ${events} GROUP BY ALL`, [rec.id])
        const touched = await this.conn.runAndReadAll('SELECT DISTINCT epoch_us(bucket) FROM rollups WHERE segment_id = $1', [rec.id])
        await refreshCoarse(this.conn, touched.getRows().map((r) => Number(r[0])))
        return bumpGeneration(this.conn)
      })
      if (generation === null) return false
      // Committed: recorded before archive() returns, so before the store shows the segment archived.
      this.generation = generation
      this.archived.add(rec.id)
      return true
    })
  }

  async reprice(id: number, stats: SegmentStats, bytes: number, sourceAlias: string): Promise<boolean> {
    return this.lock.runExclusive(async () => {
      const events = tableOf(sourceAlias, 'events')
      const generation = await inTransaction(this.conn, async (): Promise<bigint | null> => {
        if ((await this.stateOf(id)) !== 'archived') return null
        const before = await this.conn.runAndReadAll('SELECT DISTINCT epoch_us(bucket) FROM rollups WHERE segment_id = $1', [id])
        await this.conn.run('UPDATE segments SET stats = $2, bytes = $3 WHERE id = $1', [id, JSON.stringify(stats), bytes])
        await this.conn.run('DELETE FROM rollups WHERE segment_id = $1', [id])
        await this.conn.run(`INSERT INTO rollups SELECT $1, ${rollupOfEvents(true)} FROM ${events} GROUP BY ALL`, [id])
        const after = await this.conn.runAndReadAll('SELECT DISTINCT epoch_us(bucket) FROM rollups WHERE segment_id = $1', [id])
        await refreshCoarse(this.conn, [...before.getRows(), ...after.getRows()].map((r) => Number(r[0])))
        await this.conn.run('DELETE FROM reprice_intents WHERE segment_id = $1', [id])
        await this.conn.run('INSERT INTO reprice_intents VALUES ($1)', [id])
        return bumpGeneration(this.conn)
      })
      if (generation === null) return false
      this.generation = generation
      return true
    })
  }

  async repriceIntents(): Promise<number[]> {
    return this.lock.runExclusive(async () => (await this.conn.runAndReadAll('SELECT DISTINCT segment_id FROM reprice_intents ORDER BY 1')).getRows().map((r) => Number(r[0])))
  }

  async repriceDone(id: number): Promise<void> {
    return this.lock.runExclusive(async () => {
      await this.conn.run('DELETE FROM reprice_intents WHERE segment_id = $1', [id])
    })
  }

  async markDeleted(ids: readonly number[], nowMs: number): Promise<void> {
    if (ids.length === 0) return
    const list = listValue(ids.map((id) => BigInt(id)))
    return this.lock.runExclusive(() =>
      inTransaction(this.conn, async () => {
        await this.conn.run(`UPDATE segments SET state = 'deleted', deleted_ms = $2 WHERE id IN (SELECT unnest($1::BIGINT[]))`, [list, nowMs])
        await this.conn.run('DELETE FROM segment_dims WHERE segment_id IN (SELECT unnest($1::BIGINT[]))', [list])
      }),
    )
  }

  async forgetDeleted(ids: readonly number[]): Promise<void> {
    if (ids.length === 0) return
    return this.lock.runExclusive(async () => {
      await this.conn.run(`DELETE FROM segments WHERE state = 'deleted' AND id IN (SELECT unnest($1::BIGINT[]))`, [listValue(ids.map((id) => BigInt(id)))])
    })
  }

  async expireDetails(id: number): Promise<void> {
    return this.lock.runExclusive(async () => {
      await this.conn.run(`UPDATE segments SET details = 'expired' WHERE id = $1 AND state = 'archived'`, [id])
    })
  }

  async deleteRollupsBefore(bucketUs: number): Promise<number> {
    return this.lock.runExclusive(async () => {
      const [rows, generation] = await inTransaction(this.conn, async () => {
        const res = await this.conn.run('DELETE FROM rollups WHERE bucket < make_timestamp($1::BIGINT)', [bucketUs])
        // A coarse cell starting before the cutoff is gone or cut through: never whole inside a window from the cutoff on.
        for (const table of DERIVED_TABLES) await this.conn.run(`DELETE FROM ${table} WHERE bucket < make_timestamp($1::BIGINT)`, [bucketUs])
        return [res.rowsChanged, await bumpGeneration(this.conn)] as const
      })
      this.generation = generation
      return rows
    })
  }

  async forget(id: number): Promise<void> {
    return this.lock.runExclusive(async () => {
      await this.conn.run(`DELETE FROM segments WHERE id = $1 AND state IN ('active', 'pending')`, [id])
    })
  }

  async dims(onlyId?: number): Promise<Map<number, SegmentDims | null>> {
    return this.lock.runExclusive(async () => {
      const res = onlyId === undefined
        ? await this.conn.runAndReadAll('SELECT segment_id, dim, value FROM segment_dims')
        : await this.conn.runAndReadAll('SELECT segment_id, dim, value FROM segment_dims WHERE segment_id = $1', [onlyId])
      const out = new Map<number, SegmentDims | null>()
      const unbounded = new Set<string>()
      for (const [seg, dim, value] of res.getRows() as Array<[bigint, string, string | null]>) {
        const id = Number(seg)
        let d = out.get(id)
        if (!d) out.set(id, (d = { key_id: new Set(), provider: new Set(), model: new Set() }))
        if (value === null) unbounded.add(`${id}/${dim}`)
        else d[dim as keyof SegmentDims].add(value)
      }
      // A dimension with too many values cannot prune: drop its set.
      for (const mark of unbounded) {
        const [id, dim] = mark.split('/') as [string, keyof SegmentDims]
        const d = out.get(Number(id))
        if (d) d[dim] = ALL
      }
      return out
    })
  }

  async checkpoint(): Promise<void> {
    return this.lock.runExclusive(async () => {
      await this.conn.run('CHECKPOINT catalog')
    })
  }

  private async stateOf(id: number): Promise<SegmentState | null> {
    const res = await this.conn.runAndReadAll('SELECT state FROM segments WHERE id = $1', [id])
    const v = res.getRows()[0]?.[0]
    return v === undefined ? null : (String(v) as SegmentState)
  }
}

/** A set that contains everything: a dimension that cannot prune. */
export const ALL: Set<string> = new (class extends Set<string> {
  override has(): boolean {
    return true
  }
})()
