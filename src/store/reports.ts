// The reports the store makes and the admin routes serve as they are: a
// rollover's and a retention run's. One definition each, as TypeBox schemas:
// the routes answer with them (and openapi.yaml is generated from them), the
// store builds values of their Static types, so the two cannot drift apart.

import { Type, type Static } from 'typebox'
import type { GateTask } from './gate.js'
import type { IngestOutcomes } from './outcomes.js'

export const RolloverReport = Type.Object({
  rolled: Type.Boolean({ description: 'False when the active segment was empty (nothing to roll).' }),
  reason: Type.String({ maxLength: 32 }),
  segment_id: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], { description: 'The segment that became pending.' }),
  gate_held_ms: Type.Number({ minimum: 0, description: 'How long appends waited on the write gate for this rollover.' }),
  duration_ms: Type.Number({ minimum: 0 }),
})

export const MAX_SEGMENTS_LISTED = 100_000

const SegmentIds = Type.Array(Type.Integer({ minimum: 1 }), { maxItems: MAX_SEGMENTS_LISTED })
const Count = Type.Integer({ minimum: 0 })

export const RetentionReport = Type.Object({
  trigger: Type.Union([Type.Literal('schedule'), Type.Literal('admin')]),
  started_at: Type.String({ maxLength: 40 }),
  cutoffs: Type.Object(
    {
      events: Type.String({ maxLength: 40 }),
      details: Type.String({ maxLength: 40 }),
      rollups: Type.String({ maxLength: 40 }),
    },
    { description: 'Raw events, detail payloads and rollup buckets before these instants are expired.' },
  ),
  active: Type.Object(
    {
      action: Type.Union([Type.Literal('kept'), Type.Literal('rolled_over')]),
      segment_id: Type.Integer({ minimum: 1 }),
      expired_events: Count,
      note: Type.Optional(Type.String({ maxLength: 200 })),
    },
    { description: 'An active segment whose events have all expired is rolled over under the write gate (sealed, then deleted by a later run); a mixed one is kept.' },
  ),
  segments_deleted: SegmentIds,
  events_deleted: Count,
  files_deleted: Count,
  files_deferred: Type.Integer({ minimum: 0, description: 'Files whose removal waits for a query still reading them.' }),
  bytes_freed: Count,
  details_expired: SegmentIds,
  detail_rows_expired: Count,
  rollup_rows_deleted: Count,
  index_entries_removed: Count,
  awaiting_seal: Type.Array(Type.Integer({ minimum: 1 }), { maxItems: MAX_SEGMENTS_LISTED, description: 'Expired segments deleted once sealed (their rollups written).' }),
  gate_held_ms: Type.Number({ minimum: 0, description: 'How long appends waited on the write gate for this run.' }),
  duration_ms: Type.Number({ minimum: 0 }),
  errors: Type.Array(Type.String({ maxLength: 512 }), { maxItems: 100 }),
})

export type RolloverReport = Static<typeof RolloverReport>
export type RetentionReport = Static<typeof RetentionReport>
export type RetentionTrigger = RetentionReport['trigger']

/** Milliseconds as reports show them: to the microsecond. */
export function roundMs(ms: number): number {
  return Math.round(ms * 1000) / 1000
}

/** The store's counters and states at one moment (/v1/status and /metrics read them). */
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
  verifyRuns: number
  verifyErrors: number
  /** Mismatching rows found by every verify so far. */
  verifyMismatches: number
  lastVerify: VerifyReport | null
}

/** Most mismatches one verify report lists (all are counted). */
export const MAX_MISMATCHES_LISTED = 100

export const VERIFY_CHECKS = ['segment_rollups', 'segment_stats', 'live_rollups', 'coarse_rollups', 'users_daily'] as const
export type VerifyCheck = (typeof VERIFY_CHECKS)[number]

const Figure = Type.Union([Type.String({ maxLength: 64 }), Type.Null()])

export const Mismatch = Type.Object({
  check: Type.Union([Type.Literal('segment_rollups'), Type.Literal('segment_stats'), Type.Literal('live_rollups'), Type.Literal('coarse_rollups'), Type.Literal('users_daily')]),
  segment_id: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], { description: 'The segment; null for the coarse tables, which sum over every segment.' }),
  table: Type.String({ maxLength: 64, description: 'The derived table that disagrees with the raw events.' }),
  bucket: Type.Union([Type.String({ maxLength: 40 }), Type.Null()], { description: 'The cell (RFC 3339 UTC) of the row; null for a whole-segment figure.' }),
  key: Type.Record(Type.String(), Type.Union([Type.String({ maxLength: 1024 }), Type.Number(), Type.Null()]), { description: 'The row\'s key (key_id, model, currency, ...).' }),
  measure: Type.String({ maxLength: 32 }),
  expected: Type.Union([Type.String({ maxLength: 4096 }), Type.Null()], { description: 'What the raw events give; null: no events for this row.' }),
  found: Type.Union([Type.String({ maxLength: 4096 }), Type.Null()], { description: 'What the derived table holds; null: no row.' }),
  difference: Type.Union([Figure], { description: 'found - expected, exact; null when a side is missing or not a number.' }),
})
export type Mismatch = Static<typeof Mismatch>

export const VerifyReport = Type.Object({
  from: Type.String({ maxLength: 40, description: 'The window checked: whole 15-minute cells, never before the rollup retention cutoff.' }),
  to: Type.String({ maxLength: 40 }),
  segments_checked: Count,
  segments_gone: Type.Integer({ minimum: 0, description: 'Segments retention removed before their turn came (not an error).' }),
  compared: Type.Object(Object.fromEntries(VERIFY_CHECKS.map((c) => [c, Count])) as Record<VerifyCheck, typeof Count>, {
    description: 'Rows of raw aggregates compared per check (segments for segment_stats).',
  }),
  mismatch_count: Type.Integer({ minimum: 0, description: 'Rows (cells and keys, or segments) whose figures differ; 0 means every derived figure equals the raw events.' }),
  mismatches: Type.Array(Mismatch, { maxItems: MAX_MISMATCHES_LISTED, description: 'One per differing measure, the first of them.' }),
  truncated: Type.Boolean({ description: 'More mismatches exist than are listed.' }),
  duration_ms: Type.Number({ minimum: 0 }),
})
export type VerifyReport = Static<typeof VerifyReport>

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

export const BackupSegment = Type.Object({
  id: Type.Integer({ minimum: 1 }),
  state: Type.Union([Type.Literal('active'), Type.Literal('pending'), Type.Literal('archived')]),
  how: Type.Union([Type.Literal('linked'), Type.Literal('copied'), Type.Literal('snapshot')], {
    description: 'linked: a hard link to the immutable file; copied: a byte copy of it (another file system); snapshot: a DuckDB copy of a live segment.',
  }),
  bytes: Type.Integer({ minimum: 0 }),
})
export type BackupSegment = Static<typeof BackupSegment>

export const BackupReport = Type.Object({
  dir: Type.String({ maxLength: 4096 }),
  started_at: Type.String({ maxLength: 40, description: 'Every event acknowledged before this instant is in the backup, once.' }),
  segments: Type.Array(BackupSegment, { maxItems: MAX_SEGMENTS_LISTED }),
  bytes: Type.Integer({ minimum: 0 }),
  prices: Type.Object(
    {
      version: Type.Union([Type.String({ maxLength: 16 }), Type.Null()], { description: 'The price table in use, copied to `prices.json`; null when none is installed.' }),
      history: Type.Integer({ minimum: 0, description: 'Past and current table versions copied to `prices-history/`, so every stored `price_ref` stays explainable.' }),
    },
    { additionalProperties: false },
  ),
  gate_held_ms: Type.Literal(0, { description: 'A backup never takes the write gate: appends go on throughout.' }),
  maintenance_held_ms: Type.Number({ minimum: 0, description: 'How long seals and retention waited for the backup.' }),
  duration_ms: Type.Number({ minimum: 0 }),
})
export type BackupReport = Static<typeof BackupReport>
