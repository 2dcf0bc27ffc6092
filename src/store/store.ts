// The store: the write gate, group commit, dedupe across every tier, the
// tiers themselves (active, pending, archived) and pinned read snapshots.
//
// Invariants:
// - The write gate (one async-mutex Mutex) guards every mutation of the active
//   segment: appends, the swap of a rollover, shutdown. The only way to reach
//   the writer is `withGate`, whose GatedWriter is revoked the moment the gate
//   is released: a stale writer cannot be kept and used later (the Rust
//   original's bug).
// - A rolled-over segment no longer takes appends, but its writer still answers
//   dedupe probes until it is closed and attached as a pending file: `retireLock`
//   serialises the two (the close, move and attach run under it, not under the
//   gate, so a rollover holds the gate only for the pointer swap).
// - Lock order: the gate first, then anything else (retireLock, catalog, FileTier
//   admin); nothing awaits the gate while holding another lock. Reads never take it.
// - An append is answered only after the transaction holding its events has
//   committed; if the commit fails, every request in it is told so (503) and
//   none of its events are in the index or the file.
// - `index` names, for every id committed in a retained segment, the segment
//   holding it. It changes only under the gate, after COMMIT succeeds, and a
//   hit is always confirmed by an exact probe of that segment (idindex.ts).
//   Hits in closed segments (pending files, archives) are probed before the
//   request takes the gate (they never gain rows, so the answer holds); under
//   the gate only the live segments and segments closed since are probed, so a
//   replay of old events does not stall fresh appends.
// - Every retained segment is in `segments` from the moment its file exists
//   until retention drops it, in exactly one state; a read snapshot pins what
//   it reads (a live instance or an attached file), so no tier change makes
//   rows vanish or a file disappear under a query.
// - Rollover is never concurrent with itself (`rolling`), and the sealer
//   handles one segment at a time (its `running` run); neither is a lock.
// - Retention (`runRetention`, one run at a time) takes the gate only to roll
//   over an active segment whose rows have all expired, and then only for the
//   pointer swap, after re-checking under the gate that no append made it
//   current meanwhile. Deleting archived segments and expiring detail files
//   never takes the gate: the catalog decides first (durably), then the entry
//   leaves `segments` and the index at once, and its files are removed once
//   the last reader unpins them.
// - Expired rows are invisible at once: every read gets the cutoffs of its
//   moment with its snapshot and filters by them, whatever retention has or
//   has not deleted yet.
// - Queue bounds: at most maxQueueEvents events and maxQueueBytes body bytes
//   wait; past that, append fails fast with QueueFull (503 + Retry-After).
// - After a write fails in a way that may have left the database invalidated
//   the store is `failed`: it refuses writes and reports unready (fail-stop).
// - Admission: appends are refused (Overloaded, 503) and the store reports
//   unready while the data directory's free space is below minFreeDiskBytes
//   (sampled every second and after commits), more than maxPendingSegments
//   wait to be sealed, or the active file plus WAL exceed maxActiveBytes.
//   DuckDB under ENOSPC may invalidate a database; refusing first keeps the
//   acknowledged data safe and makes the condition loud.
// - The observer (the metrics plugin's) hears of commits and of each use of the
//   gate after the fact, synchronously; it cannot change what the store does
//   (a throw is logged and ignored).
//
// Over 500 lines: it still holds admission, the commit queue, the dedupe probes,
// read snapshots and rollover, each a unit to cut out next (ARCHITECTURE.md,
// 'Where it is going'); the gate, tiers, recovery and the retention run are apart.

import path from 'node:path'
import { E_TIMEOUT, Mutex, Semaphore, withTimeout, type SemaphoreInterface } from 'async-mutex'
import type { DuckDBConnection } from '@duckdb/node-api'
import { Errors } from '../errors.js'
import type { EventBatch } from '../ingest/batch.js'
import { keepRows } from '../ingest/batch.js'
import type { FieldError } from '../ingest/event.js'
import { AnswerCache } from './answers.js'
import { DuckDBCatalog, type Catalog, type SegmentDims } from './catalog.js'
import { FileTier, type AttachedFile } from './files.js'
import { WriteGate, type GateHeld, type GateTask } from './gate.js'
import { readFreeBytes } from './disk.js'
import { readFailure } from './failstop.js'
import { nodeFileSystem, type FileSystem } from './fsops.js'
import { IdIndex } from './idindex.js'
import { CATALOG_FILE, relativeSegmentPath, segmentPath, tierDir, TIERS } from './layout.js'
import { cutoffsAt, DEFAULT_WINDOWS, type Cutoffs, type RetentionWindows } from './retention.js'
import { roundMs, type RetentionReport, type RetentionTrigger, type RolloverReport } from './reports.js'
import { lookupFingerprints, scanIds, Segment, type LiveRollups } from './segment.js'
import { Sealer } from './sealer.js'
import { segmentOptions, type StoreOptions } from './options.js'
import { recover } from './recover.js'
import { RetentionRunner } from './retention-run.js'
import { moveToPending, newEntry, type SegmentEntry, type SegmentInfo, type SegmentState } from './tiers.js'

export type EventStatus = 'duplicate' | 'conflict' | 'rejected'

export interface EventResult {
  index: number
  event_id: string | null
  status: EventStatus
  errors?: FieldError[]
}

export interface AppendOutcome {
  /** False only for an atomic request that was refused (422): nothing stored. */
  stored: boolean
  accepted: number
  duplicates: number
  conflicts: number
  rejected: number
  results: EventResult[]
}

export interface AppendRequest {
  /** The request's valid events, encoded (src/ingest/batch.ts). */
  events: EventBatch
  /** Outcomes already known before the store (validation rejects). */
  rejected: EventResult[]
  atomic: boolean
  /** Body bytes, counted against the queue's byte bound. */
  bytes: number
  /** Which door the events came in by (for the outcome counts); default 'native'. */
  source?: IngestSource
}

/** The doors events come in by (DESIGN.md: the native route and the other doors in). */
export const INGEST_SOURCES = ['native', 'openmeter', 'otlp', 'litellm'] as const
export type IngestSource = (typeof INGEST_SOURCES)[number]

/** What one answered request's events were told (refused: acceptable events of an atomic batch refused as a whole). */
export interface IngestOutcomes {
  source: IngestSource
  events: number
  accepted: number
  duplicates: number
  conflicts: number
  rejected: number
  refused: number
}



export type { GateTask } from './gate.js'

/**
 * Figures the store reports as they happen, for the metrics plugin to turn into
 * histograms (the store knows nothing of Prometheus). Calls are synchronous, on
 * the store's hot path: an observer must be cheap; a throw is logged and ignored.
 */
export interface StoreObserver {
  /** A group commit succeeded: `events` rows written (0 when all were duplicates), `requests` answered, `durationMs` of the insert and COMMIT. */
  commit?(c: { events: number; requests: number; durationMs: number }): void
  /** A group commit's write failed: its requests are answered 503 and none of their events are stored. */
  commitFailure?(): void
  /** A request was answered with an outcome for every event (200, or 422 when atomic and refused). */
  ingested?(o: IngestOutcomes): void
  /** `task` took the write gate after waiting `waitMs` and held it `heldMs`. */
  gate?(g: { task: GateTask; waitMs: number; heldMs: number }): void
  /** `task` gave up waiting for the write gate after `waitMs` (answered 503). */
  gateTimeout?(g: { task: GateTask; waitMs: number }): void
}

/** DuckDB's own memory figures (duckdb_memory()), summed per kind of instance. */
export interface DuckDBMemory {
  /** The live segments' instances: the active one, and one rolled over but not yet closed. */
  liveBytes: number
  liveTemporaryBytes: number
  /** The closed tiers' instance: the catalog and every attached pending and archived file. */
  filesBytes: number
  filesTemporaryBytes: number
}

/** The writer, valid only while the gate that produced it is held (gate.ts). */
export type GatedWriter = GateHeld<Segment>

interface Pending extends AppendRequest {
  resolve(outcome: AppendOutcome): void
  reject(err: Error): void
  /** What probes of closed segments found before the gate (see preProbe); null: probe all under it. */
  known: KnownIds | null
}

/** Per event id: the closed segments already probed for it, and the fingerprint found there (if any). */
type KnownIds = Map<string, { segments: Set<number>; fingerprint: string | null }>






export interface StoreStats {
  queuedRequests: number
  queuedEvents: number
  queuedBytes: number
  indexedEvents: number
  indexBytes: number
  /** Exact probes of closed segments made before taking the gate (replays of older events). */
  probesBeforeGate: number
  /** Exact probes made under the gate (live segments, or segments closed since the request arrived). */
  probesUnderGate: number
  commits: number
  committedEvents: number
  lastCommitMs: number | null
  lastCommitEvents: number
  rollovers: number
  lastRollover: RolloverReport | null
  sealed: number
  sealFailures: number
  retentionRuns: number
  retentionErrors: number
  retentionSegmentsDeleted: number
  retentionBytesFreed: number
  lastRetention: RetentionReport | null
  failed: string | null
  draining: boolean
  /** Free bytes on the data directory's file system at the last sample (null before the first). */
  freeDiskBytes: number | null
  pendingSegments: number
  /** Why appends are refused now (empty: they are admitted). */
  refusing: string[]
}

/** A pinned part of a read snapshot: one segment and how to query it. */
export interface SnapshotPart {
  id: number
  state: SegmentState
  minTsUs: number | null
  maxTsUs: number | null
  dims: SegmentDims | null
  /** Alias of the attached file (query through `Snapshot.files`), or null for a live segment. */
  alias: string | null
  /**
   * Where this segment's `event_details` table is: an attached alias (query
   * through `Snapshot.files`), `{ alias: null }` for a live segment (through
   * `live`), or null when it keeps no details (none, or expired).
   */
  detailsAt: { alias: string | null } | null
  /** Runs `fn` on a read connection of the live segment. Only when alias is null. */
  live<T>(fn: (conn: DuckDBConnection) => Promise<T>): Promise<T>
  /** A live segment's rollups in memory (segment.ts: read once per refresh, when a query first asks), or null (not live, or none). */
  liveRollups(): Promise<LiveRollups | null>
}

export interface Snapshot {
  parts: SnapshotPart[]
  /** The retention cutoffs at the moment of the snapshot: reads never return rows before them. */
  cutoffs: Cutoffs
  /** Runs `fn` on a pooled connection of the closed-file tier (attached files and the catalog). */
  files<T>(fn: (conn: DuckDBConnection) => Promise<T>): Promise<T>
  /**
   * The catalog generation whose rollups hold exactly the segments this
   * snapshot reads as archived (none it reads raw), when this process knows
   * that without asking DuckDB; null otherwise (a seal committed but not yet
   * shown as archived here). Answers cached at this generation fit the
   * snapshot as they are.
   */
  catalogGeneration: bigint | null
}

const MIB = 1024 * 1024
/**
 * The active segment's live rollups are refreshed (off the commit path) once
 * this many events were appended since the last refresh: queries read them
 * plus the events appended since, instead of every event of the segment.
 */
const LIVE_ROLLUP_EVERY_ROWS = 2000
/**
 * ...and at most once a second: at full ingest speed (~55 k events/s here) a
 * refresh every 2,000 events kept a connection busy and cost ingest ~25 %
 * (55 k against 83–86 k events/s in the ingest bench); a second of events in the
 * tail costs a query a few milliseconds.
 */
const LIVE_ROLLUP_EVERY_MS = 1000
/** Reads that may wait for a query slot, per slot. */
const MAX_QUERY_WAITERS_PER_SLOT = 8
/** Rows of catalog answers kept (answers.ts): tens of MiB at most; a month's daily series by model is ~3,600 rows. */
export const DEFAULT_ANSWER_CACHE_ROWS = 100_000

export class Store {
  /** Catalog answers kept for repeated questions, by catalog generation (queries read through it). */
  readonly answers: AnswerCache
  private readonly gate: WriteGate<Segment>
  /** Held while a rolled-over segment is closed and moved; probes of it wait (lock order: after the gate). */
  private readonly retireLock = new Mutex()
  private readonly querySlots: SemaphoreInterface
  /** Reads waiting for a slot; past MAX_QUERY_WAITERS_PER_SLOT × slots a read is refused at once (QueryBusy). */
  private queryWaiters = 0
  private readonly segments = new Map<number, SegmentEntry>()
  private readonly sealer: Sealer
  private active: SegmentEntry
  private nextId: number
  private queue: Pending[] = []
  /** Requests whose closed-segment probes run before they join `queue` (close and settle wait for them). */
  private readonly preProbes = new Set<Promise<void>>()
  private probesBeforeGate = 0
  private readonly probeQueue: Array<{ closed: Map<number, string[]>; resolve(known: KnownIds): void; reject(err: Error): void }> = []
  private probing = false
  private probesUnderGate = 0
  private queuedEvents = 0
  private queuedBytes = 0
  private committing = false
  private sizing: Promise<void> | null = null
  private idle: Promise<void> = Promise.resolve()
  private markIdle: () => void = () => undefined
  private rolling: Promise<RolloverReport> | null = null
  private timer: NodeJS.Timeout | null = null
  private draining = false
  private closed = false
  private failure: string | null = null
  private commits = 0
  private committedEvents = 0
  private lastCommitMs: number | null = null
  private lastCommitEvents = 0
  private rollovers = 0
  private lastRollover: RolloverReport | null = null
  private readonly rolloverBytes: number
  private readonly minFreeDiskBytes: number
  private readonly maxPendingSegments: number
  private readonly maxActiveBytes: number
  private readonly rolloverAgeMs: number
  private readonly windows: RetentionWindows
  private readonly retentionIntervalMs: number
  private nextRetentionMs: number
  private readonly retentionRunner: RetentionRunner
  private readonly fs: FileSystem
  private freeDiskBytes: number | null = null
  private diskSampledMs = -Infinity
  private diskSample: Promise<void> | null = null
  /** Why the last free-space read failed; null when it worked. */
  private diskError: string | null = null
  private diskTimer: NodeJS.Timeout | null = null
  private observer: StoreObserver | null = null

  private constructor(
    private readonly opts: StoreOptions,
    fs: FileSystem,
    private readonly files: FileTier,
    readonly catalog: Catalog,
    private readonly index: IdIndex,
    entries: SegmentEntry[],
    nextId: number,
  ) {
    this.gate = new WriteGate<Segment>(active0(entries).live!, opts.gateWaitMs, {
      held: (g) => this.notify((o) => o.gate?.(g)),
      timedOut: (g) => this.notify((o) => o.gateTimeout?.(g)),
    })
    this.answers = new AnswerCache(opts.answerCacheRows ?? DEFAULT_ANSWER_CACHE_ROWS)
    // A read waits for a slot at most as long as it may run; a client gone meanwhile cannot pile up work.
    this.querySlots = withTimeout(new Semaphore(opts.maxConcurrentQueries), opts.queryTimeoutMs ?? 30_000, E_TIMEOUT)
    this.fs = fs
    for (const e of entries) this.segments.set(e.id, e)
    const active = entries.find((e) => e.state === 'active')
    if (!active?.live) throw new Error('invariant: the store opens with one live active segment')
    this.active = active
    this.nextId = nextId
    this.rolloverBytes = opts.rolloverBytes ?? 64 * MIB
    this.minFreeDiskBytes = opts.minFreeDiskBytes ?? 1024 * MIB
    this.maxPendingSegments = opts.maxPendingSegments ?? 32
    this.maxActiveBytes = opts.maxActiveBytes ?? 4 * this.rolloverBytes
    this.rolloverAgeMs = opts.rolloverAgeMs ?? 3_600_000
    this.windows = opts.retention ?? DEFAULT_WINDOWS
    this.retentionIntervalMs = opts.retentionIntervalMs ?? 3_600_000
    // Soon after start-up, then every interval: a node restarted more often than
    // the interval still runs retention.
    this.nextRetentionMs = this.retentionIntervalMs === 0 ? Infinity : opts.clock.nowMs() + Math.min(this.retentionIntervalMs, 60_000)
    this.sealer = new Sealer({
      dataDir: opts.dataDir,
      fs: this.fs,
      files,
      catalog,
      clock: opts.clock,
      logger: opts.logger,
      retryMs: opts.sealRetryMs ?? 1_000,
      retryMaxMs: opts.sealRetryMaxMs ?? 300_000,
      detailsCutoffUs: () => this.cutoffs().detailsUs,
      hooks: opts.hooks,
    })
    this.retentionRunner = new RetentionRunner({
      dataDir: opts.dataDir,
      clock: opts.clock,
      logger: opts.logger,
      fs,
      files,
      catalog,
      index,
      segments: this.segments,
      active: () => this.active,
      stopping: () => this.draining || this.closed,
      cutoffs: (nowMs) => this.cutoffs(nowMs),
      rollover: (reason, force, onlyIf) => this.rollover(reason, force, onlyIf),
      pendingEntries: () => this.pendingEntries(),
      kickSealer: () => this.sealer.kick(this.pendingEntries()),
    })
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
      const index = new IdIndex(entries.reduce((n, e) => n + e.rowCount, 0) * 1.2)
      // Two segments at a time: DuckDB joins one segment's ids while JS hashes the other's.
      const queue = [...entries]
      const scanNext = async (conn: DuckDBConnection): Promise<void> => {
        for (let e = queue.shift(); e !== undefined; e = queue.shift()) {
          const ids = e.live ? e.live.scanIds() : scanIds(conn, e.file!.alias)
          for await (const chunk of ids) for (const id of chunk) index.add(id, e.id)
        }
      }
      await Promise.all([scanNext(files.probeConn), scanNext(files.sealConn)])
      opts.logger.info(
        { event: 'store_open', segments: entries.length, indexedEvents: index.size, indexBytes: index.bytes, ms: opts.clock.nowMs() - started },
        'store opened',
      )
      const store = new Store(opts, fs, files, catalog, index, entries, nextId)
      await store.sampleDisk()
      store.startTimer()
      store.sealer.kick(store.pendingEntries())
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
   * Throws QueueFull / Draining / StoreFailed synchronously-fast (nothing stored).
   */
  append(req: AppendRequest): Promise<AppendOutcome> {
    const answered = this.admitAndQueue(req)
    answered.then(
      (outcome) => this.notify((o) => o.ingested?.(outcomesOf(req, outcome))),
      () => undefined,
    )
    return answered
  }

  private admitAndQueue(req: AppendRequest): Promise<AppendOutcome> {
    // An atomic request with an invalid event stores nothing, whatever the store's state.
    if (req.atomic && req.rejected.length > 0) return Promise.resolve(outcomeOf(req, [], 0, false))
    if (this.failure !== null) return Promise.reject(new Errors.StoreFailed())
    if (this.draining || this.closed) return Promise.reject(new Errors.Draining())
    const count = req.events.ids.length
    if (count === 0) return Promise.resolve(outcomeOf(req, [], 0, true))
    const refusing = this.refusing()
    if (refusing.length > 0) return Promise.reject(new Errors.Overloaded(refusing.join('; ')))
    if (this.queuedEvents + count > this.opts.maxQueueEvents || this.queuedBytes + req.bytes > this.opts.maxQueueBytes) {
      return Promise.reject(new Errors.QueueFull())
    }
    this.queuedEvents += count
    this.queuedBytes += req.bytes
    return new Promise<AppendOutcome>((resolve, reject) => {
      const pending: Pending = { ...req, resolve, reject, known: null }
      const closed = this.closedCandidates(req.events.ids)
      if (closed.size === 0) {
        this.enqueue(pending)
        return
      }
      const done: Promise<void> = this.preProbe(closed)
        .then(
          (known) => {
            pending.known = known
          },
          (err: unknown) => this.opts.logger.warn({ err }, 'probing closed segments before the gate failed; probing under it'),
        )
        .finally(() => {
          this.preProbes.delete(done)
          this.enqueue(pending)
        })
      this.preProbes.add(done)
    })
  }

  /** Resolves once every request accepted so far has joined the commit queue. */
  private async preProbed(): Promise<void> {
    while (this.preProbes.size > 0) await Promise.all([...this.preProbes])
  }

  private enqueue(p: Pending): void {
    this.queue.push(p)
    this.kick()
  }

  /**
   * The closed segments (pending files and archives: immutable) that the
   * dedupe index names for some of `ids`, with those ids. Fresh ids have none.
   */
  private closedCandidates(ids: readonly string[]): Map<number, string[]> {
    const out = new Map<number, string[]>()
    for (const id of ids) {
      for (const seg of this.index.candidates(id)) {
        const entry = this.segments.get(seg)
        if (!entry || entry.live !== null || entry.file === null) continue
        let list = out.get(seg)
        if (!list) out.set(seg, (list = []))
        list.push(id)
      }
    }
    return out
  }

  /**
   * Exact probes of closed segments, run before the request takes the gate, on
   * the pooled query connections: a closed segment never gains rows, so what
   * is (or is not) in it stays true, and a replay storm over old segments costs
   * the pool, not the gate that every fresh append waits on. Like commits,
   * probes are grouped: requests arriving while a round runs share the next
   * one, so each segment is scanned once per round for all their ids.
   */
  private preProbe(closed: Map<number, string[]>): Promise<KnownIds> {
    return new Promise<KnownIds>((resolve, reject) => {
      this.probeQueue.push({ closed, resolve, reject })
      if (this.probing) return
      this.probing = true
      void this.probeLoop().finally(() => (this.probing = false))
    })
  }

  private async probeLoop(): Promise<void> {
    while (this.probeQueue.length > 0) {
      const round = this.probeQueue.splice(0)
      try {
        const idsBySegment = new Map<number, Set<string>>()
        for (const r of round) {
          for (const [seg, ids] of r.closed) {
            let set = idsBySegment.get(seg)
            if (!set) idsBySegment.set(seg, (set = new Set()))
            for (const id of ids) set.add(id)
          }
        }
        // One segment at a time: each probe is a parallel DuckDB scan already, and
        // running many at once would crowd out the commits sharing the cores.
        const hitsBySegment = new Map<number, Map<string, string>>()
        for (const [seg, ids] of idsBySegment) {
          const hits = await this.lookupClosed(seg, [...ids])
          if (hits !== null) hitsBySegment.set(seg, hits)
        }
        for (const r of round) {
          const known: KnownIds = new Map()
          for (const [seg, ids] of r.closed) {
            const hits = hitsBySegment.get(seg)
            if (hits === undefined) continue // not probed (no longer closed): the gate's probe covers it
            for (const id of ids) {
              let k = known.get(id)
              if (!k) known.set(id, (k = { segments: new Set(), fingerprint: null }))
              k.segments.add(seg)
              k.fingerprint ??= hits.get(id) ?? null
            }
          }
          r.resolve(known)
        }
      } catch (err) {
        for (const r of round) r.reject(err instanceof Error ? err : new Error(String(err)))
      }
    }
  }

  /** Exact probe of a closed segment's file on a pooled connection; null when it is not (or no longer) a closed, readable file. */
  private async lookupClosed(seg: number, ids: string[]): Promise<Map<string, string> | null> {
    const entry = this.segments.get(seg)
    const file = entry?.file
    if (!entry || entry.live !== null || !file || (file.retired && file.pins.held === 0)) return null
    const hits = await this.lookupFile(file, ids, (fn) => this.files.query(fn))
    this.probesBeforeGate++
    return hits
  }

  /** Exact probe of an attached file, pinned while it runs on the connection `run` lends. */
  private async lookupFile(file: AttachedFile, ids: string[], run: (fn: (conn: DuckDBConnection) => Promise<Map<string, string>>) => Promise<Map<string, string>>) {
    this.files.pin(file)
    try {
      return await run((conn) => lookupFingerprints(conn, file.alias, ids))
    } finally {
      await this.files.unpin(file)
    }
  }

  /**
   * Runs `fn` holding the write gate. The GatedWriter is revoked when `fn`
   * settles; using it afterwards throws. Waits at most gateWaitMs for the gate.
   */
  withGate<T>(fn: (writer: GatedWriter) => Promise<T>, task: GateTask = 'other'): Promise<T> {
    return this.gate.run(task, fn)
  }

  /**
   * Sets the observer of commits and the write gate (the metrics plugin's; one
   * at a time, a later call replaces it).
   */
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
   * Runs a read over a pinned snapshot of every retained segment; never
   * touches the gate. At most maxConcurrentQueries run at once. Its DuckDB
   * queries are interrupted past `timeoutMs` (default: the store's query
   * timeout), and it then fails with QueryTimeout.
   */
  async snapshot<T>(fn: (snap: Snapshot) => Promise<T>, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.closed) throw new Errors.Draining()
    if (this.querySlots.isLocked() && this.queryWaiters >= MAX_QUERY_WAITERS_PER_SLOT * this.opts.maxConcurrentQueries) throw new Errors.QueryBusy()
    this.queryWaiters++
    const [, releaseSlot] = await this.querySlots
      .acquire()
      .catch((err: unknown) => {
        throw err === E_TIMEOUT ? new Errors.QueryBusy() : err
      })
      .finally(() => {
        this.queryWaiters--
      })
    const pinned: Array<() => Promise<void>> = []
    const cutoffs = this.cutoffs()
    // The time bound: past it, every DuckDB query this snapshot is running is
    // interrupted and no new one starts. A connection leaves `running` before it
    // goes back to its pool, so an interrupt never reaches another reader's query.
    const limitMs = opts.timeoutMs ?? this.opts.queryTimeoutMs ?? 30_000
    const running = new Set<DuckDBConnection>()
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      for (const conn of running) conn.interrupt()
    }, limitMs)
    const bounded =
      <R>(f: (conn: DuckDBConnection) => Promise<R>) =>
      async (conn: DuckDBConnection): Promise<R> => {
        if (timedOut) throw new Errors.QueryTimeout(limitMs)
        running.add(conn)
        try {
          return await f(conn)
        } finally {
          running.delete(conn)
        }
      }
    try {
      const parts: SnapshotPart[] = []
      for (const entry of [...this.segments.values()].sort((a, b) => a.id - b.id)) {
        while (entry.liveClosing) await entry.liveClosing
        if (!this.segments.has(entry.id)) continue
        const part = this.pin(entry, pinned, bounded)
        if (part) parts.push(part)
      }
      // After the parts: every part shown archived was committed by then (the
      // sealer shows a segment archived only once catalog.archive returned).
      const generation = this.catalog.committedGeneration()
      const rawArchived = parts.some((p) => p.state !== 'archived' && this.catalog.isArchived(p.id))
      return await fn({ parts, cutoffs, files: (f) => this.files.query(bounded(f)), catalogGeneration: rawArchived ? null : generation })
    } catch (err) {
      if (timedOut) throw new Errors.QueryTimeout(limitMs)
      throw readFailure(err, this.failure)
    } finally {
      clearTimeout(timer)
      for (const unpin of pinned) await unpin()
      releaseSlot()
    }
  }

  /**
   * DuckDB's memory figures, summed per kind of instance, read through the
   * read path (a query slot, a snapshot bounded by `timeoutMs`); null when
   * every query slot is taken: it never queues behind the queries it would
   * report on. (The slot is taken synchronously when one is free.)
   */
  async duckdbMemory(timeoutMs: number): Promise<DuckDBMemory | null> {
    if (this.closed || this.querySlots.isLocked()) return null
    const sql = 'SELECT coalesce(sum(memory_usage_bytes), 0)::BIGINT, coalesce(sum(temporary_storage_bytes), 0)::BIGINT FROM duckdb_memory()'
    const read = async (conn: DuckDBConnection): Promise<[number, number]> => {
      const row = (await conn.runAndReadAll(sql)).getRows()[0]!
      return [Number(row[0]), Number(row[1])]
    }
    return this.snapshot(
      async (snap) => {
        const figures: DuckDBMemory = { liveBytes: 0, liveTemporaryBytes: 0, filesBytes: 0, filesTemporaryBytes: 0 }
        for (const part of snap.parts) {
          if (part.alias !== null) continue
          const [bytes, temporary] = await part.live(read)
          figures.liveBytes += bytes
          figures.liveTemporaryBytes += temporary
        }
        ;[figures.filesBytes, figures.filesTemporaryBytes] = await snap.files(read)
        return figures
      },
      { timeoutMs },
    )
  }

  private pin(
    entry: SegmentEntry,
    pinned: Array<() => Promise<void>>,
    bounded: <R>(f: (conn: DuckDBConnection) => Promise<R>) => (conn: DuckDBConnection) => Promise<R>,
  ): SnapshotPart | null {
    const base = { id: entry.id, state: entry.state, minTsUs: entry.minTsUs, maxTsUs: entry.maxTsUs, dims: entry.dims }
    if (entry.live) {
      const segment = entry.live
      entry.livePins.pin()
      pinned.push(async () => entry.livePins.unpin())
      return { ...base, alias: null, detailsAt: { alias: null }, live: (fn) => segment.read(bounded(fn)), liveRollups: () => segment.liveRollups() }
    }
    if (entry.file) {
      const file = entry.file
      this.files.pin(file)
      pinned.push(() => this.files.unpin(file))
      // Pending files and archives sealed before details had their own file keep them inside.
      let detailsAt: { alias: string } | null = entry.state === 'pending' || entry.details === 'inline' ? { alias: file.alias } : null
      const details = entry.detailsFile
      if (details) {
        this.files.pin(details)
        pinned.push(() => this.files.unpin(details))
        detailsAt = { alias: details.alias }
      }
      return {
        ...base,
        alias: file.alias,
        detailsAt,
        live: () => Promise.reject(new Error('invariant: not a live segment')),
        liveRollups: () => Promise.resolve(null),
      }
    }
    return null
  }

  /** The retention cutoffs at `nowMs` (default: now). */
  cutoffs(nowMs = this.opts.clock.nowMs()): Cutoffs {
    return cutoffsAt(nowMs, this.windows)
  }

  /** Segments that may hold `eventId` (from the dedupe index; confirm with a probe). */
  candidates(eventId: string): number[] {
    return this.index.candidates(eventId)
  }

  ready(): { ready: boolean; reasons: string[] } {
    const reasons: string[] = []
    if (this.closed) reasons.push('store closed')
    if (this.draining) reasons.push('draining')
    if (this.failure !== null) reasons.push(`store failed: ${this.failure}`)
    if (this.queuedEvents >= this.opts.maxQueueEvents) reasons.push('ingest queue full')
    reasons.push(...this.refusing())
    return { ready: reasons.length === 0, reasons }
  }

  /** Why appends are refused now: low disk, seal backlog, oversized active segment (empty: admitted). */
  refusing(): string[] {
    const reasons: string[] = []
    if (this.minFreeDiskBytes > 0 && this.diskError !== null) reasons.push(`free disk unknown (${this.diskError}); the floor TOKENLEDGER_MIN_FREE_DISK cannot be checked`)
    else if (this.lowOnDisk()) {
      reasons.push(`free disk ${mib(this.freeDiskBytes!)} is below the floor of ${mib(this.minFreeDiskBytes)} (TOKENLEDGER_MIN_FREE_DISK)`)
    }
    const pending = this.pendingCount()
    if (pending > this.maxPendingSegments) reasons.push(`${pending} segments wait to be sealed, more than ${this.maxPendingSegments} (TOKENLEDGER_MAX_PENDING_SEGMENTS)`)
    const activeBytes = this.active.bytes ?? 0
    if (activeBytes > this.maxActiveBytes) {
      reasons.push(`the active segment holds ${mib(activeBytes)}, more than ${mib(this.maxActiveBytes)} (TOKENLEDGER_MAX_ACTIVE_BYTES): rollover is not keeping up`)
    }
    return reasons
  }

  /** Whether the data directory has less free space than its floor (exports that write files check this too). */
  lowOnDisk(): boolean {
    if (this.minFreeDiskBytes > 0 && this.diskError !== null) return true
    return this.minFreeDiskBytes > 0 && this.freeDiskBytes !== null && this.freeDiskBytes < this.minFreeDiskBytes
  }

  private pendingCount(): number {
    let n = 0
    for (const e of this.segments.values()) if (e.state === 'pending') n++
    return n
  }

  /** Reads the free space of the data directory's file system; one sample at a time, bounded (disk.ts). A failed read makes the reading unknown, and is logged once. */
  sampleDisk(): Promise<void> {
    this.diskSample ??= readFreeBytes(this.fs, this.opts.dataDir)
      .then((res) => {
        const wasLow = this.lowOnDisk()
        if (!res.ok) {
          if (this.diskError === null) this.opts.logger.error({ reason: res.reason }, 'reading free disk space failed: free disk unknown')
          this.diskError = res.reason
          this.freeDiskBytes = null
          return
        }
        if (this.diskError !== null) this.opts.logger.warn({ freeBytes: res.bytes }, 'reading free disk space works again')
        this.diskError = null
        const bytes = res.bytes
        this.freeDiskBytes = bytes
        this.diskSampledMs = performance.now()
        const figures = { freeBytes: bytes, floorBytes: this.minFreeDiskBytes }
        if (!wasLow && this.lowOnDisk()) this.opts.logger.error(figures, 'free disk below its floor: refusing ingest until space is freed')
        if (wasLow && !this.lowOnDisk()) this.opts.logger.warn(figures, 'free disk back above its floor: taking ingest again')
      })
      .finally(() => {
        this.diskSample = null
      })
    return this.diskSample
  }

  stats(): StoreStats {
    return {
      queuedRequests: this.queue.length,
      queuedEvents: this.queuedEvents,
      queuedBytes: this.queuedBytes,
      indexedEvents: this.index.size,
      indexBytes: this.index.bytes,
      probesBeforeGate: this.probesBeforeGate,
      probesUnderGate: this.probesUnderGate,
      commits: this.commits,
      committedEvents: this.committedEvents,
      lastCommitMs: this.lastCommitMs,
      lastCommitEvents: this.lastCommitEvents,
      rollovers: this.rollovers,
      lastRollover: this.lastRollover,
      sealed: this.sealer.sealedCount,
      sealFailures: this.sealer.failureCount,
      retentionRuns: this.retentionRunner.runs,
      retentionErrors: this.retentionRunner.errors,
      retentionSegmentsDeleted: this.retentionRunner.segmentsDeleted,
      retentionBytesFreed: this.retentionRunner.bytesFreed,
      lastRetention: this.retentionRunner.last,
      failed: this.failure,
      draining: this.draining,
      freeDiskBytes: this.freeDiskBytes,
      pendingSegments: this.pendingCount(),
      refusing: this.refusing(),
    }
  }

  /** The active segment's live rollups last read into memory for queries: the events they hold and their rows; null when none are (no query yet, or past LIVE_VIEW_MAX_ROWS). */
  async liveRollupsInMemory(): Promise<{ rolledUpEvents: number; rows: number } | null> {
    const view = (await this.active.live?.liveRollupsRead()) ?? null
    return view === null ? null : { rolledUpEvents: view.upto, rows: view.rows.length }
  }

  /** Every retained segment, oldest first. */
  segmentList(): SegmentInfo[] {
    return [...this.segments.values()]
      .sort((a, b) => a.id - b.id)
      .map((e) => ({
        id: e.id,
        state: e.state,
        row_count: e.rowCount,
        min_timestamp_us: e.minTsUs,
        max_timestamp_us: e.maxTsUs,
        bytes: e.bytes,
        created_ms: e.createdMs,
        ...(e.state === 'pending' ? { pending_since_ms: e.pendingSinceMs ?? e.createdMs, seal: { ...e.seal } } : {}),
      }))
  }

  /**
   * Rolls the active segment over: a fresh active segment takes appends and
   * the old one becomes pending (then sealed in the background). Concurrent
   * calls share one rollover. `force` rolls even an empty segment over.
   */
  rollover(reason: string, force = false, onlyIf?: (active: SegmentEntry) => boolean): Promise<RolloverReport> {
    if (this.rolling) return this.rolling
    if (this.closed || this.draining) return Promise.reject(new Errors.Draining())
    if (this.failure !== null) return Promise.reject(new Errors.StoreFailed())
    const run = this.doRollover(reason, force, onlyIf).finally(() => {
      this.rolling = null
    })
    this.rolling = run
    return run
  }

  /** Periodic work: age rollover, due seal retries, scheduled retention. The timer calls it; tests call it with a manual clock. */
  async tick(): Promise<void> {
    if (this.closed || this.draining) return
    const a = this.active
    const nowMs = this.opts.clock.nowMs()
    if (a.firstAppendMs !== null && nowMs - a.firstAppendMs >= this.rolloverAgeMs) {
      await this.rollover('age').catch((err: unknown) => this.opts.logger.error({ err }, 'age rollover failed'))
    }
    // Size is otherwise measured after commits; once an oversized active segment refuses
    // appends there are none, so a failed size rollover is retried from here.
    if (!this.rolling && this.active.live) await this.checkSize()
    this.sealer.kick(this.pendingEntries())
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
    await this.preProbed()
    await this.idle
    while (this.rolling) await this.rolling.catch(() => undefined)
    for (let run = this.retentionRunner.inFlight(); run !== null; run = this.retentionRunner.inFlight()) await run.catch(() => undefined)
    await this.sealer.idle()
    await this.files.idle()
    await this.active.live?.liveRollupsIdle()
  }

  /** Stops taking appends, commits and answers everything queued, checkpoints and closes DuckDB. */
  async close(): Promise<void> {
    if (this.closed) return
    this.draining = true
    if (this.timer) clearInterval(this.timer)
    if (this.diskTimer) clearInterval(this.diskTimer)
    await this.diskSample
    await this.preProbed()
    await this.idle
    // A retention run in flight stops at its next step (each is safe to stop after).
    await this.retentionRunner.inFlight()?.catch(() => undefined)
    await this.rolling?.catch(() => undefined)
    await this.sealer.stop()
    await this.withGate(async () => {
      this.closed = true
      for (const e of this.segments.values()) if (e.live) await e.live.close()
    }, 'close').catch((err: unknown) => {
      this.opts.logger.error({ err }, 'store close failed')
      throw err
    }).finally(async () => {
      await this.files.idle()
      await this.catalog.checkpoint().catch((err: unknown) => this.opts.logger.error({ err }, 'catalog checkpoint failed'))
      this.files.close()
    })
  }

  private pendingEntries(): SegmentEntry[] {
    return [...this.segments.values()].filter((e) => e.state === 'pending' && e.file !== null && e.live === null).sort((a, b) => a.id - b.id)
  }

  private startTimer(): void {
    const tickMs = this.opts.tickMs ?? Math.max(50, Math.min(60_000, Math.floor(this.rolloverAgeMs / 10)))
    this.timer = setInterval(() => void this.tick(), tickMs)
    this.timer.unref()
    this.diskTimer = setInterval(() => void this.sampleDisk(), this.opts.diskCheckMs ?? 1000)
    this.diskTimer.unref()
  }

  private async doRollover(reason: string, force: boolean, onlyIf?: (active: SegmentEntry) => boolean): Promise<RolloverReport> {
    const started = performance.now()
    const old = this.active
    if (old.rowCount === 0 && !force) {
      return { rolled: false, reason, segment_id: null, gate_held_ms: 0, duration_ms: 0 }
    }
    // Outside the gate: open and record the next segment (a crash now leaves two
    // files in active/, which start-up resolves: the older becomes pending) and
    // shrink the old one's WAL. Under the gate only the pointer swap; the old
    // segment is closed and moved afterwards, under retireLock.
    const id = this.nextId++
    const fresh = await Segment.open(segmentPath(this.opts.dataDir, 'active', id), segmentOptions(this.opts))
    let gateMs = 0
    let swapped = false
    const discardFresh = async () => {
      await fresh.close().catch(() => undefined)
      await this.fs.remove(fresh.path).catch(() => undefined)
      await this.fs.remove(`${fresh.path}.wal`).catch(() => undefined)
      await this.catalog.forget(id).catch(() => undefined)
      this.segments.delete(id)
    }
    try {
      await this.catalog.putLive(id, 'active', relativeSegmentPath('active', id), fresh.createdMs)
      await old.live!.readRun('CHECKPOINT').catch(() => undefined)
      await this.opts.hooks?.beforeRolloverGate?.(reason)
      await this.withGate(async (held) => {
        const t0 = performance.now()
        try {
          this.assertGate()
          await this.opts.hooks?.onRolloverHoldingGate?.(reason)
          // The condition is decided here, under the gate: appends may have changed it while we waited.
          if (onlyIf && !onlyIf(old)) return
          const entry = newEntry(id, 'active', fresh)
          this.gate.swap(held, fresh)
          this.segments.set(id, entry)
          this.active = entry
          old.state = 'pending'
          old.pendingSinceMs = this.opts.clock.nowMs()
          swapped = true
        } finally {
          gateMs = performance.now() - t0
        }
      }, 'rollover')
    } catch (err) {
      await discardFresh()
      throw err
    }
    if (!swapped) {
      await discardFresh()
      return { rolled: false, reason, segment_id: null, gate_held_ms: roundMs(gateMs), duration_ms: roundMs(performance.now() - started) }
    }
    await this.retire(old)
    this.rollovers++
    const report: RolloverReport = { rolled: true, reason, segment_id: old.id, gate_held_ms: roundMs(gateMs), duration_ms: roundMs(performance.now() - started) }
    this.lastRollover = report
    this.opts.logger.info({ event: 'rollover', ...report }, 'active segment rolled over')
    this.sealer.kick(this.pendingEntries())
    return report
  }

  /**
   * Closes a rolled-over segment's live instance and makes it a pending file:
   * new readers wait, current ones finish, then under retireLock (probes use
   * the writer) CHECKPOINT, close, move to pending/, attach. Appends no longer
   * reach it (the swap happened under the gate), so the gate is not needed.
   */
  private async retire(entry: SegmentEntry): Promise<void> {
    if (entry === this.active) throw new Error('invariant: retire of the active segment')
    let done!: () => void
    entry.liveClosing = new Promise<void>((resolve) => (done = resolve))
    try {
      await entry.livePins.released()
      await this.retireLock.runExclusive(async () => {
        await this.opts.hooks?.beforeRetireClose?.(entry.id)
        await entry.live!.close()
        const to = await moveToPending(this.fs, this.opts.dataDir, entry.id)
        entry.file = await this.files.attach(entry.id, to)
        entry.live = null
        entry.bytes = await this.fs.size(to)
        await this.catalog.putLive(entry.id, 'pending', relativeSegmentPath('pending', entry.id), entry.createdMs)
      })
    } catch (err) {
      // The segment is closed but could not be moved: stop, and let start-up recover it.
      this.noteWriteFailure(err, true)
      throw err
    } finally {
      entry.liveClosing = null
      done()
    }
  }

  /**
   * Runs retention now (the scheduler calls it every retentionIntervalMs; the
   * admin route on demand). A run already in flight is shared, never doubled.
   */
  retention(trigger: RetentionTrigger = 'admin'): Promise<RetentionReport> {
    return this.retentionRunner.run(trigger)
  }

  /** Refreshes the active segment's live rollups in the background when `minRows` events are not in them yet (see Segment). */
  private refreshLiveRollups(minRows: number, minIntervalMs = 0): void {
    const entry = this.active
    void entry.live
      ?.refreshLiveRollups(minRows, minIntervalMs)
      .catch((err: unknown) => this.opts.logger.warn({ err, segment: entry.id }, 'refreshing the live rollups failed; queries read those events raw'))
  }

  private assertGate(): void {
    this.gate.assertHeld()
  }

  private kick(): void {
    if (this.committing) return
    this.committing = true
    this.idle = new Promise((resolve) => (this.markIdle = resolve))
    void this.commitLoop()
  }

  private async commitLoop(): Promise<void> {
    try {
      for (;;) {
        while (this.queue.length > 0) {
          const batch = this.takeBatch()
          try {
            await this.withGate((writer) => this.commitBatch(writer, batch), 'append')
          } catch (err) {
            const error = err instanceof Error ? err : new Error(String(err))
            for (const p of batch) p.reject(isServiceError(error) ? error : new Errors.StoreFailed())
          }
          // Measured beside the next commit rather than between commits (two
          // more trips to the libuv pool, each waiting on the busy event loop).
          void this.checkSize()
        }
        if (this.sizing === null) break
        // Idle only once measured; requests queued meanwhile are committed first.
        await this.sizing
      }
    } finally {
      this.committing = false
      this.markIdle()
    }
  }

  /** Measures the active segment (rolling it over when too big); one measurement at a time, shared by every caller; never rejects. */
  private checkSize(): Promise<void> {
    this.sizing ??= this.measureActive()
      .catch((err: unknown) => this.opts.logger.error({ err }, 'measuring the active segment failed'))
      .finally(() => (this.sizing = null))
    return this.sizing
  }

  private async measureActive(): Promise<void> {
    if (this.rolling || this.draining || this.failure !== null) return
    const measured = this.active
    const file = measured.live!.path
    const bytes = ((await this.fs.size(file)) ?? 0) + ((await this.fs.size(`${file}.wal`)) ?? 0)
    // A rollover (by age, by an admin, or by size, while the sizes were read) may have replaced the active segment: then this reading is stale.
    if (measured !== this.active) return
    measured.bytes = bytes
    // Commits are what fill the disk: sample again if the last reading is older than a tenth of a second.
    if (performance.now() - this.diskSampledMs > 100) void this.sampleDisk()
    if (bytes >= this.rolloverBytes) {
      void this.rollover('size').catch((err: unknown) => this.opts.logger.error({ err }, 'size rollover failed'))
    }
  }

  /** Whole requests, FIFO, up to maxCommitEvents (always at least one request). */
  private takeBatch(): Pending[] {
    let events = 0
    let n = 0
    while (n < this.queue.length) {
      const size = this.queue[n]!.events.ids.length
      if (n > 0 && events + size > this.opts.maxCommitEvents) break
      events += size
      n++
    }
    const batch = this.queue.splice(0, n)
    for (const p of batch) {
      this.queuedEvents -= p.events.ids.length
      this.queuedBytes -= p.bytes
    }
    return batch
  }

  /** The stored fingerprint of each id of `ids` that some retained segment holds (exact). */
  private async probe(ids: Iterable<string>, known: KnownIds): Promise<Map<string, string>> {
    this.assertGate()
    const bySegment = new Map<number, string[]>()
    const found = new Map<string, string>()
    for (const id of ids) {
      const k = known.get(id)
      if (k?.fingerprint) {
        found.set(id, k.fingerprint)
        continue
      }
      for (const seg of this.index.candidates(id)) {
        if (k?.segments.has(seg)) continue
        let list = bySegment.get(seg)
        if (!list) bySegment.set(seg, (list = []))
        list.push(id)
      }
    }
    for (const [seg, list] of bySegment) {
      const entry = this.segments.get(seg)
      if (!entry) continue
      // A rolled-over segment that is not yet a file: its writer answers, unless
      // retire is closing it right now (then wait, and read the file it became).
      const hits =
        entry.live && entry !== this.active
          ? await this.retireLock.runExclusive(() => this.lookupIn(entry, list))
          : await this.lookupIn(entry, list)
      this.probesUnderGate++
      for (const [id, fp] of hits) found.set(id, fp)
    }
    return found
  }

  /** Exact probe of one segment: its writer while live, its attached file (pinned) after. */
  private async lookupIn(entry: SegmentEntry, ids: string[]): Promise<Map<string, string>> {
    if (entry.live) return entry.live.lookup(ids)
    if (!entry.file) throw new Error(`invariant: segment ${entry.id} has neither a live instance nor a file`)
    return this.lookupFile(entry.file, ids, (fn) => fn(this.files.probeConn))
  }

  private async commitBatch(writer: GatedWriter, batch: Pending[]): Promise<void> {
    this.assertGate()
    if (this.failure !== null) throw new Errors.StoreFailed()
    await this.opts.hooks?.onCommitHoldingGate?.()
    const known: KnownIds = new Map()
    for (const p of batch) if (p.known) for (const [id, k] of p.known) if (!known.has(id)) known.set(id, k)
    const stored = await this.probe(idsOf(batch), known)
    // Validation checked the timestamp against the event window when the request
    // arrived; retention may have run since and dropped the segment holding an
    // earlier copy of a replayed event (its rollups still count it). Checked
    // again here, under the gate, an expired event can never be stored twice.
    const cutoffUs = this.cutoffs().eventsUs
    const staged = new Map<string, string>()
    const parts: EventBatch[] = []
    const outcomes: AppendOutcome[] = []
    for (const p of batch) {
      const { index, ids, fingerprints, tsUs } = p.events
      const local = new Map<string, string>()
      const results: EventResult[] = []
      const keep: boolean[] = new Array(ids.length)
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i]!
        keep[i] = false
        if (tsUs[i]! < cutoffUs) {
          const oldest = new Date(Math.ceil(cutoffUs / 1000)).toISOString()
          results.push({ index: index[i]!, event_id: id, status: 'rejected', errors: [{ field: '/timestamp', message: `is older than the event retention window (${oldest})` }] })
          continue
        }
        const prior = local.get(id) ?? staged.get(id) ?? stored.get(id)
        if (prior === undefined) {
          local.set(id, fingerprints[i]!)
          keep[i] = true
        } else {
          results.push({ index: index[i]!, event_id: id, status: prior === fingerprints[i] ? 'duplicate' : 'conflict' })
        }
      }
      const refused = p.atomic && results.some((r) => r.status === 'conflict' || r.status === 'rejected')
      if (!refused && local.size > 0) {
        for (const [id, fp] of local) staged.set(id, fp)
        parts.push(keepRows(p.events, keep))
      }
      outcomes.push(outcomeOf(p, results, refused ? 0 : local.size, !refused))
    }
    const started = performance.now()
    try {
      await this.opts.hooks?.faultOnWrite?.()
      if (writer.segment !== this.active.live) throw new Error('invariant: the gate guards the active segment')
      await writer.segment.appendCommitted(writer, parts)
    } catch (err) {
      this.notify((o) => o.commitFailure?.())
      this.noteWriteFailure(err, false)
      throw err
    }
    const durationMs = performance.now() - started
    const entry = this.active
    this.refreshLiveRollups(this.opts.hooks?.liveRollupEveryRows ?? LIVE_ROLLUP_EVERY_ROWS, this.opts.hooks?.liveRollupEveryMs ?? LIVE_ROLLUP_EVERY_MS)
    for (const id of staged.keys()) this.index.add(id, entry.id)
    const rows = staged.size
    if (rows > 0) {
      entry.rowCount += rows
      entry.firstAppendMs ??= this.opts.clock.nowMs()
      for (const part of parts) {
        for (const ts of part.tsUs) {
          if (entry.minTsUs === null || ts < entry.minTsUs) entry.minTsUs = ts
          if (entry.maxTsUs === null || ts > entry.maxTsUs) entry.maxTsUs = ts
        }
      }
    }
    this.commits++
    this.committedEvents += rows
    this.lastCommitMs = durationMs
    this.lastCommitEvents = rows
    this.notify((o) => o.commit?.({ events: rows, requests: batch.length, durationMs }))
    batch.forEach((p, i) => p.resolve(outcomes[i]!))
  }

  private noteWriteFailure(err: unknown, always: boolean): void {
    const message = err instanceof Error ? err.message : String(err)
    this.opts.logger.error({ err }, always ? 'closing a rolled-over segment failed' : 'group commit failed; its requests are answered 503 and nothing of them is stored')
    // DuckDB invalidates a database after a failed WAL write/fsync or checkpoint:
    // from then on nothing may be acknowledged. Stop (fail-stop) rather than guess.
    // DuckDB spells its I/O errors "IO Error:"; any of them on the commit path may have left the WAL half-written.
    if (always || /invalidated|fatal|\bIO Error\b|I\/O Error|No space left|Disk quota exceeded/i.test(message)) {
      this.failure = message.slice(0, 300)
      this.opts.logger.fatal({ reason: this.failure }, 'store entered fail-stop: refusing writes until restart')
    }
  }
}

function active0(entries: readonly SegmentEntry[]): SegmentEntry {
  const active = entries.find((e) => e.state === 'active')
  if (!active?.live) throw new Error('invariant: the store opens with one live active segment')
  return active
}

function mib(bytes: number): string {
  const n = bytes / MIB
  return `${n < 100 ? n.toFixed(1) : Math.round(n)} MiB`
}

function* idsOf(batch: Pending[]): Generator<string> {
  for (const p of batch) yield* p.events.ids
}






function outcomeOf(req: AppendRequest, results: EventResult[], accepted: number, stored: boolean): AppendOutcome {
  const all = [...req.rejected, ...results].sort((a, b) => a.index - b.index)
  let duplicates = 0
  let conflicts = 0
  let rejected = req.rejected.length
  for (const r of results) {
    if (r.status === 'duplicate') duplicates++
    else if (r.status === 'conflict') conflicts++
    else rejected++
  }
  return { stored, accepted, duplicates, conflicts, rejected, results: all }
}

function outcomesOf(req: AppendRequest, o: AppendOutcome): IngestOutcomes {
  const events = req.events.ids.length + req.rejected.length
  const told = o.accepted + o.duplicates + o.conflicts + o.rejected
  return { source: req.source ?? 'native', events, accepted: o.accepted, duplicates: o.duplicates, conflicts: o.conflicts, rejected: o.rejected, refused: o.stored ? 0 : events - told }
}

function isServiceError(err: Error): boolean {
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' && code.startsWith('TL_')
}
