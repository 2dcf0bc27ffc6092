// The store: the write gate, group commit, dedupe, and read access.
//
// Invariants:
// - The write gate (one async-mutex Mutex) guards every mutation of the active
//   segment. The only way to reach the writer is `withGate`, which hands the
//   callback a GatedWriter that is revoked the moment the gate is released: a
//   stale writer cannot be kept and used later (the Rust original's bug).
// - Lock order: the gate first, then anything else; nothing awaits the gate
//   while holding another lock. Reads never take the gate.
// - An append is answered only after the transaction holding its events has
//   committed; if the commit fails, every request in it is told so (503) and
//   none of its events are in the index or the file.
// - `index` holds exactly the ids committed in retained segments, with their
//   fingerprints. It is changed only under the gate, after COMMIT succeeds.
// - Queue bounds: at most maxQueueEvents events and maxQueueBytes body bytes
//   wait; past that, append fails fast with QueueFull (503 + Retry-After).
// - After a write fails in a way that may have left the database invalidated
//   the store is `failed`: it refuses writes and reports unready (fail-stop).

import fs from 'node:fs/promises'
import path from 'node:path'
import { E_TIMEOUT, Mutex, Semaphore, withTimeout, type MutexInterface } from 'async-mutex'
import type { DuckDBConnection } from '@duckdb/node-api'
import type { Logger } from '../log.js'
import type { Clock } from '../clock.js'
import { Errors } from '../errors.js'
import type { FieldError, UsageEvent } from '../ingest/event.js'
import { Segment } from './segment.js'

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

export interface IndexedEvent {
  index: number
  event: UsageEvent
}

export interface AppendRequest {
  events: IndexedEvent[]
  /** Outcomes already known before the store (validation rejects). */
  rejected: EventResult[]
  atomic: boolean
  /** Body bytes, counted against the queue's byte bound. */
  bytes: number
}

export interface StoreOptions {
  dataDir: string
  clock: Clock
  logger: Logger
  maxQueueEvents: number
  maxQueueBytes: number
  maxCommitEvents: number
  gateWaitMs: number
  maxConcurrentQueries: number
  duckdbMemoryBytes: number
  duckdbThreads: number
  /** Test seams; never set in production. */
  hooks?: StoreHooks
}

export interface StoreHooks {
  /** Runs inside the gate before a group commit writes: lets a test park an append while it holds the gate. */
  onCommitHoldingGate?: () => Promise<void>
}

/** The writer, valid only while the gate that produced it is held. */
export interface GatedWriter {
  readonly segment: Segment
}

interface Pending extends AppendRequest {
  resolve(outcome: AppendOutcome): void
  reject(err: Error): void
}

export interface StoreStats {
  queuedRequests: number
  queuedEvents: number
  queuedBytes: number
  indexedEvents: number
  commits: number
  committedEvents: number
  lastCommitMs: number | null
  lastCommitEvents: number
  failed: string | null
  draining: boolean
}

const ACTIVE_DIR = 'active'
const ACTIVE_FILE = 'segment-active.duckdb'

export class Store {
  private readonly gate: MutexInterface
  private readonly rawGate = new Mutex()
  private readonly querySlots: Semaphore
  private readonly freeReaders: DuckDBConnection[]
  private queue: Pending[] = []
  private queuedEvents = 0
  private queuedBytes = 0
  private committing = false
  private idle: Promise<void> = Promise.resolve()
  private markIdle: () => void = () => undefined
  private draining = false
  private closed = false
  private failure: string | null = null
  private commits = 0
  private committedEvents = 0
  private lastCommitMs: number | null = null
  private lastCommitEvents = 0

  private constructor(
    private readonly opts: StoreOptions,
    private readonly active: Segment,
    private readonly index: Map<string, string>,
  ) {
    this.gate = withTimeout(this.rawGate, opts.gateWaitMs, E_TIMEOUT)
    this.freeReaders = [...active.readers]
    this.querySlots = new Semaphore(active.readers.length)
  }

  static async open(opts: StoreOptions): Promise<Store> {
    const dir = path.join(opts.dataDir, ACTIVE_DIR)
    await fs.mkdir(dir, { recursive: true })
    const file = path.join(dir, ACTIVE_FILE)
    const segment = await Segment.open(file, {
      memoryBytes: opts.duckdbMemoryBytes,
      threads: opts.duckdbThreads,
      readConnections: opts.maxConcurrentQueries,
    })
    const index = new Map<string, string>()
    const started = opts.clock.nowMs()
    for await (const rows of segment.scanIds()) for (const [id, fp] of rows) index.set(id, fp)
    opts.logger.info({ event: 'store_open', file, indexedEvents: index.size, ms: opts.clock.nowMs() - started }, 'store opened')
    return new Store(opts, segment, index)
  }

  /**
   * Queues the request for the next group commit and resolves once the
   * transaction holding its accepted events has committed.
   * Throws QueueFull / Draining / StoreFailed synchronously-fast (nothing stored).
   */
  append(req: AppendRequest): Promise<AppendOutcome> {
    if (this.failure !== null) return Promise.reject(new Errors.StoreFailed())
    if (this.draining || this.closed) return Promise.reject(new Errors.Draining())
    if (req.events.length === 0) return Promise.resolve(outcomeOf(req, [], 0, true))
    if (this.queuedEvents + req.events.length > this.opts.maxQueueEvents || this.queuedBytes + req.bytes > this.opts.maxQueueBytes) {
      return Promise.reject(new Errors.QueueFull())
    }
    return new Promise<AppendOutcome>((resolve, reject) => {
      this.queue.push({ ...req, resolve, reject })
      this.queuedEvents += req.events.length
      this.queuedBytes += req.bytes
      this.kick()
    })
  }

  /**
   * Runs `fn` holding the write gate. The GatedWriter is revoked when `fn`
   * settles; using it afterwards throws. Waits at most gateWaitMs for the gate.
   */
  async withGate<T>(fn: (writer: GatedWriter) => Promise<T>): Promise<T> {
    let release: MutexInterface.Releaser
    try {
      release = await this.gate.acquire()
    } catch (err) {
      if (err === E_TIMEOUT) throw new Errors.GateTimeout()
      throw err
    }
    let valid = true
    const active = this.active
    const writer: GatedWriter = {
      get segment(): Segment {
        if (!valid) throw new Error('GatedWriter used after the write gate was released')
        return active
      },
    }
    try {
      return await fn(writer)
    } finally {
      valid = false
      release()
    }
  }

  /** True while some task holds the write gate (for tests and status). */
  gateHeld(): boolean {
    return this.rawGate.isLocked()
  }

  /** Runs a read on a pooled read-only-use connection; never touches the gate. */
  async read<T>(fn: (conn: DuckDBConnection) => Promise<T>): Promise<T> {
    if (this.closed) throw new Errors.Draining()
    const [, releaseSlot] = await this.querySlots.acquire()
    const conn = this.freeReaders.pop()!
    try {
      return await fn(conn)
    } finally {
      this.freeReaders.push(conn)
      releaseSlot()
    }
  }

  /** Ids known to the dedupe index (committed, retained). */
  has(eventId: string): boolean {
    return this.index.has(eventId)
  }

  ready(): { ready: boolean; reasons: string[] } {
    const reasons: string[] = []
    if (this.closed) reasons.push('store closed')
    if (this.draining) reasons.push('draining')
    if (this.failure !== null) reasons.push(`store failed: ${this.failure}`)
    if (this.queuedEvents >= this.opts.maxQueueEvents) reasons.push('ingest queue full')
    return { ready: reasons.length === 0, reasons }
  }

  stats(): StoreStats {
    return {
      queuedRequests: this.queue.length,
      queuedEvents: this.queuedEvents,
      queuedBytes: this.queuedBytes,
      indexedEvents: this.index.size,
      commits: this.commits,
      committedEvents: this.committedEvents,
      lastCommitMs: this.lastCommitMs,
      lastCommitEvents: this.lastCommitEvents,
      failed: this.failure,
      draining: this.draining,
    }
  }

  /** Stops taking appends, commits and answers everything queued, checkpoints and closes DuckDB. */
  async close(): Promise<void> {
    if (this.closed) return
    this.draining = true
    await this.idle
    await this.withGate(async () => {
      this.closed = true
      await this.active.close()
    }).catch((err: unknown) => {
      this.opts.logger.error({ err }, 'store close failed')
      throw err
    })
  }

  private kick(): void {
    if (this.committing) return
    this.committing = true
    this.idle = new Promise((resolve) => (this.markIdle = resolve))
    void this.commitLoop()
  }

  private async commitLoop(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.takeBatch()
        try {
          await this.withGate((writer) => this.commitBatch(writer, batch))
        } catch (err) {
          const error = err instanceof Error ? err : new Error(String(err))
          for (const p of batch) p.reject(isServiceError(error) ? error : new Errors.StoreFailed())
        }
      }
    } finally {
      this.committing = false
      this.markIdle()
    }
  }

  /** Whole requests, FIFO, up to maxCommitEvents (always at least one request). */
  private takeBatch(): Pending[] {
    let events = 0
    let n = 0
    while (n < this.queue.length) {
      const size = this.queue[n]!.events.length
      if (n > 0 && events + size > this.opts.maxCommitEvents) break
      events += size
      n++
    }
    const batch = this.queue.splice(0, n)
    for (const p of batch) {
      this.queuedEvents -= p.events.length
      this.queuedBytes -= p.bytes
    }
    return batch
  }

  private async commitBatch(writer: GatedWriter, batch: Pending[]): Promise<void> {
    if (!this.rawGate.isLocked()) throw new Error('invariant: commitBatch runs only under the write gate')
    if (this.failure !== null) throw new Errors.StoreFailed()
    await this.opts.hooks?.onCommitHoldingGate?.()
    const staged = new Map<string, string>()
    const rows: UsageEvent[] = []
    const outcomes: AppendOutcome[] = []
    for (const p of batch) {
      const local = new Map<string, string>()
      const results: EventResult[] = []
      const toInsert: UsageEvent[] = []
      for (const { index, event } of p.events) {
        const prior = local.get(event.event_id) ?? staged.get(event.event_id) ?? this.index.get(event.event_id)
        if (prior === undefined) {
          local.set(event.event_id, event.fingerprint)
          toInsert.push(event)
        } else {
          results.push({ index, event_id: event.event_id, status: prior === event.fingerprint ? 'duplicate' : 'conflict' })
        }
      }
      const refused = p.atomic && results.some((r) => r.status === 'conflict')
      if (!refused) {
        for (const [id, fp] of local) staged.set(id, fp)
        for (const e of toInsert) rows.push(e)
      }
      outcomes.push(outcomeOf(p, results, refused ? 0 : toInsert.length, !refused))
    }
    const started = performance.now()
    try {
      await writer.segment.appendCommitted(rows)
    } catch (err) {
      this.noteWriteFailure(err)
      throw err
    }
    for (const [id, fp] of staged) this.index.set(id, fp)
    this.commits++
    this.committedEvents += rows.length
    this.lastCommitMs = performance.now() - started
    this.lastCommitEvents = rows.length
    batch.forEach((p, i) => p.resolve(outcomes[i]!))
  }

  private noteWriteFailure(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err)
    this.opts.logger.error({ err }, 'group commit failed; its requests are answered 503 and nothing of them is stored')
    // DuckDB invalidates a database after a failed WAL write/fsync or checkpoint:
    // from then on nothing may be acknowledged. Stop (fail-stop) rather than guess.
    if (/invalidated|fatal|I\/O Error|No space left/i.test(message)) {
      this.failure = message.slice(0, 300)
      this.opts.logger.fatal({ reason: this.failure }, 'store entered fail-stop: refusing writes until restart')
    }
  }
}

function outcomeOf(req: AppendRequest, results: EventResult[], accepted: number, stored: boolean): AppendOutcome {
  const all = [...req.rejected, ...results].sort((a, b) => a.index - b.index)
  let duplicates = 0
  let conflicts = 0
  for (const r of results) {
    if (r.status === 'duplicate') duplicates++
    else if (r.status === 'conflict') conflicts++
  }
  return { stored, accepted, duplicates, conflicts, rejected: req.rejected.length, results: all }
}

function isServiceError(err: Error): boolean {
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' && code.startsWith('TL_')
}
