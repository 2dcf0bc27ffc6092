// The tiers: one retained segment (SegmentEntry) in exactly one state, its seal
// status, the set of them with the active one (Tiers), and the durable move of
// a rolled-over file from active/ to pending/. Every unit of the store shares
// these; this module depends on none of them (only on the gate's capability).
//
// Invariants:
// - An entry is readable through `live` (an open instance) or `file` (an
//   attached file), and readers pin whichever they use (pins.ts).
// - state moves only forward: active -> pending (a rollover's swap, under the
//   write gate) -> archived (the sealer's swap, after the catalog commit).
// - Exactly one entry is active, and it is the segment the write gate guards
//   (swapActive moves both, for the gate's holder only).
// - A file moves to pending/ only once checkpointed and closed with no WAL
//   beside it, both directories fsync'd.

import type { AttachedFile } from './files.js'
import type { DetailsState, SegmentDims } from './catalog.js'
import type { FileSystem } from './fsops.js'
import { grants, type GateHeld, type WriteGate } from './gate.js'
import { segmentPath, tierDir } from './layout.js'
import { Pins } from './pins.js'
import type { Segment } from './segment.js'
import type { SegmentStats } from './stats.js'

export type SealStep = 'copy' | 'sync' | 'validate' | 'publish' | 'record' | 'swap' | 'cleanup'

/** The seal steps in the order they run (sealer.ts). */
export const SEAL_STEPS: readonly SealStep[] = ['copy', 'sync', 'validate', 'publish', 'record', 'swap', 'cleanup']

export type SegmentState = 'active' | 'pending' | 'archived'

export interface SealStatus {
  attempts: number
  lastError: string | null
  nextAttemptMs: number | null
}

/** One retained segment, in exactly one state, readable through `live` or `file`. */
export interface SegmentEntry {
  readonly id: number
  state: SegmentState
  /** The open DuckDB instance (the active segment, or a rolled-over one not yet closed). */
  live: Segment | null
  /** Readers of the live instance (pins.ts: the same scheme as attached files). */
  readonly livePins: Pins
  /** Set while the live instance is being closed: new readers wait for it. */
  liveClosing: Promise<void> | null
  /** The attached pending or archived file. */
  file: AttachedFile | null
  /** An archived segment's attached detail file (when `details` is 'file'). */
  detailsFile: AttachedFile | null
  /** Archived segments: where their details are (catalog.ts); null while live or pending (inside the segment). */
  details: DetailsState | null
  createdMs: number
  /** When it stopped taking appends (its rollover, or the start-up that found it pending); null while active. */
  pendingSinceMs: number | null
  firstAppendMs: number | null
  rowCount: number
  minTsUs: number | null
  maxTsUs: number | null
  bytes: number | null
  stats: SegmentStats | null
  dims: SegmentDims | null
  seal: SealStatus
}

export function newEntry(id: number, state: SegmentState, live: Segment | null): SegmentEntry {
  return {
    id,
    state,
    live,
    livePins: new Pins(),
    liveClosing: null,
    file: null,
    detailsFile: null,
    details: null,
    createdMs: live?.createdMs ?? 0,
    pendingSinceMs: null,
    firstAppendMs: null,
    rowCount: 0,
    minTsUs: null,
    maxTsUs: null,
    bytes: null,
    stats: null,
    dims: null,
    seal: { attempts: 0, lastError: null, nextAttemptMs: null },
  }
}

/**
 * Moves a checkpointed, closed segment file from active/ to pending/, durably
 * (both directories fsync'd), and returns its new path. A WAL left beside it
 * would mean the checkpoint did not absorb everything: moving the pair is not
 * atomic, so refuse (the caller fails stop; start-up reopens the file in
 * place, which replays and checkpoints the WAL, and moves it then).
 */
export async function moveToPending(fs: FileSystem, dataDir: string, id: number): Promise<string> {
  const from = segmentPath(dataDir, 'active', id)
  const to = segmentPath(dataDir, 'pending', id)
  if ((await fs.size(`${from}.wal`)) !== null) throw new Error(`${from}.wal still exists after CHECKPOINT and close; not moving the segment`)
  await fs.rename(from, to)
  await fs.syncDir(tierDir(dataDir, 'pending'))
  await fs.syncDir(tierDir(dataDir, 'active'))
  return to
}

/** One retained segment as status and metrics show it. */
export interface SegmentInfo {
  id: number
  state: SegmentState
  row_count: number
  min_timestamp_us: number | null
  max_timestamp_us: number | null
  bytes: number | null
  created_ms: number
  /** Pending segments: when they stopped taking appends. */
  pending_since_ms?: number
  seal?: SealStatus
}

/** The figures /v1/status and /metrics both show of the tiers: one computation for both. */
export interface TierSummary {
  count: Record<SegmentState, number>
  bytes: Record<SegmentState, number>
  rows: number
  /** How long the oldest pending segment has waited to be sealed; 0 with none. */
  oldestPendingAgeMs: number
  /** Pending segments, oldest first. */
  pending: SegmentInfo[]
  /** Segments whose last seal attempt failed. */
  failing: SegmentInfo[]
}

/** Sums the segment list (one pass). */
export function summarizeTiers(segments: readonly SegmentInfo[], nowMs: number): TierSummary {
  const count = { active: 0, pending: 0, archived: 0 }
  const bytes = { active: 0, pending: 0, archived: 0 }
  let rows = 0
  let oldestPendingAgeMs = 0
  const pending: SegmentInfo[] = []
  const failing: SegmentInfo[] = []
  for (const s of segments) {
    count[s.state]++
    bytes[s.state] += s.bytes ?? 0
    rows += s.row_count
    if (s.seal?.lastError) failing.push(s)
    if (s.state !== 'pending') continue
    pending.push(s)
    oldestPendingAgeMs = Math.max(oldestPendingAgeMs, nowMs - (s.pending_since_ms ?? s.created_ms))
  }
  return { count, bytes, rows, oldestPendingAgeMs, pending, failing }
}

/**
 * The retained segments of one store, and which is active. Every unit of the
 * store (commit, dedupe, rollover, snapshots, retention, the sealer) reads
 * them here; the active segment changes only through `swapActive`, by the
 * holder of the write gate, to the segment the gate now guards.
 */
export class Tiers {
  /** Every retained segment by id, in exactly one state, from the moment its file exists until retention drops it. */
  readonly segments = new Map<number, SegmentEntry>()
  #active: SegmentEntry
  #nextId: number

  constructor(entries: readonly SegmentEntry[], nextId: number) {
    const active = entries.filter((e) => e.state === 'active')
    if (active.length !== 1 || !active[0]!.live) throw new Error('invariant: the store opens with one live active segment')
    for (const e of entries) this.segments.set(e.id, e)
    this.#active = active[0]!
    this.#nextId = nextId
  }

  /** The segment appends go to. */
  get active(): SegmentEntry {
    return this.#active
  }

  /** A fresh segment id (never reused: ids order segments by age). */
  takeId(): number {
    return this.#nextId++
  }

  /**
   * Makes `next` the active segment and the former one pending (a rollover's
   * swap), pointing the write gate at next's live instance in the same step:
   * only the holder of the gate guarding the current active segment may, so
   * the gate and the tiers never disagree.
   */
  swapActive(gate: WriteGate<Segment>, held: GateHeld<Segment>, next: SegmentEntry, nowMs: number): SegmentEntry {
    const old = this.#active
    if (next.live === null || old.live === null || !grants(held, old.live)) throw new Error('invariant: the active segment changes only under the write gate')
    gate.swap(held, next.live)
    this.segments.set(next.id, next)
    this.#active = next
    old.state = 'pending'
    old.pendingSinceMs = nowMs
    return old
  }

  /** Every retained segment, oldest first. */
  sorted(): SegmentEntry[] {
    return [...this.segments.values()].sort((a, b) => a.id - b.id)
  }

  /** Rolled-over segments closed into pending files, oldest first: what the sealer takes. */
  pendingFiles(): SegmentEntry[] {
    return this.sorted().filter((e) => e.state === 'pending' && e.file !== null && e.live === null)
  }

  /** Segments waiting to be sealed (closed or not yet). */
  pendingCount(): number {
    let n = 0
    for (const e of this.segments.values()) if (e.state === 'pending') n++
    return n
  }

  /** Rows in every retained segment. */
  rowCount(): number {
    let n = 0
    for (const e of this.segments.values()) n += e.rowCount
    return n
  }

  /** Every retained segment as status and metrics show it, oldest first. */
  list(): SegmentInfo[] {
    return this.sorted().map((e) => ({
      id: e.id,
      state: e.state,
      row_count: e.rowCount,
      min_timestamp_us: e.minTsUs,
      max_timestamp_us: e.maxTsUs,
      bytes: e.bytes,
      created_ms: e.createdMs,
      ...(e.state === 'pending' ? { pending_since_ms: e.pendingSinceMs ?? e.createdMs, seal: { ...e.seal } } : {}),
    }))
  }
}
