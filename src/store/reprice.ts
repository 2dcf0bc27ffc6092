// Re-pricing a window: the priced costs of retained events (and the costs of
// events that had none) recomputed from the price table in use, with their
// rollups, as a crash-safe sequence of steps per archived segment.
//
//   prepare   the active segment is rolled over when it holds events of the
//             window, and every pending segment sealed: archives are the only
//             tier rewritten (events ingested from here on are priced at
//             ingest by the same table)
//   read      the window's events of one archive, in pages; each priced again
//             by the same function as ingest (pricing/apply.ts)
//   copy      nothing changed: next segment. Else archive/seg-N.duckdb.reprice:
//             every event, the changed ones updated; checkpointed and fsynced
//   validate  the copy's figures equal the archive's, but for the cost sums,
//             which equal the archive's plus the changes computed here
//   record    catalog.reprice: the segment's figures and rollups (coarse levels
//             refreshed) and a reprice intent, in one transaction: the commit point
//   swap      readers move to the copy; the old file is retired
//   publish   the copy is renamed over the archive, the directory fsynced,
//             readers move to the final name, the intent is forgotten
//
// Invariants:
// - Before `record` commits, the archive is the truth and a `.reprice` file is
//   disposable (start-up removes it). After it, the copy is the truth: start-up
//   finishes `publish` for every intent (finishReprices). So a kill at any
//   point leaves each segment's raw events and its rollups in agreement.
// - Ids and fingerprints never change (pricing comes after the fingerprint):
//   the dedupe index needs nothing.
// - Each segment is rewritten holding the maintenance lock whole (no seal,
//   retention or backup meanwhile), never the write gate: ingest goes on.
// - Bounded: the window is at most MAX_REPRICE_WINDOW_MS; rows are read in
//   pages of READ_PAGE_ROWS; updates are written in batches of UPDATE_BATCH_ROWS.

import path from 'node:path'
import { DuckDBDecimalValue, listValue } from '@duckdb/node-api'
import type { Clock } from '../clock.js'
import type { Logger } from '../log.js'
import { COST_SCALE, COST_WIDTH, formatCost, formatCostFixed, scaledDecimal } from '../money.js'
import { applyPrice, type Priceable, type PricingMode } from '../pricing/apply.js'
import type { PriceTable } from '../pricing/table.js'
import type { Catalog } from './catalog.js'
import type { FileTier, AttachedFile } from './files.js'
import { removeDurably, type FileSystem } from './fsops.js'
import { parseSegmentFileName, segmentPath, tierDir } from './layout.js'
import { ident, tableOf } from './relations.js'
import { COST_ORIGIN_SQL, REPORTED_COST_SQL, SEGMENT_DDL } from './schema.js'
import { computeStats, statsDifference, type SegmentStats } from './stats.js'
import type { SegmentEntry } from './tiers.js'

export const MAX_REPRICE_WINDOW_MS = 31 * 86_400_000
const READ_PAGE_ROWS = 50_000
const UPDATE_BATCH_ROWS = 10_000

export type RepriceStep = 'read' | 'copy' | 'validate' | 'record' | 'swap' | 'publish'

export interface RepriceReport {
  from: string
  to: string
  version: string
  mode: PricingMode
  segments_examined: number
  segments_rewritten: number
  events_examined: number
  events_changed: number
  /** Changed events that had no cost before and are now priced. */
  became_priced: number
  /** Changed events that were priced before and have no price now (their model left the table, or their date is before every entry). */
  became_unknown: number
  /** Sum of the changed events' costs before and after, per currency. */
  cost_before_by_currency: Record<string, string>
  cost_after_by_currency: Record<string, string>
  /** Events whose price is not below 10^15: left as they were. */
  too_large: number
  took_ms: number
}

export interface RepriceHost {
  readonly dataDir: string
  readonly fs: FileSystem
  readonly files: FileTier
  readonly catalog: Catalog
  readonly clock: Clock
  readonly logger: Logger
  /** The retained segments, oldest first. */
  entries(): SegmentEntry[]
  /** Rolls the active segment over when it holds events in [fromUs, toUs), and waits until no segment is pending. */
  prepare(fromUs: number, toUs: number): Promise<void>
  /** Runs `fn` holding the maintenance lock whole. */
  exclusive<T>(fn: () => Promise<T>): Promise<T>
  beforeStep?: (step: RepriceStep, segmentId: number) => Promise<void>
}

interface Change {
  id: string
  /** The stored cost and currency, before. */
  was: { cost: bigint | null; currency: string }
  cost: bigint | null
  /** The reported_cost column's new value: the gateway's figure where the table priced over it, else null (schema.ts). */
  reported: bigint | null
  ref: string | null
  currency: string
}

/** What a stored row is priced from: the client's fields, with its reported cost as the cost. */
function storedEvent(r: unknown[]): Priceable {
  const reported = r[12] instanceof DuckDBDecimalValue ? r[12].value : null
  return {
    ts_us: Number(r[1]),
    provider: String(r[2]),
    model: String(r[3]),
    status_code: Number(r[4]),
    input_tokens: Number(r[5]),
    output_tokens: Number(r[6]),
    cache_read_tokens: Number(r[7]),
    cache_write_tokens: Number(r[8]),
    reasoning_tokens: Number(r[9]),
    currency: String(r[10]),
    cost: reported,
    reported_cost: reported,
    cost_origin: reported === null ? null : 'reported',
    price_ref: null,
  }
}

const add = (m: Map<string, bigint>, currency: string, v: bigint): void => {
  m.set(currency, (m.get(currency) ?? 0n) + v)
}
const texts = (m: Map<string, bigint>): Record<string, string> => Object.fromEntries([...m.keys()].sort().map((c) => [c, formatCost(m.get(c)!)]))

export async function reprice(host: RepriceHost, fromUs: number, toUs: number, table: PriceTable, mode: PricingMode): Promise<RepriceReport> {
  const started = host.clock.nowMs()
  const report: RepriceReport = {
    from: new Date(fromUs / 1000).toISOString(),
    to: new Date(toUs / 1000).toISOString(),
    version: table.version,
    mode,
    segments_examined: 0,
    segments_rewritten: 0,
    events_examined: 0,
    events_changed: 0,
    became_priced: 0,
    became_unknown: 0,
    cost_before_by_currency: {},
    cost_after_by_currency: {},
    too_large: 0,
    took_ms: 0,
  }
  const before = new Map<string, bigint>()
  const after = new Map<string, bigint>()
  await host.prepare(fromUs, toUs)
  const due = host.entries().filter((e) => e.state === 'archived' && e.file && e.minTsUs !== null && e.maxTsUs !== null && e.minTsUs < toUs && e.maxTsUs >= fromUs)
  for (const entry of due) {
    await host.exclusive(async () => {
      if (entry.state !== 'archived' || !entry.file) return // retention took it meanwhile
      report.segments_examined++
      const changes = await readChanges(host, entry, entry.file, fromUs, toUs, table, mode, report, before, after)
      if (changes.length > 0) {
        await rewrite(host, entry, changes)
        report.segments_rewritten++
      }
    })
  }
  report.cost_before_by_currency = texts(before)
  report.cost_after_by_currency = texts(after)
  report.took_ms = host.clock.nowMs() - started
  host.logger.info({ event: 'repriced', ...report }, 'reprice done')
  return report
}

async function readChanges(
  host: RepriceHost,
  entry: SegmentEntry,
  file: AttachedFile,
  fromUs: number,
  toUs: number,
  table: PriceTable,
  mode: PricingMode,
  report: RepriceReport,
  before: Map<string, bigint>,
  after: Map<string, bigint>,
): Promise<Change[]> {
  await host.beforeStep?.('read', entry.id)
  const conn = host.files.sealConn
  const events = tableOf(file.alias, 'events')
  const changes: Change[] = []
  let last: [bigint, string] | null = null
  host.files.pin(file)
  try {
    for (;;) {
      const params: Array<bigint | string> = [BigInt(fromUs), BigInt(toUs)]
      let after_ = ''
      if (last) {
        params.push(last[0], last[1])
        after_ = ' AND (epoch_us(ts), event_id) > ($3, $4)'
      }
      const res = await conn.runAndReadAll(
        `SELECT event_id, epoch_us(ts), provider, model, status_code, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
                currency, cost, ${REPORTED_COST_SQL} AS reported_cost, ${COST_ORIGIN_SQL} AS cost_origin, price_ref
           FROM ${events} WHERE ts >= make_timestamp($1::BIGINT) AND ts < make_timestamp($2::BIGINT)${after_}
          ORDER BY epoch_us(ts), event_id LIMIT ${READ_PAGE_ROWS}`,
        params,
      )
      const rows = res.getRows()
      for (const r of rows) {
        report.events_examined++
        const e = storedEvent(r)
        const result = applyPrice(e, table, mode)
        if (result === 'too_large') {
          report.too_large++
          continue
        }
        const oldCost = r[11] instanceof DuckDBDecimalValue ? r[11].value : null
        const oldOrigin = r[13] === null ? null : String(r[13])
        const oldRef = r[14] === null ? null : String(r[14])
        const oldCurrency = String(r[10])
        if (e.cost === oldCost && e.cost_origin === oldOrigin && e.price_ref === oldRef && e.currency === oldCurrency) continue
        changes.push({ id: String(r[0]), was: { cost: oldCost, currency: oldCurrency }, cost: e.cost, reported: e.price_ref === null ? null : e.reported_cost, ref: e.price_ref, currency: e.currency })
        report.events_changed++
        if (oldCost === null && e.cost !== null) report.became_priced++
        if (oldOrigin === 'priced' && e.cost === null) report.became_unknown++
        if (oldCost !== null) add(before, oldCurrency, oldCost)
        if (e.cost !== null) add(after, e.currency, e.cost)
      }
      if (rows.length < READ_PAGE_ROWS) break
      const end = rows[rows.length - 1]!
      last = [BigInt(end[1] as bigint), String(end[0])]
    }
  } finally {
    await host.files.unpin(file)
  }
  return changes
}

/** The archive's figures with `changes` applied to its costs: what the copy must show. */
function expectedStats(changes: readonly Change[], old: SegmentStats): SegmentStats {
  const byCurrency = new Map(Object.entries(old.costByCurrency).map(([c, v]) => [c, scaledDecimal(v)]))
  let missing = old.costMissing
  for (const c of changes) {
    if (c.was.cost === null) missing--
    else add(byCurrency, c.was.currency, -c.was.cost)
    if (c.cost === null) missing++
    else add(byCurrency, c.currency, c.cost)
  }
  const costByCurrency: Record<string, string> = {}
  for (const c of [...byCurrency.keys()].sort()) costByCurrency[c] = formatCost(byCurrency.get(c)!)
  return { ...old, costByCurrency, costMissing: missing }
}

/**
 * Stats compared without currencies whose sum is 0: the expectation is built
 * from deltas and cannot tell a currency no cost is left in from one whose
 * costs sum to 0 (every other figure is compared exactly).
 */
function withoutZeroSums(s: SegmentStats): SegmentStats {
  return { ...s, costByCurrency: Object.fromEntries(Object.entries(s.costByCurrency).filter(([, v]) => v !== '0')) }
}


/** The changes of one batch as rows (id, cost, reported, ref, currency), from changeParams' five lists. */
const changeRows = `(SELECT unnest($1::VARCHAR[]) AS id, nullif(unnest($2::VARCHAR[]), '')::DECIMAL(${COST_WIDTH},${COST_SCALE}) AS cost,
    nullif(unnest($3::VARCHAR[]), '')::DECIMAL(${COST_WIDTH},${COST_SCALE}) AS reported, nullif(unnest($4::VARCHAR[]), '') AS ref, unnest($5::VARCHAR[]) AS currency)`

/** Nulls travel as '' (never a stored value): a list whose first element is null would be typed NULL[], and every element read as null. */
function changeParams(batch: readonly Change[]) {
  return [
    listValue(batch.map((c) => c.id)),
    listValue(batch.map((c) => (c.cost === null ? '' : formatCostFixed(c.cost)))),
    listValue(batch.map((c) => (c.reported === null ? '' : formatCostFixed(c.reported)))),
    listValue(batch.map((c) => c.ref ?? '')),
    listValue(batch.map((c) => c.currency)),
  ]
}

async function rewrite(host: RepriceHost, entry: SegmentEntry, changes: readonly Change[]): Promise<void> {
  const { fs, files, catalog, dataDir } = host
  const id = entry.id
  const old = entry.file!
  const archive = segmentPath(dataDir, 'archive', id)
  const copy = `${archive}.reprice`
  const out = `reprice_out_${id}`
  const conn = files.sealConn
  files.pin(old)
  let attachedCopy: AttachedFile | null = null
  try {
    await host.beforeStep?.('copy', id)
    const oldStats = await computeStats(conn, old.alias, false)
    const expected = expectedStats(changes, oldStats)
    await files.detachAlias(out)
    await fs.remove(copy)
    await fs.remove(`${copy}.wal`)
    await files.attachWritable(out, copy)
    try {
      const o = ident(out)
      for (const ddl of SEGMENT_DDL) {
        const t = /CREATE TABLE IF NOT EXISTS (\w+)/.exec(ddl)?.[1]
        if (t === 'events' || t === 'segment_meta') await conn.run(ddl.replace('CREATE TABLE IF NOT EXISTS ', `CREATE TABLE IF NOT EXISTS ${o}.`))
      }
      await conn.run(`INSERT INTO ${o}.events SELECT * FROM ${tableOf(old.alias, 'events')} ORDER BY ts, event_id`)
      await conn.run(`INSERT INTO ${o}.segment_meta SELECT * FROM ${ident(old.alias)}.segment_meta WHERE key <> 'repriced_ms'`)
      await conn.run(`INSERT INTO ${o}.segment_meta VALUES ('repriced_ms', '${host.clock.nowMs()}')`)
      for (let i = 0; i < changes.length; i += UPDATE_BATCH_ROWS) {
        const batch = changes.slice(i, i + UPDATE_BATCH_ROWS)
        await conn.run(`UPDATE ${o}.events AS t SET cost = c.cost, reported_cost = c.reported, price_ref = c.ref, currency = c.currency FROM ${changeRows} c WHERE t.event_id = c.id`, changeParams(batch))
      }
      await conn.run(`CHECKPOINT ${o}`)
    } finally {
      await files.detachAlias(out)
    }
    await fs.syncFile(copy)

    await host.beforeStep?.('validate', id)
    attachedCopy = await files.attach(id, copy)
    const actual = await computeStats(conn, attachedCopy.alias, false)
    const diff = statsDifference(withoutZeroSums(expected), withoutZeroSums(actual))
    if (diff !== null) throw new Error(`re-priced copy of segment ${id} differs from what was computed: ${diff}`)
    for (let i = 0; i < changes.length; i += UPDATE_BATCH_ROWS) {
      const batch = changes.slice(i, i + UPDATE_BATCH_ROWS)
      const res = await conn.runAndReadAll(
        `SELECT count(*) FROM ${tableOf(attachedCopy.alias, 'events')} t JOIN ${changeRows} c ON t.event_id = c.id
          WHERE t.cost IS NOT DISTINCT FROM c.cost AND t.reported_cost IS NOT DISTINCT FROM c.reported AND t.price_ref IS NOT DISTINCT FROM c.ref AND t.currency = c.currency`,
        changeParams(batch),
      )
      const same = Number(res.getRows()[0]![0])
      if (same !== batch.length) throw new Error(`re-priced copy of segment ${id}: ${batch.length - same} of ${batch.length} changed events do not hold their new cost, reported cost and price`)
    }

    await host.beforeStep?.('record', id)
    const bytes = (await fs.size(copy)) ?? 0
    const stats = { ...actual, detailCount: entry.stats?.detailCount ?? actual.detailCount }
    if (!(await catalog.reprice(id, stats, bytes, attachedCopy.alias))) {
      throw new Error(`segment ${id} is no longer archived: not re-priced`)
    }

    await host.beforeStep?.('swap', id)
    entry.file = attachedCopy
    entry.stats = stats
    entry.bytes = bytes
    attachedCopy = null
    // Its inode is unlinked by the rename below; nothing is left to remove.
    void files.retire(old, async () => undefined).catch((err: unknown) => host.logger.warn({ event: 'reprice_retire_failed', segment: id, err }, 'could not detach the replaced archive'))
  } catch (err) {
    if (attachedCopy) await files.detachAlias(attachedCopy.alias).catch(() => undefined)
    throw err
  } finally {
    await files.unpin(old)
  }
  await publish(host, entry)
}

/** Renames the committed copy over the archive, moves readers to the final name and forgets the intent. */
async function publish(host: RepriceHost, entry: SegmentEntry): Promise<void> {
  const { fs, files, catalog, dataDir } = host
  const id = entry.id
  const archive = segmentPath(dataDir, 'archive', id)
  await host.beforeStep?.('publish', id)
  await fs.rename(`${archive}.reprice`, archive)
  await fs.syncDir(tierDir(dataDir, 'archive'))
  const final = await files.attach(id, archive)
  const interim = entry.file!
  entry.file = final
  void files.retire(interim, async () => undefined).catch((err: unknown) => host.logger.warn({ event: 'reprice_retire_failed', segment: id, err }, 'could not detach the interim copy'))
  await catalog.repriceDone(id)
}

/**
 * Start-up: every committed reprice is finished (its copy renamed over the
 * archive), every uncommitted copy removed. Runs before the archives are
 * attached (recover.ts).
 */
export async function finishReprices(dataDir: string, fs: FileSystem, catalog: Catalog, logger: Logger): Promise<void> {
  const dir = tierDir(dataDir, 'archive')
  const intents = new Set(await catalog.repriceIntents())
  for (const name of await fs.list(dir)) {
    const parsed = parseSegmentFileName(name)
    if (!parsed || !parsed.suffix.startsWith('.reprice')) continue
    const file = path.join(dir, name)
    if (parsed.suffix === '.reprice' && intents.has(parsed.id)) {
      await fs.rename(file, segmentPath(dataDir, 'archive', parsed.id))
      await fs.syncDir(dir)
      logger.info({ event: 'recover_reprice_published', segment: parsed.id }, 'finished a committed reprice')
    } else {
      await removeDurably(fs, file)
      if (parsed.suffix === '.reprice') logger.warn({ event: 'recover_reprice_discarded', segment: parsed.id }, 'removed a reprice copy the catalog never recorded')
    }
  }
  for (const id of intents) await catalog.repriceDone(id)
}
