// Operator routes: the tiers (segments and their states), rollover and
// retention on demand, and the service's status. Every route needs the admin scope.

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { Config, PressureLimits } from '../src/config.js'
import { formatTimestampUs } from '../src/ingest/timestamp.js'
import { summarizeTiers, type SealStatus } from '../src/store/tiers.js'
import { LIVE_VIEW_MAX_ROWS } from '../src/store/segment.js'
import { VERSION } from '../src/version.js'
import { MAX_SEGMENTS_LISTED, RetentionReport as RetentionOut, RolloverReport as RolloverOut } from '../src/store/reports.js'
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

const Count = Type.Integer({ minimum: 0 })

const TOKEN_SCOPES = ['ingest', 'query', 'admin', 'metrics'] as const
type TokenScope = (typeof TOKEN_SCOPES)[number]
const MAX_TOKENS_COUNTED = 1000

const Ms = Type.Integer({ minimum: 0 })
const Bytes = Type.Integer({ minimum: 0 })

const Pressure = Type.Object({ event_loop_delay_ms: Ms, heap_used_bytes: Bytes, rss_bytes: Bytes })

const ConfigSummary = Type.Object(
  {
    data_dir: Type.String({ maxLength: 4096 }),
    host: Type.String({ maxLength: 255 }),
    port: Type.Integer({ minimum: 0, maximum: 65_535 }),
    log_level: Type.String({ maxLength: 8 }),
    limits: Type.Object({
      max_batch_events: Count,
      max_body_bytes: Bytes,
      max_queue_events: Count,
      max_queue_bytes: Bytes,
      max_commit_events: Count,
      max_future_skew_ms: Ms,
      gate_wait_ms: Ms,
      max_concurrent_queries: Count,
      query_timeout_ms: Ms,
      query_cache_rows: Count,
      export_max_events: Count,
      export_timeout_ms: Ms,
      request_timeout_ms: Ms,
      shutdown_grace_ms: Ms,
      retry_after_s: Count,
      max_header_bytes: Bytes,
      max_connections: Count,
    }),
    backpressure: Type.Object(
      {
        min_free_disk_bytes: Bytes,
        max_ingest_inflight: Count,
        max_pending_segments: Count,
        max_active_bytes: Bytes,
        query: Pressure,
        ingest: Pressure,
      },
      { description: 'Ingest is refused (503) and the service unready past these; queries are shed at the lower `query` thresholds first. 0: not checked.' },
    ),
    rate_limit: Type.Object({ max: Count, window_ms: Ms }, { description: 'Requests per token per window; max 0: off.' }),
    duckdb: Type.Object({ memory_bytes: Bytes, threads: Count }),
    segments: Type.Object({ rollover_bytes: Bytes, rollover_age_ms: Ms, seal_retry_ms: Ms, seal_retry_max_ms: Ms }),
    auth: Type.Object(
      {
        tokens: Type.Object({
          ingest: Type.Integer({ minimum: 0, maximum: MAX_TOKENS_COUNTED }),
          query: Type.Integer({ minimum: 0, maximum: MAX_TOKENS_COUNTED }),
          admin: Type.Integer({ minimum: 0, maximum: MAX_TOKENS_COUNTED }),
          metrics: Type.Integer({ minimum: 0, maximum: MAX_TOKENS_COUNTED }),
        }),
      },
      { description: 'How many bearer tokens each scope has; never a token.' },
    ),
  },
  { description: 'The configuration in effect, without secrets (an allow-list: a setting not listed here is not shown). Retention settings are under `retention`.' },
)

/**
 * The configuration as /v1/status shows it: built field by field from an
 * allow-list, never by copying or filtering Config, so a setting added later
 * (a secret, say) is not shown until someone adds it here on purpose.
 */
function configSummary(config: Config) {
  return {
    data_dir: config.dataDir,
    host: config.host,
    port: config.port,
    log_level: config.logLevel,
    limits: {
      max_batch_events: config.maxBatchEvents,
      max_body_bytes: config.maxBodyBytes,
      max_queue_events: config.maxQueueEvents,
      max_queue_bytes: config.maxQueueBytes,
      max_commit_events: config.maxCommitEvents,
      max_future_skew_ms: config.maxFutureSkewMs,
      gate_wait_ms: config.gateWaitMs,
      max_concurrent_queries: config.maxConcurrentQueries,
      query_timeout_ms: config.queryTimeoutMs,
      query_cache_rows: config.queryCacheRows,
      export_max_events: config.exportMaxEvents,
      export_timeout_ms: config.exportTimeoutMs,
      request_timeout_ms: config.requestTimeoutMs,
      shutdown_grace_ms: config.shutdownGraceMs,
      retry_after_s: config.retryAfterSeconds,
      max_header_bytes: config.maxHeaderBytes,
      max_connections: config.maxConnections,
    },
    backpressure: {
      min_free_disk_bytes: config.minFreeDiskBytes,
      max_ingest_inflight: config.maxIngestInflight,
      max_pending_segments: config.maxPendingSegments,
      max_active_bytes: config.maxActiveBytes,
      query: pressureOut(config.queryPressure),
      ingest: pressureOut(config.ingestPressure),
    },
    rate_limit: { max: config.rateLimitMax, window_ms: config.rateLimitWindowMs },
    duckdb: { memory_bytes: config.duckdbMemoryBytes, threads: config.duckdbThreads },
    segments: { rollover_bytes: config.rolloverBytes, rollover_age_ms: config.rolloverAgeMs, seal_retry_ms: config.sealRetryMs, seal_retry_max_ms: config.sealRetryMaxMs },
    auth: { tokens: tokenCounts(config) },
  }
}

function pressureOut(p: PressureLimits) {
  return { event_loop_delay_ms: p.eventLoopDelayMs, heap_used_bytes: p.heapUsedBytes, rss_bytes: p.rssBytes }
}

/** How many tokens each scope has: lengths only, never an element. */
function tokenCounts(config: Config): Record<TokenScope, number> {
  const counts = { ingest: 0, query: 0, admin: 0, metrics: 0 }
  for (const scope of TOKEN_SCOPES) counts[scope] = Math.min(config.auth[scope].length, MAX_TOKENS_COUNTED)
  return counts
}

function sealOut(seal: SealStatus) {
  return {
    attempts: seal.attempts,
    last_error: seal.lastError,
    next_attempt: seal.nextAttemptMs === null ? null : new Date(seal.nextAttemptMs).toISOString(),
  }
}

export const adminRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { store, clock, config } = app
  const started = clock.nowMs()

  const segments = (all = store.segmentList()) =>
    all.map((s) => ({
      id: s.id,
      state: s.state,
      row_count: s.row_count,
      min_timestamp: s.min_timestamp_us === null ? null : formatTimestampUs(s.min_timestamp_us),
      max_timestamp: s.max_timestamp_us === null ? null : formatTimestampUs(s.max_timestamp_us),
      bytes: s.bytes,
      created: new Date(s.created_ms).toISOString(),
      ...(s.seal ? { seal: sealOut(s.seal) } : {}),
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
            started_at: Type.String({ maxLength: 40 }),
            uptime_s: Type.Number({ minimum: 0 }),
            ready: Type.Boolean(),
            reasons: Type.Array(Type.String({ maxLength: 512 }), { maxItems: 32, description: 'Why the service is not ready (as /readyz); empty when ready.' }),
            config: ConfigSummary,
            ingest: Type.Object({
              queued_events: Count,
              queued_bytes: Count,
              queued_requests: Count,
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
              bytes_by_state: Type.Object({ active: Count, pending: Count, archived: Count }),
            }),
            answer_cache: Type.Object(
              {
                hits: Count,
                misses: Count,
                entries: Count,
                rows: Count,
                generation: Type.Union([Type.String({ maxLength: 24 }), Type.Null()], { description: 'The catalog generation the kept answers belong to; null before the first query.' }),
              },
              { description: 'Catalog answers kept for repeated questions (TOKENLEDGER_QUERY_CACHE_ROWS): statements answered from it, statements run, answers and rows kept.' },
            ),
            live_rollups: Type.Union([Type.Object({ rolled_up_events: Count, rows: Count }), Type.Null()], {
              description: `The active segment's live rollups as last read into memory for queries (once per refresh, about once a second while events arrive and queries ask): the events they hold and their rows; null when none are (no query since start-up or rollover, or more than ${LIVE_VIEW_MAX_ROWS} rows: queries then read them in DuckDB).`,
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
              oldest_pending_age_s: Type.Number({ minimum: 0, description: 'How long the oldest pending segment has waited to be sealed; 0 with none.' }),
              pending: Type.Array(
                Type.Object({
                  id: Type.Integer({ minimum: 1 }),
                  pending_since: Type.String({ maxLength: 40, description: 'Its rollover, or the start-up that found it pending.' }),
                  row_count: Count,
                  bytes: Type.Union([Count, Type.Null()]),
                  seal: SealState,
                }),
                { maxItems: MAX_SEGMENTS_LISTED, description: 'Every segment waiting to be sealed, oldest first, with its last seal error.' },
              ),
              failing: Type.Array(Type.Object({ id: Type.Integer({ minimum: 1 }), seal: SealState }), { maxItems: MAX_SEGMENTS_LISTED }),
            }),
          }),
          ...commonErrors,
        },
      },
    },
    async () => {
      const stats = store.stats()
      const { ready, reasons } = app.readiness()
      const nowMs = clock.nowMs()
      const tiers = summarizeTiers(store.segmentList(), nowMs)
      return {
        version: VERSION,
        started_at: new Date(started).toISOString(),
        uptime_s: (nowMs - started) / 1000,
        ready,
        reasons,
        config: configSummary(config),
        ingest: {
          queued_events: stats.queuedEvents,
          queued_bytes: stats.queuedBytes,
          queued_requests: stats.queuedRequests,
          commits: stats.commits,
          committed_events: stats.committedEvents,
          indexed_events: stats.indexedEvents,
          index_bytes: stats.indexBytes,
          probes_before_gate: stats.probesBeforeGate,
          probes_under_gate: stats.probesUnderGate,
        },
        tiers: {
          ...tiers.count,
          bytes: tiers.bytes.active + tiers.bytes.pending + tiers.bytes.archived,
          rows: tiers.rows,
          bytes_by_state: tiers.bytes,
        },
        answer_cache: store.answers.stats(),
        live_rollups: ((l) => (l === null ? null : { rolled_up_events: l.rolledUpEvents, rows: l.rows }))(await store.liveRollupsInMemory()),
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
          backlog: tiers.count.pending,
          oldest_pending_age_s: tiers.oldestPendingAgeMs / 1000,
          pending: tiers.pending.map((s) => ({
            id: s.id,
            pending_since: new Date(s.pending_since_ms ?? s.created_ms).toISOString(),
            row_count: s.row_count,
            bytes: s.bytes,
            seal: sealOut(s.seal ?? { attempts: 0, lastError: null, nextAttemptMs: null }),
          })),
          failing: tiers.failing.map((s) => ({ id: s.id, seal: sealOut(s.seal!) })),
        },
      }
    },
  )
}
