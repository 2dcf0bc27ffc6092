// Prometheus metrics as a named plugin: one Registry per app (tests build many
// apps in one process, so never prom-client's global registry), decorated as
// `app.metrics`. Store figures are read at scrape time from Store.stats() and
// the segment list, so the store itself knows nothing of Prometheus.
//
// What is here so far: retention runs, deletions and gate hold, segments and
// bytes per state, sealing, ingest commits, and Node's default process metrics.
// (The hardening issue adds request-level metrics and scopes /metrics to a token.)

import fp from 'fastify-plugin'
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client'
import type { RetentionReport } from '../store/retention.js'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Registry
  }
}

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

export default fp(
  async (app) => {
    const registry = new Registry()
    collectDefaultMetrics({ register: registry, prefix: 'tokenledger_' })
    const { store } = app
    const stats = () => store.stats()

    mirrorCounter(registry, 'tokenledger_ingest_commits_total', 'Group commits of the active segment.', () => stats().commits)
    mirrorCounter(registry, 'tokenledger_ingest_committed_events_total', 'Events committed (accepted).', () => stats().committedEvents)
    mirrorCounter(registry, 'tokenledger_rollovers_total', 'Rollovers of the active segment.', () => stats().rollovers)
    mirrorCounter(registry, 'tokenledger_seals_total', 'Segments sealed into archives.', () => stats().sealed)
    mirrorCounter(registry, 'tokenledger_seal_failures_total', 'Failed seal attempts (each is retried).', () => stats().sealFailures)
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
    new Gauge({
      name: 'tokenledger_segments',
      help: 'Retained segments per state.',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const counts = { active: 0, pending: 0, archived: 0 }
        for (const s of store.segmentList()) counts[s.state]++
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n)
      },
    })
    new Gauge({
      name: 'tokenledger_segment_bytes',
      help: 'Bytes of retained segment files per state (the active one as of its last commit).',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const bytes = { active: 0, pending: 0, archived: 0 }
        for (const s of store.segmentList()) bytes[s.state] += s.bytes ?? 0
        for (const [state, n] of Object.entries(bytes)) this.set({ state }, n)
      },
    })
    new Gauge({
      name: 'tokenledger_ingest_queued_events',
      help: 'Events waiting for a group commit.',
      registers: [registry],
      collect() {
        this.set(stats().queuedEvents)
      },
    })
    app.decorate('metrics', registry)
  },
  { name: 'tokenledger-metrics', decorators: { fastify: ['store'] } },
)
