// Retention: the three windows, the cutoffs they give at a moment, and the
// the report of one run is reports.ts'. The run itself lives in the store
// (store.ts, `runRetention`), because its one step on the active segment must
// take the store's write gate.
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
