// One retention run and the figures of every run so far. The store owns the
// scheduler (tick) and shares one run at a time; this unit does the steps.
//
// Invariants:
// - One run at a time (`current`); a second caller shares the run in flight.
// - Each step is safe to stop after (shutdown) and to fail alone: the next run
//   picks up what is left, and the failure is in the report's errors.
// - The only step that takes the write gate is the expired active segment's
//   rollover (through the host's rollover, which holds it for the pointer
//   swap only, after re-checking under it that no append made it current).
// - Deleting archived segments and expiring detail files never takes the gate:
//   the catalog decides first (durably), then the entry leaves the segment map
//   and the dedupe index at once, and its files are removed once the last
//   reader unpins them (files.ts, pins.ts).

import path from 'node:path'
import type { Clock } from '../clock.js'
import { Errors } from '../errors.js'
import type { Logger } from '../log.js'
import type { Catalog } from './catalog.js'
import type { AttachedFile, FileTier } from './files.js'
import { removeDurably, type FileSystem } from './fsops.js'
import type { Dedupe } from './dedupe.js'
import { parseSegmentFileName, tierDir } from './layout.js'
import { roundMs, type RetentionReport, type RetentionTrigger, type RolloverReport } from './reports.js'
import type { Cutoffs } from './retention.js'
import type { SegmentEntry } from './tiers.js'

/** Most segments deleted in one catalog transaction. */
const MAX_DELETE_BATCH = 1000

/** What a retention run needs of the store. */
export interface RetentionHost {
  readonly dataDir: string
  readonly clock: Clock
  readonly logger: Logger
  readonly fs: FileSystem
  readonly files: FileTier
  readonly catalog: Catalog
  /** The dedupe index: a deleted segment's ids leave it at once. */
  readonly index: Pick<Dedupe, 'dropSegment' | 'purgeDropped'>
  /** Every retained segment by id (the run removes deleted ones). */
  readonly segments: Map<number, SegmentEntry>
  active(): SegmentEntry
  /** True once the store is draining or closed: steps not yet begun are skipped. */
  stopping(): boolean
  cutoffs(nowMs?: number): Cutoffs
  rollover(reason: string, force: boolean, onlyIf: (active: SegmentEntry) => boolean): Promise<RolloverReport>
  pendingEntries(): SegmentEntry[]
  kickSealer(): void
  /** Runs the run holding the store's maintenance lock, shared (a backup takes it whole to see the closed files and the catalog still). */
  exclusive<T>(fn: () => Promise<T>): Promise<T>
}

export class RetentionRunner {
  runs = 0
  errors = 0
  segmentsDeleted = 0
  /** Bytes freed, counting files whose removal waited for a reader once they are gone. */
  bytesFreed = 0
  last: RetentionReport | null = null
  private current: Promise<RetentionReport> | null = null

  constructor(private readonly host: RetentionHost) {}

  /** The run in flight, if any (settle and close wait for it). */
  inFlight(): Promise<RetentionReport> | null {
    return this.current
  }

  /**
   * Runs retention now (the scheduler calls it every retentionIntervalMs; the
   * admin route on demand). A run already in flight is shared, never doubled.
   */
  run(trigger: RetentionTrigger = 'admin'): Promise<RetentionReport> {
    if (this.current) return this.current
    if (this.host.stopping()) return Promise.reject(new Errors.Draining())
    const run = this.host.exclusive(() => this.runRetention(trigger)).finally(() => {
      this.current = null
    })
    this.current = run
    return run
  }

  private async runRetention(trigger: RetentionTrigger): Promise<RetentionReport> {
    const started = performance.now()
    const nowMs = this.host.clock.nowMs()
    const c = this.host.cutoffs(nowMs)
    const iso = (us: number) => new Date(Math.floor(us / 1000)).toISOString()
    const r: RetentionReport = {
      trigger,
      started_at: new Date(nowMs).toISOString(),
      cutoffs: { events: iso(c.eventsUs), details: iso(c.detailsUs), rollups: iso(c.rollupsUs) },
      active: { action: 'kept', segment_id: this.host.active().id, expired_events: 0 },
      segments_deleted: [],
      events_deleted: 0,
      files_deleted: 0,
      files_deferred: 0,
      bytes_freed: 0,
      details_expired: [],
      detail_rows_expired: 0,
      rollup_rows_deleted: 0,
      index_entries_removed: 0,
      awaiting_seal: [],
      gate_held_ms: 0,
      duration_ms: 0,
      errors: [],
    }
    // Each step is safe to stop after (shutdown) and to fail alone: the next run picks up what is left.
    const step = async (name: string, fn: () => Promise<void>): Promise<void> => {
      if (this.host.stopping()) {
        r.errors.push(`${name}: skipped, shutting down`)
        return
      }
      try {
        await fn()
      } catch (err) {
        r.errors.push(`${name}: ${err instanceof Error ? err.message.slice(0, 300) : String(err)}`)
        this.host.logger.error({ event: 'retention_step_failed', step: name, err }, 'a retention step failed; the next run retries it')
      }
    }
    await step('active', () => this.expireActive(c, r))
    await step('segments', () => this.deleteExpiredSegments(c, nowMs, r))
    await step('details', () => this.expireDetailFiles(c, r))
    await step('rollups', async () => {
      r.rollup_rows_deleted = await this.host.catalog.deleteRollupsBefore(c.rollupsUs)
    })
    await step('index', async () => {
      r.index_entries_removed = await this.host.index.purgeDropped()
    })
    await step('sweep', () => this.sweep(c, r))
    r.awaiting_seal = this.host.pendingEntries()
      .filter((e) => e.maxTsUs === null || e.maxTsUs < c.eventsUs)
      .map((e) => e.id)
    this.host.kickSealer()
    r.gate_held_ms = roundMs(r.gate_held_ms)
    r.duration_ms = roundMs(performance.now() - started)
    this.runs++
    this.errors += r.errors.length
    this.segmentsDeleted += r.segments_deleted.length
    this.bytesFreed += r.bytes_freed
    this.last = r
    this.host.logger[r.errors.length > 0 ? 'warn' : 'info']({ event: 'retention', ...r }, 'retention run finished')
    return r
  }

  /**
   * An active segment whose rows have all expired is rolled over (never
   * discarded: sealing gives its rows their rollups, so billing totals keep
   * them; the archive is deleted by a later run). Whether every row has
   * expired is decided again under the gate, where no append can interleave.
   * A mixed segment is left alone: its expired rows are invisible, and age or
   * size rollover moves it on.
   */
  private async expireActive(c: Cutoffs, r: RetentionReport): Promise<void> {
    const a = this.host.active()
    const expired = (e: SegmentEntry) => e.rowCount > 0 && e.maxTsUs !== null && e.maxTsUs < c.eventsUs
    if (!expired(a)) return
    const rolled = await this.host.rollover('retention', false, expired)
    r.gate_held_ms += rolled.gate_held_ms
    if (rolled.rolled && rolled.segment_id === a.id) {
      r.active = { action: 'rolled_over', segment_id: a.id, expired_events: a.rowCount }
    } else {
      r.active = { action: 'kept', segment_id: this.host.active().id, expired_events: 0, note: 'it took current events while retention waited for the write gate' }
    }
  }

  /**
   * Archived segments whose newest event has expired: the catalog records the
   * deletion first (start-up finishes it after a crash), then the segment
   * leaves every new snapshot, probe and the index at once, and its files go
   * when the last reader unpins them. Pending segments wait for their seal
   * (their rollups) first. No gate: appends never reach closed segments.
   */
  private async deleteExpiredSegments(c: Cutoffs, nowMs: number, r: RetentionReport): Promise<void> {
    const all = [...this.host.segments.values()].filter((e) => e.state === 'archived' && (e.maxTsUs === null || e.maxTsUs < c.eventsUs)).sort((a, b) => a.id - b.id)
    const removals: Array<Promise<void>> = []
    // One catalog transaction per batch: a durable commit per segment costs ~25 ms each.
    for (let at = 0; at < all.length; at += MAX_DELETE_BATCH) {
      if (this.host.stopping()) break
      const batch = all.slice(at, at + MAX_DELETE_BATCH)
      await this.host.catalog.markDeleted(
        batch.map((e) => e.id),
        nowMs,
      )
      const sizes = await Promise.all(batch.flatMap((e) => [e.file, e.detailsFile]).map((f) => (f ? this.host.fs.size(f.path) : null)))
      batch.forEach((e, i) => {
        this.host.segments.delete(e.id)
        this.host.index.dropSegment(e.id)
        r.segments_deleted.push(e.id)
        r.events_deleted += e.rowCount
        const files = [e.file, e.detailsFile]
        e.file = null
        e.detailsFile = null
        files.forEach((f, k) => {
          if (f) removals.push(this.retireFile(f, sizes[2 * i + k] ?? 0, r))
        })
      })
    }
    // The rows stay as markers until the rollup window passes them (sweep); a failed removal is retried there too.
    void Promise.all(removals).catch((err: unknown) =>
      this.host.logger.warn({ event: 'retention_remove_failed', err }, 'could not remove a deleted segment file; the next run retries'),
    )
  }

  /** Detail files of archived segments whose newest event is past the detail window. */
  private async expireDetailFiles(c: Cutoffs, r: RetentionReport): Promise<void> {
    for (const e of [...this.host.segments.values()].sort((a, b) => a.id - b.id)) {
      if (this.host.stopping()) return
      if (e.state !== 'archived' || e.detailsFile === null || e.maxTsUs === null || e.maxTsUs >= c.detailsUs) continue
      await this.host.catalog.expireDetails(e.id)
      const file = e.detailsFile
      e.detailsFile = null
      e.details = 'expired'
      r.details_expired.push(e.id)
      r.detail_rows_expired += e.stats?.detailCount ?? 0
      void this.retireFile(file, (await this.host.fs.size(file.path)) ?? 0, r).catch((err: unknown) =>
        this.host.logger.warn({ event: 'retention_remove_failed', segment: e.id, err }, 'could not remove an expired detail file; the next run retries'),
      )
    }
  }

  /**
   * Removes an attached file once no reader pins it (at once when none does),
   * counted in `r` as deleted now or deferred. Resolves when it is gone.
   */
  private retireFile(file: AttachedFile, bytes: number, r: RetentionReport): Promise<void> {
    const deferred = file.pins.held > 0
    if (deferred) r.files_deferred++
    else {
      r.files_deleted++
      r.bytes_freed += bytes
    }
    return new Promise<void>((resolve, reject) => {
      // Runs when the last reader unpins (or now): it must not throw into that reader.
      const remove = async (): Promise<void> => {
        try {
          await removeDurably(this.host.fs, file.path)
          if (deferred) this.bytesFreed += bytes
          resolve()
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)))
        }
      }
      this.host.files.retire(file, remove).catch((err: unknown) => reject(err instanceof Error ? err : new Error(String(err))))
    })
  }

  /**
   * Files nothing references: those of segments the catalog calls deleted (a
   * removal that failed, or was cut short by a crash the start-up did not
   * see), and expired detail files. Only ids the catalog has settled are
   * touched, and never one still in `segments` (so never a file the sealer is
   * writing or publishing) nor one whose removal waits for a reader.
   */
  private async sweep(c: Cutoffs, r: RetentionReport): Promise<void> {
    const records = new Map((await this.host.catalog.list()).map((rec) => [rec.id, rec]))
    const waiting = new Set<number>()
    for (const tier of ['pending', 'archive'] as const) {
      const dir = tierDir(this.host.dataDir, tier)
      for (const name of await this.host.fs.list(dir)) {
        const parsed = parseSegmentFileName(name)
        if (!parsed) continue
        const file = path.join(dir, name)
        const rec = records.get(parsed.id)
        const entry = this.host.segments.get(parsed.id)
        if (this.host.files.isRetiring(file.replace(/\.wal$/, ''))) {
          waiting.add(parsed.id)
          continue
        }
        const deletedSegment = rec?.state === 'deleted' && entry === undefined
        const expiredDetails =
          parsed.kind === 'details' && rec?.state === 'archived' && (rec.details === 'expired' || rec.details === 'none') && entry !== undefined && entry.detailsFile === null
        if (!deletedSegment && !expiredDetails) continue
        r.bytes_freed += (await this.host.fs.size(file)) ?? 0
        await this.host.fs.remove(file)
        await this.host.fs.syncDir(dir)
        r.files_deleted++
        this.host.logger.info({ event: 'retention_swept', file }, 'removed a file nothing references')
      }
    }
    // A deleted segment's row stays while its rollups may: were a stray file of it
    // ever found again (a pending copy a reader kept), start-up removes it instead
    // of sealing it a second time and counting its rollups twice.
    const settled: number[] = []
    for (const rec of records.values()) {
      const maxTsUs = rec.stats?.maxTsUs ?? null
      const rollupsGone = maxTsUs === null || maxTsUs < c.rollupsUs
      if (rec.state === 'deleted' && rollupsGone && !waiting.has(rec.id) && !this.host.segments.has(rec.id)) settled.push(rec.id)
    }
    await this.host.catalog.forgetDeleted(settled)
  }
}
