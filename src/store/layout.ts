// Where segment files live under the data directory, and how they are named.
//
//   active/seg-<id>.duckdb     the active segment (normally exactly one)
//   pending/seg-<id>.duckdb    rolled over, waiting to be sealed
//   archive/seg-<id>.duckdb    sealed: compacted, sorted by time, immutable
//   archive/seg-<id>.duckdb.tmp  a seal in progress (removed at start-up)
//   archive/seg-<id>.duckdb.reprice  a re-priced copy: renamed over the archive
//                              once the catalog recorded it (reprice.ts), else
//                              removed at start-up
//   archive/seg-<id>.details.duckdb  the sealed segment's detail payloads, kept
//                              apart so that they expire (as a whole file) long
//                              before the events do
//   orphaned/                  files no state explains, kept for an operator
//   index/run-<seq>.ids         the sealed tier's dedupe id runs (idruns.ts)
//   catalog.duckdb             the catalog (segments, per-segment dims, rollups)
//
// Segment ids grow monotonically and are never reused; a zero-padded id keeps
// names in id order when listed.

import path from 'node:path'

export type Tier = 'active' | 'pending' | 'archive' | 'orphaned'

export const TIERS: readonly Tier[] = ['active', 'pending', 'archive', 'orphaned']

export const CATALOG_FILE = 'catalog.duckdb'

/** The file name used by the single-file store of the first release. */
export const LEGACY_ACTIVE_FILE = 'segment-active.duckdb'

export function segmentFileName(id: number): string {
  return `seg-${String(id).padStart(12, '0')}.duckdb`
}

export function segmentPath(dataDir: string, tier: Tier, id: number): string {
  return path.join(dataDir, tier, segmentFileName(id))
}

export function detailsFileName(id: number): string {
  return `seg-${String(id).padStart(12, '0')}.details.duckdb`
}

/** The sealed segment's detail file (archive tier only). */
export function detailsPath(dataDir: string, id: number): string {
  return path.join(dataDir, 'archive', detailsFileName(id))
}

/** The sealed tier's dedupe id runs (idruns.ts). */
export function indexDir(dataDir: string): string {
  return path.join(dataDir, 'index')
}

export function tierDir(dataDir: string, tier: Tier): string {
  return path.join(dataDir, tier)
}

export interface ParsedName {
  id: number
  /** The events database, or the sealed segment's detail file. */
  kind: 'events' | 'details'
  /** '' for the database itself, or '.wal' / '.tmp' / '.tmp.wal' / '.reprice' / '.reprice.wal'. */
  suffix: string
}

export function parseSegmentFileName(name: string): ParsedName | null {
  const m = /^seg-(\d{12})(\.details)?\.duckdb((?:\.tmp|\.reprice)?(?:\.wal)?)$/.exec(name)
  if (!m) return null
  return { id: Number(m[1]), kind: m[2] ? 'details' : 'events', suffix: m[3]! }
}

/** Relative to the data directory, as recorded in the catalog. */
export function relativeSegmentPath(tier: Tier, id: number): string {
  return `${tier}/${segmentFileName(id)}`
}
