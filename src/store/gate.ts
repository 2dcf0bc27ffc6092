// The write gate: one async-mutex Mutex per store, and the only way to write
// to a segment.
//
// Invariants:
// - Every mutation of the active segment runs inside `run`: appends, the
//   pointer swap of a rollover (retention's included), shutdown. Lock order:
//   the gate first, then anything else; nothing awaits the gate while holding
//   another lock.
// - `run` hands its holder a GateHeld: a capability naming the segment the
//   gate guards at that moment. Segment.appendCommitted takes one and refuses
//   it once the gate is released, or when it names another segment. The class
//   is not exported and carries a #private field, so no other module can make
//   one (a plain object does not type-check): appending without the gate is
//   impossible by construction, and a capability kept past its release (the
//   Rust original's bug: a stale writer restored after a rollover) throws.
// - The guarded segment changes only under the gate (`swap`, asserted).
// - Waiting is bounded (`waitMs`): past it the caller gets GateTimeout (503).

import { E_TIMEOUT, Mutex, withTimeout, type MutexInterface } from 'async-mutex'
import { Errors } from '../errors.js'

/** Who holds the write gate (a label for its wait and hold figures). */
export type GateTask = 'append' | 'rollover' | 'close' | 'other'

/** Told after each use of the gate, synchronously (the store's observer). */
export interface GateListener {
  held(g: { task: GateTask; waitMs: number; heldMs: number }): void
  timedOut(g: { task: GateTask; waitMs: number }): void
}

class Held<S> {
  #valid = true
  #segment: S

  constructor(segment: S) {
    this.#segment = segment
  }

  /** The segment the gate guarded when it was taken; throws once the gate is released. */
  get segment(): S {
    if (!this.#valid) throw new Error('GatedWriter used after the write gate was released')
    return this.#segment
  }

  /** Whether this capability is still held and names `segment`. */
  grants(segment: S): boolean {
    return this.#valid && this.#segment === segment
  }

  revoke(): void {
    this.#valid = false
  }
}

/** The capability the gate's holder gets: only this module makes one (the class itself is not exported; see the header). */
export type GateHeld<S> = Held<S>

export class WriteGate<S> {
  private readonly raw = new Mutex()
  private readonly gate: MutexInterface
  private guarded: S

  constructor(initial: S, waitMs: number, private readonly listener: GateListener) {
    this.gate = withTimeout(this.raw, waitMs, E_TIMEOUT)
    this.guarded = initial
  }

  /**
   * Runs `fn` holding the gate; its GateHeld is revoked when `fn` settles.
   * Waits at most the gate's waitMs (then GateTimeout).
   */
  async run<T>(task: GateTask, fn: (held: GateHeld<S>) => Promise<T>): Promise<T> {
    let release: MutexInterface.Releaser
    const asked = performance.now()
    try {
      release = await this.gate.acquire()
    } catch (err) {
      if (err === E_TIMEOUT) {
        this.listener.timedOut({ task, waitMs: performance.now() - asked })
        throw new Errors.GateTimeout()
      }
      throw err
    }
    const taken = performance.now()
    const held = new Held(this.guarded)
    try {
      return await fn(held)
    } finally {
      held.revoke()
      release()
      this.listener.held({ task, waitMs: taken - asked, heldMs: performance.now() - taken })
    }
  }

  /** Points the gate at a fresh segment (a rollover's swap): only by the holder, while held. */
  swap(held: GateHeld<S>, next: S): void {
    if (!this.raw.isLocked() || !held.grants(this.guarded)) throw new Error('invariant: the guarded segment changes only under the write gate')
    this.guarded = next
  }

  /** True while some task holds the gate (tests, status). */
  isHeld(): boolean {
    return this.raw.isLocked()
  }

  /** Throws unless the gate is held (asserted by the steps that must run under it). */
  assertHeld(): void {
    if (!this.raw.isLocked()) throw new Error('invariant: runs only under the write gate')
  }
}

/** Whether `held` is a live capability of a write gate that names `segment` (a forged object is not: run-time check beside the type's). */
export function grants<S>(held: GateHeld<S>, segment: S): boolean {
  return held instanceof Held && held.grants(segment)
}
