// What the store is opened with: its bounds, windows, seams (clock, file
// system) and test hooks. config.ts reads them from the environment; the
// defaults of the optional ones are STORE_DEFAULTS, which config.ts takes too,
// so a store opened directly (tests, benches) and the service agree.

import type { Clock } from '../clock.js'
import type { Logger } from '../log.js'
import type { FileSystem } from './fsops.js'
import type { IdHash } from './idruns.js'
import type { RetentionWindows } from './retention.js'
import type { SegmentOptions } from './segment.js'
import type { SealStep } from './tiers.js'
import type { RepriceStep } from './reprice.js'

/** The optional options default to STORE_DEFAULTS (below). */
export interface StoreOptions {
  dataDir: string
  clock: Clock
  logger: Logger
  maxQueueEvents: number
  maxQueueBytes: number
  maxCommitEvents: number
  gateWaitMs: number
  maxConcurrentQueries: number
  /** Longest one snapshot's reads may run before DuckDB is interrupted (QueryTimeout). */
  queryTimeoutMs?: number
  /** Rows of catalog answers kept for repeated questions (answers.ts; 0: none kept). */
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
  /** Retention windows (default DEFAULT_WINDOWS, retention.ts). */
  retention?: RetentionWindows
  /** How often retention runs (STORE_DEFAULTS; the first run comes min(interval, 1 min) after open; 0: never on its own). */
  retentionIntervalMs?: number
  fs?: FileSystem
  /** Appends are refused while the data directory's file system has less free space than this (0: never). */
  minFreeDiskBytes?: number
  /** ...or while more rolled-over segments than this wait to be sealed. */
  maxPendingSegments?: number
  /** ...or while the active segment's file plus WAL exceed this (default maxActiveRollovers × rolloverBytes). */
  maxActiveBytes?: number
  /** How often free disk space is sampled. */
  diskCheckMs?: number
  /** How often the light verify runs (verify.ts; 0: never on its own), and the window it checks (the last so much). */
  verifyIntervalMs?: number
  verifyWindowMs?: number
  /** Test seams; never set in production. */
  hooks?: StoreHooks
  /** Whether `Store.open` resolves only once the dedupe index has loaded (default true); the server opens its port first and tells /readyz. */
  waitForIndex?: boolean
}

export interface StoreHooks {
  /** Runs inside the gate before a group commit writes: lets a test park an append while it holds the gate. */
  onCommitHoldingGate?: () => Promise<void>
  /** Runs where the commit's write runs; a throw is handled as that write's failure (fault injection). */
  faultOnWrite?: () => Promise<void>
  /** Runs under retireLock before a rolled-over segment is closed: lets a test park that close. */
  beforeRetireClose?: (segmentId: number) => Promise<void>
  /** The dedupe id hash (default hashId64, idindex.ts); tests substitute a weak one to force collisions. */
  idHash?: IdHash
  /** Runs before a sealed segment's id run is written (dedupe.ts); a throw leaves it unwritten, as a crash would. */
  beforeIndexPart?: (segmentId: number) => Promise<void>
  /** Runs when the dedupe index starts loading at start-up (dedupe.ts): lets a test park the load. */
  beforeIndexLoad?: () => Promise<void>
  /** Runs before each sealing step; a throw aborts the seal there, as a crash would. */
  beforeSealStep?: (step: SealStep, segmentId: number) => Promise<void>
  /** Runs before each step of a segment's reprice; a throw stops it there, as a crash would (reprice.ts). */
  beforeRepriceStep?: (step: RepriceStep, segmentId: number) => Promise<void>
  /** Runs just before a rollover asks for the gate (`reason`: size, age, admin, retention). */
  beforeRolloverGate?: (reason: string) => Promise<void>
  /** Runs before a rollover records its fresh segment in the catalog (after creating its file). */
  beforeRolloverRecord?: (segmentId: number) => Promise<void>
  /** Runs before a refresh of the active segment's live rollups writes them (segment.ts). */
  beforeLiveRollupRefresh?: () => Promise<void>
  /** Runs inside the gate during a rollover's swap: lets a test park retention while it holds the gate. */
  onRolloverHoldingGate?: (reason: string) => Promise<void>
  /** Events appended between refreshes of the active segment's live rollups (default LIVE_ROLLUP_EVERY_ROWS); tests refresh more often. */
  liveRollupEveryRows?: number
  /** Least time between those refreshes (default LIVE_ROLLUP_EVERY_MS); tests set 0. */
  liveRollupEveryMs?: number
}

const MIB = 1024 * 1024

/** The defaults of the optional store options: the one source (config.ts reads its defaults from here). */
export const STORE_DEFAULTS = {
  queryTimeoutMs: 30_000,
  /** Rows of catalog answers kept (answers.ts): tens of MiB at most; a month's daily series by model is ~3,600 rows. */
  answerCacheRows: 100_000,
  rolloverBytes: 64 * MIB,
  rolloverAgeMs: 3_600_000,
  sealRetryMs: 1_000,
  sealRetryMaxMs: 300_000,
  retentionIntervalMs: 3_600_000,
  minFreeDiskBytes: 1024 * MIB,
  maxPendingSegments: 32,
  /** maxActiveBytes, as a multiple of rolloverBytes. */
  maxActiveRollovers: 4,
  diskCheckMs: 1_000,
  verifyIntervalMs: 0,
  verifyWindowMs: 86_400_000,
} as const

/** A live segment's DuckDB options: half the memory budget (the closed tiers get the other half). */
export function segmentOptions(opts: StoreOptions): SegmentOptions {
  return {
    memoryBytes: Math.floor(opts.duckdbMemoryBytes / 2),
    threads: opts.duckdbThreads,
    readConnections: opts.maxConcurrentQueries,
    checkpointBytes: opts.rolloverBytes ?? STORE_DEFAULTS.rolloverBytes,
    nowMs: opts.clock.nowMs(),
    ...(opts.hooks?.beforeLiveRollupRefresh ? { beforeRefresh: opts.hooks.beforeLiveRollupRefresh } : {}),
  }
}
