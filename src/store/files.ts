// The read side of the closed tiers: one in-memory DuckDB instance that
// ATTACHes pending and archived segment files READ_ONLY (and the catalog
// read-write), with a bounded pool of query connections and a few dedicated
// connections for the store's own work (dedupe probes, sealing, catalog).
//
// Invariants:
// - One DuckDB instance for all closed files: attaching is ~1 ms and shares
//   one buffer pool, where an instance per file would not scale to hundreds.
// - A file is pinned (pins.ts) while a query, probe or seal uses it. A retired
//   file (sealed into an archive, or deleted by retention) is DETACHed and its
//   `onRetired` step run only once its pins are released.
// - ATTACH/DETACH run on the admin connection, one at a time (`adminLock`);
//   nothing awaits the store's write gate while holding `adminLock`.
// - Query connections run one query at a time (the pool hands each out once).

import { Mutex } from 'async-mutex'
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api'
import { Pins } from './pins.js'
import { ConnectionPool } from './pool.js'
import { eventColumns, eventsRelation } from './schema.js'
import { ident, setEventsRelation, sqlString } from './relations.js'

/** Aliases are unique within the process (tableOf's registry of older-schema files is keyed by them). */
let generation = 0

export interface AttachedFile {
  readonly segmentId: number
  readonly path: string
  readonly alias: string
  /** Readers using it now (pins.ts: the same scheme as live segments). */
  readonly pins: Pins
  retired: boolean
  onRetired: (() => Promise<void>) | null
}

export interface FileTierOptions {
  catalogPath: string
  memoryBytes: number
  threads: number
  queryConnections: number
}

export class FileTier {
  private readonly adminLock = new Mutex()
  private readonly pool: ConnectionPool
  private closed = false
  /** Retired files not yet detached and finished (a reader still pins them, or finishing runs). */
  private readonly retiring = new Set<string>()
  /** Finishes started by a last unpin: they run off the reader's path (it may hold the write gate). */
  private readonly finishing = new Set<Promise<void>>()

  private constructor(
    private readonly instance: DuckDBInstance,
    private readonly admin: DuckDBConnection,
    /** Dedicated to dedupe probes (the store calls it under the write gate): never waits on queries. */
    readonly probeConn: DuckDBConnection,
    /** Dedicated to the sealer. */
    readonly sealConn: DuckDBConnection,
    /** Dedicated to the catalog. */
    readonly catalogConn: DuckDBConnection,
    pool: DuckDBConnection[],
  ) {
    this.pool = new ConnectionPool(pool)
  }

  static async open(opts: FileTierOptions): Promise<FileTier> {
    const instance = await DuckDBInstance.create(':memory:', {
      memory_limit: `${Math.max(64, Math.floor(opts.memoryBytes / 1024 / 1024))}MiB`,
      threads: String(opts.threads),
      autoinstall_known_extensions: 'false',
      autoload_known_extensions: 'false',
    })
    try {
      const admin = await instance.connect()
      await admin.run(`ATTACH ${sqlString(opts.catalogPath)} AS catalog`)
      const probe = await instance.connect()
      const seal = await instance.connect()
      const catalog = await instance.connect()
      await catalog.run('USE catalog')
      const pool: DuckDBConnection[] = []
      for (let i = 0; i < opts.queryConnections; i++) pool.push(await instance.connect())
      return new FileTier(instance, admin, probe, seal, catalog, pool)
    } catch (err) {
      instance.closeSync()
      throw err
    }
  }

  /**
   * ATTACHes a closed segment file READ_ONLY under a fresh alias. An events
   * table of an older schema version is read through a projection from then
   * on (see tableOf); one no version could have written fails the attach.
   */
  async attach(segmentId: number, path: string): Promise<AttachedFile> {
    return this.adminLock.runExclusive(async () => {
      const alias = `seg_${segmentId}_${++generation}`
      await this.admin.run(`ATTACH ${sqlString(path)} AS ${ident(alias)} (READ_ONLY)`)
      try {
        const present = await eventColumns(this.admin, alias)
        if (present.length > 0) {
          const table = `${ident(alias)}.events`
          const relation = eventsRelation(table, present)
          setEventsRelation(alias, relation === table ? null : relation)
        }
      } catch (err) {
        await this.admin.run(`DETACH DATABASE IF EXISTS ${ident(alias)}`)
        throw err
      }
      return { segmentId, path, alias, pins: new Pins(), retired: false, onRetired: null }
    })
  }

  /** ATTACHes a file read-write (the sealer's output). */
  async attachWritable(alias: string, path: string): Promise<void> {
    await this.adminLock.runExclusive(() => this.admin.run(`ATTACH ${sqlString(path)} AS ${ident(alias)}`))
  }

  async detachAlias(alias: string): Promise<void> {
    await this.adminLock.runExclusive(() => this.admin.run(`DETACH DATABASE IF EXISTS ${ident(alias)}`))
    setEventsRelation(alias, null)
  }

  pin(file: AttachedFile): void {
    if (file.retired && file.pins.held === 0) throw new Error(`invariant: pinning retired file ${file.path}`)
    file.pins.pin()
  }

  async unpin(file: AttachedFile): Promise<void> {
    file.pins.unpin()
  }

  /** True while `path` is retired but not yet finished (a reader pins it): nobody else may remove it. */
  isRetiring(path: string): boolean {
    return this.retiring.has(path)
  }

  /** Resolves when every finish started by an unpin has run (settle, close). */
  async idle(): Promise<void> {
    while (this.finishing.size > 0) await Promise.all([...this.finishing])
  }

  /**
   * The file will not be handed to new readers; once unpinned it is detached
   * and `then` runs (e.g. delete the file). Resolves when that has happened,
   * or at once while readers still pin it: `then` must then report its own
   * failures (a throw from it is not passed to the reader that unpinned last).
   * Until then `isRetiring(path)` is true.
   */
  async retire(file: AttachedFile, then: () => Promise<void>): Promise<void> {
    file.retired = true
    file.onRetired = then
    this.retiring.add(file.path)
    if (file.pins.held === 0) {
      await this.finishRetire(file)
      return
    }
    // Not awaited: the reader that lets go last (a dedupe probe may hold the
    // write gate) must neither wait for DETACH, unlink and fsync nor fail for
    // them; the retiring owner's step reports its own failures.
    const done: Promise<void> = file.pins
      .released()
      .then(() => this.finishRetire(file))
      .catch(() => undefined)
      .finally(() => this.finishing.delete(done))
    this.finishing.add(done)
  }

  private async finishRetire(file: AttachedFile): Promise<void> {
    const then = file.onRetired
    file.onRetired = null
    try {
      if (this.closed) return
      await this.detachAlias(file.alias)
      if (then) await then()
    } finally {
      this.retiring.delete(file.path)
    }
  }

  /** Runs `fn` on a pooled query connection (bounded: at most the pool size at once). */
  query<T>(fn: (conn: DuckDBConnection) => Promise<T>): Promise<T> {
    return this.pool.run(fn)
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.pool.closeAll()
    this.probeConn.closeSync()
    this.sealConn.closeSync()
    this.catalogConn.closeSync()
    this.admin.closeSync()
    this.instance.closeSync()
  }
}
