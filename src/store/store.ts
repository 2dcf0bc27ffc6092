// Over 500 lines: the store's wiring of its units and its lifecycle are one
// class (ARCHITECTURE.md, "The store's units"); each job lives in its unit.
//
// The store: one object the service holds, composed of units that each keep
// one job (ARCHITECTURE.md): admission (admission.ts), the commit queue and
// group commit (commit.ts), dedupe across every tier (dedupe.ts), the write
// gate (gate.ts), the tiers (tiers.ts), rollover (rollover.ts), the sealer
// (sealer.ts), retention (retention-run.ts), read snapshots (snapshot.ts),
// re-pricing (reprice.ts) and start-up recovery (recover.ts). This file opens
// them, wires them together, owns the lifecycle (draining, closed, failed) and
// the periodic tick.
//
// Invariants:
// - The write gate (one async-mutex Mutex) guards every mutation of the active
//   segment: appends, the swap of a rollover, shutdown. Lock order: the gate
//   first, then anything else (retireLock, catalog, FileTier admin); nothing
//   awaits the gate while holding another lock. Reads never take it.
// - An append is answered only after the transaction holding its events has
//   committed (commit.ts); dedupe is exact across every tier (dedupe.ts).
// - Every retained segment is in the tiers from the moment its file exists
//   until retention drops it, in exactly one state (tiers.ts); reads pin what
//   they read (snapshot.ts).
// - Rollover is never concurrent with itself, the sealer handles one segment at
//   a time, retention runs one run at a time; none of them is a lock.
// - After a write fails in a way that may have left the database invalidated
//   the store fails stop (admission.ts): it refuses writes and reports unready.
// - The observer (the metrics plugin's) hears of commits, answered requests and
//   each use of the gate after the fact, synchronously; it cannot change what
//   the store does (a throw is logged and ignored).

import path from 'node:path'
import { Semaphore } from 'async-mutex'
import { Errors } from '../errors.js'
import { AnswerCache } from './answers.js'
import { Admission } from './admission.js'
import { backup, type BackupExtras } from './backup.js'
import { DuckDBCatalog, type Catalog } from './catalog.js'
import { CommitQueue } from './commit.js'
import { Dedupe } from './dedupe.js'
import { FileTier } from './files.js'
import { WriteGate, type GateHeld, type GateTask } from './gate.js'
import { nodeFileSystem, type FileSystem } from './fsops.js'
import { CATALOG_FILE, indexDir, tierDir, TIERS } from './layout.js'
import { STORE_DEFAULTS, type StoreOptions } from './options.js'
import { outcomeOf, outcomesOf, type AppendOutcome, type AppendRequest } from './outcomes.js'
import { recover } from './recover.js'
import { reprice, type RepriceHost, type RepriceReport } from './reprice.js'
import type { PriceTable } from '../pricing/table.js'
import type { PricingMode } from '../pricing/apply.js'
import type { BackupReport, RetentionReport, RetentionTrigger, RolloverReport, StoreObserver, StoreStats, VerifyReport } from './reports.js'
import { cutoffsAt, DEFAULT_WINDOWS, type Cutoffs, type RetentionWindows } from './retention.js'
import { RetentionRunner } from './retention-run.js'
import { Roller } from './rollover.js'
import { Sealer } from './sealer.js'
import { LIVE_ROLLUP_EVERY_MS, LIVE_ROLLUP_EVERY_ROWS, type Segment } from './segment.js'
import { Snapshots, type DuckDBMemory, type Snapshot } from './snapshot.js'
import { Tiers, type SegmentEntry, type SegmentInfo } from './tiers.js'
import { Verifier } from './verify.js'

/** The writer, valid only while the gate that produced it is held (gate.ts). */
export type GatedWriter = GateHeld<Segment>

export class Store {
  /** Catalog answers kept for repeated questions, by catalog generation (queries read through it). */
  readonly answers: AnswerCache
  private readonly gate: WriteGate<Segment>
  private readonly tiers: Tiers
  private readonly admission: Admission
  private readonly dedupe: Dedupe
  private readonly commits: CommitQueue
  private readonly roller: Roller
  private readonly sealer: Sealer
  private readonly snapshots: Snapshots
  private readonly retentionRunner: RetentionRunner
  private readonly verifier: Verifier
  /** Shared (weight 1) by the sealer and retention, whole (weight 2) for a backup. */
  private readonly maintenance = new Semaphore(2)
  private backingUp: Promise<BackupReport> | null = null
  private repricing: Promise<RepriceReport> | null = null
  private readonly rolloverAgeMs: number
  private readonly windows: RetentionWindows
  private readonly retentionIntervalMs: number
  private nextRetentionMs: number
  private timer: NodeJS.Timeout | null = null
  private draining = false
  private closed = false
  private observer: StoreObserver | null = null

  private constructor(
    private readonly opts: StoreOptions,
    private readonly fs: FileSystem,
    private readonly files: FileTier,
    readonly catalog: Catalog,
    tiers: Tiers,
    gate: WriteGate<Segment>,
    dedupe: Dedupe,
  ) {
    const d = STORE_DEFAULTS
    this.tiers = tiers
    this.gate = gate
    this.dedupe = dedupe
    this.answers = new AnswerCache(opts.answerCacheRows ?? d.answerCacheRows)
    this.rolloverAgeMs = opts.rolloverAgeMs ?? d.rolloverAgeMs
    this.windows = opts.retention ?? DEFAULT_WINDOWS
    this.retentionIntervalMs = opts.retentionIntervalMs ?? d.retentionIntervalMs
    // Soon after start-up, then every interval: a node restarted more often than
    // the interval still runs retention.
    this.nextRetentionMs = this.retentionIntervalMs === 0 ? Infinity : opts.clock.nowMs() + Math.min(this.retentionIntervalMs, 60_000)
    const rolloverBytes = opts.rolloverBytes ?? d.rolloverBytes
    this.admission = new Admission(
      {
        dataDir: opts.dataDir,
        fs,
        logger: opts.logger,
        minFreeDiskBytes: opts.minFreeDiskBytes ?? d.minFreeDiskBytes,
        maxPendingSegments: opts.maxPendingSegments ?? d.maxPendingSegments,
        maxActiveBytes: opts.maxActiveBytes ?? d.maxActiveRollovers * rolloverBytes,
        diskCheckMs: opts.diskCheckMs ?? d.diskCheckMs,
      },
      { pendingCount: () => tiers.pendingCount(), activeBytes: () => tiers.active.bytes ?? 0 },
    )
    this.sealer = new Sealer({
      dataDir: opts.dataDir,
      fs,
      files,
      catalog,
      clock: opts.clock,
      logger: opts.logger,
      retryMs: opts.sealRetryMs ?? d.sealRetryMs,
      retryMaxMs: opts.sealRetryMaxMs ?? d.sealRetryMaxMs,
      detailsCutoffUs: () => this.cutoffs().detailsUs,
      exclusive: (fn) => this.maintenance.runExclusive(fn, 1),
      hooks: opts.hooks,
      ...{ indexPart: (entry: SegmentEntry) => dedupe.indexPart(entry), retryIndexParts: () => dedupe.retryIndexParts() },
    })
    this.roller = new Roller({
      opts,
      fs,
      tiers,
      gate,
      catalog,
      files,
      dedupe,
      rolloverBytes,
      refusal: () => this.writeRefusal(),
      failStop: (err) => this.admission.noteWriteFailure(err, true, 'retiring a rolled-over segment failed'),
      measured: () => this.admission.committed(),
      kickSealer: () => this.kickSealer(),
    })
    this.commits = new CommitQueue(
      { maxQueueEvents: opts.maxQueueEvents, maxQueueBytes: opts.maxQueueBytes, maxCommitEvents: opts.maxCommitEvents, logger: opts.logger, nowMs: () => opts.clock.nowMs(), hooks: opts.hooks },
      {
        gate,
        tiers,
        dedupe,
        eventsCutoffUs: () => this.cutoffs().eventsUs,
        failure: () => this.admission.failure,
        writeFailed: (err) => {
          this.notify((o) => o.commitFailure?.())
          this.admission.noteWriteFailure(err, false, 'group commit failed; its requests are answered 503 (stored or not: a WAL record DuckDB completed is replayed at the next start)')
        },
        committed: (c) => {
          this.refreshLiveRollups(opts.hooks?.liveRollupEveryRows ?? LIVE_ROLLUP_EVERY_ROWS, opts.hooks?.liveRollupEveryMs ?? LIVE_ROLLUP_EVERY_MS)
          this.notify((o) => o.commit?.(c))
        },
        checkSize: () => this.roller.checkSize(),
        measuring: () => this.roller.measuring(),
      },
    )
    this.snapshots = new Snapshots({
      tiers,
      files,
      catalog,
      maxConcurrentQueries: opts.maxConcurrentQueries,
      queryTimeoutMs: opts.queryTimeoutMs ?? d.queryTimeoutMs,
      cutoffs: () => this.cutoffs(),
      closed: () => this.closed,
      failure: () => this.admission.failure,
    })
    this.retentionRunner = new RetentionRunner({
      dataDir: opts.dataDir,
      clock: opts.clock,
      logger: opts.logger,
      fs,
      files,
      catalog,
      index: dedupe,
      segments: tiers.segments,
      active: () => tiers.active,
      stopping: () => this.draining || this.closed,
      cutoffs: (nowMs) => this.cutoffs(nowMs),
      rollover: (reason, force, onlyIf) => this.rollover(reason, force, onlyIf),
      pendingEntries: () => tiers.pendingFiles(),
      kickSealer: () => this.kickSealer(),
      exclusive: (fn) => this.maintenance.runExclusive(fn, 1),
    })
    this.verifier = new Verifier(
      { snapshot: (fn) => this.snapshot(fn), cutoffs: () => this.cutoffs(), catalog },
      { intervalMs: opts.verifyIntervalMs ?? d.verifyIntervalMs, windowMs: opts.verifyWindowMs ?? d.verifyWindowMs, logger: opts.logger, nowMs: () => opts.clock.nowMs() },
    )
  }

  static async open(opts: StoreOptions): Promise<Store> {
    const fs = opts.fs ?? nodeFileSystem
    const started = opts.clock.nowMs()
    for (const tier of TIERS) await fs.mkdirp(tierDir(opts.dataDir, tier))
    const files = await FileTier.open({
      catalogPath: path.join(opts.dataDir, CATALOG_FILE),
      // The closed tiers get half the DuckDB budget; the active segment the other half.
      memoryBytes: Math.floor(opts.duckdbMemoryBytes / 2),
      threads: opts.duckdbThreads,
      queryConnections: opts.maxConcurrentQueries,
    })
    try {
      const catalog = await DuckDBCatalog.open(files.catalogConn)
      const { entries, nextId } = await recover(opts, fs, files, catalog)
      const tiers = new Tiers(entries, nextId)
      const dedupe = Dedupe.create(tiers, files, { indexDir: indexDir(opts.dataDir), fs, logger: opts.logger, hooks: opts.hooks })
      let store: Store | null = null
      const gate = new WriteGate<Segment>(tiers.active.live!, opts.gateWaitMs, {
        held: (g) => store?.notify((o) => o.gate?.(g)),
        timedOut: (g) => store?.notify((o) => o.gateTimeout?.(g)),
      })
      store = new Store(opts, fs, files, catalog, tiers, gate, dedupe)
      await store.admission.sample()
      store.startTimers()
      // Until the index has loaded, appends are refused (503) and /readyz says why; then sealing starts.
      const loaded = dedupe.load().then(() => {
        opts.logger.info({ event: 'store_open', segments: entries.length, indexedEvents: dedupe.indexedEvents, indexBytes: dedupe.indexBytes, index: dedupe.indexStats(), ms: opts.clock.nowMs() - started }, 'store opened')
        store.kickSealer()
      })
      if (opts.waitForIndex ?? true) await loaded
      else loaded.catch(() => undefined)
      // A reopened active segment's events may be newer than its live rollups.
      store.refreshLiveRollups(1)
      return store
    } catch (err) {
      files.close()
      throw err
    }
  }

  /**
   * Queues the request for the next group commit and resolves once the
   * transaction holding its accepted events has committed.
   * Rejects fast with QueueFull / Overloaded / Draining / StoreFailed (nothing stored).
   */
  append(req: AppendRequest): Promise<AppendOutcome> {
    const answered = this.admit(req)
    answered.then(
      (outcome) => this.notify((o) => o.ingested?.(outcomesOf(req, outcome))),
      () => undefined,
    )
    return answered
  }

  private admit(req: AppendRequest): Promise<AppendOutcome> {
    // An atomic request with an invalid event stores nothing, whatever the store's state.
    if (req.atomic && req.rejected.length > 0) return Promise.resolve(outcomeOf(req, [], 0, false))
    const refusal = this.writeRefusal()
    if (refusal) return Promise.reject(refusal)
    if (this.dedupe.loading !== null) return Promise.reject(new Errors.Overloaded(this.dedupe.loading))
    if (req.events.ids.length === 0) return Promise.resolve(outcomeOf(req, [], 0, true))
    const refusing = this.admission.refusing()
    if (refusing.length > 0) return Promise.reject(new Errors.Overloaded(refusing.join('; ')))
    return this.commits.submit(req)
  }

  /** Why no write may start now (failed, draining, closed), or null. */
  private writeRefusal(): Error | null {
    if (this.admission.failure !== null) return new Errors.StoreFailed()
    if (this.draining || this.closed) return new Errors.Draining()
    return null
  }

  /**
   * Runs `fn` holding the write gate. The GatedWriter is revoked when `fn`
   * settles; using it afterwards throws. Waits at most gateWaitMs for the gate.
   */
  withGate<T>(fn: (writer: GatedWriter) => Promise<T>, task: GateTask = 'other'): Promise<T> {
    return this.gate.run(task, fn)
  }

  /** Sets the observer of commits and the write gate (the metrics plugin's; a later call replaces it). */
  observe(observer: StoreObserver | null): void {
    this.observer = observer
  }

  private notify(call: (o: StoreObserver) => void): void {
    if (this.observer === null) return
    try {
      call(this.observer)
    } catch (err) {
      this.opts.logger.warn({ err }, 'store observer threw; ignored')
    }
  }

  /** True while some task holds the write gate (for tests and status). */
  gateHeld(): boolean {
    return this.gate.isHeld()
  }

  /**
   * Runs a read over a pinned snapshot of every retained segment (snapshot.ts);
   * never touches the gate. At most maxConcurrentQueries run at once; past
   * `timeoutMs` (default: the query timeout) it fails with QueryTimeout.
   */
  snapshot<T>(fn: (snap: Snapshot) => Promise<T>, opts: { timeoutMs?: number } = {}): Promise<T> {
    return this.snapshots.run(fn, opts)
  }

  /** DuckDB's memory figures through the read path; null when every query slot is taken. */
  duckdbMemory(timeoutMs: number): Promise<DuckDBMemory | null> {
    return this.snapshots.duckdbMemory(timeoutMs)
  }

  /** The retention cutoffs at `nowMs` (default: now). */
  cutoffs(nowMs = this.opts.clock.nowMs()): Cutoffs {
    return cutoffsAt(nowMs, this.windows)
  }

  /** Resolves once the dedupe index has loaded (appends are refused until then); rejects if it failed to. */
  indexLoaded(): Promise<void> {
    return this.dedupe.load()
  }

  /** Segments that may hold `eventId` (from the dedupe index; confirm with a probe). */
  candidates(eventId: string): number[] {
    return this.dedupe.candidates(eventId)
  }

  ready(): { ready: boolean; reasons: string[] } {
    const reasons: string[] = []
    if (this.closed) reasons.push('store closed')
    if (this.draining) reasons.push('draining')
    if (this.admission.failure !== null) reasons.push(`store failed: ${this.admission.failure}`)
    if (this.commits.full()) reasons.push('ingest queue full')
    if (this.dedupe.loading !== null) reasons.push(this.dedupe.loading)
    reasons.push(...this.admission.refusing())
    return { ready: reasons.length === 0, reasons }
  }

  /** Why appends are refused now: low disk, seal backlog, oversized active segment (empty: admitted). */
  refusing(): string[] {
    return this.admission.refusing()
  }

  /** Whether the data directory has less free space than its floor (exports that write files check this too). */
  lowOnDisk(): boolean {
    return this.admission.lowOnDisk()
  }

  /** Reads the free space of the data directory's file system now (admission.ts). */
  sampleDisk(): Promise<void> {
    return this.admission.sample()
  }

  stats(): StoreStats {
    const c = this.commits
    const r = this.retentionRunner
    return {
      queuedRequests: c.queuedRequests,
      queuedEvents: c.queuedEvents,
      queuedBytes: c.queuedBytes,
      indexedEvents: this.dedupe.indexedEvents,
      indexBytes: this.dedupe.indexBytes,
      probesBeforeGate: this.dedupe.probesBeforeGate,
      probesUnderGate: this.dedupe.probesUnderGate,
      commits: c.commits,
      committedEvents: c.committedEvents,
      lastCommitMs: c.lastCommitMs,
      lastCommitEvents: c.lastCommitEvents,
      rollovers: this.roller.rollovers,
      lastRollover: this.roller.last,
      sealed: this.sealer.sealedCount,
      sealFailures: this.sealer.failureCount,
      retentionRuns: r.runs,
      retentionErrors: r.errors,
      retentionSegmentsDeleted: r.segmentsDeleted,
      retentionBytesFreed: r.bytesFreed,
      lastRetention: r.last,
      failed: this.admission.failure,
      draining: this.draining,
      freeDiskBytes: this.admission.freeDiskBytes,
      pendingSegments: this.tiers.pendingCount(),
      refusing: this.admission.refusing(),
      verifyRuns: this.verifier.runs,
      verifyErrors: this.verifier.errors,
      verifyMismatches: this.verifier.mismatches,
      lastVerify: this.verifier.last,
    }
  }

  /** The active segment's live rollups last read into memory for queries: the events they hold and their rows; null when none are (no query yet, or past LIVE_VIEW_MAX_ROWS). */
  async liveRollupsInMemory(): Promise<{ rolledUpEvents: number; rows: number } | null> {
    const view = (await this.tiers.active.live?.liveRollupsRead()) ?? null
    return view === null ? null : { rolledUpEvents: view.upto, rows: view.rows.length }
  }

  /** Every retained segment, oldest first. */
  segmentList(): SegmentInfo[] {
    return this.tiers.list()
  }

  /** Rolls the active segment over (rollover.ts); concurrent calls share one. `force` rolls even an empty one. */
  rollover(reason: string, force = false, onlyIf?: (active: SegmentEntry) => boolean): Promise<RolloverReport> {
    return this.roller.rollover(reason, force, onlyIf)
  }

  /**
   * Runs retention now (the scheduler calls it every retentionIntervalMs; the
   * admin route on demand). A run already in flight is shared, never doubled.
   */
  async retention(trigger: RetentionTrigger = 'admin'): Promise<RetentionReport> {
    await this.dedupe.load() // it drops deleted segments from the index
    return this.retentionRunner.run(trigger)
  }

  /**
   * Recomputes the derived figures of [fromUs, toUs) from the raw events and
   * reports what differs (verify.ts): through snapshots, never the gate. A
   * verify in flight (the scheduled one) is shared.
   */
  verify(fromUs: number, toUs: number): Promise<VerifyReport> {
    if (this.closed || this.draining) return Promise.reject(new Errors.Draining())
    return this.verifier.run(fromUs, toUs)
  }

  /** Writes a consistent copy of the store into `dir` while ingest goes on (backup.ts). One at a time. */
  backup(dir: string, timeoutMs: number, extras?: BackupExtras): Promise<BackupReport> {
    if (this.closed || this.draining) return Promise.reject(new Errors.Draining())
    if (this.backingUp) return Promise.reject(new Errors.BackupRunning())
    const host = { dataDir: this.opts.dataDir, fs: this.fs, logger: this.opts.logger, catalog: this.catalog, exclusive: <T>(fn: () => Promise<T>) => this.maintenance.runExclusive(fn, 2), snapshot: <T>(fn: (snap: Snapshot) => Promise<T>, o: { timeoutMs: number }) => this.snapshot(fn, o) }
    const run = backup(host, dir, timeoutMs, extras).finally(() => (this.backingUp = null))
    this.backingUp = run
    return run
  }

  /** Re-prices the retained events of [fromUs, toUs) from `table` (reprice.ts): archives only, under the maintenance lock, never the gate. One at a time. */
  reprice(fromUs: number, toUs: number, table: PriceTable, mode: PricingMode): Promise<RepriceReport> {
    if (this.closed || this.draining) return Promise.reject(new Errors.Draining())
    if (this.repricing) return Promise.reject(new Errors.RepriceRunning())
    const overlaps = (e: SegmentEntry) => e.minTsUs !== null && e.maxTsUs !== null && e.minTsUs < toUs && e.maxTsUs >= fromUs
    const host: RepriceHost = {
      dataDir: this.opts.dataDir, fs: this.fs, files: this.files, catalog: this.catalog, clock: this.opts.clock, logger: this.opts.logger,
      entries: () => this.tiers.sorted(),
      exclusive: (fn) => this.maintenance.runExclusive(fn, 2),
      prepare: async () => {
        await this.rollover('reprice', true, overlaps)
        this.kickSealer()
        await this.sealer.idle()
        const stuck = this.tiers.sorted().find((e) => e.state === 'pending' && overlaps(e))
        if (stuck) throw new Errors.RepriceBlocked(stuck.id, stuck.seal.lastError ?? 'waiting for its seal retry')
      },
      ...(this.opts.hooks?.beforeRepriceStep ? { beforeStep: this.opts.hooks.beforeRepriceStep } : {}),
    }
    const run = reprice(host, fromUs, toUs, table, mode).finally(() => (this.repricing = null))
    this.repricing = run
    return run
  }

  /** Periodic work: age rollover, due seal retries, scheduled retention. The timer calls it; tests call it with a manual clock. */
  async tick(): Promise<void> {
    if (this.closed || this.draining) return
    const a = this.tiers.active
    const nowMs = this.opts.clock.nowMs()
    if (a.firstAppendMs !== null && nowMs - a.firstAppendMs >= this.rolloverAgeMs) {
      await this.rollover('age').catch((err: unknown) => this.opts.logger.error({ err }, 'age rollover failed'))
    }
    // Size is otherwise measured after commits; once an oversized active segment refuses
    // appends there are none, so a failed size rollover is retried from here.
    if (!this.roller.inFlight() && this.tiers.active.live) await this.roller.checkSize()
    this.kickSealer()
    this.verifier.tick()
    if (nowMs >= this.nextRetentionMs && this.retentionRunner.inFlight() === null) {
      this.nextRetentionMs = nowMs + this.retentionIntervalMs
      await this.retention('schedule').catch((err: unknown) => this.opts.logger.error({ err }, 'scheduled retention failed'))
    }
  }

  /** When the scheduler runs retention next (epoch ms), or null when it is off. */
  nextRetentionAtMs(): number | null {
    return Number.isFinite(this.nextRetentionMs) ? this.nextRetentionMs : null
  }

  /** Resolves when no rollover is in flight and the sealer is idle (tests, shutdown). */
  async settle(): Promise<void> {
    await this.commits.drained()
    for (let run = this.roller.inFlight(); run !== null; run = this.roller.inFlight()) await run.catch(() => undefined)
    for (let run = this.retentionRunner.inFlight(); run !== null; run = this.retentionRunner.inFlight()) await run.catch(() => undefined)
    await this.sealer.idle()
    await this.files.idle()
    await this.tiers.active.live?.liveRollupsIdle()
  }

  /** Stops taking appends, commits and answers everything queued, checkpoints and closes DuckDB. */
  async close(): Promise<void> {
    if (this.closed) return
    this.draining = true
    if (this.timer) clearInterval(this.timer)
    await this.admission.stop()
    await this.commits.drained()
    // A retention run in flight stops at its next step (each is safe to stop after).
    await this.retentionRunner.inFlight()?.catch(() => undefined)
    await this.roller.inFlight()?.catch(() => undefined)
    await this.verifier.inFlight()?.catch(() => undefined)
    await this.backingUp?.catch(() => undefined)
    await this.repricing?.catch(() => undefined)
    await this.sealer.stop()
    await this.withGate(async () => {
      this.closed = true
      // Every live segment is closed, whatever the others do: a CHECKPOINT that fails
      // (a full disk, an invalidated database) still closes its instance, and its WAL
      // keeps what was committed for the next start-up to replay.
      let first: unknown = null
      for (const e of this.tiers.segments.values()) {
        if (!e.live) continue
        try {
          await e.live.close()
        } catch (err) {
          this.admission.noteWriteFailure(err, false, 'closing a segment failed; its WAL is replayed at the next start-up', { segment: e.id })
          first ??= err
        }
      }
      // After a fail-stop that failure was expected: the close itself went through.
      if (first !== null && this.admission.failure === null) throw first
    }, 'close')
      .catch((err: unknown) => {
        this.opts.logger.error({ err }, 'store close failed')
        throw err
      })
      .finally(async () => {
        await this.files.idle()
        await this.catalog.checkpoint().catch((err: unknown) => this.opts.logger.error({ err }, 'catalog checkpoint failed'))
        this.dedupe.close(), this.files.close()
      })
  }

  private kickSealer(): void {
    if (this.dedupe.loading === null) this.sealer.kick(this.tiers.pendingFiles())
  }

  private startTimers(): void {
    const tickMs = this.opts.tickMs ?? Math.max(50, Math.min(60_000, Math.floor(this.rolloverAgeMs / 10)))
    this.timer = setInterval(() => void this.tick(), tickMs)
    this.timer.unref()
    this.admission.start()
  }

  /** Refreshes the active segment's live rollups in the background when `minRows` events are not in them yet (see Segment). */
  private refreshLiveRollups(minRows: number, minIntervalMs = 0): void {
    const entry = this.tiers.active
    void entry.live
      ?.refreshLiveRollups(minRows, minIntervalMs)
      // The refresh writes the active segment: a failed write there may have invalidated it for every later commit.
      .catch((err: unknown) => this.admission.noteWriteFailure(err, false, 'refreshing the live rollups failed; queries read those events raw', { segment: entry.id }))
  }
}
