// The dedupe index of the live tiers (the active segment, rolled-over and
// pending segments, and sealed ones until their ids are in a persisted run,
// idruns.ts): a compact in-memory hash set of event ids, each entry
// remembering which segment holds the id.
//
// Invariants:
// - One entry per event of those segments: 8 bytes a slot (two Uint32Array
//   words), against ~170 bytes an event for a Map of strings.
// - An entry keeps 48 bits of the id's hash, not the id. A miss is exact (the
//   id was never stored); a hit is only a *candidate*: the store confirms it
//   with an exact probe of the named segment (event_id and fingerprint), so a
//   hash collision can cost a probe but never a wrong duplicate/conflict.
// - The segment is stored as a 16-bit slot into `segments` (slot 0 = empty
//   entry), so at most 65 535 segments are indexed at once.
// - Entries of a dropped segment are ignored at once (their slot is marked
//   dead) and removed by `purgeDropped` (or a resize); only then is the slot
//   freed for reuse, so a dead slot never names a live segment.
// - `add` runs only under the store's write gate (after COMMIT). Every
//   mutation is synchronous, so a reader never sees a half-done one; the purge
//   yields between chunks, and gives up when a resize (which drops dead entries
//   itself) replaced the table under it.

import type { IdHash } from './idruns.js'

const MAX_SLOTS = 0xffff
const MAX_LOAD = 0.75

export class IdIndex {
  private keys: Uint32Array
  private vals: Uint32Array
  private mask: number
  private count = 0
  /** slot -> segment id (null: free); index 0 unused so that 0 means "empty entry". */
  private readonly segmentOfSlot: Array<number | null> = [null]
  private readonly slotOfSegment = new Map<number, number>()
  private readonly dead = new Set<number>()

  constructor(
    expectedEntries = 1 << 16,
    private readonly hash: IdHash = hashId64,
  ) {
    let capacity = 1 << 16
    while (capacity * MAX_LOAD < expectedEntries) capacity *= 2
    this.keys = new Uint32Array(capacity)
    this.vals = new Uint32Array(capacity)
    this.mask = capacity - 1
  }

  get size(): number {
    return this.count
  }

  get bytes(): number {
    return this.keys.byteLength + this.vals.byteLength
  }

  /** Adds an id stored in `segmentId`. Duplicate ids are the caller's business (it probes first). */
  add(eventId: string, segmentId: number): void {
    const slot = this.slotFor(segmentId)
    if (this.count + 1 > (this.mask + 1) * MAX_LOAD) {
      // Dropped segments' entries go first (sealed segments leave this index): grow only when that is not enough.
      if (this.dead.size > 0) this.purgeDead()
      if (this.count + 1 > (this.mask + 1) * MAX_LOAD * 0.5) this.resize((this.mask + 1) * 2)
    }
    this.hashOf(eventId)
    this.insert(H1, ((H2 & 0xffff0000) | slot) >>> 0)
  }

  /** Segments that may hold `eventId` (empty: certainly none). */
  candidates(eventId: string): number[] {
    this.hashOf(eventId)
    const check = H2 & 0xffff0000
    const out: number[] = []
    for (let i = H1 & this.mask; ; i = (i + 1) & this.mask) {
      const v = this.vals[i]!
      if (v === 0) return out
      if (this.keys[i] === H1 && (v & 0xffff0000) === check) {
        const slot = v & 0xffff
        const seg = this.segmentOfSlot[slot]
        if (seg !== null && seg !== undefined && !this.dead.has(slot) && !out.includes(seg)) out.push(seg)
      }
    }
  }

  /** Forgets a segment (retention deleted it): its entries are ignored from now on. */
  dropSegment(segmentId: number): void {
    const slot = this.slotOfSegment.get(segmentId)
    if (slot === undefined) return
    this.slotOfSegment.delete(segmentId)
    this.dead.add(slot)
  }

  /**
   * Removes the entries of dropped segments, a chunk of slots at a time with
   * `pause()` between chunks, so the event loop (and so ingest) never stalls
   * long on it, then frees their slots. Returns entries removed. Measured on a
   * 20M-entry index with half of it dropped (.tmp-style micro run, 2 busy
   * cores): 1.1 s in all, 512 chunks of ~2 ms, the longest 9 ms.
   */
  async purgeDropped(pause: () => Promise<void> = () => new Promise((resolve) => setImmediate(resolve)), chunkSlots = 1 << 16): Promise<number> {
    if (this.dead.size === 0) return 0
    const dead = new Set(this.dead)
    const table = this.vals
    let removed = 0
    for (let i = 0; i < table.length; ) {
      const end = Math.min(table.length, i + chunkSlots)
      while (i < end) {
        const v = table[i]!
        if (v !== 0 && dead.has(v & 0xffff)) {
          this.removeAt(i) // the entry shifted into i is examined next
          removed++
        } else i++
      }
      await pause()
      // A resize rebuilt the table without dead entries and freed their slots.
      if (this.vals !== table) return removed
    }
    for (const slot of dead) {
      this.segmentOfSlot[slot] = null
      this.dead.delete(slot)
    }
    return removed
  }

  /**
   * Deletes the entry at `i` without tombstones (Knuth's algorithm R for linear
   * probing): later entries of the cluster that may live at the hole move back
   * into it. Entries only move towards `i`, so a forward scan misses none.
   */
  private removeAt(i: number): void {
    const { keys, vals, mask } = this
    let hole = i
    for (let j = (i + 1) & mask; vals[j] !== 0; j = (j + 1) & mask) {
      const home = keys[j]! & mask
      // The entry at j may move to the hole unless its home lies cyclically in (hole, j].
      const stays = hole <= j ? home > hole && home <= j : home > hole || home <= j
      if (!stays) {
        keys[hole] = keys[j]!
        vals[hole] = vals[j]!
        hole = j
      }
    }
    keys[hole] = 0
    vals[hole] = 0
    this.count--
  }

  private hashOf(eventId: string): void {
    this.hash(eventId, HASH)
    H1 = HASH[0]!
    H2 = HASH[1]!
  }

  private slotFor(segmentId: number): number {
    const known = this.slotOfSegment.get(segmentId)
    if (known !== undefined) return known
    let slot = this.segmentOfSlot.indexOf(null, 1)
    if (slot === -1) {
      if (this.segmentOfSlot.length > MAX_SLOTS) this.purgeDead()
      slot = this.segmentOfSlot.indexOf(null, 1)
      if (slot === -1) {
        if (this.segmentOfSlot.length > MAX_SLOTS) throw new Error(`dedupe index: more than ${MAX_SLOTS} segments retained`)
        slot = this.segmentOfSlot.length
        this.segmentOfSlot.push(null)
      }
    }
    this.segmentOfSlot[slot] = segmentId
    this.slotOfSegment.set(segmentId, slot)
    return slot
  }

  private insert(key: number, val: number): void {
    let i = key & this.mask
    while (this.vals[i] !== 0) i = (i + 1) & this.mask
    this.keys[i] = key
    this.vals[i] = val
    this.count++
  }

  private resize(capacity: number): void {
    const { keys, vals } = this
    this.keys = new Uint32Array(capacity)
    this.vals = new Uint32Array(capacity)
    this.mask = capacity - 1
    this.count = 0
    for (let i = 0; i < keys.length; i++) {
      const v = vals[i]!
      if (v !== 0 && !this.dead.has(v & 0xffff)) this.insert(keys[i]!, v)
    }
    this.releaseDead()
  }

  /** Rebuilds without dead entries so that their slots can be reused. */
  private purgeDead(): void {
    this.resize(this.mask + 1)
  }

  private releaseDead(): void {
    for (const slot of this.dead) this.segmentOfSlot[slot] = null
    this.dead.clear()
  }
}

// The hash of the id being looked at, in module variables to avoid an allocation per call.
let H1 = 0
let H2 = 0
const HASH = new Uint32Array(2)

/**
 * The store's id hash: two independent 32-bit lanes of a multiply-xorshift
 * string hash (cyrb53's mixing), hi in out[0], lo in out[1]. The live index
 * keys by hi and 16 bits of lo; the sealed runs (idruns.ts) by all 64 bits.
 * Persisted runs depend on it: changing it means a new run version.
 */
export const hashId64: IdHash = (s, out) => {
  let h1 = 0xdeadbeef
  let h2 = 0x41c6ce57
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    h1 = Math.imul(h1 ^ c, 2654435761)
    h2 = Math.imul(h2 ^ c, 1597334677)
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507)
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909)
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507)
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909)
  out[0] = h1 >>> 0
  out[1] = h2 >>> 0
}
