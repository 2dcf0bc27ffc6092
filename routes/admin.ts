// Operator routes: the tiers (segments and their states), rollover and
// retention on demand, and the service's status. Every route needs the admin scope.

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { formatTimestampUs } from '../src/ingest/timestamp.js'
import { VERSION } from '../src/version.js'
import { commonErrors } from './schemas.js'

const Timestamp = Type.Union([Type.String({ maxLength: 40 }), Type.Null()])

const SealState = Type.Object({
  attempts: Type.Integer({ minimum: 0 }),
  last_error: Type.Union([Type.String({ maxLength: 512 }), Type.Null()]),
  next_attempt: Timestamp,
})

const SegmentOut = Type.Object({
  id: Type.Integer({ minimum: 1 }),
  state: Type.Union([Type.Literal('active'), Type.Literal('pending'), Type.Literal('archived')]),
  row_count: Type.Integer({ minimum: 0 }),
  min_timestamp: Timestamp,
  max_timestamp: Timestamp,
  bytes: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]),
  created: Type.String({ maxLength: 40 }),
  seal: Type.Optional(SealState),
})

const RolloverOut = Type.Object({
  rolled: Type.Boolean({ description: 'False when the active segment was empty (nothing to roll).' }),
  reason: Type.String({ maxLength: 32 }),
  segment_id: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], { description: 'The segment that became pending.' }),
  gate_held_ms: Type.Number({ minimum: 0, description: 'How long appends waited on the write gate for this rollover.' }),
  duration_ms: Type.Number({ minimum: 0 }),
})

const MAX_SEGMENTS_LISTED = 100_000

const SegmentIds = Type.Array(Type.Integer({ minimum: 1 }), { maxItems: MAX_SEGMENTS_LISTED })
const Count = Type.Integer({ minimum: 0 })

const RetentionOut = Type.Object({
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

export const adminRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { store, clock, config } = app
  const started = clock.nowMs()

  const segments = () =>
    store.segmentList().map((s) => ({
      id: s.id,
      state: s.state,
      row_count: s.row_count,
      min_timestamp: s.min_timestamp_us === null ? null : formatTimestampUs(s.min_timestamp_us),
      max_timestamp: s.max_timestamp_us === null ? null : formatTimestampUs(s.max_timestamp_us),
      bytes: s.bytes,
      created: new Date(s.created_ms).toISOString(),
      ...(s.seal
        ? {
            seal: {
              attempts: s.seal.attempts,
              last_error: s.seal.lastError,
              next_attempt: s.seal.nextAttemptMs === null ? null : new Date(s.seal.nextAttemptMs).toISOString(),
            },
          }
        : {}),
    }))

  app.get(
    '/v1/admin/segments',
    {
      config: { scope: 'admin' },
      schema: {
        summary: 'Every retained segment with its state, row count, time bounds and size',
        tags: ['admin'],
        response: { 200: Type.Object({ segments: Type.Array(SegmentOut, { maxItems: MAX_SEGMENTS_LISTED }) }), ...commonErrors },
      },
    },
    async () => ({ segments: segments() }),
  )

  app.post(
    '/v1/admin/rollover',
    {
      config: { scope: 'admin' },
      schema: {
        summary: 'Roll the active segment over now',
        description: 'A fresh active segment takes appends; the old one becomes pending and is sealed in the background. An empty active segment is left alone.',
        tags: ['admin'],
        response: { 200: RolloverOut, ...commonErrors },
      },
    },
    async () => store.rollover('admin'),
  )

  app.post(
    '/v1/admin/retention',
    {
      config: { scope: 'admin' },
      schema: {
        summary: 'Run retention now and return its report',
        description:
          'Deletes archived segments whose newest event is older than the event window, expires detail files past the detail window and rollups past the rollup window, ' +
          'and rolls over an active segment whose events have all expired. A run already in progress (the hourly one) is shared, not doubled.',
        tags: ['admin'],
        response: { 200: RetentionOut, ...commonErrors },
      },
    },
    async () => store.retention('admin'),
  )

  app.get(
    '/v1/status',
    {
      config: { scope: 'admin' },
      schema: {
        summary: 'Service status: version, uptime, readiness, tiers, sealing, retention',
        tags: ['operations'],
        response: {
          200: Type.Object({
            version: Type.String({ maxLength: 64 }),
            uptime_s: Type.Number({ minimum: 0 }),
            ready: Type.Boolean(),
            reasons: Type.Array(Type.String({ maxLength: 512 }), { maxItems: 32 }),
            ingest: Type.Object({
              queued_events: Count,
              commits: Count,
              committed_events: Count,
              indexed_events: Count,
              index_bytes: Count,
              probes_before_gate: Type.Integer({ minimum: 0, description: 'Exact dedupe probes of closed segments, made before taking the write gate.' }),
              probes_under_gate: Type.Integer({ minimum: 0, description: 'Exact dedupe probes made holding the write gate (live segments).' }),
            }),
            tiers: Type.Object({
              active: Count,
              pending: Count,
              archived: Count,
              bytes: Count,
              rows: Count,
            }),
            rollovers: Count,
            last_rollover: Type.Union([RolloverOut, Type.Null()]),
            retention: Type.Object({
              windows: Type.Object({ events_s: Type.Number({ minimum: 0 }), details_s: Type.Number({ minimum: 0 }), rollups_s: Type.Number({ minimum: 0 }) }),
              interval_s: Type.Union([Type.Number({ minimum: 0 }), Type.Null()], { description: 'null: the scheduler is off (TOKENLEDGER_RETENTION_INTERVAL=off).' }),
              next_run: Type.Union([Type.String({ maxLength: 40 }), Type.Null()]),
              runs: Count,
              errors: Count,
              segments_deleted: Count,
              bytes_freed: Count,
              last_report: Type.Union([RetentionOut, Type.Null()]),
            }),
            sealing: Type.Object({
              sealed: Count,
              failures: Count,
              backlog: Count,
              failing: Type.Array(Type.Object({ id: Type.Integer(), seal: SealState }), { maxItems: MAX_SEGMENTS_LISTED }),
            }),
          }),
          ...commonErrors,
        },
      },
    },
    async () => {
      const stats = store.stats()
      const { ready, reasons } = store.ready()
      const list = segments()
      const count = (state: string) => list.filter((s) => s.state === state).length
      return {
        version: VERSION,
        uptime_s: (clock.nowMs() - started) / 1000,
        ready,
        reasons,
        ingest: {
          queued_events: stats.queuedEvents,
          commits: stats.commits,
          committed_events: stats.committedEvents,
          indexed_events: stats.indexedEvents,
          index_bytes: stats.indexBytes,
          probes_before_gate: stats.probesBeforeGate,
          probes_under_gate: stats.probesUnderGate,
        },
        tiers: {
          active: count('active'),
          pending: count('pending'),
          archived: count('archived'),
          bytes: list.reduce((n, s) => n + (s.bytes ?? 0), 0),
          rows: list.reduce((n, s) => n + s.row_count, 0),
        },
        rollovers: stats.rollovers,
        last_rollover: stats.lastRollover,
        retention: {
          windows: {
            events_s: config.eventRetentionMs / 1000,
            details_s: config.detailRetentionMs / 1000,
            rollups_s: config.rollupRetentionMs / 1000,
          },
          interval_s: config.retentionIntervalMs === 0 ? null : config.retentionIntervalMs / 1000,
          next_run: ((next) => (next === null ? null : new Date(next).toISOString()))(store.nextRetentionAtMs()),
          runs: stats.retentionRuns,
          errors: stats.retentionErrors,
          segments_deleted: stats.retentionSegmentsDeleted,
          bytes_freed: stats.retentionBytesFreed,
          last_report: stats.lastRetention,
        },
        sealing: {
          sealed: stats.sealed,
          failures: stats.sealFailures,
          backlog: count('pending'),
          failing: list.flatMap((s) => (s.seal && s.seal.last_error !== null ? [{ id: s.id, seal: s.seal }] : [])),
        },
      }
    },
  )
}
