// Read snapshots: every retained segment pinned for one read, bounded in
// number (query slots) and in time (DuckDB interrupted past the timeout).
// Reads never take the write gate.
//
// Invariants:
// - A snapshot pins what it reads (a live instance or an attached file, and a
//   detail file) before it reads, and unpins all of it when the read settles:
//   no tier change makes rows vanish or a file disappear under a query.
// - A segment being closed (a rollover's retire) is waited for, then read as
//   the file it became.
// - Expired rows are invisible at once: every snapshot carries the cutoffs of
//   its moment, and reads filter by them, whatever retention has deleted yet.
// - At most maxConcurrentQueries snapshots run; at most
//   MAX_QUERY_WAITERS_PER_SLOT per slot wait (past that QueryBusy at once), and
//   a wait is bounded by the query timeout (a client gone meanwhile cannot pile
//   up work).
// - A read that fails after a fail-stop (or on an invalidated DuckDB) is
//   503 TL_STORE_FAILED, never 500 (failstop.ts).
// - An interrupt reaches only this snapshot's queries: a connection leaves the
//   running set before it goes back to its pool.

import { E_TIMEOUT, Semaphore, withTimeout, type SemaphoreInterface } from 'async-mutex'
import type { DuckDBConnection } from '@duckdb/node-api'
import { Errors } from '../errors.js'
import type { Catalog, SegmentDims } from './catalog.js'
import { readFailure } from './failstop.js'
import type { FileTier } from './files.js'
import type { Cutoffs } from './retention.js'
import type { LiveRollups } from './segment.js'
import type { SegmentEntry, SegmentState, Tiers } from './tiers.js'

/** Reads that may wait for a query slot, per slot. */
const MAX_QUERY_WAITERS_PER_SLOT = 8

/** A pinned part of a read snapshot: one segment and how to query it. */
export interface SnapshotPart {
  id: number
  state: SegmentState
  minTsUs: number | null
  maxTsUs: number | null
  dims: SegmentDims | null
  /** Alias of the attached file (query through `Snapshot.files`), or null for a live segment. */
  alias: string | null
  /**
   * Where this segment's `event_details` table is: an attached alias (query
   * through `Snapshot.files`), `{ alias: null }` for a live segment (through
   * `live`), or null when it keeps no details (none, or expired).
   */
  detailsAt: { alias: string | null } | null
  /** Runs `fn` on a read connection of the live segment. Only when alias is null. */
  live<T>(fn: (conn: DuckDBConnection) => Promise<T>): Promise<T>
  /** A live segment's rollups in memory (segment.ts: read once per refresh, when a query first asks), or null (not live, or none). */
  liveRollups(): Promise<LiveRollups | null>
}

export interface Snapshot {
  parts: SnapshotPart[]
  /** The retention cutoffs at the moment of the snapshot: reads never return rows before them. */
  cutoffs: Cutoffs
  /** Runs `fn` on a pooled connection of the closed-file tier (attached files and the catalog). */
  files<T>(fn: (conn: DuckDBConnection) => Promise<T>): Promise<T>
  /**
   * The catalog generation whose rollups hold exactly the segments this
   * snapshot reads as archived (none it reads raw), when this process knows
   * that without asking DuckDB; null otherwise (a seal committed but not yet
   * shown as archived here). Answers cached at this generation fit the
   * snapshot as they are.
   */
  catalogGeneration: bigint | null
}

/** DuckDB's own memory figures (duckdb_memory()), summed per kind of instance. */
export interface DuckDBMemory {
  /** The live segments' instances: the active one, and one rolled over but not yet closed. */
  liveBytes: number
  liveTemporaryBytes: number
  /** The closed tiers' instance: the catalog and every attached pending and archived file. */
  filesBytes: number
  filesTemporaryBytes: number
}

/** What snapshots read of the store. */
export interface SnapshotHost {
  readonly tiers: Tiers
  readonly files: FileTier
  readonly catalog: Catalog
  maxConcurrentQueries: number
  /** Default time bound of one snapshot's reads. */
  queryTimeoutMs: number
  cutoffs(): Cutoffs
  /** True once the store is closed: no new snapshot starts. */
  closed(): boolean
  /** Why the store failed stop, or null: a read failing meanwhile is 503, not 500 (failstop.ts). */
  failure(): string | null
}

type Bounded = <R>(f: (conn: DuckDBConnection) => Promise<R>) => (conn: DuckDBConnection) => Promise<R>

export class Snapshots {
  private readonly slots: SemaphoreInterface
  /** Reads waiting for a slot; past MAX_QUERY_WAITERS_PER_SLOT × slots a read is refused at once (QueryBusy). */
  private waiters = 0

  constructor(private readonly host: SnapshotHost) {
    this.slots = withTimeout(new Semaphore(host.maxConcurrentQueries), host.queryTimeoutMs, E_TIMEOUT)
  }

  /**
   * Runs a read over a pinned snapshot of every retained segment; never
   * touches the gate. Its DuckDB queries are interrupted past `timeoutMs`
   * (default: the query timeout), and it then fails with QueryTimeout.
   */
  async run<T>(fn: (snap: Snapshot) => Promise<T>, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.host.closed()) throw new Errors.Draining()
    if (this.slots.isLocked() && this.waiters >= MAX_QUERY_WAITERS_PER_SLOT * this.host.maxConcurrentQueries) throw new Errors.QueryBusy()
    this.waiters++
    const [, releaseSlot] = await this.slots
      .acquire()
      .catch((err: unknown) => {
        throw err === E_TIMEOUT ? new Errors.QueryBusy() : err
      })
      .finally(() => {
        this.waiters--
      })
    const pinned: Array<() => Promise<void>> = []
    const cutoffs = this.host.cutoffs()
    // The time bound: past it, every DuckDB query this snapshot is running is
    // interrupted and no new one starts.
    const limitMs = opts.timeoutMs ?? this.host.queryTimeoutMs
    const running = new Set<DuckDBConnection>()
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      for (const conn of running) conn.interrupt()
    }, limitMs)
    const bounded: Bounded = (f) => async (conn) => {
      if (timedOut) throw new Errors.QueryTimeout(limitMs)
      running.add(conn)
      try {
        return await f(conn)
      } finally {
        running.delete(conn)
      }
    }
    try {
      const parts: SnapshotPart[] = []
      for (const entry of this.host.tiers.sorted()) {
        while (entry.liveClosing) await entry.liveClosing
        if (!this.host.tiers.segments.has(entry.id)) continue
        const part = this.pin(entry, pinned, bounded)
        if (part) parts.push(part)
      }
      // After the parts: every part shown archived was committed by then (the
      // sealer shows a segment archived only once catalog.archive returned).
      const generation = this.host.catalog.committedGeneration()
      const rawArchived = parts.some((p) => p.state !== 'archived' && this.host.catalog.isArchived(p.id))
      return await fn({ parts, cutoffs, files: (f) => this.host.files.query(bounded(f)), catalogGeneration: rawArchived ? null : generation })
    } catch (err) {
      if (timedOut) throw new Errors.QueryTimeout(limitMs)
      throw readFailure(err, this.host.failure())
    } finally {
      clearTimeout(timer)
      for (const unpin of pinned) await unpin()
      releaseSlot()
    }
  }

  /**
   * DuckDB's memory figures, summed per kind of instance, read through a
   * snapshot bounded by `timeoutMs`; null when every query slot is taken: it
   * never queues behind the queries it would report on. (The slot is taken
   * synchronously when one is free.)
   */
  async duckdbMemory(timeoutMs: number): Promise<DuckDBMemory | null> {
    if (this.host.closed() || this.slots.isLocked()) return null
    const sql = 'SELECT coalesce(sum(memory_usage_bytes), 0)::BIGINT, coalesce(sum(temporary_storage_bytes), 0)::BIGINT FROM duckdb_memory()'
    const read = async (conn: DuckDBConnection): Promise<[number, number]> => {
      const row = (await conn.runAndReadAll(sql)).getRows()[0]!
      return [Number(row[0]), Number(row[1])]
    }
    return this.run(
      async (snap) => {
        const figures: DuckDBMemory = { liveBytes: 0, liveTemporaryBytes: 0, filesBytes: 0, filesTemporaryBytes: 0 }
        for (const part of snap.parts) {
          if (part.alias !== null) continue
          const [bytes, temporary] = await part.live(read)
          figures.liveBytes += bytes
          figures.liveTemporaryBytes += temporary
        }
        ;[figures.filesBytes, figures.filesTemporaryBytes] = await snap.files(read)
        return figures
      },
      { timeoutMs },
    )
  }

  private pin(entry: SegmentEntry, pinned: Array<() => Promise<void>>, bounded: Bounded): SnapshotPart | null {
    const files = this.host.files
    const base = { id: entry.id, state: entry.state, minTsUs: entry.minTsUs, maxTsUs: entry.maxTsUs, dims: entry.dims }
    if (entry.live) {
      const segment = entry.live
      entry.livePins.pin()
      pinned.push(async () => entry.livePins.unpin())
      return { ...base, alias: null, detailsAt: { alias: null }, live: (fn) => segment.read(bounded(fn)), liveRollups: () => segment.liveRollups() }
    }
    if (entry.file) {
      const file = entry.file
      files.pin(file)
      pinned.push(() => files.unpin(file))
      // Pending files and archives sealed before details had their own file keep them inside.
      let detailsAt: { alias: string } | null = entry.state === 'pending' || entry.details === 'inline' ? { alias: file.alias } : null
      const details = entry.detailsFile
      if (details) {
        files.pin(details)
        pinned.push(() => files.unpin(details))
        detailsAt = { alias: details.alias }
      }
      return {
        ...base,
        alias: file.alias,
        detailsAt,
        live: () => Promise.reject(new Error('invariant: not a live segment')),
        liveRollups: () => Promise.resolve(null),
      }
    }
    return null
  }
}
