// Admission: whether the store takes appends now, from what it can measure
// before DuckDB fails: the data directory's free space, the seal backlog and
// the active segment's size; and fail-stop, once a write may have left a
// database invalidated. The queue's own bounds are the commit queue's.
//
// - After a write fails in a way that may have left the database invalidated
//   (a failed WAL write, fsync or checkpoint; a rolled-over segment that could
//   not be moved) `failure` is set for good: every write is refused until a
//   restart, and the store reports unready.
// Invariants:
// - Appends are refused (Overloaded, 503) and the store reports unready while
//   free space is below minFreeDiskBytes, more than maxPendingSegments wait to
//   be sealed, or the active file plus WAL exceed maxActiveBytes. DuckDB under
//   ENOSPC may invalidate a database; refusing first keeps the acknowledged
//   data safe and makes the condition loud.
// - One disk sample at a time, each bounded (disk.ts); a failed or hung read
//   makes the reading unknown, and with the floor on, ingest is refused.
//   Samples run every diskCheckMs and after commits (at most every 100 ms).

import type { Logger } from '../log.js'
import { readFreeBytes } from './disk.js'
import type { FileSystem } from './fsops.js'

export const MIB = 1024 * 1024

/** A sample older than this is refreshed after a commit (commits are what fill the disk). */
const RESAMPLE_AFTER_COMMIT_MS = 100

export interface AdmissionOptions {
  dataDir: string
  fs: FileSystem
  logger: Logger
  /** 0: never refuse for disk. */
  minFreeDiskBytes: number
  maxPendingSegments: number
  maxActiveBytes: number
  diskCheckMs: number
}

/** What admission reads of the tiers. */
export interface AdmissionHost {
  pendingCount(): number
  /** The active segment's file plus WAL at its last measurement (0 before one). */
  activeBytes(): number
}

export class Admission {
  /** Free bytes on the data directory's file system at the last sample (null before the first). */
  freeDiskBytes: number | null = null
  /** Why the last free-space read failed (a failing or hanging statfs); null when it worked. */
  diskError: string | null = null
  /** Why the store refuses every write until restart (fail-stop), or null. */
  failure: string | null = null
  private sampledMs = -Infinity
  private sampling: Promise<void> | null = null
  private timer: NodeJS.Timeout | null = null

  constructor(
    private readonly opts: AdmissionOptions,
    private readonly host: AdmissionHost,
  ) {}

  /** Samples every diskCheckMs until stop. */
  start(): void {
    this.timer = setInterval(() => void this.sample(), this.opts.diskCheckMs)
    this.timer.unref()
  }

  /** Stops sampling and waits for a sample in flight. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    await this.sampling
  }

  /** Reads the free space of the data directory's file system; one sample at a time, bounded (disk.ts). A failed read makes the reading unknown, and is logged once. */
  sample(): Promise<void> {
    this.sampling ??= readFreeBytes(this.opts.fs, this.opts.dataDir)
      .then((res) => {
        const wasLow = this.lowOnDisk()
        if (!res.ok) {
          if (this.diskError === null) this.opts.logger.error({ reason: res.reason }, 'reading free disk space failed: free disk unknown')
          this.diskError = res.reason
          this.freeDiskBytes = null
          return
        }
        if (this.diskError !== null) this.opts.logger.warn({ freeBytes: res.bytes }, 'reading free disk space works again')
        this.diskError = null
        this.freeDiskBytes = res.bytes
        this.sampledMs = performance.now()
        const figures = { freeBytes: res.bytes, floorBytes: this.opts.minFreeDiskBytes }
        if (!wasLow && this.lowOnDisk()) this.opts.logger.error(figures, 'free disk below its floor: refusing ingest until space is freed')
        if (wasLow && !this.lowOnDisk()) this.opts.logger.warn(figures, 'free disk back above its floor: taking ingest again')
      })
      .finally(() => {
        this.sampling = null
      })
    return this.sampling
  }

  /** After a commit: samples again when the last reading is older than a tenth of a second. */
  committed(): void {
    if (performance.now() - this.sampledMs > RESAMPLE_AFTER_COMMIT_MS) void this.sample()
  }

  /** Whether the data directory has less free space than its floor (exports that write files check this too). */
  lowOnDisk(): boolean {
    if (this.opts.minFreeDiskBytes > 0 && this.diskError !== null) return true
    return this.opts.minFreeDiskBytes > 0 && this.freeDiskBytes !== null && this.freeDiskBytes < this.opts.minFreeDiskBytes
  }

  /** A write failed: logged (`logMessage` says which and what follows); fail-stop when it may have invalidated a database (`always`: it did). */
  noteWriteFailure(err: unknown, always: boolean, logMessage: string, logFields: Record<string, unknown> = {}): void {
    const message = err instanceof Error ? err.message : String(err)
    this.opts.logger.error({ ...logFields, err }, logMessage)
    if (this.failure !== null) return
    // DuckDB invalidates a database after a failed WAL write/fsync or checkpoint:
    // from then on nothing may be acknowledged. Stop (fail-stop) rather than guess.
    // DuckDB spells its I/O errors "IO Error:"; any of them on the commit path may have left the WAL half-written.
    if (always || /invalidated|fatal|\bIO Error\b|I\/O Error|No space left|Disk quota exceeded/i.test(message)) {
      this.failure = message.slice(0, 300)
      this.opts.logger.fatal({ reason: this.failure }, 'store entered fail-stop: refusing writes until restart')
    }
  }

  /** Why appends are refused now: low disk, seal backlog, oversized active segment (empty: admitted). */
  refusing(): string[] {
    const reasons: string[] = []
    if (this.opts.minFreeDiskBytes > 0 && this.diskError !== null) reasons.push(`free disk unknown (${this.diskError}); the floor TOKENLEDGER_MIN_FREE_DISK cannot be checked`)
    else if (this.lowOnDisk()) {
      reasons.push(`free disk ${mib(this.freeDiskBytes!)} is below the floor of ${mib(this.opts.minFreeDiskBytes)} (TOKENLEDGER_MIN_FREE_DISK)`)
    }
    const pending = this.host.pendingCount()
    if (pending > this.opts.maxPendingSegments) reasons.push(`${pending} segments wait to be sealed, more than ${this.opts.maxPendingSegments} (TOKENLEDGER_MAX_PENDING_SEGMENTS)`)
    const activeBytes = this.host.activeBytes()
    if (activeBytes > this.opts.maxActiveBytes) {
      reasons.push(`the active segment holds ${mib(activeBytes)}, more than ${mib(this.opts.maxActiveBytes)} (TOKENLEDGER_MAX_ACTIVE_BYTES): rollover is not keeping up`)
    }
    return reasons
  }
}

function mib(bytes: number): string {
  const n = bytes / MIB
  return `${n < 100 ? n.toFixed(1) : Math.round(n)} MiB`
}
