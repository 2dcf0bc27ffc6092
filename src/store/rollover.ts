// Rollover: a fresh active segment takes appends and the old one becomes a
// pending file (then sealed in the background), by size, age, an admin or
// retention; and the size measurement that triggers it.
//
// Invariants:
// - Never concurrent with itself (`rolling`: concurrent callers share one run).
// - The gate is held only for the pointer swap (tiers.swapActive, which points
//   the gate at the fresh segment too); the next segment is opened and recorded before it, and
//   the old one closed and moved after it, under the dedupe's retireLock (its
//   writer answers probes until then). Lock order: the gate, then retireLock.
// - A crash at any point leaves files start-up resolves (recover.ts): two files
//   in active/ (the older becomes pending), or a closed file still in active/.
// - A rollover's condition (`onlyIf`, retention's) is decided under the gate:
//   appends may have changed it while the rollover waited.
// - If the old segment is closed but cannot be moved, the store fails stop
//   (start-up recovers it).

import { Errors, isServiceError } from '../errors.js'
import type { Catalog } from './catalog.js'
import type { Dedupe } from './dedupe.js'
import type { FileTier } from './files.js'
import type { FileSystem } from './fsops.js'
import type { WriteGate } from './gate.js'
import { relativeSegmentPath, segmentPath } from './layout.js'
import { segmentOptions, type StoreOptions } from './options.js'
import { roundMs, type RolloverReport } from './reports.js'
import { Segment } from './segment.js'
import { moveToPending, newEntry, type SegmentEntry, type Tiers } from './tiers.js'

/** What a rollover needs of the store. */
export interface RolloverHost {
  readonly opts: StoreOptions
  readonly fs: FileSystem
  readonly tiers: Tiers
  readonly gate: WriteGate<Segment>
  readonly catalog: Catalog
  readonly files: FileTier
  readonly dedupe: Dedupe
  /** Roll the active segment over when its file plus WAL reach this size. */
  readonly rolloverBytes: number
  /** Why no rollover may start now (draining, closed, failed), or null. */
  refusal(): Error | null
  /** A write failed in a way that may have lost data: fail stop. */
  failStop(err: unknown): void
  /** The active segment was measured (admission samples the disk again). */
  measured(): void
  kickSealer(): void
}

export class Roller {
  rollovers = 0
  last: RolloverReport | null = null
  private rolling: Promise<RolloverReport> | null = null
  private sizing: Promise<void> | null = null

  constructor(private readonly host: RolloverHost) {}

  /** The rollover in flight, if any. */
  inFlight(): Promise<RolloverReport> | null {
    return this.rolling
  }

  /** The size measurement in flight, if any (never rejects). */
  measuring(): Promise<void> | null {
    return this.sizing
  }

  /**
   * Rolls the active segment over. Concurrent calls share one rollover.
   * `force` rolls even an empty segment over; `onlyIf` is checked under the gate.
   */
  rollover(reason: string, force = false, onlyIf?: (active: SegmentEntry) => boolean): Promise<RolloverReport> {
    if (this.rolling) return this.rolling
    const refusal = this.host.refusal()
    if (refusal) return Promise.reject(refusal)
    const run = this.run(reason, force, onlyIf).finally(() => {
      this.rolling = null
    })
    this.rolling = run
    return run
  }

  /** Measures the active segment (rolling it over when too big); one measurement at a time, shared by every caller; never rejects. */
  checkSize(): Promise<void> {
    this.sizing ??= this.measureActive()
      .catch((err: unknown) => this.host.opts.logger.error({ err }, 'measuring the active segment failed'))
      .finally(() => (this.sizing = null))
    return this.sizing
  }

  private async measureActive(): Promise<void> {
    if (this.rolling || this.host.refusal() !== null) return
    const measured = this.host.tiers.active
    const file = measured.live!.path
    const bytes = ((await this.host.fs.size(file)) ?? 0) + ((await this.host.fs.size(`${file}.wal`)) ?? 0)
    // A rollover (by age, by an admin, or by size, while the sizes were read) may have replaced the active segment: then this reading is stale.
    if (measured !== this.host.tiers.active) return
    measured.bytes = bytes
    this.host.measured()
    if (bytes >= this.host.rolloverBytes) {
      void this.rollover('size').catch((err: unknown) => this.host.opts.logger.error({ err }, 'size rollover failed'))
    }
  }

  private async run(reason: string, force: boolean, onlyIf?: (active: SegmentEntry) => boolean): Promise<RolloverReport> {
    const { opts, fs, tiers, catalog } = this.host
    const started = performance.now()
    const old = tiers.active
    if (old.rowCount === 0 && !force) {
      return { rolled: false, reason, segment_id: null, gate_held_ms: 0, duration_ms: 0 }
    }
    // Outside the gate: open and record the next segment (a crash now leaves two
    // files in active/, which start-up resolves: the older becomes pending).
    const id = tiers.takeId()
    const freshPath = segmentPath(opts.dataDir, 'active', id)
    const removeFresh = async () => {
      await fs.remove(freshPath).catch(() => undefined)
      await fs.remove(`${freshPath}.wal`).catch(() => undefined)
    }
    let fresh: Segment
    try {
      fresh = await Segment.open(freshPath, segmentOptions(opts))
    } catch (err) {
      // A file DuckDB began (ENOSPC midway) is not a segment: start-up would take it for one.
      await removeFresh()
      opts.logger.error({ err, segment: id }, 'rollover: opening the next segment failed; the active segment keeps taking events')
      throw new Errors.RolloverFailed('open')
    }
    let gateMs = 0
    let swapped = false
    const discardFresh = async () => {
      await fresh.close().catch(() => undefined)
      await removeFresh()
      await catalog.forget(id).catch(() => undefined)
    }
    try {
      await opts.hooks?.beforeRolloverRecord?.(id)
      await catalog.putLive(id, 'active', relativeSegmentPath('active', id), fresh.createdMs)
      // No CHECKPOINT of the old segment here: a CHECKPOINT blocks its concurrent
      // commits for as long as it runs (DuckDB 1.5), and until the swap those are every
      // commit (bench/ingest --tail: p99 458 ms with stalls at each rollover). retire()
      // checkpoints it after the swap, when appends go to the fresh segment's own instance.
      await opts.hooks?.beforeRolloverGate?.(reason)
      await this.host.gate.run('rollover', async (held) => {
        const t0 = performance.now()
        try {
          await opts.hooks?.onRolloverHoldingGate?.(reason)
          // The condition is decided here, under the gate: appends may have changed it while we waited.
          if (onlyIf && !onlyIf(old)) return
          tiers.swapActive(this.host.gate, held, newEntry(id, 'active', fresh), opts.clock.nowMs())
          swapped = true
        } finally {
          gateMs = performance.now() - t0
        }
      })
    } catch (err) {
      if (swapped) throw err
      await discardFresh()
      if (isServiceError(err)) throw err
      opts.logger.error({ err, segment: id }, 'rollover: recording the next segment failed; the active segment keeps taking events')
      throw new Errors.RolloverFailed('record')
    }
    if (!swapped) {
      await discardFresh()
      return { rolled: false, reason, segment_id: null, gate_held_ms: roundMs(gateMs), duration_ms: roundMs(performance.now() - started) }
    }
    try {
      await this.retire(old)
    } catch (err) {
      opts.logger.error({ err, segment: old.id }, 'rollover: retiring the old segment failed')
      throw new Errors.RolloverFailed('retire')
    }
    this.rollovers++
    const report: RolloverReport = { rolled: true, reason, segment_id: old.id, gate_held_ms: roundMs(gateMs), duration_ms: roundMs(performance.now() - started) }
    this.last = report
    opts.logger.info({ event: 'rollover', ...report }, 'active segment rolled over')
    this.host.kickSealer()
    return report
  }

  /**
   * Closes a rolled-over segment's live instance and makes it a pending file:
   * new readers wait, current ones finish, then under retireLock (probes use
   * the writer) CHECKPOINT, close, move to pending/, attach. Appends no longer
   * reach it (the swap happened under the gate), so the gate is not needed.
   */
  private async retire(entry: SegmentEntry): Promise<void> {
    const { opts, fs, files, catalog } = this.host
    if (entry === this.host.tiers.active) throw new Error('invariant: retire of the active segment')
    let done!: () => void
    entry.liveClosing = new Promise<void>((resolve) => (done = resolve))
    try {
      await entry.livePins.released()
      await this.host.dedupe.retireLock.runExclusive(async () => {
        await opts.hooks?.beforeRetireClose?.(entry.id)
        await entry.live!.close()
        const to = await moveToPending(fs, opts.dataDir, entry.id)
        entry.file = await files.attach(entry.id, to)
        entry.live = null
        entry.bytes = await fs.size(to)
        await catalog.putLive(entry.id, 'pending', relativeSegmentPath('pending', entry.id), entry.createdMs)
      })
    } catch (err) {
      // The segment is closed but could not be moved: stop, and let start-up recover it.
      this.host.failStop(err)
      throw err
    } finally {
      entry.liveClosing = null
      done()
    }
  }
}
