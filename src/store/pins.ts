// Pins: the one scheme by which readers keep a segment's storage alive, for
// live instances (the active segment and one rolled over, until it is closed)
// and for attached files (pending and archived, until detached and deleted).
//
// Invariants:
// - `held` is the number of readers (queries, dedupe probes, seals) using the
//   thing now; it never goes below zero (an unbalanced unpin throws).
// - `released()` resolves once `held` is zero (at once when it is): whoever
//   retires the thing (rollover's close, retention's delete, a seal's cleanup)
//   waits on it, never polls, and never waits while holding the write gate.

export class Pins {
  private count = 0
  private waiting: Array<() => void> = []

  /** Readers holding a pin now. */
  get held(): number {
    return this.count
  }

  pin(): void {
    this.count++
  }

  unpin(): void {
    if (this.count <= 0) throw new Error('invariant: unpin without a pin')
    this.count--
    if (this.count > 0) return
    const waiting = this.waiting
    this.waiting = []
    for (const resolve of waiting) resolve()
  }

  /** Resolves once no reader holds a pin. */
  released(): Promise<void> {
    if (this.count === 0) return Promise.resolve()
    return new Promise<void>((resolve) => this.waiting.push(resolve))
  }
}
