// What an append asks and what it is told: the request (valid events encoded,
// rejects already known), the outcome of every event, and the counts the
// metrics take per door. Shared by the ingest path, the commit queue and the
// routes; this module depends on nothing of the store.
//
// Invariants:
// - Every event of a request gets exactly one outcome: accepted (counted, not
//   listed), or a result naming it (duplicate, conflict, rejected), in index order.
// - `stored` is false only for an atomic request refused as a whole: then
//   nothing of it was written, and `accepted` is 0.

import type { EventBatch } from '../ingest/batch.js'
import type { FieldError } from '../ingest/event.js'

export type EventStatus = 'duplicate' | 'conflict' | 'rejected'

export interface EventResult {
  index: number
  event_id: string | null
  status: EventStatus
  errors?: FieldError[]
}

export interface AppendOutcome {
  /** False only for an atomic request that was refused (422): nothing stored. */
  stored: boolean
  accepted: number
  duplicates: number
  conflicts: number
  rejected: number
  results: EventResult[]
}

/** The doors events come in by (DESIGN.md: the native route and the other doors in). */
export const INGEST_SOURCES = ['native', 'openmeter', 'otlp', 'litellm'] as const
export type IngestSource = (typeof INGEST_SOURCES)[number]

export interface AppendRequest {
  /** The request's valid events, encoded (src/ingest/batch.ts). */
  events: EventBatch
  /** Outcomes already known before the store (validation rejects). */
  rejected: EventResult[]
  atomic: boolean
  /** Body bytes, counted against the queue's byte bound. */
  bytes: number
  /** Which door the events came in by (for the outcome counts); default 'native'. */
  source?: IngestSource
}

/** What one answered request's events were told (refused: acceptable events of an atomic batch refused as a whole). */
export interface IngestOutcomes {
  source: IngestSource
  events: number
  accepted: number
  duplicates: number
  conflicts: number
  rejected: number
  refused: number
}

/** The outcome of `req` given what the store found (`results`) and stored (`accepted`). */
export function outcomeOf(req: AppendRequest, results: EventResult[], accepted: number, stored: boolean): AppendOutcome {
  const all = [...req.rejected, ...results].sort((a, b) => a.index - b.index)
  let duplicates = 0
  let conflicts = 0
  let rejected = req.rejected.length
  for (const r of results) {
    if (r.status === 'duplicate') duplicates++
    else if (r.status === 'conflict') conflicts++
    else rejected++
  }
  return { stored, accepted, duplicates, conflicts, rejected, results: all }
}

/** The per-door counts of an answered request. */
export function outcomesOf(req: AppendRequest, o: AppendOutcome): IngestOutcomes {
  const events = req.events.ids.length + req.rejected.length
  const told = o.accepted + o.duplicates + o.conflicts + o.rejected
  return { source: req.source ?? 'native', events, accepted: o.accepted, duplicates: o.duplicates, conflicts: o.conflicts, rejected: o.rejected, refused: o.stored ? 0 : events - told }
}
