// The reports the store makes and the admin routes serve as they are: a
// rollover's and a retention run's. One definition each, as TypeBox schemas:
// the routes answer with them (and openapi.yaml is generated from them), the
// store builds values of their Static types, so the two cannot drift apart.

import { Type, type Static } from 'typebox'

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
}
