// Dedupe across every tier: the in-memory index of stored ids (idindex.ts) and
// the exact probes that confirm its candidates, before the gate for closed
// segments and under it for the rest.
//
// Invariants:
// - `index` names, for every id committed in a retained segment, the segment
//   holding it. It changes only under the gate, after COMMIT succeeds
//   (`committed`), and a hit is always confirmed by an exact probe of that
//   segment (event_id and fingerprint): a hash collision costs a probe, never a
//   wrong answer.
// - Hits in closed segments (pending files, archives) may be probed before the
//   request takes the gate (`beforeGate`): they never gain rows, so the answer
//   holds. Under the gate (`underGate`) only the live segments and segments
//   closed since are probed, so a replay of old events does not stall fresh
//   appends.
// - A rolled-over segment no longer takes appends, but its writer answers
//   probes until it is closed and attached as a pending file: `retireLock`
//   serialises the two (rollover's retire runs its close under it). Lock
//   order: the gate first, then retireLock.
// - Every probe of an attached file pins it while it runs (pins.ts).

import { Mutex } from 'async-mutex'
import type { DuckDBConnection } from '@duckdb/node-api'
import type { AttachedFile, FileTier } from './files.js'
import { grants, type GateHeld } from './gate.js'
import { IdIndex } from './idindex.js'
import { lookupFingerprints, scanIds, type Segment } from './segment.js'
import type { SegmentEntry, Tiers } from './tiers.js'

/** Per event id: the closed segments already probed for it, and the fingerprint found there (if any). */
export type KnownIds = Map<string, { segments: Set<number>; fingerprint: string | null }>

interface ProbeRequest {
  closed: Map<number, string[]>
  resolve(known: KnownIds): void
  reject(err: Error): void
}

export class Dedupe {
  /** Held while a rolled-over segment is closed and moved; probes of it wait (lock order: after the gate). */
  readonly retireLock = new Mutex()
  /** Exact probes of closed segments made before taking the gate (replays of older events). */
  probesBeforeGate = 0
  /** Exact probes made under the gate (live segments, or segments closed since the request arrived). */
  probesUnderGate = 0
  private readonly probeQueue: ProbeRequest[] = []
  private probing = false

  private constructor(
    private readonly index: IdIndex,
    private readonly tiers: Tiers,
    private readonly files: FileTier,
  ) {}

  /**
   * Builds the index from every retained segment's ids, two segments at a
   * time: DuckDB joins one segment's ids while JS hashes the other's.
   */
  static async build(tiers: Tiers, files: FileTier): Promise<Dedupe> {
    const index = new IdIndex(tiers.rowCount() * 1.2)
    const queue = tiers.sorted()
    const scanNext = async (conn: DuckDBConnection): Promise<void> => {
      for (let e = queue.shift(); e !== undefined; e = queue.shift()) {
        const ids = e.live ? e.live.scanIds() : scanIds(conn, e.file!.alias)
        for await (const chunk of ids) for (const id of chunk) index.add(id, e.id)
      }
    }
    await Promise.all([scanNext(files.probeConn), scanNext(files.sealConn)])
    return new Dedupe(index, tiers, files)
  }

  get indexedEvents(): number {
    return this.index.size
  }

  get indexBytes(): number {
    return this.index.bytes
  }

  /** Segments that may hold `eventId` (from the index; confirm with a probe). */
  candidates(eventId: string): number[] {
    return this.index.candidates(eventId)
  }

  /** Records committed ids (under the gate, after COMMIT). */
  committed(held: GateHeld<Segment>, ids: Iterable<string>, segmentId: number): void {
    this.assertHolds(held)
    for (const id of ids) this.index.add(id, segmentId)
  }

  /** Forgets a dropped segment's ids at once (retention). */
  dropSegment(segmentId: number): void {
    this.index.dropSegment(segmentId)
  }

  /** Removes the entries of dropped segments; resolves to how many (idindex.ts). */
  purgeDropped(): Promise<number> {
    return this.index.purgeDropped()
  }

  /** Throws unless `held` is the live capability of the gate guarding the active segment. */
  private assertHolds(held: GateHeld<Segment>): void {
    const live = this.tiers.active.live
    if (live === null || !grants(held, live)) throw new Error('invariant: runs only under the write gate, on the active segment')
  }

  /**
   * The closed segments (pending files and archives: immutable) that the
   * index names for some of `ids`, with those ids. Fresh ids have none.
   */
  closedCandidates(ids: readonly string[]): Map<number, string[]> {
    const out = new Map<number, string[]>()
    for (const id of ids) {
      for (const seg of this.index.candidates(id)) {
        const entry = this.tiers.segments.get(seg)
        if (!entry || entry.live !== null || entry.file === null) continue
        let list = out.get(seg)
        if (!list) out.set(seg, (list = []))
        list.push(id)
      }
    }
    return out
  }

  /**
   * Exact probes of closed segments, run before the request takes the gate, on
   * the pooled query connections: a closed segment never gains rows, so what
   * is (or is not) in it stays true, and a replay storm over old segments costs
   * the pool, not the gate that every fresh append waits on. Like commits,
   * probes are grouped: requests arriving while a round runs share the next
   * one, so each segment is scanned once per round for all their ids.
   */
  beforeGate(closed: Map<number, string[]>): Promise<KnownIds> {
    return new Promise<KnownIds>((resolve, reject) => {
      this.probeQueue.push({ closed, resolve, reject })
      if (this.probing) return
      this.probing = true
      void this.probeLoop().finally(() => (this.probing = false))
    })
  }

  /** The stored fingerprint of each id of `ids` that some retained segment holds (exact), given what `beforeGate` found. */
  async underGate(held: GateHeld<Segment>, ids: Iterable<string>, known: KnownIds): Promise<Map<string, string>> {
    this.assertHolds(held)
    const bySegment = new Map<number, string[]>()
    const found = new Map<string, string>()
    for (const id of ids) {
      const k = known.get(id)
      if (k?.fingerprint) {
        found.set(id, k.fingerprint)
        continue
      }
      for (const seg of this.index.candidates(id)) {
        if (k?.segments.has(seg)) continue
        let list = bySegment.get(seg)
        if (!list) bySegment.set(seg, (list = []))
        list.push(id)
      }
    }
    for (const [seg, list] of bySegment) {
      const entry = this.tiers.segments.get(seg)
      if (!entry) continue
      // A rolled-over segment that is not yet a file: its writer answers, unless
      // retire is closing it right now (then wait, and read the file it became).
      const hits =
        entry.live && entry !== this.tiers.active
          ? await this.retireLock.runExclusive(() => this.lookupIn(entry, list))
          : await this.lookupIn(entry, list)
      this.probesUnderGate++
      for (const [id, fp] of hits) found.set(id, fp)
    }
    return found
  }

  private async probeLoop(): Promise<void> {
    while (this.probeQueue.length > 0) {
      const round = this.probeQueue.splice(0)
      try {
        const idsBySegment = new Map<number, Set<string>>()
        for (const r of round) {
          for (const [seg, ids] of r.closed) {
            let set = idsBySegment.get(seg)
            if (!set) idsBySegment.set(seg, (set = new Set()))
            for (const id of ids) set.add(id)
          }
        }
        // One segment at a time: each probe is a parallel DuckDB scan already, and
        // running many at once would crowd out the commits sharing the cores.
        const hitsBySegment = new Map<number, Map<string, string>>()
        for (const [seg, ids] of idsBySegment) {
          const hits = await this.lookupClosed(seg, [...ids])
          if (hits !== null) hitsBySegment.set(seg, hits)
        }
        for (const r of round) {
          const known: KnownIds = new Map()
          for (const [seg, ids] of r.closed) {
            const hits = hitsBySegment.get(seg)
            if (hits === undefined) continue // not probed (no longer closed): the gate's probe covers it
            for (const id of ids) {
              let k = known.get(id)
              if (!k) known.set(id, (k = { segments: new Set(), fingerprint: null }))
              k.segments.add(seg)
              k.fingerprint ??= hits.get(id) ?? null
            }
          }
          r.resolve(known)
        }
      } catch (err) {
        for (const r of round) r.reject(err instanceof Error ? err : new Error(String(err)))
      }
    }
  }

  /** Exact probe of a closed segment's file on a pooled connection; null when it is not (or no longer) a closed, readable file. */
  private async lookupClosed(seg: number, ids: string[]): Promise<Map<string, string> | null> {
    const entry = this.tiers.segments.get(seg)
    const file = entry?.file
    if (!entry || entry.live !== null || !file || (file.retired && file.pins.held === 0)) return null
    const hits = await this.lookupFile(file, ids, (fn) => this.files.query(fn))
    this.probesBeforeGate++
    return hits
  }

  /** Exact probe of one segment: its writer while live, its attached file (pinned) after. */
  private async lookupIn(entry: SegmentEntry, ids: string[]): Promise<Map<string, string>> {
    if (entry.live) return entry.live.lookup(ids)
    if (!entry.file) throw new Error(`invariant: segment ${entry.id} has neither a live instance nor a file`)
    return this.lookupFile(entry.file, ids, (fn) => fn(this.files.probeConn))
  }

  /** Exact probe of an attached file, pinned while it runs on the connection `run` lends. */
  private async lookupFile(file: AttachedFile, ids: string[], run: (fn: (conn: DuckDBConnection) => Promise<Map<string, string>>) => Promise<Map<string, string>>) {
    this.files.pin(file)
    try {
      return await run((conn) => lookupFingerprints(conn, file.alias, ids))
    } finally {
      await this.files.unpin(file)
    }
  }
}
