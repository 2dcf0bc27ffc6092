// Answers of catalog statements (rollups of archived segments), kept for the
// questions dashboards ask again and again: the same window, filters and
// grouping, polled all day.
//
// Invariants:
// - An entry is the exact result of one statement (its SQL text and its
//   parameters, both part of the key) over the catalog at one generation.
//   The catalog bumps its generation in every transaction that changes a
//   rollup table (catalog.ts, catalog_meta), and a reader reads it in the
//   transaction that runs its statements, so an entry is only ever served to
//   a transaction that sees the very same rollups. Entries of older
//   generations are dropped as soon as a newer one is seen.
// - Only catalog statements go through it: live segments change with every
//   commit and are always read afresh.
// - Bounded: at most `maxRows` rows in all, and no entry over a tenth of
//   that; the least recently used entries go first. maxRows 0 turns it off.
// - A snapshot that knows its catalog generation without a transaction
//   (store.ts: no segment it reads raw is archived yet) takes whole answers
//   through `cached` and does not touch DuckDB at all.
// - Rows handed out are shared: callers read them and never change them
//   (read.ts only sums and groups rows).

import type { DuckDBConnection, DuckDBValue } from '@duckdb/node-api'
import { readGeneration } from './catalog.js'

export type Row = Record<string, DuckDBValue>

/** Runs one statement of a catalog read (through the cache, when there is one). */
export type CatalogReader = (sql: string, params: DuckDBValue[], run: () => Promise<Row[]>) => Promise<Row[]>

export interface AnswerCacheStats {
  hits: number
  misses: number
  entries: number
  rows: number
  generation: string | null
}

export class AnswerCache {
  private generation: bigint | null = null
  private readonly entries = new Map<string, Row[]>()
  private rows = 0
  private hits = 0
  private misses = 0

  constructor(private readonly maxRows: number) {
    if (!Number.isSafeInteger(maxRows) || maxRows < 0) throw new Error(`invariant: cache bound ${maxRows} is not a count`)
  }

  /**
   * A reader for the statements of one catalog transaction on `conn` (which
   * must already be inside it): reads the catalog's generation there, so what
   * it serves and stores belongs to that transaction's snapshot.
   */
  async reader(conn: DuckDBConnection): Promise<CatalogReader> {
    if (this.maxRows === 0) return (_sql, _params, run) => run()
    const generation = await readGeneration(conn, 'catalog')
    if (this.generation === null || generation > this.generation) this.reset(generation)
    return async (sql, params, run) => {
      // A transaction older than the newest generation seen reads afresh and keeps nothing.
      if (generation !== this.generation) return run()
      const key = keyOf(sql, params)
      const hit = this.take(key)
      if (hit !== undefined) {
        this.hits++
        return hit
      }
      this.misses++
      const rows = await run()
      if (generation === this.generation && rows.length <= this.maxRows / 10 && !this.entries.has(key)) {
        this.entries.set(key, rows)
        this.rows += rows.length
        for (const [k, v] of this.entries) {
          if (this.rows <= this.maxRows) break
          this.entries.delete(k)
          this.rows -= v.length
        }
      }
      return rows
    }
  }

  /**
   * The rows kept for these statements at `generation`, all of them or none
   * (undefined: one is not kept, or the cache holds another generation);
   * never reads DuckDB. For a caller that knows, without a transaction, that
   * its snapshot sees the rollups of `generation` (Snapshot.catalogGeneration).
   */
  cached(generation: bigint, statements: ReadonlyArray<{ sql: string; params: DuckDBValue[] }>): Row[][] | undefined {
    if (this.maxRows === 0 || generation !== this.generation) return undefined
    const keys = statements.map((st) => keyOf(st.sql, st.params))
    if (!keys.every((k) => this.entries.has(k))) return undefined
    this.hits += keys.length
    return keys.map((k) => this.take(k)!)
  }

  /** The entry under `key`, now the most recently used. */
  private take(key: string): Row[] | undefined {
    const hit = this.entries.get(key)
    if (hit === undefined) return undefined
    this.entries.delete(key) // re-inserted: most recently used last
    this.entries.set(key, hit)
    return hit
  }

  stats(): AnswerCacheStats {
    return { hits: this.hits, misses: this.misses, entries: this.entries.size, rows: this.rows, generation: this.generation === null ? null : String(this.generation) }
  }

  private reset(generation: bigint): void {
    this.generation = generation
    this.entries.clear()
    this.rows = 0
  }
}

function keyOf(sql: string, params: DuckDBValue[]): string {
  return `${sql}\u0000${params.map(paramKey).join('\u0000')}`
}

/** A parameter's type and exact text: two parameters share a key only when both are equal. */
function paramKey(v: DuckDBValue): string {
  if (v === null) return 'null'
  if (typeof v === 'object') return `${v.constructor.name}:${String(v)}`
  return `${typeof v}:${String(v)}`
}
