// Dedupe across every tier: the id index of the live tiers (idindex.ts, in
// memory), the persisted id runs of the sealed tier (idruns.ts: sorted 64-bit
// hashes on disk, a filter and fences in memory), and the exact probes that
// confirm their candidates, before the gate for closed segments and under it
// for the rest.
//
// Invariants:
// - Every id committed in a retained segment is named, with its segment, by
//   `live` or by `runs` (or both, for a moment): `live` learns ids under the
//   gate after COMMIT (`committed`); a sealed segment's ids move to `runs` at
//   the seal's index step (`indexPart`), and leave `live` only once their run
//   is durable. A sealed segment without a run (a crash before its index step)
//   stays in `live`, and start-up rebuilds its run from the archive.
// - A hit is always confirmed by an exact probe of the named segment (event_id
//   and fingerprint): a hash collision or a filter false positive costs a
//   probe, never a wrong answer. A miss is exact.
// - Hits in closed segments (pending files, archives) may be probed before the
//   request takes the gate (`beforeGate`): they never gain rows, so the answer
//   holds. Under the gate (`underGate`) only the live segments and segments
//   closed since are probed, so a replay of old events does not stall fresh
//   appends.
// - A rolled-over segment no longer takes appends, but its writer answers
//   probes until it is closed and attached as a pending file: `retireLock`
//   serialises the two (rollover's retire runs its close under it). Lock
//   order: the gate first, then retireLock.
// - A segment retention deletes leaves both indexes at once (`dropSegment`,
//   masked), its entries later (`purgeDropped`).
// - Every probe of an attached file pins it while it runs (pins.ts).

import { Mutex } from 'async-mutex'
import type { DuckDBConnection } from '@duckdb/node-api'
import type { AttachedFile, FileTier } from './files.js'
import { grants, type GateHeld } from './gate.js'
import { hashId64, IdIndex } from './idindex.js'
import { IdRuns } from './idruns.js'
import type { StoreHooks } from './options.js'
import type { FileSystem } from './fsops.js'
import type { Logger } from '../log.js'
import { lookupFingerprints, scanIds, type Segment } from './segment.js'
import type { SegmentEntry, Tiers } from './tiers.js'

export type DedupeHooks = Pick<StoreHooks, 'idHash' | 'beforeIndexPart' | 'beforeIndexLoad'>

export interface DedupeOptions {
  /** Where the sealed tier's id runs live (layout.ts: indexDir). */
  indexDir: string
  fs: FileSystem
  logger: Logger
  hooks?: DedupeHooks
}

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

  /** Sealed segments whose ids are not in a run yet (their index step failed or has not run): `live` still names them. */
  private readonly unindexed = new Set<number>()
  private loadState: string | null = 'the dedupe index is loading'
  private loadingPromise: Promise<void> | null = null
  /** One purge of the live index at a time: a second one could free a slot the first has not emptied. */
  private readonly purgeLock = new Mutex()

  private constructor(
    private readonly index: IdIndex,
    private readonly runs: IdRuns,
    private readonly tiers: Tiers,
    private readonly files: FileTier,
    private readonly logger: Logger,
    private readonly hooks: DedupeHooks,
  ) {}

  /**
   * The dedupe of a store being opened, with nothing loaded yet: until `load`
   * has finished, `loading` says so, the store refuses appends and every
   * retained segment is a candidate of every id (exact, slow).
   */
  static create(tiers: Tiers, files: FileTier, o: DedupeOptions): Dedupe {
    const hash = o.hooks?.idHash ?? hashId64
    const liveRows = tiers.sorted().reduce((n, e) => (e.state === 'archived' ? n : n + e.rowCount), 0)
    return new Dedupe(new IdIndex(liveRows * 1.2, hash), IdRuns.empty(o.indexDir, o.fs, hash), tiers, files, o.logger, o.hooks ?? {})
  }

  /**
   * Start-up: loads the sealed tier's persisted runs (their filters and
   * fences, not the entries), rebuilds the run of any archived segment no run
   * covers (a crash before its seal's index step) from its archive, and
   * builds the live index from the active and pending segments' ids. Never
   * replays the sealed history. The store takes no append, seals nothing and
   * runs no retention meanwhile; a rollover's retire waits (retireLock).
   */
  load(): Promise<void> {
    this.loadingPromise ??= this.retireLock
      .runExclusive(() => this.loadAll())
      .then(
        () => {
          this.loadState = null
        },
        (err: unknown) => {
          this.loadState = `the dedupe index failed to load: ${err instanceof Error ? err.message.slice(0, 200) : String(err)}`
          this.logger.error({ event: 'dedupe_load_failed', err }, 'the dedupe index failed to load: appends are refused until a restart')
          throw err
        },
      )
    return this.loadingPromise
  }

  /** Why the index is not usable yet (loading, or failed to load), or null once it is. */
  get loading(): string | null {
    return this.loadState
  }

  private async loadAll(): Promise<void> {
    const { tiers, files, index, runs } = this
    const archived = tiers.sorted().filter((e) => e.state === 'archived' && e.file !== null)
    await this.hooks.beforeIndexLoad?.()
    const uncovered = await runs.load(new Set(archived.map((e) => e.id)))
    const queue = tiers.sorted().filter((e) => e.state !== 'archived')
    const scanNext = async (conn: DuckDBConnection): Promise<void> => {
      for (let e = queue.shift(); e !== undefined; e = queue.shift()) {
        const ids = e.live ? e.live.scanIds() : scanIds(conn, e.file!.alias)
        for await (const chunk of ids) for (const id of chunk) index.add(id, e.id)
      }
    }
    await Promise.all([scanNext(files.probeConn), scanNext(files.sealConn)])
    for (const id of uncovered) {
      const entry = tiers.segments.get(id)!
      this.logger.warn({ event: 'dedupe_run_rebuilt', segment: id, rows: entry.rowCount }, 'an archived segment had no persisted id run (a crash before its index step): rebuilt from its archive')
      await this.writeRun(entry, files.probeConn)
    }
    await runs.compact()
  }

  /** Ids indexed: the live index's entries plus the sealed runs' (dropped segments' included until purged). */
  get indexedEvents(): number {
    return this.index.size + this.runs.stats().entries
  }

  /** Resident bytes of both indexes: the live table, the runs' filters and fences. */
  get indexBytes(): number {
    return this.index.bytes + this.runs.stats().bytes
  }

  /** Figures of the two indexes (status, benches). */
  indexStats(): { liveEntries: number; liveBytes: number; runs: number; runEntries: number; runBytes: number; runPageReads: number } {
    const r = this.runs.stats()
    return { liveEntries: this.index.size, liveBytes: this.index.bytes, runs: r.runs, runEntries: r.entries, runBytes: r.bytes, runPageReads: this.runs.pageReads }
  }

  /** Segments that may hold `eventId` (from the indexes; confirm with a probe); every retained one while loading. */
  candidates(eventId: string): number[] {
    if (this.loadState !== null) return [...this.tiers.segments.keys()]
    const out = this.index.candidates(eventId)
    this.runs.candidates(eventId, out)
    return out
  }

  /**
   * The seal's index step, after its swap: the archived segment's ids become a
   * durable run, then leave the live index; runs are merged while due. A
   * failure leaves the ids in the live index (still exact) and is retried by
   * `retryIndexParts`; a crash is repaired at start-up.
   */
  async indexPart(entry: SegmentEntry): Promise<void> {
    if (entry.state !== 'archived' || entry.file === null) throw new Error(`invariant: segment ${entry.id} is not archived`)
    this.unindexed.add(entry.id)
    await this.load()
    await this.hooks.beforeIndexPart?.(entry.id)
    await this.writeRun(entry, this.files.sealConn)
    await this.runs.compact()
  }

  /** Indexes the sealed segments whose index step failed (the sealer calls it after each run). */
  async retryIndexParts(): Promise<void> {
    for (const id of [...this.unindexed]) {
      const entry = this.tiers.segments.get(id)
      if (!entry || entry.state !== 'archived' || entry.file === null) {
        this.unindexed.delete(id)
        continue
      }
      try {
        await this.indexPart(entry)
      } catch (err) {
        this.logger.warn({ event: 'dedupe_index_part_failed', segment: id, err }, 'writing the id run of a sealed segment failed; its ids stay in the live index, retried later')
      }
    }
  }

  /** Writes `entry`'s run from its archive (pinned, on `conn`), then drops its ids from the live index. */
  private async writeRun(entry: SegmentEntry, conn: DuckDBConnection): Promise<void> {
    const file = entry.file!
    this.files.pin(file)
    // Gathered chunk by chunk as they arrive (one flat() at the end was one more stall of the loop).
    const ids: string[] = []
    try {
      for await (const chunk of scanIds(conn, file.alias)) for (const id of chunk) ids.push(id)
    } finally {
      await this.files.unpin(file)
    }
    const scanned = ids.length
    if (scanned !== entry.rowCount) throw new Error(`invariant: segment ${entry.id} holds ${entry.rowCount} rows but ${scanned} ids were scanned`)
    await this.runs.addSegment(entry.id, ids)
    // Retention may have deleted it meanwhile: then it leaves the run too.
    if (!this.tiers.segments.has(entry.id)) this.runs.drop(entry.id)
    this.index.dropSegment(entry.id)
    this.unindexed.delete(entry.id)
    void this.purgeLive().catch((err: unknown) => this.logger.warn({ err }, 'purging the live dedupe index failed'))
  }

  /** Removes dropped segments' entries from the live index, one purge at a time (idindex.ts). */
  private purgeLive(): Promise<number> {
    return this.purgeLock.runExclusive(() => this.index.purgeDropped())
  }

  /** Closes the runs' files (store close). */
  close(): void {
    this.runs.close()
  }

  /** Records committed ids (under the gate, after COMMIT). */
  committed(held: GateHeld<Segment>, ids: Iterable<string>, segmentId: number): void {
    this.assertHolds(held)
    for (const id of ids) this.index.add(id, segmentId)
  }

  /** Forgets a dropped segment's ids at once (retention). */
  dropSegment(segmentId: number): void {
    this.index.dropSegment(segmentId)
    this.runs.drop(segmentId)
  }

  /** Removes the entries of dropped segments from both indexes; resolves to how many. */
  async purgeDropped(): Promise<number> {
    return (await this.purgeLive()) + (await this.runs.purge())
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
      for (const seg of this.candidates(id)) {
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
      for (const seg of this.candidates(id)) {
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
