// What the store is opened with: its bounds, windows, seams (clock, file
// system) and test hooks. config.ts reads them from the environment and is the
// one place their documented defaults come from; the fallbacks below serve
// tests and benches that open a store directly.

import type { Clock } from '../clock.js'
import type { Logger } from '../log.js'
import type { FileSystem } from './fsops.js'
import type { RetentionWindows } from './retention.js'
import type { SegmentOptions } from './segment.js'
import type { SealStep } from './tiers.js'

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

/** A live segment's DuckDB options: half the memory budget (the closed tiers get the other half). */
export function segmentOptions(opts: StoreOptions): SegmentOptions {
  return {
    memoryBytes: Math.floor(opts.duckdbMemoryBytes / 2),
    threads: opts.duckdbThreads,
    readConnections: opts.maxConcurrentQueries,
    nowMs: opts.clock.nowMs(),
  }
}
