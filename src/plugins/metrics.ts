// Prometheus metrics as a named plugin: one Registry per app (tests build many
// apps in one process, so never prom-client's global registry), decorated as
// `app.metrics`. The store knows nothing of Prometheus: its figures are read at
// scrape time from Store.stats() and the segment list, and its commits and
// write-gate use arrive through a StoreObserver that this plugin sets.
//
// Every name is `tokenledger_*` with its unit last; counters end in `_total`,
// durations are `_seconds` histograms. Label values come from fixed sets (an
// outcome, a gate task, a segment state) or from the route table (the route's
// URL template, never the raw URL): a client cannot create a label value.
//
// The scrape stays cheap and bounded: the segment figures are one pass over the
// segment list per scrape; DuckDB's memory is a query on each instance, made
// at most every MEMORY_INTERVAL_MS, never queued behind queries (skipped when
// every query slot is busy), and waited for at most MEMORY_WAIT_MS (the scrape
// then shows the previous figures and when they were measured).

import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { pressureReasons } from './pressure.js'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { RetentionReport } from '../store/reports.js'
import type { GateTask } from '../store/gate.js'
import { INGEST_SOURCES } from '../store/outcomes.js'
import type { DuckDBMemory } from '../store/snapshot.js'
import { summarizeTiers, type SegmentState } from '../store/tiers.js'
import { VERSION } from '../version.js'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Registry
  }
}

/** Whole HTTP requests: from a 1 ms health check to a query at its 30 s time bound. */
const HTTP_SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
/** Store steps (a commit, the gate): from a 100 µs pointer swap to a gate wait at its bound. */
const STORE_SECONDS_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
/** Events per request (at most 100 000) and per commit (at most 1 000 000). */
const EVENTS_BUCKETS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000]
/** Requests coalesced into one group commit. */
const REQUESTS_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]

/** How often DuckDB's memory is measured at most (scrapes in between show the last figures). */
const MEMORY_INTERVAL_MS = 5_000
/** The time bound of the memory query itself (the store interrupts it past this). */
const MEMORY_QUERY_TIMEOUT_MS = 2_000
/** Longest a scrape waits for a memory measurement (two queries of about 1 ms each, unless the store is busy). */
const MEMORY_WAIT_MS = 1_000

/** The route label of requests no route matched (404s): one value, whatever the path. */
const UNMATCHED = 'unmatched'
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'])
const OUTCOMES = ['accepted', 'duplicate', 'conflict', 'rejected', 'refused'] as const
const GATE_TASKS: readonly GateTask[] = ['append', 'rollover', 'close', 'other']
const STATES: readonly SegmentState[] = ['active', 'pending', 'archived']

/** A counter mirroring a monotonic figure kept elsewhere: incremented by the difference at each scrape. */
function mirrorCounter(registry: Registry, name: string, help: string, read: () => number): void {
  let seen = 0
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      const now = read()
      if (now > seen) this.inc(now - seen)
      seen = Math.max(seen, now)
    },
  })
}

/** `compute` at most once per scrape: every collect of one scrape runs in the same event-loop turn. */
function perScrape<T>(compute: () => T): () => T {
  let value: { v: T } | null = null
  return () => {
    if (value === null) {
      value = { v: compute() }
      setImmediate(() => (value = null))
    }
    return value.v
  }
}

export default fp(
  async (app) => {
    const registry = new Registry()
    // Node's default metrics keep their standard names (process_*, nodejs_*): stock
    // Node.js dashboards and alerts look for those. Every other metric is tokenledger_*.
    collectDefaultMetrics({ register: registry })
    const { store, clock, config } = app
    const stats = perScrape(() => store.stats())
    const segments = perScrape(() => summarizeTiers(store.segmentList(), clock.nowMs()))

    new Gauge({
      name: 'tokenledger_build_info',
      help: 'Always 1; the version of the running service is its label.',
      labelNames: ['version'],
      registers: [registry],
    }).set({ version: VERSION }, 1)
    new Gauge({
      name: 'tokenledger_ready',
      help: '1 when the service is ready for traffic (as /readyz), 0 when not (the reasons are in /v1/status).',
      registers: [registry],
      collect() {
        this.set(app.readiness().ready ? 1 : 0)
      },
    })

    // Ingest: what every event was answered, per request and per group commit.
    const events = new Counter({
      name: 'tokenledger_ingest_events_total',
      help:
        'Events answered, by the door they came in by (source: native POST /v1/events, openmeter, otlp, litellm) and outcome: accepted (stored), duplicate, conflict, rejected, ' +
        'and refused (acceptable events of an atomic batch refused as a whole with 422: nothing stored). Counted by the store as it answers.',
      labelNames: ['source', 'outcome'],
      registers: [registry],
    })
    for (const source of INGEST_SOURCES) for (const outcome of OUTCOMES) events.inc({ source, outcome }, 0)
    const batchEvents = new Histogram({
      name: 'tokenledger_ingest_batch_events',
      help: 'Events per answered ingest request (200 or 422), every door.',
      buckets: EVENTS_BUCKETS,
      registers: [registry],
    })
    const commitSeconds = new Histogram({
      name: 'tokenledger_ingest_commit_duration_seconds',
      help: 'Time one group commit took to insert its events and COMMIT (fsync of the WAL), holding the write gate.',
      buckets: STORE_SECONDS_BUCKETS,
      registers: [registry],
    })
    const commitEvents = new Histogram({
      name: 'tokenledger_ingest_commit_events',
      help: 'Events written per group commit (0 when every event was a duplicate).',
      buckets: EVENTS_BUCKETS,
      registers: [registry],
    })
    const commitRequests = new Histogram({
      name: 'tokenledger_ingest_commit_requests',
      help: 'Requests answered per group commit (how many concurrent requests were coalesced).',
      buckets: REQUESTS_BUCKETS,
      registers: [registry],
    })
    const commitFailures = new Counter({
      name: 'tokenledger_ingest_commit_failures_total',
      help: 'Group commits whose write failed (their requests were answered 503; nothing of them stored).',
      registers: [registry],
    })
    mirrorCounter(registry, 'tokenledger_ingest_commits_total', 'Group commits of the active segment.', () => stats().commits)
    mirrorCounter(registry, 'tokenledger_ingest_committed_events_total', 'Events committed (accepted).', () => stats().committedEvents)
    mirrorCounter(registry, 'tokenledger_query_cache_hits_total', 'Catalog statements of queries answered from the answer cache.', () => store.answers.stats().hits)
    mirrorCounter(registry, 'tokenledger_query_cache_misses_total', 'Catalog statements of queries run (and kept when within the bound).', () => store.answers.stats().misses)
    const queue: Array<[string, string, () => number]> = [
      ['tokenledger_ingest_queued_events', 'Events waiting for a group commit.', () => stats().queuedEvents],
      ['tokenledger_ingest_queued_bytes', 'Body bytes (as the queue bound counts them) of requests waiting for a group commit.', () => stats().queuedBytes],
      ['tokenledger_ingest_queued_requests', 'Requests waiting for a group commit.', () => stats().queuedRequests],
      ['tokenledger_ingest_queue_max_events', 'The queue bound on events (TOKENLEDGER_MAX_QUEUE_EVENTS): past it ingest answers 503.', () => config.maxQueueEvents],
      ['tokenledger_ingest_queue_max_bytes', 'The queue bound on bytes (TOKENLEDGER_MAX_QUEUE_BYTES): past it ingest answers 503.', () => config.maxQueueBytes],
      ['tokenledger_dedupe_index_events', 'Event ids the dedupe index names: the live tiers\' in-memory index and the sealed tier\'s id runs (a deleted segment\'s until purged).', () => stats().indexedEvents],
      ['tokenledger_dedupe_index_bytes', 'Resident bytes of the dedupe index: the live hash table, the id runs\' filters and fences.', () => stats().indexBytes],
    ]
    for (const [name, help, read] of queue) {
      new Gauge({
        name,
        help,
        registers: [registry],
        collect() {
          this.set(read())
        },
      })
    }

    // The write gate, by the task that took it.
    const gateWait = new Histogram({
      name: 'tokenledger_gate_wait_seconds',
      help: 'Time a task waited for the write gate before taking it, by task (append: a group commit).',
      labelNames: ['task'],
      buckets: STORE_SECONDS_BUCKETS,
      registers: [registry],
    })
    const gateHold = new Histogram({
      name: 'tokenledger_gate_hold_seconds',
      help: 'Time a task held the write gate (appends wait that long), by task.',
      labelNames: ['task'],
      buckets: STORE_SECONDS_BUCKETS,
      registers: [registry],
    })
    const gateTimeouts = new Counter({
      name: 'tokenledger_gate_timeouts_total',
      help: 'Waits for the write gate that gave up at TOKENLEDGER_GATE_WAIT (answered 503), by task.',
      labelNames: ['task'],
      registers: [registry],
    })
    for (const task of GATE_TASKS) {
      gateWait.zero({ task })
      gateHold.zero({ task })
      gateTimeouts.inc({ task }, 0)
    }
    store.observe({
      commit({ events: n, requests, durationMs }) {
        commitSeconds.observe(durationMs / 1000)
        commitEvents.observe(n)
        commitRequests.observe(requests)
      },
      commitFailure() {
        commitFailures.inc()
      },
      gate({ task, waitMs, heldMs }) {
        gateWait.observe({ task }, waitMs / 1000)
        gateHold.observe({ task }, heldMs / 1000)
      },
      gateTimeout({ task }) {
        gateTimeouts.inc({ task })
      },
      ingested(o) {
        const counts = { accepted: o.accepted, duplicate: o.duplicates, conflict: o.conflicts, rejected: o.rejected, refused: o.refused }
        for (const [outcome, n] of Object.entries(counts)) if (n > 0) events.inc({ source: o.source, outcome }, n)
        batchEvents.observe(o.events)
      },
    })
    app.addHook('onClose', (_instance, done) => {
      store.observe(null)
      done()
    })

    // Tiers and sealing.
    mirrorCounter(registry, 'tokenledger_rollovers_total', 'Rollovers of the active segment.', () => stats().rollovers)
    mirrorCounter(registry, 'tokenledger_seals_total', 'Segments sealed into archives.', () => stats().sealed)
    mirrorCounter(registry, 'tokenledger_seal_failures_total', 'Failed seal attempts (each is retried).', () => stats().sealFailures)
    new Gauge({
      name: 'tokenledger_segments',
      help: 'Retained segments per state.',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        for (const state of STATES) this.set({ state }, segments().count[state])
      },
    })
    new Gauge({
      name: 'tokenledger_segment_bytes',
      help: 'Bytes of retained segment files per state (the active one as of its last commit).',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        for (const state of STATES) this.set({ state }, segments().bytes[state])
      },
    })
    new Gauge({
      name: 'tokenledger_seal_backlog_segments',
      help: 'Segments rolled over and not yet sealed (pending).',
      registers: [registry],
      collect() {
        this.set(segments().count.pending)
      },
    })
    new Gauge({
      name: 'tokenledger_seal_oldest_pending_age_seconds',
      help: 'How long the oldest pending segment has waited to be sealed (since its rollover, or since start-up for one found pending); 0 with none.',
      registers: [registry],
      collect() {
        this.set(segments().oldestPendingAgeMs / 1000)
      },
    })
    new Gauge({
      name: 'tokenledger_seal_failing_segments',
      help: 'Pending segments whose last seal attempt failed (retried with backoff; the errors are in /v1/status).',
      registers: [registry],
      collect() {
        this.set(segments().failing.length)
      },
    })

    // Backpressure and fail-stop.
    new Gauge({
      name: 'tokenledger_disk_free_bytes',
      help: 'Free bytes on the data directory\'s file system at the last sample (ingest is refused below TOKENLEDGER_MIN_FREE_DISK).',
      registers: [registry],
      collect() {
        const free = stats().freeDiskBytes
        if (free !== null) this.set(free)
      },
    })
    new Gauge({
      name: 'tokenledger_ingest_refusing',
      help: '1 while the store refuses appends for low disk, seal backlog or an oversized active segment (the reasons are in /readyz and /v1/status).',
      registers: [registry],
      collect() {
        this.set(stats().refusing.length > 0 ? 1 : 0)
      },
    })
    new Gauge({
      name: 'tokenledger_ingest_inflight_requests',
      help: 'Ingest requests between their headers and their answer (503 at once past TOKENLEDGER_MAX_INGEST_INFLIGHT).',
      registers: [registry],
      collect() {
        this.set(app.ingestInflight())
      },
    })
    new Gauge({
      name: 'tokenledger_ingest_inflight_bytes',
      help: 'Body bytes those requests are charged, Content-Length or the largest body (503 at once past TOKENLEDGER_MAX_INGEST_INFLIGHT_BYTES).',
      registers: [registry],
      collect() {
        this.set(app.ingestInflightBytes())
      },
    })
    new Gauge({
      name: 'tokenledger_store_failed',
      help: '1 once the store has entered fail-stop after a write that may have invalidated DuckDB: no writes until restart.',
      registers: [registry],
      collect() {
        this.set(stats().failed === null ? 0 : 1)
      },
    })
    new Gauge({
      name: 'tokenledger_process_pressure',
      help: '1 while process pressure is past the given level\'s thresholds (query: queries shed; ingest: ingest refused too).',
      labelNames: ['level'],
      registers: [registry],
      collect() {
        const sample = app.memoryUsage()
        this.set({ level: 'query' }, pressureReasons(sample, app.config.queryPressure).length > 0 ? 1 : 0)
        this.set({ level: 'ingest' }, pressureReasons(sample, app.config.ingestPressure).length > 0 ? 1 : 0)
      },
    })

    // Retention.
    mirrorCounter(registry, 'tokenledger_retention_runs_total', 'Retention runs (scheduled or on demand).', () => stats().retentionRuns)
    mirrorCounter(registry, 'tokenledger_retention_errors_total', 'Failed retention steps (retried by the next run).', () => stats().retentionErrors)
    mirrorCounter(registry, 'tokenledger_retention_segments_deleted_total', 'Archived segments deleted by retention.', () => stats().retentionSegmentsDeleted)
    mirrorCounter(registry, 'tokenledger_retention_bytes_freed_total', 'Bytes of segment and detail files deleted by retention.', () => stats().retentionBytesFreed)
    const lastRetention = (name: string, help: string, pick: (r: RetentionReport) => number): void => {
      new Gauge({
        name,
        help,
        registers: [registry],
        collect() {
          const last = stats().lastRetention
          if (last) this.set(pick(last))
        },
      })
    }
    lastRetention('tokenledger_retention_last_gate_held_seconds', 'How long the last retention run held the write gate.', (r) => r.gate_held_ms / 1000)
    lastRetention('tokenledger_retention_last_duration_seconds', 'How long the last retention run took.', (r) => r.duration_ms / 1000)
    lastRetention('tokenledger_retention_last_run_timestamp_seconds', 'When the last retention run started (Unix time).', (r) => Date.parse(r.started_at) / 1000)

    // Verify (GET /v1/admin/verify, and the scheduled light verify).
    mirrorCounter(registry, 'tokenledger_verify_runs_total', 'Verify runs that finished (scheduled or on demand).', () => stats().verifyRuns)
    mirrorCounter(registry, 'tokenledger_verify_errors_total', 'Verify runs that failed (a read error, a timeout).', () => stats().verifyErrors)
    mirrorCounter(registry, 'tokenledger_verify_mismatches_total', 'Rows of derived figures (rollups, catalog entries) found to differ from the raw events, over every verify run.', () => stats().verifyMismatches)
    new Gauge({
      name: 'tokenledger_verify_last_mismatches',
      help: 'Rows found to differ by the last verify run (0: every derived figure equals the raw events).',
      registers: [registry],
      collect() {
        const last = stats().lastVerify
        if (last) this.set(last.mismatch_count)
      },
    })

    // DuckDB's own memory (buffer manager), per kind of instance.
    const memory = duckdbMemoryReader(app)
    const readMemory = () => memory.read((result) => memoryReads.inc({ result }))
    const memoryReads = new Counter({
      name: 'tokenledger_duckdb_memory_reads_total',
      help: 'Measurements of DuckDB memory by result: ok, busy (every query slot taken: skipped, not queued), error.',
      labelNames: ['result'],
      registers: [registry],
      async collect() {
        await readMemory() // so this scrape counts the measurement it started
      },
    })
    for (const result of ['ok', 'busy', 'error']) memoryReads.inc({ result }, 0)
    const memoryGauge = (name: string, help: string, pick: (m: DuckDBMemory) => [number, number]): void => {
      new Gauge({
        name,
        help,
        labelNames: ['instance'],
        registers: [registry],
        async collect() {
          const last = await readMemory()
          if (!last) return
          const [live, files] = pick(last.figures)
          this.set({ instance: 'live' }, live)
          this.set({ instance: 'files' }, files)
        },
      })
    }
    memoryGauge(
      'tokenledger_duckdb_memory_bytes',
      'Memory DuckDB reports in use (duckdb_memory()): live = the active segment (and one rolled over, not yet closed), files = the catalog and attached files.',
      (m) => [m.liveBytes, m.filesBytes],
    )
    memoryGauge('tokenledger_duckdb_temporary_storage_bytes', 'Bytes DuckDB has spilled to temporary storage (duckdb_memory()).', (m) => [m.liveTemporaryBytes, m.filesTemporaryBytes])
    new Gauge({
      name: 'tokenledger_duckdb_memory_measured_timestamp_seconds',
      help: 'When the DuckDB memory figures were measured (Unix time): they are refreshed at most every 5 s.',
      registers: [registry],
      async collect() {
        const last = await readMemory()
        if (last) this.set(last.atMs / 1000)
      },
    })

    // HTTP: latency and responses by route template.
    const httpSeconds = new Histogram({
      name: 'tokenledger_http_request_duration_seconds',
      help: `Time from request to response, by method and route template ("${UNMATCHED}": every path no route has).`,
      labelNames: ['method', 'route'],
      buckets: HTTP_SECONDS_BUCKETS,
      registers: [registry],
    })
    const httpResponses = new Counter({
      name: 'tokenledger_http_responses_total',
      help: 'Responses by method, route template and status class (2xx, 4xx, 5xx...).',
      labelNames: ['method', 'route', 'status_class'],
      registers: [registry],
    })
    app.addHook('onResponse', (request, reply, done) => {
      const { method, route } = routeLabels(request)
      httpSeconds.observe({ method, route }, reply.elapsedTime / 1000)
      httpResponses.inc({ method, route, status_class: statusClass(reply.statusCode) })
      done()
    })

    app.decorate('metrics', registry)
  },
  { name: 'tokenledger-metrics', decorators: { fastify: ['store', 'clock', 'config'] } },
)

function routeLabels(request: FastifyRequest): { method: string; route: string } {
  const url = request.routeOptions.url
  if (url === undefined) return { method: METHODS.has(request.method) ? request.method : 'OTHER', route: UNMATCHED }
  return { method: request.method, route: url }
}

function statusClass(status: number): string {
  return status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : 'other'
}

/**
 * DuckDB's memory, measured at most every MEMORY_INTERVAL_MS by one query at
 * a time, and waited for at most MEMORY_WAIT_MS: a scrape never stalls behind
 * a busy store, it shows the last figures and when they were measured.
 */
function duckdbMemoryReader(app: Pick<FastifyInstance, 'store' | 'clock' | 'log'>) {
  let last: { figures: DuckDBMemory; atMs: number } | null = null
  let triedMs = -Infinity
  let inFlight: Promise<void> | null = null
  return {
    async read(report: (result: 'ok' | 'busy' | 'error') => void): Promise<typeof last> {
      const nowMs = app.clock.nowMs()
      if (inFlight === null && nowMs - triedMs >= MEMORY_INTERVAL_MS) {
        triedMs = nowMs
        inFlight = app.store
          .duckdbMemory(MEMORY_QUERY_TIMEOUT_MS)
          .then(
            (figures) => {
              if (figures === null) return report('busy')
              last = { figures, atMs: app.clock.nowMs() }
              report('ok')
            },
            (err: unknown) => {
              report('error')
              app.log.warn({ err }, 'measuring DuckDB memory failed')
            },
          )
          .finally(() => (inFlight = null))
      }
      if (inFlight !== null) {
        let timer: NodeJS.Timeout | undefined
        await Promise.race([inFlight, new Promise((resolve) => (timer = setTimeout(resolve, MEMORY_WAIT_MS)))])
        clearTimeout(timer)
      }
      return last
    },
  }
}
