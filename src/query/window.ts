// The window of a usage answer, without SQL: where the event, detail and
// rollup cutoffs move or refuse its edges, which segments may hold anything
// for it, how its unaligned edges border the aligned middle (15-minute cells),
// and how the coarse rollup levels cover that middle. Pure functions of
// numbers and the snapshot's bounds: tested without DuckDB (test/coarse.test.ts).
//
// Invariants:
// - Totals before the event cutoff come from rollups, which are exact only on
//   15-minute boundaries: an unaligned edge before it is refused, never
//   answered approximately (refuseExpiredEdges).
// - A segment is skipped only when its exact time bounds or pruning dims prove
//   it holds nothing for the filter (mayMatch).
// - Coarse cells never cross a series bucket start, so every cell lies within
//   one bucket (coarseCells).

import { Errors } from '../errors.js'
import { BUCKET_US, COARSE_LEVELS, PRUNING_DIMS } from '../store/catalog.js'
import type { Cutoffs } from '../store/retention.js'
import type { SnapshotPart } from '../store/snapshot.js'
import type { EventFilter } from './filters.js'

export type Range = [number, number]

/** How far before the event cutoff an unaligned `from` is moved up to it (a client's own "now - 30d" arrives a little late). */
export const FROM_GRACE_US = BUCKET_US

/**
 * The `from` that totals answer for: nothing is retained before the rollup
 * cutoff (a bucket boundary), and an unaligned `from` at most FROM_GRACE_US
 * before the event cutoff starts at the cutoff (every raw event from there on
 * is still stored, so the answer stays exact for that window).
 */
export function effectiveFromUs(fromUs: number, c: Cutoffs): number {
  const from = Math.max(fromUs, c.rollupsUs)
  const aligned = from % BUCKET_US === 0
  if (!aligned && from < c.eventsUs && c.eventsUs - from <= FROM_GRACE_US) return c.eventsUs
  return from
}

/** An edge of the window answered from raw rows must not reach before the event cutoff (those rows are gone, or going). */
export function refuseExpiredEdges(f: EventFilter, alignedFrom: number, alignedTo: number, c: Cutoffs): void {
  const cutoff = new Date(Math.floor(c.eventsUs / 1000)).toISOString()
  const why = `is before the raw-event retention cutoff (${cutoff}); totals before it come from 15-minute rollups, so it must fall on a 15-minute boundary`
  if (f.fromUs < c.eventsUs && f.fromUs !== alignedFrom) throw new Errors.BadQuery(`\`from\` ${why}`)
  if (f.toUs !== alignedTo && Math.max(alignedTo, f.fromUs) < c.eventsUs) throw new Errors.BadQuery(`\`to\` ${why}`)
}

/** False when the segment's time bounds or pruning dims prove it holds nothing for the filter. */
export function mayMatch(part: SnapshotPart, f: EventFilter, [fromUs, toUs]: Range): boolean {
  // Bounds are exact (kept at commit, or computed from the file): no bounds, no rows.
  if (part.minTsUs === null || part.maxTsUs === null) return false
  if (part.maxTsUs < fromUs || part.minTsUs >= toUs) return false
  if (part.dims) {
    for (const dim of PRUNING_DIMS) {
      const wanted = f.dims[dim]
      if (wanted && wanted.length > 0 && !wanted.some((v) => part.dims![dim].has(v))) return false
    }
  }
  return true
}

/** An edge's 15-minute cell and the archived segments whose rollups of it answer for the edge. */
export interface EdgeCell {
  cell: Range
  ids: number[]
}

/**
 * Whether the archived segment's events in the cell of `edge` (an unaligned
 * edge of the window, bordering its aligned `middle`) all lie inside the
 * window: its oldest event at or after the window's start (left edge), or its
 * newest before the window's end (right edge). Then its rollups of that cell
 * count exactly its events in the edge, and its file is not read.
 */
export function edgeHoldsSegment(part: SnapshotPart, edge: Range, middle: Range): boolean {
  return part.minTsUs !== null && part.maxTsUs !== null && insideWindow(edge, edgeCell(edge, middle).left, part.minTsUs, part.maxTsUs)
}

/** The 15-minute cell of an unaligned edge of the window, and whether it is the left (start) edge; the edge borders the aligned middle. */
export function edgeCell(edge: Range, middle: Range): { cell: Range; left: boolean } {
  if (edge[1] === middle[0]) return { cell: [edge[1] - BUCKET_US, edge[1]], left: true }
  if (edge[0] === middle[1]) return { cell: [edge[0], edge[0] + BUCKET_US], left: false }
  throw new Error('invariant: an edge of the window borders its aligned middle')
}

/** Whether events of an edge's cell from `minUs` to `maxUs` all lie inside the window: at or after its start (left edge), before its end (right). */
export function insideWindow(edge: Range, left: boolean, minUs: number, maxUs: number): boolean {
  return left ? minUs >= edge[0] : maxUs < edge[1]
}

/**
 * Covers [fromUs, toUs) (15-minute boundaries) with cells of the coarse
 * levels, coarsest first: from each end, finer cells up to the first boundary
 * of the next level, and the coarsest level in the middle; a cell never
 * crosses a break (a bucket start of a series, strictly inside the range), so
 * every cell lies within one bucket. Returns the ranges of each level, in
 * COARSE_LEVELS order, ascending, contiguous ones merged.
 */
export function coarseCells(fromUs: number, toUs: number, breaks: readonly number[] | null): Range[][] {
  const widths = COARSE_LEVELS.map((l) => l.us)
  const q = widths[0]!
  if (fromUs % q !== 0 || toUs % q !== 0 || fromUs >= toUs) throw new Error('invariant: coarse cells cover a non-empty range of 15-minute boundaries')
  const out: Range[][] = COARSE_LEVELS.map(() => [])
  const add = (level: number, a: number, b: number): void => {
    if (a >= b) return
    const list = out[level]!
    const last = list[list.length - 1]
    if (last && last[1] === a) last[1] = b
    else list.push([a, b])
  }
  const floorTo = (x: number, w: number): number => Math.floor(x / w) * w
  const ceilTo = (x: number, w: number): number => Math.ceil(x / w) * w
  const top = widths.length - 1
  const cuts = [fromUs, ...(breaks ?? []).filter((s) => s > fromUs && s < toUs), toUs]
  for (let i = 0; i + 1 < cuts.length; i++) {
    const b = cuts[i + 1]!
    let x = cuts[i]!
    if (x % q !== 0 || b % q !== 0) throw new Error('invariant: breaks fall on 15-minute boundaries')
    // Up from the start: each level to the first boundary of the next one (never past the last of its own before b).
    for (let l = 0; l < top; l++) {
      const next = Math.max(x, Math.min(floorTo(b, widths[l]!), ceilTo(x, widths[l + 1]!)))
      add(l, x, next)
      x = next
    }
    // The middle at the coarsest level, then down to b.
    for (let l = top; l >= 0; l--) {
      const next = Math.max(x, floorTo(b, widths[l]!))
      add(l, x, next)
      x = next
    }
  }
  return out
}
