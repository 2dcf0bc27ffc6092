// A request's valid events, ready for the store: what the dedupe needs (ids,
// fingerprints, timestamps, positions) and the rows already encoded as the
// group commit's column strings (schema.ts). Built where the request is
// decoded (an ingest worker, or the event loop), so the commit only joins
// strings; plain data, so it crosses a worker boundary as it is.

import { DETAIL_INSERT, EVENT_INSERT } from '../store/schema.js'
import type { UsageEvent } from './event.js'

export interface EventBatch {
  /** Each event's position in the request (its results' `index`). */
  index: number[]
  ids: string[]
  fingerprints: string[]
  /** Microseconds since the epoch. */
  tsUs: number[]
  /** EVENT_INSERT's encoded columns of every event (empty when there are none). */
  columns: string[]
  /** Positions (into the arrays above) of the events that carry a detail. */
  detailRows: number[]
  /** DETAIL_INSERT's encoded columns of those events (empty when none). */
  detailColumns: string[]
  /** What the queued events hold in memory, roughly: the queue's byte bound counts this. */
  bytes: number
}

/** The batch of `events` (validated), each with its position in the request. */
export function encodeEvents(events: ReadonlyArray<{ index: number; event: UsageEvent }>): EventBatch {
  const rows = events.map((e) => e.event)
  const detailRows: number[] = []
  let bytes = 0
  for (let i = 0; i < rows.length; i++) {
    const e = rows[i]!
    if (e.detail !== null) detailRows.push(i)
    bytes += 512 + (e.detail?.length ?? 0) + (e.tags?.length ?? 0)
  }
  return {
    index: events.map((e) => e.index),
    ids: rows.map((e) => e.event_id),
    fingerprints: rows.map((e) => e.fingerprint),
    tsUs: rows.map((e) => e.ts_us),
    columns: rows.length === 0 ? [] : EVENT_INSERT.encode(rows),
    detailRows,
    detailColumns: detailRows.length === 0 ? [] : DETAIL_INSERT.encode(detailRows.map((i) => rows[i]!)),
    bytes,
  }
}

/** The batch without the events whose `keep` is false (the same batch when all are kept). */
export function keepRows(batch: EventBatch, keep: readonly boolean[]): EventBatch {
  const kept = keep.reduce((n, k) => n + (k ? 1 : 0), 0)
  if (kept === batch.ids.length) return batch
  const pick = <T>(values: readonly T[]): T[] => values.filter((_, i) => keep[i] === true)
  const detailKeep = batch.detailRows.map((i) => keep[i] === true)
  const newPosition: number[] = []
  let next = 0
  for (let i = 0; i < keep.length; i++) newPosition.push(keep[i] ? next++ : -1)
  return {
    index: pick(batch.index),
    ids: pick(batch.ids),
    fingerprints: pick(batch.fingerprints),
    tsUs: pick(batch.tsUs),
    columns: kept === 0 ? [] : EVENT_INSERT.filter(batch.columns, keep),
    detailRows: batch.detailRows.filter((i) => keep[i] === true).map((i) => newPosition[i]!),
    detailColumns: detailKeep.some(Boolean) ? DETAIL_INSERT.filter(batch.detailColumns, detailKeep) : [],
    bytes: batch.bytes,
  }
}
