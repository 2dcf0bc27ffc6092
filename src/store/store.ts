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

import path from 'node:path'
import { E_TIMEOUT, Mutex, Semaphore, withTimeout, type MutexInterface, type SemaphoreInterface } from 'async-mutex'
import type { DuckDBConnection } from '@duckdb/node-api'
import type { Logger } from '../log.js'
import type { Clock } from '../clock.js'
import { Errors } from '../errors.js'
import type { EventBatch } from '../ingest/batch.js'
import { keepRows } from '../ingest/batch.js'
import type { FieldError } from '../ingest/event.js'
import { AnswerCache } from './answers.js'
import { DuckDBCatalog, type Catalog, type DetailsState, type SegmentDims } from './catalog.js'
import { FileTier, type AttachedFile } from './files.js'
import { nodeFileSystem, removeDurably, type FileSystem } from './fsops.js'
import { IdIndex } from './idindex.js'
import { CATALOG_FILE, detailsPath, LEGACY_ACTIVE_FILE, parseSegmentFileName, relativeSegmentPath, segmentPath, tierDir, TIERS } from './layout.js'
import { cutoffsAt, DEFAULT_WINDOWS, type Cutoffs, type RetentionReport, type RetentionTrigger, type RetentionWindows } from './retention.js'
import { lookupFingerprints, scanIds, Segment, type LiveRollups } from './segment.js'
import { computeStats, type SegmentStats } from './stats.js'
import { eventColumns, isCurrentEventsTable } from './schema.js'
import { Sealer, type SealStep } from './sealer.js'

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
  /** The door the events came in by (metrics count events per source); default 'native'. */
  source?: 'native' | 'openmeter' | 'otlp' | 'litellm'
}

export interface StoreOptions {
  dataDir: string
  clock: Clock
  logger: Logger
  maxQueueEvents: number
  maxQueueBytes: number
  maxCommitEvents: number
  gateWaitMs: number
  maxConcurrentQueries: number
  /** Longest one snapshot's reads may run before DuckDB is interrupted (QueryTimeout); default 30 s. */
  queryTimeoutMs?: number
  /** Rows of catalog answers kept for repeated questions (answers.ts; default 100 000; 0: none kept). */
  answerCacheRows?: number
  duckdbMemoryBytes: number
  duckdbThreads: number
  /** Roll the active segment over when its file plus WAL reach this size. */
  rolloverBytes?: number
  /** ...or when its first event is this old. */
  rolloverAgeMs?: number
  /** First retry delay of a failed seal (doubles up to sealRetryMaxMs). */
  sealRetryMs?: number
  sealRetryMaxMs?: number
  /** How often the background timer checks age rollover, seal retries and the retention schedule. */
  tickMs?: number
  /** Retention windows (defaults: 30d events, 7d details, 400d rollups). */
  retention?: RetentionWindows
  /** How often retention runs (default 1h; the first run comes min(interval, 1 min) after open; 0: never on its own). */
  retentionIntervalMs?: number
  fs?: FileSystem
  /** Appends are refused while the data directory's file system has less free space than this (default 1 GiB; 0: never). */
  minFreeDiskBytes?: number
  /** ...or while more rolled-over segments than this wait to be sealed (default 32). */
  maxPendingSegments?: number
  /** ...or while the active segment's file plus WAL exceed this (default 4 × rolloverBytes). */
  maxActiveBytes?: number
  /** How often free disk space is sampled (default 1 s). */
  diskCheckMs?: number
  /** Test seams; never set in production. */
  hooks?: StoreHooks
}

export interface StoreHooks {
  /** Runs inside the gate before a group commit writes: lets a test park an append while it holds the gate. */
  onCommitHoldingGate?: () => Promise<void>
  /** Runs where the commit's write runs; a throw is handled as that write's failure (fault injection). */
  faultOnWrite?: () => Promise<void>
  /** Runs under retireLock before a rolled-over segment is closed: lets a test park that close. */
  beforeRetireClose?: (segmentId: number) => Promise<void>
  /** Runs before each sealing step; a throw aborts the seal there, as a crash would. */
  beforeSealStep?: (step: SealStep, segmentId: number) => Promise<void>
  /** Runs just before a rollover asks for the gate (`reason`: size, age, admin, retention). */
  beforeRolloverGate?: (reason: string) => Promise<void>
  /** Runs inside the gate during a rollover's swap: lets a test park retention while it holds the gate. */
  onRolloverHoldingGate?: (reason: string) => Promise<void>
  /** Events appended between refreshes of the active segment's live rollups (default LIVE_ROLLUP_EVERY_ROWS); tests refresh more often. */
  liveRollupEveryRows?: number
  /** Least time between those refreshes (default LIVE_ROLLUP_EVERY_MS); tests set 0. */
  liveRollupEveryMs?: number
}

/** Who holds the write gate (a label for its wait and hold figures). */
export type GateTask = 'append' | 'rollover' | 'close' | 'other'

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

/** The writer, valid only while the gate that produced it is held. */
export interface GatedWriter {
  readonly segment: Segment
}

interface Pending extends AppendRequest {
  resolve(outcome: AppendOutcome): void
  reject(err: Error): void
  /** What probes of closed segments found before the gate (see preProbe); null: probe all under it. */
  known: KnownIds | null
}

/** Per event id: the closed segments already probed for it, and the fingerprint found there (if any). */
type KnownIds = Map<string, { segments: Set<number>; fingerprint: string | null }>

export type SegmentState = 'active' | 'pending' | 'archived'

export interface SealStatus {
  attempts: number
  lastError: string | null
  nextAttemptMs: number | null
}

/** One retained segment, in exactly one state, readable through `live` or `file`. */
export interface SegmentEntry {
  readonly id: number
  state: SegmentState
  /** The open DuckDB instance (the active segment, or a rolled-over one not yet closed). */
  live: Segment | null
  liveReaders: number
  /** Set while the live instance is being closed: new readers wait for it. */
  liveClosing: Promise<void> | null
  /** The attached pending or archived file. */
  file: AttachedFile | null
  /** An archived segment's attached detail file (when `details` is 'file'). */
  detailsFile: AttachedFile | null
  /** Archived segments: where their details are (catalog.ts); null while live or pending (inside the segment). */
  details: DetailsState | null
  createdMs: number
  /** When it stopped taking appends (its rollover, or the start-up that found it pending); null while active. */
  pendingSinceMs: number | null
  firstAppendMs: number | null
  rowCount: number
  minTsUs: number | null
  maxTsUs: number | null
  bytes: number | null
  stats: SegmentStats | null
  dims: SegmentDims | null
  seal: SealStatus
}

export interface SegmentInfo {
  id: number
  state: SegmentState
  row_count: number
  min_timestamp_us: number | null
  max_timestamp_us: number | null
  bytes: number | null
  created_ms: number
  /** Pending segments: when they stopped taking appends. */
  pending_since_ms?: number
  seal?: SealStatus
}

export interface RolloverReport {
  rolled: boolean
  reason: string
  /** The segment that was rolled over (now pending), if any. */
  segment_id: number | null
  /** How long the write gate was held (the pointer swap only). */
  gate_held_ms: number
  duration_ms: number
}

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
/** Most segments deleted in one catalog transaction. */
const MAX_DELETE_BATCH = 1000

export class Store {
  /** Catalog answers kept for repeated questions, by catalog generation (queries read through it). */
  readonly answers: AnswerCache
  private readonly gate: MutexInterface
  private readonly rawGate = new Mutex()
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
  private retentionRun: Promise<RetentionReport> | null = null
  private retentionRuns = 0
  private retentionErrors = 0
  private retentionSegmentsDeleted = 0
  private retentionBytesFreed = 0
  private lastRetention: RetentionReport | null = null
  private readonly fs: FileSystem
  private freeDiskBytes: number | null = null
  private diskSampledMs = -Infinity
  private diskSample: Promise<void> | null = null
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
    this.gate = withTimeout(this.rawGate, opts.gateWaitMs, E_TIMEOUT)
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
    if (!entry || entry.live !== null || !file || (file.retired && file.refs === 0)) return null
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
  async withGate<T>(fn: (writer: GatedWriter) => Promise<T>, task: GateTask = 'other'): Promise<T> {
    let release: MutexInterface.Releaser
    const asked = performance.now()
    try {
      release = await this.gate.acquire()
    } catch (err) {
      if (err === E_TIMEOUT) {
        this.notify((o) => o.gateTimeout?.({ task, waitMs: performance.now() - asked }))
        throw new Errors.GateTimeout()
      }
      throw err
    }
    const taken = performance.now()
    let valid = true
    const active = this.active.live!
    const writer: GatedWriter = {
      get segment(): Segment {
        if (!valid) throw new Error('GatedWriter used after the write gate was released')
        return active
      },
    }
    try {
      return await fn(writer)
    } finally {
      valid = false
      release()
      const released = performance.now()
      this.notify((o) => o.gate?.({ task, waitMs: taken - asked, heldMs: released - taken }))
    }
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
    return this.rawGate.isLocked()
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
      throw err
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
      entry.liveReaders++
      pinned.push(async () => {
        entry.liveReaders--
      })
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
    if (this.lowOnDisk()) {
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
    return this.minFreeDiskBytes > 0 && this.freeDiskBytes !== null && this.freeDiskBytes < this.minFreeDiskBytes
  }

  private pendingCount(): number {
    let n = 0
    for (const e of this.segments.values()) if (e.state === 'pending') n++
    return n
  }

  /** Reads the free space of the data directory's file system; one sample at a time. A failed read keeps the last value and is logged. */
  sampleDisk(): Promise<void> {
    this.diskSample ??= this.fs
      .freeBytes(this.opts.dataDir)
      .then(
        (bytes) => {
          const wasLow = this.lowOnDisk()
          this.freeDiskBytes = bytes
          this.diskSampledMs = performance.now()
          const figures = { freeBytes: bytes, floorBytes: this.minFreeDiskBytes }
          if (!wasLow && this.lowOnDisk()) this.opts.logger.error(figures, 'free disk below its floor: refusing ingest until space is freed')
          if (wasLow && !this.lowOnDisk()) this.opts.logger.warn(figures, 'free disk back above its floor: taking ingest again')
        },
        (err: unknown) => this.opts.logger.error({ err }, 'reading free disk space failed'),
      )
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
      retentionRuns: this.retentionRuns,
      retentionErrors: this.retentionErrors,
      retentionSegmentsDeleted: this.retentionSegmentsDeleted,
      retentionBytesFreed: this.retentionBytesFreed,
      lastRetention: this.lastRetention,
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
    if (nowMs >= this.nextRetentionMs && this.retentionRun === null) {
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
    while (this.retentionRun) await this.retentionRun.catch(() => undefined)
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
    await this.retentionRun?.catch(() => undefined)
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
      await this.withGate(async () => {
        const t0 = performance.now()
        try {
          this.assertGate()
          await this.opts.hooks?.onRolloverHoldingGate?.(reason)
          // The condition is decided here, under the gate: appends may have changed it while we waited.
          if (onlyIf && !onlyIf(old)) return
          const entry = newEntry(id, 'active', fresh)
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
      return { rolled: false, reason, segment_id: null, gate_held_ms: round(gateMs), duration_ms: round(performance.now() - started) }
    }
    await this.retire(old)
    this.rollovers++
    const report: RolloverReport = { rolled: true, reason, segment_id: old.id, gate_held_ms: round(gateMs), duration_ms: round(performance.now() - started) }
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
      while (entry.liveReaders > 0) await new Promise((resolve) => setTimeout(resolve, 5))
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
    if (this.retentionRun) return this.retentionRun
    if (this.closed || this.draining) return Promise.reject(new Errors.Draining())
    const run = this.runRetention(trigger).finally(() => {
      this.retentionRun = null
    })
    this.retentionRun = run
    return run
  }

  private async runRetention(trigger: RetentionTrigger): Promise<RetentionReport> {
    const started = performance.now()
    const nowMs = this.opts.clock.nowMs()
    const c = this.cutoffs(nowMs)
    const iso = (us: number) => new Date(Math.floor(us / 1000)).toISOString()
    const r: RetentionReport = {
      trigger,
      started_at: new Date(nowMs).toISOString(),
      cutoffs: { events: iso(c.eventsUs), details: iso(c.detailsUs), rollups: iso(c.rollupsUs) },
      active: { action: 'kept', segment_id: this.active.id, expired_events: 0 },
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
      if (this.draining || this.closed) {
        r.errors.push(`${name}: skipped, shutting down`)
        return
      }
      try {
        await fn()
      } catch (err) {
        r.errors.push(`${name}: ${err instanceof Error ? err.message.slice(0, 300) : String(err)}`)
        this.opts.logger.error({ event: 'retention_step_failed', step: name, err }, 'a retention step failed; the next run retries it')
      }
    }
    await step('active', () => this.expireActive(c, r))
    await step('segments', () => this.deleteExpiredSegments(c, nowMs, r))
    await step('details', () => this.expireDetailFiles(c, r))
    await step('rollups', async () => {
      r.rollup_rows_deleted = await this.catalog.deleteRollupsBefore(c.rollupsUs)
    })
    await step('index', async () => {
      r.index_entries_removed = await this.index.purgeDropped()
    })
    await step('sweep', () => this.sweep(c, r))
    r.awaiting_seal = this.pendingEntries()
      .filter((e) => e.maxTsUs === null || e.maxTsUs < c.eventsUs)
      .map((e) => e.id)
    this.sealer.kick(this.pendingEntries())
    r.gate_held_ms = round(r.gate_held_ms)
    r.duration_ms = round(performance.now() - started)
    this.retentionRuns++
    this.retentionErrors += r.errors.length
    this.retentionSegmentsDeleted += r.segments_deleted.length
    this.retentionBytesFreed += r.bytes_freed
    this.lastRetention = r
    this.opts.logger[r.errors.length > 0 ? 'warn' : 'info']({ event: 'retention', ...r }, 'retention run finished')
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
    const a = this.active
    const expired = (e: SegmentEntry) => e.rowCount > 0 && e.maxTsUs !== null && e.maxTsUs < c.eventsUs
    if (!expired(a)) return
    const rolled = await this.rollover('retention', false, expired)
    r.gate_held_ms += rolled.gate_held_ms
    if (rolled.rolled && rolled.segment_id === a.id) {
      r.active = { action: 'rolled_over', segment_id: a.id, expired_events: a.rowCount }
    } else {
      r.active = { action: 'kept', segment_id: this.active.id, expired_events: 0, note: 'it took current events while retention waited for the write gate' }
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
    const all = [...this.segments.values()].filter((e) => e.state === 'archived' && (e.maxTsUs === null || e.maxTsUs < c.eventsUs)).sort((a, b) => a.id - b.id)
    const removals: Array<Promise<void>> = []
    // One catalog transaction per batch: a durable commit per segment costs ~25 ms each.
    for (let at = 0; at < all.length; at += MAX_DELETE_BATCH) {
      if (this.draining) break
      const batch = all.slice(at, at + MAX_DELETE_BATCH)
      await this.catalog.markDeleted(
        batch.map((e) => e.id),
        nowMs,
      )
      const sizes = await Promise.all(batch.flatMap((e) => [e.file, e.detailsFile]).map((f) => (f ? this.fs.size(f.path) : null)))
      batch.forEach((e, i) => {
        this.segments.delete(e.id)
        this.index.dropSegment(e.id)
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
      this.opts.logger.warn({ event: 'retention_remove_failed', err }, 'could not remove a deleted segment file; the next run retries'),
    )
  }

  /** Detail files of archived segments whose newest event is past the detail window. */
  private async expireDetailFiles(c: Cutoffs, r: RetentionReport): Promise<void> {
    for (const e of [...this.segments.values()].sort((a, b) => a.id - b.id)) {
      if (this.draining) return
      if (e.state !== 'archived' || e.detailsFile === null || e.maxTsUs === null || e.maxTsUs >= c.detailsUs) continue
      await this.catalog.expireDetails(e.id)
      const file = e.detailsFile
      e.detailsFile = null
      e.details = 'expired'
      r.details_expired.push(e.id)
      r.detail_rows_expired += e.stats?.detailCount ?? 0
      void this.retireFile(file, (await this.fs.size(file.path)) ?? 0, r).catch((err: unknown) =>
        this.opts.logger.warn({ event: 'retention_remove_failed', segment: e.id, err }, 'could not remove an expired detail file; the next run retries'),
      )
    }
  }

  /**
   * Removes an attached file once no reader pins it (at once when none does),
   * counted in `r` as deleted now or deferred. Resolves when it is gone.
   */
  private retireFile(file: AttachedFile, bytes: number, r: RetentionReport): Promise<void> {
    const deferred = file.refs > 0
    if (deferred) r.files_deferred++
    else {
      r.files_deleted++
      r.bytes_freed += bytes
    }
    return new Promise<void>((resolve, reject) => {
      // Runs when the last reader unpins (or now): it must not throw into that reader.
      const remove = async (): Promise<void> => {
        try {
          await removeDurably(this.fs, file.path)
          if (deferred) this.retentionBytesFreed += bytes
          resolve()
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)))
        }
      }
      this.files.retire(file, remove).catch((err: unknown) => reject(err instanceof Error ? err : new Error(String(err))))
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
    const records = new Map((await this.catalog.list()).map((rec) => [rec.id, rec]))
    const waiting = new Set<number>()
    for (const tier of ['pending', 'archive'] as const) {
      const dir = tierDir(this.opts.dataDir, tier)
      for (const name of await this.fs.list(dir)) {
        const parsed = parseSegmentFileName(name)
        if (!parsed) continue
        const file = path.join(dir, name)
        const rec = records.get(parsed.id)
        const entry = this.segments.get(parsed.id)
        if (this.files.isRetiring(file.replace(/\.wal$/, ''))) {
          waiting.add(parsed.id)
          continue
        }
        const deletedSegment = rec?.state === 'deleted' && entry === undefined
        const expiredDetails =
          parsed.kind === 'details' && rec?.state === 'archived' && (rec.details === 'expired' || rec.details === 'none') && entry !== undefined && entry.detailsFile === null
        if (!deletedSegment && !expiredDetails) continue
        r.bytes_freed += (await this.fs.size(file)) ?? 0
        await this.fs.remove(file)
        await this.fs.syncDir(dir)
        r.files_deleted++
        this.opts.logger.info({ event: 'retention_swept', file }, 'removed a file nothing references')
      }
    }
    // A deleted segment's row stays while its rollups may: were a stray file of it
    // ever found again (a pending copy a reader kept), start-up removes it instead
    // of sealing it a second time and counting its rollups twice.
    const settled: number[] = []
    for (const rec of records.values()) {
      const maxTsUs = rec.stats?.maxTsUs ?? null
      const rollupsGone = maxTsUs === null || maxTsUs < c.rollupsUs
      if (rec.state === 'deleted' && rollupsGone && !waiting.has(rec.id) && !this.segments.has(rec.id)) settled.push(rec.id)
    }
    await this.catalog.forgetDeleted(settled)
  }

  /** Refreshes the active segment's live rollups in the background when `minRows` events are not in them yet (see Segment). */
  private refreshLiveRollups(minRows: number, minIntervalMs = 0): void {
    const entry = this.active
    void entry.live
      ?.refreshLiveRollups(minRows, minIntervalMs)
      .catch((err: unknown) => this.opts.logger.warn({ err, segment: entry.id }, 'refreshing the live rollups failed; queries read those events raw'))
  }

  private assertGate(): void {
    if (!this.rawGate.isLocked()) throw new Error('invariant: runs only under the write gate')
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
      await writer.segment.appendCommitted(parts)
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

function mib(bytes: number): string {
  const n = bytes / MIB
  return `${n < 100 ? n.toFixed(1) : Math.round(n)} MiB`
}

function* idsOf(batch: Pending[]): Generator<string> {
  for (const p of batch) yield* p.events.ids
}

function newEntry(id: number, state: SegmentState, live: Segment | null): SegmentEntry {
  return {
    id,
    state,
    live,
    liveReaders: 0,
    liveClosing: null,
    file: null,
    detailsFile: null,
    details: null,
    createdMs: live?.createdMs ?? 0,
    pendingSinceMs: null,
    firstAppendMs: null,
    rowCount: 0,
    minTsUs: null,
    maxTsUs: null,
    bytes: null,
    stats: null,
    dims: null,
    seal: { attempts: 0, lastError: null, nextAttemptMs: null },
  }
}

/**
 * Moves a checkpointed, closed segment file from active/ to pending/, durably
 * (both directories fsync'd), and returns its new path. A WAL left beside it
 * would mean the checkpoint did not absorb everything: moving the pair is not
 * atomic, so refuse (the caller fails stop; start-up reopens the file in
 * place, which replays and checkpoints the WAL, and moves it then).
 */
async function moveToPending(fs: FileSystem, dataDir: string, id: number): Promise<string> {
  const from = segmentPath(dataDir, 'active', id)
  const to = segmentPath(dataDir, 'pending', id)
  if ((await fs.size(`${from}.wal`)) !== null) throw new Error(`${from}.wal still exists after CHECKPOINT and close; not moving the segment`)
  await fs.rename(from, to)
  await fs.syncDir(tierDir(dataDir, 'pending'))
  await fs.syncDir(tierDir(dataDir, 'active'))
  return to
}

/** A live segment's DuckDB options: half the memory budget (the closed tiers get the other half). */
function segmentOptions(opts: StoreOptions) {
  return {
    memoryBytes: Math.floor(opts.duckdbMemoryBytes / 2),
    threads: opts.duckdbThreads,
    readConnections: opts.maxConcurrentQueries,
    nowMs: opts.clock.nowMs(),
  }
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000
}

/**
 * Start-up: brings files and catalog into agreement and returns the retained
 * segments. Files are the truth for active and pending segments, the catalog
 * for archived and deleted ones. Every step is safe to repeat.
 */
async function recover(
  opts: StoreOptions,
  fs: FileSystem,
  files: FileTier,
  catalog: Catalog,
): Promise<{ entries: SegmentEntry[]; nextId: number }> {
  const log = opts.logger
  const dir = (tier: (typeof TIERS)[number]) => tierDir(opts.dataDir, tier)
  const segOpts = segmentOptions(opts)
  const records = new Map((await catalog.list()).map((r) => [r.id, r]))
  let maxId = Math.max(0, ...records.keys())
  const idsIn = async (tier: 'active' | 'pending' | 'archive', kind: 'events' | 'details' = 'events'): Promise<number[]> => {
    const out: number[] = []
    for (const name of await fs.list(dir(tier))) {
      const parsed = parseSegmentFileName(name)
      if (!parsed) continue
      maxId = Math.max(maxId, parsed.id)
      if (parsed.suffix.includes('.tmp')) {
        // A seal that never published: its output is worthless.
        await fs.remove(path.join(dir(tier), name))
        log.warn({ event: 'recover_removed_tmp', file: name }, 'removed an unfinished seal output')
      } else if (parsed.suffix === '' && parsed.kind === kind) out.push(parsed.id)
    }
    return out
  }

  // The single-file store of the first release becomes an ordinary active segment.
  const legacy = path.join(dir('active'), LEGACY_ACTIVE_FILE)
  if ((await fs.size(legacy)) !== null) {
    const id = Math.max(maxId, ...(await idsIn('active')), ...(await idsIn('pending')), ...(await idsIn('archive'))) + 1
    if ((await fs.size(`${legacy}.wal`)) !== null) await fs.rename(`${legacy}.wal`, `${segmentPath(opts.dataDir, 'active', id)}.wal`)
    await fs.rename(legacy, segmentPath(opts.dataDir, 'active', id))
    await fs.syncDir(dir('active'))
    log.info({ event: 'recover_legacy', id }, 'adopted the single-file store as segment')
  }

  // Active: the newest file is the active segment; older ones were rolled
  // over but not yet moved (crash mid-rollover): close them properly, move on.
  const activeIds = await idsIn('active')
  for (const id of activeIds.slice(0, -1)) {
    const seg = await Segment.open(segmentPath(opts.dataDir, 'active', id), segOpts)
    await seg.close()
    await moveToPending(fs, opts.dataDir, id)
    log.warn({ event: 'recover_rolled', id }, 'moved a rolled-over segment to pending')
  }

  const archiveIds = new Set(await idsIn('archive'))
  const entries: SegmentEntry[] = []
  /** Takes a pending file in as a segment: attached, measured, recorded as pending unless the catalog has it archived. */
  const addPending = async (id: number): Promise<void> => {
    const rec = records.get(id)
    const file = segmentPath(opts.dataDir, 'pending', id)
    const entry = newEntry(id, 'pending', null)
    entry.file = await files.attach(id, file)
    const stats = await computeStats(files.probeConn, entry.file.alias)
    Object.assign(entry, { rowCount: stats.rowCount, minTsUs: stats.minTsUs, maxTsUs: stats.maxTsUs, bytes: await fs.size(file) })
    entry.createdMs = rec?.createdMs ?? opts.clock.nowMs()
    // When it became pending before the restart is not recorded: from now (a lower bound).
    entry.pendingSinceMs = opts.clock.nowMs()
    if (rec?.state !== 'archived') await catalog.putLive(id, 'pending', relativeSegmentPath('pending', id), entry.createdMs)
    entries.push(entry)
  }
  for (const id of await idsIn('pending')) {
    const rec = records.get(id)
    const file = segmentPath(opts.dataDir, 'pending', id)
    if (rec?.state === 'deleted' || (rec?.state === 'archived' && archiveIds.has(id))) {
      // Sealed (or expired) before the crash; only the removal of the pending file was left.
      await removeDurably(fs, file)
      log.info({ event: 'recover_pending_done', id, state: rec.state }, 'removed a pending file already sealed')
      continue
    }
    if (rec?.state !== 'archived' && archiveIds.has(id)) {
      // Published but not recorded: seal again from the pending file.
      await removeDurably(fs, segmentPath(opts.dataDir, 'archive', id))
      archiveIds.delete(id)
      log.warn({ event: 'recover_unrecorded_archive', id }, 'removed an archive the catalog never recorded; sealing again')
    }
    await addPending(id)
  }

  const dims = await catalog.dims()
  for (const id of archiveIds) {
    const rec = records.get(id)
    const file = segmentPath(opts.dataDir, 'archive', id)
    if (rec?.state === 'deleted') {
      await removeDurably(fs, file)
      log.info({ event: 'recover_deleted', id }, 'removed an archive the catalog had deleted')
      continue
    }
    if (rec?.state !== 'archived' || !rec.stats) {
      const to = path.join(dir('orphaned'), path.basename(file))
      await fs.rename(file, to)
      await fs.syncDir(dir('orphaned'))
      log.error({ event: 'recover_orphan', id, to }, 'an archive file nothing explains was moved aside for an operator')
      continue
    }
    const entry = newEntry(id, 'archived', null)
    entry.file = await files.attach(id, file)
    Object.assign(entry, {
      createdMs: rec.createdMs,
      rowCount: rec.stats.rowCount,
      minTsUs: rec.stats.minTsUs,
      maxTsUs: rec.stats.maxTsUs,
      bytes: rec.bytes,
      stats: rec.stats,
      dims: dims.get(id) ?? null,
      details: rec.details,
    })
    entries.push(entry)
  }

  // Detail files: kept when the catalog says the archived segment has one;
  // removed when it was expired, deleted, or its seal never recorded (sealing
  // runs again); moved aside when nothing explains them.
  for (const id of await idsIn('archive', 'details')) {
    const rec = records.get(id)
    const file = detailsPath(opts.dataDir, id)
    const entry = entries.find((e) => e.id === id && e.state === 'archived')
    if (entry && rec?.details === 'file') {
      entry.detailsFile = await files.attach(id, file)
      continue
    }
    if (rec !== undefined || entries.some((e) => e.id === id && e.state === 'pending')) {
      await removeDurably(fs, file)
      log.info({ event: 'recover_removed_details', id, state: rec?.state ?? 'pending', details: rec?.details ?? null }, 'removed a detail file the catalog no longer needs')
      continue
    }
    const to = path.join(dir('orphaned'), path.basename(file))
    await fs.rename(file, to)
    await fs.syncDir(dir('orphaned'))
    log.error({ event: 'recover_orphan', id, to }, 'a detail file nothing explains was moved aside for an operator')
  }
  for (const e of entries) {
    if (e.details === 'file' && e.detailsFile === null) {
      log.error({ event: 'recover_missing_details', id: e.id }, 'the catalog lists a detail file that is missing: details of this segment cannot be read')
    }
  }
  for (const rec of records.values()) {
    if (rec.state === 'archived' && !entries.some((e) => e.id === rec.id)) {
      log.error({ event: 'recover_missing_archive', id: rec.id, path: rec.path }, 'the catalog lists an archive whose file is missing: its raw events cannot be read (rollups remain)')
    }
    if ((rec.state === 'active' || rec.state === 'pending') && !entries.some((e) => e.id === rec.id) && !activeIds.includes(rec.id)) {
      await catalog.forget(rec.id)
    }
  }

  // The newest active file of an older schema version (an upgrade) takes no
  // appends: it is moved to pending like the older ones (sealing reads it
  // through the projection into a current archive), and a fresh one opens.
  let activeId = activeIds.at(-1) ?? maxId + 1
  maxId = Math.max(maxId, activeId)
  let live = await Segment.open(segmentPath(opts.dataDir, 'active', activeId), segOpts)
  const columns = await live.read((conn) => eventColumns(conn, null))
  if (!isCurrentEventsTable(columns)) {
    await live.close()
    await moveToPending(fs, opts.dataDir, activeId)
    await addPending(activeId)
    log.warn({ event: 'recover_older_schema', id: activeId, columns }, 'the active segment has an older schema: moved to pending, a new active segment opens')
    activeId = ++maxId
    live = await Segment.open(segmentPath(opts.dataDir, 'active', activeId), segOpts)
  }
  const active = newEntry(activeId, 'active', live)
  const stats = await live.read((conn) => computeStats(conn, null))
  Object.assign(active, { rowCount: stats.rowCount, minTsUs: stats.minTsUs, maxTsUs: stats.maxTsUs })
  if (stats.rowCount > 0) active.firstAppendMs = live.createdMs
  await catalog.putLive(activeId, 'active', relativeSegmentPath('active', activeId), live.createdMs)
  entries.push(active)
  entries.sort((a, b) => a.id - b.id)
  return { entries, nextId: maxId + 1 }
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

function isServiceError(err: Error): boolean {
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' && code.startsWith('TL_')
}
