// Retention: the three windows, the cutoffs they give at a moment, and the
// report of one run. The run itself lives in the store (store.ts,
// `runRetention`), because its one step on the active segment must take the
// store's write gate.
//
// Invariants:
// - details window <= event window <= rollup window (config.ts refuses
//   anything else), so details never outlive their events and billing totals
//   (rollups) always outlive them.
// - A cutoff is a point in time: events strictly before `eventsUs` are expired
//   (invisible to every query at once, deleted by a later run); detail payloads
//   before `detailsUs` likewise; rollup buckets starting before `rollupsUs`
//   (a 15-minute boundary) likewise. Ingest refuses timestamps before the same
//   event cutoff, so nothing expired is ever written again.

import { BUCKET_US } from './catalog.js'

export interface RetentionWindows {
  eventRetentionMs: number
  detailRetentionMs: number
  rollupRetentionMs: number
}

export const DEFAULT_WINDOWS: RetentionWindows = {
  eventRetentionMs: 30 * 86_400_000,
  detailRetentionMs: 7 * 86_400_000,
  rollupRetentionMs: 400 * 86_400_000,
}

export interface Cutoffs {
  /** Raw events with ts before this are expired (microseconds). */
  eventsUs: number
  /** Detail payloads of events before this are expired. */
  detailsUs: number
  /** Rollup buckets starting before this are expired (a bucket boundary). */
  rollupsUs: number
}

export function cutoffsAt(nowMs: number, w: RetentionWindows): Cutoffs {
  const rollupsUs = (nowMs - w.rollupRetentionMs) * 1000
  return {
    eventsUs: (nowMs - w.eventRetentionMs) * 1000,
    detailsUs: (nowMs - w.detailRetentionMs) * 1000,
    // A bucket is kept while any part of it is inside the window.
    rollupsUs: Math.floor(rollupsUs / BUCKET_US) * BUCKET_US,
  }
}

export type RetentionTrigger = 'schedule' | 'admin'

/** What one retention run did (snake_case: it is served as JSON as it is). */
export interface RetentionReport {
  trigger: RetentionTrigger
  started_at: string
  cutoffs: { events: string; details: string; rollups: string }
  /** The active segment: kept, or rolled over because every row in it had expired (then sealed, and deleted by a later run). */
  active: { action: 'kept' | 'rolled_over'; segment_id: number; expired_events: number; note?: string }
  /** Archived segments whose newest event had expired: removed from the catalog, their files deleted. */
  segments_deleted: number[]
  events_deleted: number
  /** Files removed now, and files whose removal waits for a query still reading them. */
  files_deleted: number
  files_deferred: number
  bytes_freed: number
  /** Archived segments whose detail file expired (deleted). */
  details_expired: number[]
  detail_rows_expired: number
  rollup_rows_deleted: number
  /** Dedupe index entries of deleted segments removed. */
  index_entries_removed: number
  /** Rolled-over segments whose events have all expired but which wait for sealing (their rollups) before deletion. */
  awaiting_seal: number[]
  /** How long appends were held off by this run (the write gate), in total. */
  gate_held_ms: number
  duration_ms: number
  errors: string[]
}
