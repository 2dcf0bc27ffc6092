// The commit queue: appends wait here, and one loop commits them in groups,
// each group under the write gate in one DuckDB transaction.
//
// Invariants:
// - An append is answered only after the transaction holding its events has
//   committed; if the commit fails, every request in it is told so (503
//   CommitFailed) and none of its events are in the index. Whether they are in
//   the file is not known: DuckDB can report a failed commit (an fsync or the
//   checkpoint after it, on a full disk) whose WAL record is complete, and
//   start-up replays it. The answer says so; a retry with the same ids is a
//   duplicate then, never a second copy.
// - Groups are whole requests, FIFO, up to maxCommitEvents events (at least
//   one request); one commit loop at a time.
// - Dedupe is decided under the gate, against the probes' exact answers, the
//   group's own earlier events and the retention cutoff of that moment (an
//   expired replay is never stored twice); the index learns a group's ids only
//   after its COMMIT.
// - Queue bounds: at most maxQueueEvents events and maxQueueBytes body bytes
//   wait (queued or being probed); past that, submit fails fast with QueueFull.
// - A request whose ids the index places in closed segments is probed there
//   before it joins the queue (dedupe.ts); `drained` waits for those too.

import { Errors, isServiceError } from '../errors.js'
import { keepRows, type EventBatch } from '../ingest/batch.js'
import type { Logger } from '../log.js'
import type { Dedupe, KnownIds } from './dedupe.js'
import type { GateHeld, WriteGate } from './gate.js'
import type { StoreHooks } from './options.js'
import { outcomeOf, type AppendOutcome, type AppendRequest, type EventResult } from './outcomes.js'
import type { Segment } from './segment.js'
import type { Tiers } from './tiers.js'

export interface CommitOptions {
  maxQueueEvents: number
  maxQueueBytes: number
  maxCommitEvents: number
  logger: Logger
  nowMs(): number
  hooks?: StoreHooks
}

/** What the commit loop needs of the store. */
export interface CommitHost {
  readonly gate: WriteGate<Segment>
  readonly tiers: Tiers
  readonly dedupe: Dedupe
  /** Events older than this (µs) are past the event window now. */
  eventsCutoffUs(): number
  /** Null, or why the store refuses writes (fail-stop). */
  failure(): string | null
  /** A commit's write failed: its requests are answered 503 (and the store may fail stop). */
  writeFailed(err: unknown): void
  /** A group committed (`events` rows written). */
  committed(c: { events: number; requests: number; durationMs: number }): void
  /** After each group: measure the active segment (shared, never rejects). */
  checkSize(): Promise<void>
  /** The measurement in flight, if any: the loop goes idle only once it is done. */
  measuring(): Promise<void> | null
}

interface Pending extends AppendRequest {
  resolve(outcome: AppendOutcome): void
  reject(err: Error): void
  /** What probes of closed segments found before the gate; null: probe all under it. */
  known: KnownIds | null
}

export class CommitQueue {
  commits = 0
  committedEvents = 0
  lastCommitMs: number | null = null
  lastCommitEvents = 0
  queuedEvents = 0
  queuedBytes = 0
  private queue: Pending[] = []
  /** Requests whose closed-segment probes run before they join `queue`. */
  private readonly preProbes = new Set<Promise<void>>()
  private committing = false
  private idle: Promise<void> = Promise.resolve()
  private markIdle: () => void = () => undefined

  constructor(
    private readonly opts: CommitOptions,
    private readonly host: CommitHost,
  ) {}

  get queuedRequests(): number {
    return this.queue.length
  }

  /** Whether the queue holds as many events as it may (the store reports unready). */
  full(): boolean {
    return this.queuedEvents >= this.opts.maxQueueEvents
  }

  /**
   * Queues `req` (admission already passed) and resolves once the
   * transaction holding its accepted events has committed. Rejects at once
   * with QueueFull past the queue's bounds.
   */
  submit(req: AppendRequest): Promise<AppendOutcome> {
    const count = req.events.ids.length
    if (this.queuedEvents + count > this.opts.maxQueueEvents || this.queuedBytes + req.bytes > this.opts.maxQueueBytes) {
      return Promise.reject(new Errors.QueueFull())
    }
    this.queuedEvents += count
    this.queuedBytes += req.bytes
    return new Promise<AppendOutcome>((resolve, reject) => {
      const pending: Pending = { ...req, resolve, reject, known: null }
      const closed = this.host.dedupe.closedCandidates(req.events.ids)
      if (closed.size === 0) {
        this.enqueue(pending)
        return
      }
      const done: Promise<void> = this.host.dedupe
        .beforeGate(closed)
        .then(
          (known) => {
            pending.known = known
          },
          (err: unknown) => this.opts.logger.warn({ err }, 'probing closed segments before the gate failed; probing under it'),
        )
        .finally(() => {
          this.preProbes.delete(done)
          this.enqueue(pending)
        })
      this.preProbes.add(done)
    })
  }

  /** Resolves once every request submitted so far is answered and the loop is idle. */
  async drained(): Promise<void> {
    while (this.preProbes.size > 0) await Promise.all([...this.preProbes])
    await this.idle
  }

  private enqueue(p: Pending): void {
    this.queue.push(p)
    if (this.committing) return
    this.committing = true
    this.idle = new Promise((resolve) => (this.markIdle = resolve))
    void this.loop()
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        while (this.queue.length > 0) {
          const batch = this.takeBatch()
          try {
            await this.host.gate.run('append', (held) => this.commit(held, batch))
          } catch (err) {
            const error = err instanceof Error ? err : new Error(String(err))
            for (const p of batch) p.reject(isServiceError(error) ? error : new Errors.StoreFailed())
          }
          // Measured beside the next commit rather than between commits (two
          // more trips to the libuv pool, each waiting on the busy event loop).
          void this.host.checkSize()
        }
        const measuring = this.host.measuring()
        if (measuring === null) break
        // Idle only once measured; requests queued meanwhile are committed first.
        await measuring
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
      const size = this.queue[n]!.events.ids.length
      if (n > 0 && events + size > this.opts.maxCommitEvents) break
      events += size
      n++
    }
    const batch = this.queue.splice(0, n)
    for (const p of batch) {
      this.queuedEvents -= p.events.ids.length
      this.queuedBytes -= p.bytes
    }
    return batch
  }

  /** One group, under the gate: decide each event, write the kept ones in one transaction, answer. */
  private async commit(held: GateHeld<Segment>, batch: Pending[]): Promise<void> {
    const { tiers, dedupe } = this.host
    if (this.host.failure() !== null) throw new Errors.StoreFailed()
    await this.opts.hooks?.onCommitHoldingGate?.()
    const known: KnownIds = new Map()
    for (const p of batch) if (p.known) for (const [id, k] of p.known) if (!known.has(id)) known.set(id, k)
    const stored = await dedupe.underGate(held, idsOf(batch), known)
    // Validation checked the timestamp against the event window when the request
    // arrived; retention may have run since and dropped the segment holding an
    // earlier copy of a replayed event (its rollups still count it). Checked
    // again here, under the gate, an expired event can never be stored twice.
    const cutoffUs = this.host.eventsCutoffUs()
    const staged = new Map<string, string>()
    const parts: EventBatch[] = []
    const outcomes: AppendOutcome[] = []
    for (const p of batch) {
      const { index, ids, fingerprints, tsUs } = p.events
      const local = new Map<string, string>()
      const results: EventResult[] = []
      const keep: boolean[] = new Array(ids.length)
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i]!
        keep[i] = false
        if (tsUs[i]! < cutoffUs) {
          const oldest = new Date(Math.ceil(cutoffUs / 1000)).toISOString()
          results.push({ index: index[i]!, event_id: id, status: 'rejected', errors: [{ field: '/timestamp', message: `is older than the event retention window (${oldest})` }] })
          continue
        }
        const prior = local.get(id) ?? staged.get(id) ?? stored.get(id)
        if (prior === undefined) {
          local.set(id, fingerprints[i]!)
          keep[i] = true
        } else {
          results.push({ index: index[i]!, event_id: id, status: prior === fingerprints[i] ? 'duplicate' : 'conflict' })
        }
      }
      const refused = p.atomic && results.some((r) => r.status === 'conflict' || r.status === 'rejected')
      if (!refused && local.size > 0) {
        for (const [id, fp] of local) staged.set(id, fp)
        parts.push(keepRows(p.events, keep))
      }
      outcomes.push(outcomeOf(p, results, refused ? 0 : local.size, !refused))
    }
    const started = performance.now()
    const entry = tiers.active
    try {
      await this.opts.hooks?.faultOnWrite?.()
      if (held.segment !== entry.live) throw new Error('invariant: the gate guards the active segment')
      await held.segment.appendCommitted(held, parts)
    } catch (err) {
      this.host.writeFailed(err)
      throw new Errors.CommitFailed({ cause: err })
    }
    const durationMs = performance.now() - started
    dedupe.committed(held, staged.keys(), entry.id)
    const rows = staged.size
    if (rows > 0) {
      entry.rowCount += rows
      entry.firstAppendMs ??= this.opts.nowMs()
      for (const part of parts) {
        for (const ts of part.tsUs) {
          if (entry.minTsUs === null || ts < entry.minTsUs) entry.minTsUs = ts
          if (entry.maxTsUs === null || ts > entry.maxTsUs) entry.maxTsUs = ts
        }
      }
    }
    this.commits++
    this.committedEvents += rows
    this.lastCommitMs = durationMs
    this.lastCommitEvents = rows
    this.host.committed({ events: rows, requests: batch.length, durationMs })
    batch.forEach((p, i) => p.resolve(outcomes[i]!))
  }
}

function* idsOf(batch: Pending[]): Generator<string> {
  for (const p of batch) yield* p.events.ids
}
