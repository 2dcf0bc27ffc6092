// Sealing: a pending segment becomes an archived one, as a crash-safe state
// machine of idempotent steps.
//
//   copy      write archive/seg-N.duckdb.tmp: every event, sorted by (ts, event_id),
//             and archive/seg-N.details.duckdb.tmp: the detail payloads (unless
//             there are none, or all have expired already)
//   sync      fsync the temp files
//   validate  row count, id count, time bounds, token and cost sums of the copy
//             equal the pending file's (and ids are unique); so does the detail count
//   publish   rename the temp files (details first), fsync the directory
//   record    catalog.archive: the segment's row, dims and rollups, one transaction
//   swap      readers move to the archive; the pending file is retired
//   index     the archive's ids become a durable id run (dedupe.ts, idruns.ts)
//             and leave the live dedupe index; a failure (or crash) leaves them
//             there, and the run is written later (or at start-up)
//   cleanup   once no reader pins it: DETACH and delete the pending file
//
// Invariants:
// - Until `record` commits, the pending file is the segment's truth and any
//   archive output is disposable (start-up deletes it and sealing starts
//   again); after it, the archive is the truth and the pending file disposable.
// - `record` is applied at most once per segment (the catalog refuses a
//   second one), so rollups are never double-counted on a retry.
// - One segment at a time; a failure is recorded on the segment with a retry
//   time (exponential backoff) and shown in status; nothing gives up silently.
// - Never takes the write gate: the files it touches are closed to writers.

import type { Clock } from '../clock.js'
import type { Logger } from '../log.js'
import type { Catalog } from './catalog.js'
import type { FileTier } from './files.js'
import { ident, tableOf } from './relations.js'
import { removeDurably, type FileSystem } from './fsops.js'
import { detailsPath, relativeSegmentPath, segmentPath, tierDir } from './layout.js'
import { SEGMENT_DDL } from './schema.js'
import { computeStats, statsDifference } from './stats.js'
import type { StoreHooks } from './options.js'
import type { SealStep, SegmentEntry } from './tiers.js'


export interface SealerOptions {
  dataDir: string
  fs: FileSystem
  files: FileTier
  catalog: Catalog
  clock: Clock
  logger: Logger
  retryMs: number
  retryMaxMs: number
  /** Detail payloads of events before this are expired: a segment holding only those keeps no detail file. */
  detailsCutoffUs: () => number
  /** Runs one seal holding the store's maintenance lock, shared (a backup takes it whole to see the closed files and the catalog still). */
  exclusive<T>(fn: () => Promise<T>): Promise<T>
  hooks?: StoreHooks
  /** The seal's index step, after its swap (dedupe.ts): the archived segment's ids become a durable id run. */
  indexPart?: (entry: SegmentEntry) => Promise<void>
  /** Retries the index steps that failed (called after each run). */
  retryIndexParts?: () => Promise<void>
}

class Stopping extends Error {}

export class Sealer {
  sealedCount = 0
  failureCount = 0
  private running: Promise<void> | null = null
  private again: SegmentEntry[] | null = null
  private stopping = false

  constructor(private readonly o: SealerOptions) {}

  /** Seals the due entries in the background (entries waiting for a retry are skipped). */
  kick(entries: SegmentEntry[]): void {
    if (this.stopping) return
    if (this.running) {
      this.again = entries
      return
    }
    this.running = this.run(entries, false).finally(() => {
      this.running = null
      const next = this.again
      this.again = null
      if (next) this.kick(next)
    })
  }

  async idle(): Promise<void> {
    while (this.running) await this.running.catch(() => undefined)
  }

  async stop(): Promise<void> {
    this.stopping = true
    await this.idle()
  }

  private async run(entries: SegmentEntry[], force: boolean): Promise<void> {
    for (const entry of entries) {
      if (this.stopping) return
      if (entry.state !== 'pending' || !entry.file) continue
      const due = entry.seal.nextAttemptMs
      if (!force && due !== null && due > this.o.clock.nowMs()) continue
      try {
        await this.o.exclusive(() => this.seal(entry))
        this.sealedCount++
      } catch (err) {
        if (err instanceof Stopping) return
        this.failureCount++
        const attempts = ++entry.seal.attempts
        const delayMs = Math.min(this.o.retryMaxMs, this.o.retryMs * 2 ** Math.min(30, attempts - 1))
        entry.seal.lastError = err instanceof Error ? err.message.slice(0, 300) : String(err)
        entry.seal.nextAttemptMs = this.o.clock.nowMs() + delayMs
        this.o.logger.error({ event: 'seal_failed', segment: entry.id, attempts, retryInMs: delayMs, err }, 'sealing failed; will retry')
      }
    }
    if (!this.stopping) await this.o.exclusive(async () => this.o.retryIndexParts?.())
  }

  private async step(step: SealStep, id: number): Promise<void> {
    if (this.stopping) throw new Stopping('sealer stopping')
    await this.o.hooks?.beforeSealStep?.(step, id)
    this.timings?.mark(step)
  }

  /** Milliseconds per step of the seal in progress, for its log line. */
  private timings: StepTimer | null = null

  private async seal(entry: SegmentEntry): Promise<void> {
    const { fs, files, catalog, dataDir } = this.o
    const started = this.o.clock.nowMs()
    this.timings = new StepTimer()
    const id = entry.id
    const source = entry.file!
    const archive = segmentPath(dataDir, 'archive', id)
    const details = detailsPath(dataDir, id)
    const tmp = `${archive}.tmp`
    const detailsTmp = `${details}.tmp`
    const out = `seal_out_${id}`
    const outDetails = `seal_details_${id}`
    const conn = files.sealConn
    const src = ident(source.alias)

    files.pin(source)
    /** Until the renames, the temp files are this attempt's alone: a failure removes them (a retry writes them again). */
    let renamed = false
    let published: Awaited<ReturnType<FileTier['attach']>> | null = null
    let publishedDetails: Awaited<ReturnType<FileTier['attach']>> | null = null
    try {
      await this.step('copy', id)
      const expected = await computeStats(conn, source.alias)
      if (expected.idCount !== expected.rowCount) {
        throw new Error(`segment ${id} holds ${expected.rowCount} rows but ${expected.idCount} distinct ids: refusing to seal a segment with repeated ids`)
      }
      const keepDetails = expected.detailCount > 0 && expected.maxTsUs !== null && expected.maxTsUs >= this.o.detailsCutoffUs()
      await this.writeCopy(out, tmp, ['events', 'segment_meta'], async (o) => {
        await conn.run(`INSERT INTO ${o}.events SELECT * FROM ${tableOf(source.alias, 'events')} ORDER BY ts, event_id`)
        await conn.run(`INSERT INTO ${o}.segment_meta SELECT * FROM ${src}.segment_meta`)
        await conn.run(`INSERT INTO ${o}.segment_meta VALUES ('sealed_ms', '${this.o.clock.nowMs()}')`)
      })
      if (keepDetails) {
        await this.writeCopy(outDetails, detailsTmp, ['event_details'], async (o) => {
          await conn.run(`INSERT INTO ${o}.event_details SELECT * FROM ${src}.event_details ORDER BY ts, event_id`)
        })
      } else {
        // A stale output of an earlier attempt that kept details.
        await fs.remove(detailsTmp)
        await fs.remove(`${detailsTmp}.wal`)
      }

      await this.step('sync', id)
      await fs.syncFile(tmp)
      if (keepDetails) await fs.syncFile(detailsTmp)

      await this.step('validate', id)
      const check = await files.attach(id, tmp)
      const checkDetails = keepDetails ? await files.attach(id, detailsTmp) : null
      try {
        const actual = await computeStats(conn, check.alias, checkDetails?.alias ?? false)
        const diff = statsDifference({ ...expected, detailCount: keepDetails ? expected.detailCount : 0 }, actual)
        if (diff !== null) throw new Error(`sealed copy of segment ${id} differs from its source: ${diff}`)
      } finally {
        await files.detachAlias(check.alias)
        if (checkDetails) await files.detachAlias(checkDetails.alias)
      }

      await this.step('publish', id)
      // Details first: an events archive on disk always has its details beside it.
      if (keepDetails) await fs.rename(detailsTmp, details)
      await fs.rename(tmp, archive)
      renamed = true
      await fs.syncDir(tierDir(dataDir, 'archive'))

      await this.step('record', id)
      published = await files.attach(id, archive)
      if (keepDetails) publishedDetails = await files.attach(id, details)
      const bytes = (await fs.size(archive)) ?? 0
      const recorded = await catalog.archive(
        { id, path: relativeSegmentPath('archive', id), sealedMs: this.o.clock.nowMs(), bytes, stats: expected, details: keepDetails ? 'file' : 'none' },
        published.alias,
      )
      if (!recorded) this.o.logger.warn({ event: 'seal_already_recorded', segment: id }, 'catalog already had this segment archived; rollups not applied again')

      await this.step('swap', id)
      entry.file = published
      entry.detailsFile = publishedDetails
      entry.details = keepDetails ? 'file' : 'none'
      published = null
      publishedDetails = null
      entry.state = 'archived'
      entry.stats = expected
      entry.bytes = bytes
      entry.dims = (await catalog.dims(id)).get(id) ?? null
      entry.seal = { attempts: entry.seal.attempts, lastError: null, nextAttemptMs: null }
    } catch (err) {
      if (published) await files.detachAlias(published.alias).catch(() => undefined)
      if (publishedDetails) await files.detachAlias(publishedDetails.alias).catch(() => undefined)
      // A copy that failed midway (ENOSPC, say) is not left to fill the disk until the next start-up.
      if (!renamed) {
        for (const f of [tmp, `${tmp}.wal`, detailsTmp, `${detailsTmp}.wal`]) {
          await fs.remove(f).catch((e: unknown) => this.o.logger.warn({ event: 'seal_temp_left', segment: id, file: f, err: e }, 'could not remove a temp file of a failed seal; start-up will'))
        }
      }
      throw err
    } finally {
      await files.unpin(source)
    }

    // From here on the archive is the truth: a failure only leaves a pending
    // file that start-up removes, or ids still in the live dedupe index.
    try {
      await this.o.indexPart?.(entry)
    } catch (err) {
      this.o.logger.warn({ event: 'seal_index_deferred', segment: id, err }, 'the id run of the sealed segment is not written yet; its ids stay in the live dedupe index')
    }
    const pendingFile = segmentPath(dataDir, 'pending', id)
    try {
      await this.step('cleanup', id)
    } catch (err) {
      if (!(err instanceof Stopping)) this.o.logger.warn({ event: 'seal_cleanup_deferred', segment: id, err }, 'pending file left for start-up to remove')
      return
    }
    await files
      .retire(source, async () => {
        try {
          await removeDurably(fs, pendingFile)
        } catch (err) {
          this.o.logger.warn({ event: 'seal_cleanup_failed', segment: id, err }, 'could not remove the pending file; start-up will')
        }
      })
      .catch((err: unknown) => this.o.logger.warn({ event: 'seal_cleanup_failed', segment: id, err }, 'could not detach the pending file; start-up will remove it'))
    this.o.logger.info({ event: 'sealed', segment: id, rows: entry.rowCount, bytes: entry.bytes, ms: this.o.clock.nowMs() - started, steps_ms: this.timings.done() }, 'segment sealed')
  }

  /** Writes `tables` into a fresh file at `file` (attached as `alias` while `fill` runs) and checkpoints it. */
  private async writeCopy(alias: string, file: string, tables: string[], fill: (quoted: string) => Promise<void>): Promise<void> {
    const { fs, files } = this.o
    const conn = files.sealConn
    const quoted = ident(alias)
    await files.detachAlias(alias)
    await fs.remove(file)
    await fs.remove(`${file}.wal`)
    await files.attachWritable(alias, file)
    try {
      for (const ddl of SEGMENT_DDL) {
        const table = /CREATE TABLE IF NOT EXISTS (\w+)/.exec(ddl)?.[1]
        if (table && tables.includes(table)) await conn.run(ddl.replace('CREATE TABLE IF NOT EXISTS ', `CREATE TABLE IF NOT EXISTS ${quoted}.`))
      }
      await fill(quoted)
      await conn.run(`CHECKPOINT ${quoted}`)
    } finally {
      await files.detachAlias(alias)
    }
  }
}

/** Wall time of each seal step, from its start to the next one's. */
class StepTimer {
  private readonly ms: Partial<Record<SealStep, number>> = {}
  private current: { step: SealStep; at: number } | null = null

  mark(step: SealStep): void {
    const now = performance.now()
    if (this.current) this.ms[this.current.step] = Math.round(now - this.current.at)
    this.current = { step, at: now }
  }

  done(): Partial<Record<SealStep, number>> {
    this.mark('cleanup')
    return this.ms
  }
}
