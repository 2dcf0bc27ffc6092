// The catalog's read statements: the only module of src/query that names the
// catalog's tables (catalog.rollups, the coarse levels, the users' daily
// rollup, catalog.segments). A catalog kept elsewhere (PostgreSQL) replaces
// this module's statements and nothing else; the window logic (window.ts) and
// the statement shapes (statements.ts) stay.
//
// Invariants:
// - Rollups of segments a snapshot reads raw are never counted: the per-segment
//   rollups leave them out by id, and the coarse rollups (summed over
//   segments) answer only when none of them is archived yet, checked in the
//   same transaction that reads them.
// - Answers are cached by catalog generation (answers.ts): a snapshot that
//   knows its generation and finds every statement cached reads no DuckDB.

import type { DuckDBValue } from '@duckdb/node-api'
import type { AnswerCache, Row } from '../store/answers.js'
import { COARSE_LEVELS, USERS_DAILY } from '../store/catalog.js'
import type { Snapshot } from '../store/snapshot.js'
import { inTransaction } from '../store/transaction.js'
import { DIMENSIONS, whereClause, type EventFilter } from './filters.js'
import { grouping, idList, involvesUser, readShaped, rollupMeasures, shaped, type Shape, type Statement } from './statements.js'
import { coarseCells, type EdgeCell, type Range } from './window.js'

/**
 * Rows of the aligned middle `range` from the rollups of archived segments
 * (segments in `rawIds` are read raw by the caller and left out). The coarse
 * rollups answer when the question involves no `user_id` and they provably
 * hold none of `rawIds`; otherwise the per-segment rollups. When the snapshot
 * knows its catalog generation and the cache holds every statement's answer
 * at it, those answer without DuckDB.
 */
export async function rollupRows(snap: Snapshot, answers: AnswerCache, f: EventFilter, range: Range, rawIds: number[], shape: Shape, edgeCells: EdgeCell[]): Promise<Row[]> {
  const edgeStatements = edgeCells.map(({ cell, ids }) => segmentRollups(f, cell, ids, shape))
  if (snap.catalogGeneration !== null) {
    // The snapshot's archived segments are the generation's: none of rawIds is in its rollups.
    const kept = answers.cached(snap.catalogGeneration, [...rollupStatements(f, range, rawIds, shape, true), ...edgeStatements])
    if (kept !== undefined) return kept.flat()
  }
  // One transaction: its statements, and the generation the cache keys them by, see one snapshot of the catalog.
  return snap.files((conn) =>
    inTransaction(conn, async () => {
      const read = await answers.reader(conn)
      // Coarse rows are summed over segments, so they cannot leave one out: a
      // segment this snapshot reads raw that has been archived since (it is in
      // them, or about to be) sends the question to the per-segment rollups.
      // Checked in the transaction that reads them, so both see one catalog.
      let coarse = true
      if (!involvesUser(f, shape) && rawIds.length > 0) {
        const res = await conn.runAndReadAll(`SELECT count(*) FROM catalog.segments WHERE id IN (${idList(rawIds)}) AND state IN ('archived', 'deleted')`)
        coarse = Number(res.getRows()[0]?.[0] ?? 0) === 0
      }
      const rows: Row[] = []
      for (const st of [...rollupStatements(f, range, rawIds, shape, coarse), ...edgeStatements]) rows.push(...(await read(st.sql, st.params, () => readShaped(conn, st.sql, st.params))))
      return rows
    }),
  )
}

/** The statement of one cell over the per-segment rollups of the segments `ids` only. */
export function segmentRollups(f: EventFilter, cell: Range, ids: number[], shape: Shape): Statement {
  const where = whereClause(f, { timeColumn: 'bucket', ranges: [cell] })
  const g = grouping('bucket', shape)
  return { sql: shaped(`SELECT ${g.select}, ${rollupMeasures(shape)} FROM catalog.rollups WHERE ${where.sql} AND segment_id IN (${idList(ids)}) GROUP BY ${g.by}`, g.cols, shape), params: where.params }
}

/**
 * The catalog statements whose rows are rollupRows' answer: the per-segment
 * rollups without `rawIds` when the question involves `user_id` or `coarse`
 * is false (the coarse rollups may hold one of them); otherwise the coarse
 * rollups, and the users' values (userValues) for grouping sets with user_id.
 */
export function rollupStatements(f: EventFilter, range: Range, rawIds: number[], shape: Shape, coarse: boolean): Statement[] {
  if (involvesUser(f, shape) || !coarse) return [rollupTotals(f, [range], rawIds, shape)]
  const coarseSets = shape.sets?.filter((d) => d !== 'user_id') ?? null
  const out = coarseSets === null || coarseSets.length > 0 ? [coarseTotals(f, range, coarseSets === null ? shape : { ...shape, sets: coarseSets })] : []
  if (shape.sets?.includes('user_id')) out.push(...userValues(f, range, rawIds))
  return out
}

/** The coarse level whose cells are the users' daily rollup's. */
export const DAY_LEVEL = COARSE_LEVELS.findIndex((l) => l.us === USERS_DAILY.us)
if (DAY_LEVEL < 0) throw new Error('invariant: a coarse level has the cells of the users\' daily rollup')

/**
 * Requests per user_id over `range` (grouping-set rows): with no filter but
 * the window, whole UTC days from the users' daily rollup and the rest from
 * the per-segment rollups; with filters, all from the per-segment rollups.
 * Only where the coarse rollups answer too (rollupStatements).
 */
export function userValues(f: EventFilter, range: Range, rawIds: number[]): Statement[] {
  const shape: Shape = { groupBy: [], startsUs: null, sets: ['user_id'] }
  const filtered = f.status.length > 0 || DIMENSIONS.some((d) => (f.dims[d]?.length ?? 0) > 0)
  if (filtered) return [rollupTotals(f, [range], rawIds, shape)]
  const cells = coarseCells(range[0], range[1], null)
  const days = cells[DAY_LEVEL]!
  const out: Statement[] = []
  if (days.length > 0) {
    const where = whereClause(f, { timeColumn: 'bucket', ranges: days })
    out.push({ sql: `SELECT user_id, sum(requests) AS requests FROM catalog.${USERS_DAILY.table} WHERE ${where.sql} GROUP BY user_id`, params: where.params })
  }
  const rest = cells.filter((c) => c !== days).flat().sort((a, b) => a[0] - b[0])
  if (rest.length > 0) out.push(rollupTotals(f, rest, rawIds, shape))
  return out
}

/** The statement of the ranges (ascending, disjoint, within the filter's window) over the per-segment rollups, without the segments `excludeIds`. */
export function rollupTotals(f: EventFilter, ranges: Range[], excludeIds: number[], shape: Shape): Statement {
  const where = whereClause(f, { timeColumn: 'bucket', ranges })
  const exclude = excludeIds.length > 0 ? ` AND segment_id NOT IN (${idList(excludeIds)})` : ''
  const g = grouping('bucket', shape)
  return { sql: shaped(`SELECT ${g.select}, ${rollupMeasures(shape)} FROM catalog.rollups WHERE ${where.sql}${exclude} GROUP BY ${g.by}`, g.cols, shape), params: where.params }
}

/** The statement of `range` over the coarse rollups: whole days, whole hours, then 15-minute cells (see coarseCells). */
export function coarseTotals(f: EventFilter, [fromUs, toUs]: Range, shape: Shape): Statement {
  const perLevel = coarseCells(fromUs, toUs, shape.startsUs)
  const params: DuckDBValue[] = []
  const selects = COARSE_LEVELS.flatMap((level, i) =>
    perLevel[i]!.length === 0 ? [] : [`SELECT * FROM catalog.${level.table} WHERE ${whereClause(f, { timeColumn: 'bucket', ranges: perLevel[i]!, params }).sql}`],
  )
  if (selects.length === 0) throw new Error('invariant: an aligned, non-empty range has coarse cells')
  const g = grouping('bucket', shape)
  return { sql: shaped(`SELECT ${g.select}, ${rollupMeasures(shape)} FROM (${selects.join(' UNION ALL ')}) GROUP BY ${g.by}`, g.cols, shape), params }
}
