// Verify: recomputes what the store's derived figures claim from the raw events
// they were derived from, and reports every difference. Run on demand
// (GET /v1/admin/verify) or on a schedule (off by default); a read like any
// other: through snapshots and query slots, never the write gate.
//
// What is compared, for a window of whole 15-minute cells:
// - each archived segment's raw events, per cell and key, against its rows in
//   catalog.rollups (every measure: requests, errors, token sums, exact cost,
//   cost_missing), and its whole-file figures against its catalog entry (stats);
// - each live or pending segment's events below its live_rollups watermark
//   against its live_rollups;
// - the coarse rollups (15 minutes, hour, day, and the users' daily requests)
//   against the sums of catalog.rollups over their cells.
//
// Invariants:
// - One segment per snapshot: each holds a query slot only while that segment
//   is checked, so dashboards interleave with a long verify.
// - Each comparison is one statement (or one read transaction) over one side
//   and the other, so a concurrent seal, rollup refresh or retention run
//   cannot make a consistent store look inconsistent.
// - Only cells the derived tables still hold are compared: at or after the
//   rollup cutoff, and for coarse levels cells wholly inside the window.
// - Nothing is written, and no answer cache is read.

import { DuckDBTimestampValue, type DuckDBConnection, type DuckDBValue } from '@duckdb/node-api'
import { formatCost, scaledDecimal } from '../money.js'
import type { Catalog } from './catalog.js'
import { BUCKET_OF_TS, BUCKET_US, COARSE_KEY, COARSE_LEVELS, rollupTokenSum, USERS_DAILY } from './catalog.js'
import { tableOf } from './relations.js'
import type { Mismatch, VerifyCheck, VerifyReport } from './reports.js'
import type { Cutoffs } from './retention.js'
import { PRICED_ROW_SQL, TOKEN_COLUMNS } from './schema.js'
import type { Snapshot, SnapshotPart } from './snapshot.js'
import { computeStats, type SegmentStats } from './stats.js'
import { inTransaction } from './transaction.js'
import type { Logger } from '../log.js'

import { MAX_MISMATCHES_LISTED } from './reports.js'

/** What verify reads of the store. */
export interface VerifyHost {
  snapshot<T>(fn: (snap: Snapshot) => Promise<T>): Promise<T>
  cutoffs(): Cutoffs
  readonly catalog: Catalog
}

/** The key columns of a segment's rollup rows, and of coarse and live rows. */
const SEGMENT_KEY = ['key_id', 'team_id', 'user_id', 'customer_id', 'provider', 'model', 'status_code', 'currency'] as const
const COARSE_KEY_COLUMNS = COARSE_KEY.split(', ')
/** Every measure, as comparable SQL types: BIGINT counts, HUGEINT token sums, DECIMAL cost. */
const MEASURE_NAMES = ['requests', 'errors', ...TOKEN_COLUMNS, 'cost', 'cost_missing', 'cost_priced'] as const

/** Measures over raw events. */
const RAW_SUMS = [
  'count(*)::BIGINT AS requests',
  'count(*) FILTER (WHERE status_code >= 400)::BIGINT AS errors',
  ...TOKEN_COLUMNS.map((c) => `sum(${c})::HUGEINT AS ${c}`),
  'sum(cost) AS cost',
  'count(*) FILTER (WHERE cost IS NULL)::BIGINT AS cost_missing',
  `coalesce(sum(cost) FILTER (WHERE ${PRICED_ROW_SQL}), 0) AS cost_priced`,
].join(', ')

/** Measures over rollup rows (per-segment, coarse or live: hi/lo token columns). */
const ROLLUP_SUMS = [
  'sum(requests)::BIGINT AS requests',
  'sum(errors)::BIGINT AS errors',
  ...TOKEN_COLUMNS.map((c) => `${rollupTokenSum(c)} AS ${c}`),
  'sum(cost) AS cost',
  'sum(cost_missing)::BIGINT AS cost_missing',
  'coalesce(sum(cost_priced), 0) AS cost_priced',
].join(', ')

const ts = (us: number): string => `make_timestamp(${Math.trunc(us)}::BIGINT)`

/**
 * The rows where `expected` and `found` (each grouped by `bucket` and `keys`,
 * with the measures above) differ, or exist on one side only; at most
 * MAX_MISMATCHES_LISTED + 1, and the count of all.
 */
function differences(expected: string, found: string, keys: readonly string[], measures: readonly string[] = MEASURE_NAMES): string {
  const on = ['e.bucket = f.bucket', ...keys.map((k) => `e.${k} IS NOT DISTINCT FROM f.${k}`)].join(' AND ')
  const differs = measures.map((m) => `e.${m} IS DISTINCT FROM f.${m}`).join(' OR ')
  const cols = ['bucket', ...keys].map((k) => `coalesce(e.${k}, f.${k}) AS ${k}`).join(', ')
  const pairs = measures.map((m) => `e.${m}::VARCHAR AS e_${m}, f.${m}::VARCHAR AS f_${m}`).join(', ')
  // One row always: the counts, joined to the first differing rows (none: one row of NULLs).
  return (
    `WITH e AS MATERIALIZED (${expected}), f AS MATERIALIZED (${found}), ` +
    `d AS MATERIALIZED (SELECT ${cols}, ${pairs} FROM e FULL OUTER JOIN f ON ${on} WHERE ${differs}) ` +
    `SELECT x.*, s.compared, s.total FROM (SELECT (SELECT count(*) FROM e) AS compared, (SELECT count(*) FROM d) AS total) s ` +
    `LEFT JOIN (SELECT * FROM d ORDER BY bucket LIMIT ${MAX_MISMATCHES_LISTED + 1}) x ON true`
  )
}

interface Found {
  compared: number
  total: number
  rows: Mismatch[]
}

async function runDifferences(conn: DuckDBConnection, sql: string, check: VerifyCheck, segmentId: number | null, table: string, keys: readonly string[], measures: readonly string[] = MEASURE_NAMES): Promise<Found> {
  const res = (await conn.runAndReadAll(sql)).getRowObjects()
  const out: Mismatch[] = []
  for (const r of res) {
    if (r.bucket === null || r.bucket === undefined) continue // the counts' row when nothing differs
    const key = Object.fromEntries(keys.map((k) => [k, plain(r[k])]))
    const bucket = r.bucket instanceof DuckDBTimestampValue ? new Date(Number(r.bucket.micros / 1000n)).toISOString() : null
    for (const m of measures) {
      const e = r[`e_${m}`]
      const f = r[`f_${m}`]
      const expected = e === null || e === undefined ? null : String(e)
      const found = f === null || f === undefined ? null : String(f)
      if (expected === found) continue
      out.push({ check, segment_id: segmentId, table, bucket, key, measure: m, expected, found, difference: delta(m, expected, found) })
    }
  }
  const first = res[0]
  return { compared: first ? Number(first.compared) : 0, total: first ? Number(first.total) : 0, rows: out }
}

function plain(v: DuckDBValue | undefined): string | number | null {
  if (v === null || v === undefined) return null
  if (typeof v === 'number' || typeof v === 'string') return v
  return String(v)
}

/** found − expected, exactly (integers, or decimals of the cost's scale); null when a side is missing. */
function delta(measure: string, expected: string | null, found: string | null): string | null {
  if (expected === null || found === null) return null
  if (measure !== 'cost' && measure !== 'cost_priced') return String(BigInt(found) - BigInt(expected))
  return formatCost(scaledDecimal(found) - scaledDecimal(expected))
}


/** The window a verify covers: whole 15-minute cells (from floored, to ceiled), and not before the rollup cutoff. */
export function verifyWindow(fromUs: number, toUs: number, cutoffs: Cutoffs): { fromUs: number; toUs: number } {
  const from = Math.max(Math.floor(fromUs / BUCKET_US) * BUCKET_US, Math.ceil(cutoffs.rollupsUs / BUCKET_US) * BUCKET_US)
  const to = Math.ceil(toUs / BUCKET_US) * BUCKET_US
  return { fromUs: from, toUs: Math.max(from, to) }
}

/**
 * Checks the window [fromUs, toUs) (µs) and reports what differs. Segments
 * are checked one per snapshot, oldest first; then the coarse tables.
 */
export async function verify(host: VerifyHost, requestedFromUs: number, requestedToUs: number): Promise<VerifyReport> {
  const started = performance.now()
  const { fromUs, toUs } = verifyWindow(requestedFromUs, requestedToUs, host.cutoffs())
  const report: VerifyReport = {
    from: new Date(fromUs / 1000).toISOString(),
    to: new Date(toUs / 1000).toISOString(),
    segments_checked: 0,
    compared: { segment_rollups: 0, segment_stats: 0, live_rollups: 0, coarse_rollups: 0, users_daily: 0 },
    mismatch_count: 0,
    mismatches: [],
    truncated: false,
    segments_gone: 0,
    duration_ms: 0,
  }
  const add = (check: VerifyCheck, f: Found): void => {
    report.compared[check] += f.compared
    report.mismatch_count += f.total
    for (const m of f.rows) {
      if (report.mismatches.length < MAX_MISMATCHES_LISTED) report.mismatches.push(m)
      else report.truncated = true
    }
    if (f.total > MAX_MISMATCHES_LISTED) report.truncated = true
  }
  if (fromUs < toUs) {
    const ids = await host.snapshot(async (snap) => snap.parts.filter((p) => overlaps(p, fromUs, toUs)).map((p) => p.id))
    const records = new Map((await host.catalog.list()).map((r) => [r.id, r]))
    for (const id of ids) {
      const checked = await host.snapshot(async (snap) => {
        const part = snap.parts.find((p) => p.id === id)
        if (!part) return false
        if (part.alias === null) add('live_rollups', await part.live((conn) => inTransaction(conn, () => liveDifferences(conn, null, part.id, fromUs, toUs))))
        else if (part.state === 'archived') {
          add('segment_rollups', await snap.files((conn) => segmentDifferences(conn, part, fromUs, toUs)))
          const stored = records.get(part.id)?.stats ?? null
          add('segment_stats', await snap.files((conn) => statsDifferences(conn, part, stored)))
        } else add('live_rollups', await snap.files((conn) => inTransaction(conn, () => liveDifferences(conn, part.alias, part.id, fromUs, toUs))))
        return true
      })
      if (checked) report.segments_checked++
      else report.segments_gone++
    }
    await host.snapshot((snap) =>
      snap.files((conn) =>
        inTransaction(conn, async () => {
          for (const level of COARSE_LEVELS) add('coarse_rollups', await coarseDifferences(conn, level.table, level.us, fromUs, toUs))
          add('users_daily', await usersDifferences(conn, fromUs, toUs))
        }),
      ),
    )
  }
  report.duration_ms = Math.round((performance.now() - started) * 1000) / 1000
  return report
}

function overlaps(p: SnapshotPart, fromUs: number, toUs: number): boolean {
  return p.minTsUs !== null && p.maxTsUs !== null && p.maxTsUs >= fromUs && p.minTsUs < toUs
}

/** An archived segment's raw events against its rows in catalog.rollups, per cell and key. */
async function segmentDifferences(conn: DuckDBConnection, part: SnapshotPart, fromUs: number, toUs: number): Promise<Found> {
  const keys = SEGMENT_KEY.join(', ')
  const expected = `SELECT ${BUCKET_OF_TS} AS bucket, ${keys}, ${RAW_SUMS} FROM ${tableOf(part.alias, 'events')} WHERE ts >= ${ts(fromUs)} AND ts < ${ts(toUs)} GROUP BY ALL`
  const found = `SELECT bucket, ${keys}, ${ROLLUP_SUMS} FROM catalog.rollups WHERE segment_id = ${Math.trunc(part.id)} AND bucket >= ${ts(fromUs)} AND bucket < ${ts(toUs)} GROUP BY ALL`
  return runDifferences(conn, differences(expected, found, SEGMENT_KEY), 'segment_rollups', part.id, 'catalog.rollups', SEGMENT_KEY)
}

/** An archived segment's whole-file figures against its catalog entry (the detail count is left out: details expire on their own). */
async function statsDifferences(conn: DuckDBConnection, part: SnapshotPart, stored: SegmentStats | null): Promise<Found> {
  const actual = await computeStats(conn, part.alias, false)
  const rows: Mismatch[] = []
  const fields: Array<[string, unknown, unknown]> = [
    ['row_count', actual.rowCount, stored?.rowCount],
    ['id_count', actual.idCount, stored?.idCount],
    ['min_timestamp_us', actual.minTsUs, stored?.minTsUs],
    ['max_timestamp_us', actual.maxTsUs, stored?.maxTsUs],
    ...TOKEN_COLUMNS.map((c): [string, unknown, unknown] => [c, actual.tokens[c], stored?.tokens[c]]),
    ['cost_by_currency', JSON.stringify(actual.costByCurrency), stored ? JSON.stringify(stored.costByCurrency) : undefined],
    ['cost_missing', actual.costMissing, stored?.costMissing],
  ]
  for (const [measure, e, f] of fields) {
    const expected = e === null || e === undefined ? null : String(e)
    const found = f === null || f === undefined ? null : String(f)
    if (expected === found) continue
    const numeric = expected !== null && found !== null && /^-?\d+$/.test(expected) && /^-?\d+$/.test(found)
    rows.push({ check: 'segment_stats', segment_id: part.id, table: 'catalog.segments', bucket: null, key: {}, measure, expected, found, difference: numeric ? String(BigInt(found!) - BigInt(expected!)) : null })
  }
  return { compared: 1, total: rows.length, rows }
}

/**
 * A live or pending segment's events below its live_rollups watermark against
 * its live_rollups (in the caller's read transaction: one snapshot of both).
 */
async function liveDifferences(conn: DuckDBConnection, alias: string | null, segmentId: number, fromUs: number, toUs: number): Promise<Found> {
  if (alias !== null) {
    // A pending file of a release before live rollups has none to compare (its seal computes the rollups from its events).
    const has = await conn.runAndReadAll(`SELECT count(*) FROM duckdb_tables() WHERE database_name = $1 AND table_name = 'live_rollups_upto'`, [alias])
    if (Number(has.getRows()[0]![0]) === 0) return { compared: 0, total: 0, rows: [] }
  }
  const upto = Number((await conn.runAndReadAll(`SELECT coalesce(max(rows), 0) FROM ${tableOf(alias, 'live_rollups_upto')}`)).getRows()[0]![0])
  const window = (col: string) => `${col} >= ${ts(fromUs)} AND ${col} < ${ts(toUs)}`
  const expected = `SELECT ${BUCKET_OF_TS} AS bucket, ${COARSE_KEY}, ${RAW_SUMS} FROM ${tableOf(alias, 'events')} WHERE rowid < ${upto} AND ${window('ts')} GROUP BY ALL`
  const found = `SELECT bucket, ${COARSE_KEY}, ${ROLLUP_SUMS} FROM ${tableOf(alias, 'live_rollups')} WHERE ${window('bucket')} GROUP BY ALL`
  return runDifferences(conn, differences(expected, found, COARSE_KEY_COLUMNS), 'live_rollups', segmentId, 'live_rollups', COARSE_KEY_COLUMNS)
}

/** The cells of width `us` wholly inside [fromUs, toUs). */
function wholeCells(us: number, fromUs: number, toUs: number): [number, number] {
  return [Math.ceil(fromUs / us) * us, Math.floor(toUs / us) * us]
}

/** A coarse level's rows against catalog.rollups summed over its cells (every segment, without user_id). */
async function coarseDifferences(conn: DuckDBConnection, table: string, us: number, fromUs: number, toUs: number): Promise<Found> {
  const [lo, hi] = wholeCells(us, fromUs, toUs)
  if (lo >= hi) return { compared: 0, total: 0, rows: [] }
  const cell = `make_timestamp((epoch_us(bucket) // ${us}) * ${us})`
  const range = `bucket >= ${ts(lo)} AND bucket < ${ts(hi)}`
  const expected = `SELECT ${cell} AS bucket, ${COARSE_KEY}, ${ROLLUP_SUMS} FROM catalog.rollups WHERE ${range} GROUP BY ALL`
  const found = `SELECT bucket, ${COARSE_KEY}, ${ROLLUP_SUMS} FROM catalog.${table} WHERE ${range} GROUP BY ALL`
  return runDifferences(conn, differences(expected, found, COARSE_KEY_COLUMNS), 'coarse_rollups', null, `catalog.${table}`, COARSE_KEY_COLUMNS)
}

/** The users' daily requests against catalog.rollups summed per UTC day and user. */
async function usersDifferences(conn: DuckDBConnection, fromUs: number, toUs: number): Promise<Found> {
  const [lo, hi] = wholeCells(USERS_DAILY.us, fromUs, toUs)
  if (lo >= hi) return { compared: 0, total: 0, rows: [] }
  const range = `bucket >= ${ts(lo)} AND bucket < ${ts(hi)}`
  const expected = `SELECT make_timestamp((epoch_us(bucket) // ${USERS_DAILY.us}) * ${USERS_DAILY.us}) AS bucket, user_id, sum(requests)::BIGINT AS requests FROM catalog.rollups WHERE user_id IS NOT NULL AND ${range} GROUP BY ALL`
  const found = `SELECT bucket, user_id, sum(requests)::BIGINT AS requests FROM catalog.${USERS_DAILY.table} WHERE ${range} GROUP BY ALL`
  return runDifferences(conn, differences(expected, found, ['user_id'], ['requests']), 'users_daily', null, `catalog.${USERS_DAILY.table}`, ['user_id'], ['requests'])
}

/** The scheduled light verify: every intervalMs, the last windowMs; mismatches are logged and counted (metrics). */
export class Verifier {
  runs = 0
  errors = 0
  /** Mismatching rows found by every run so far. */
  mismatches = 0
  last: VerifyReport | null = null
  private current: Promise<VerifyReport> | null = null
  private nextMs: number

  constructor(
    private readonly host: VerifyHost,
    private readonly opts: { intervalMs: number; windowMs: number; logger: Logger; nowMs(): number },
  ) {
    this.nextMs = opts.intervalMs === 0 ? Infinity : opts.nowMs() + opts.intervalMs
  }

  /** Runs `verify` now (admin) or on the schedule; counted either way. One at a time: a call while one runs shares it. */
  run(fromUs: number, toUs: number): Promise<VerifyReport> {
    if (this.current) return this.current
    const run = verify(this.host, fromUs, toUs)
      .then((report) => {
        this.runs++
        this.mismatches += report.mismatch_count
        this.last = report
        const figures = { event: 'verify', from: report.from, to: report.to, segments: report.segments_checked, mismatches: report.mismatch_count, ms: report.duration_ms }
        if (report.mismatch_count > 0) this.opts.logger.error({ ...figures, first: report.mismatches.slice(0, 5) }, 'verify found derived figures that differ from the raw events')
        else this.opts.logger.info(figures, 'verify: every derived figure equals the raw events')
        return report
      })
      .catch((err: unknown) => {
        this.errors++
        throw err
      })
      .finally(() => {
        this.current = null
      })
    this.current = run
    return run
  }

  /** The scheduler's turn (the store's tick): starts a run when due, in the background. */
  tick(): void {
    const nowMs = this.opts.nowMs()
    if (nowMs < this.nextMs || this.current) return
    this.nextMs = nowMs + this.opts.intervalMs
    void this.run((nowMs - this.opts.windowMs) * 1000, nowMs * 1000).catch((err: unknown) => this.opts.logger.error({ err }, 'scheduled verify failed'))
  }

  /** The run in flight, if any (close waits for it). */
  inFlight(): Promise<VerifyReport> | null {
    return this.current
  }
}
