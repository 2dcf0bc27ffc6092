// Over 500 lines: the run file's format is written (add, merge), read (load) and
// probed here, and the three must agree byte for byte; the filter is apart (idfilter.ts).
//
// The dedupe index of the sealed tier: sorted runs of 64-bit id hashes on disk,
// each with a small resident filter and fence pointers, merged into a few
// larger runs as segments are sealed (an LSM of ids), so that what stays in
// memory is ~1.4 bytes a sealed event and a probe costs about one filter test
// per run, and one pread per run whose filter says "maybe".
//
// A run file (index/run-<seq>.ids), little-endian u32 words:
//   header    HEADER_WORDS words: magic, version, segment count, entry count
//             (two words), filter blocks, page count
//   segments  per segment: id, entries it holds
//   entries   per entry: hash hi, hash lo, segment id; sorted by (hi, lo)
//   fences    per page of PAGE_ENTRIES entries: the first entry's (hi, lo)
//   filter    a split-block Bloom filter: blocks of 8 words, one bit set in each
//             word per key (Parquet's SBBF)
// Only the header, segments, fences and filter are read at start-up; entries
// stay on disk and a probe reads the page (or pages) its fences name.
//
// Invariants:
// - A run is written whole to a temp file, fsync'd, renamed, the directory
//   fsync'd; only then is it used, and only then are the runs it replaces
//   (merge inputs) removed. A crash leaves either the inputs or the output
//   plus inputs; `open` drops a run whose retained segments another, newer run
//   covers (a merge finished, its clean-up did not).
// - A miss is exact: every id of a covered segment has its hash in the run, and
//   the filter has no false negatives. A hit is a candidate segment only: the
//   store confirms it with an exact probe of that segment's archive, so a
//   filter false positive or a 64-bit hash collision costs a probe, never a
//   wrong answer.
// - A dropped segment (retention) is masked at once (`drop`): candidates never
//   name it. Its entries leave the files when a run that holds it is merged or
//   rewritten; a run holding only dropped segments is deleted by `purge`.
// - Structural changes (add, merge, purge) are serialised by `lock`; probes are
//   synchronous, so they never see a half-made change.

import { closeSync, openSync, readSync } from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { Mutex } from 'async-mutex'
import type { FileSystem } from './fsops.js'
import { BLOCK_WORDS, filterAdd, filterBlocks, filterHas } from './idfilter.js'

/** Writes the 64-bit hash of an event id into out[0] (hi) and out[1] (lo). */
export type IdHash = (eventId: string, out: Uint32Array) => void

const MAGIC = 0x5449_4c52 // 'RLIT'
const VERSION = 1
const HEADER_WORDS = 8
/** Entries per page: one fence each; a probe reads one page (3 KiB) in the usual case. */
export const PAGE_ENTRIES = 256
const ENTRY_WORDS = 3
/** Entries merged per chunk before the merge yields to the event loop. */
const MERGE_CHUNK_ENTRIES = 1 << 16
/** Ids hashed (and entries laid out) by addSegment between two yields to the event loop. */
const ADD_CHUNK_IDS = 1 << 14
/** Where the high and low 32 bits of a BigUint64Array element are in its Uint32Array view. */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1
const HI_WORD = LITTLE_ENDIAN ? 1 : 0
const LO_WORD = LITTLE_ENDIAN ? 0 : 1
const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))
/** A run with more than this share of its entries in dropped segments is rewritten. */
const REWRITE_DEAD_SHARE = 0.5
/** Most runs kept before the smallest are merged regardless of sizes. */
const MAX_RUNS = 24

/** (hi, lo) compared as one unsigned 64-bit number. */
function compare(aHi: number, aLo: number, bHi: number, bLo: number): number {
  return aHi !== bHi ? (aHi < bHi ? -1 : 1) : aLo !== bLo ? (aLo < bLo ? -1 : 1) : 0
}

/** One run as held in memory: everything but the entries. */
interface Run {
  readonly seq: number
  readonly file: string
  readonly fd: number
  /** segment id -> entries it holds in this run. */
  readonly segments: Map<number, number>
  readonly count: number
  readonly entriesOffset: number
  readonly fences: Uint32Array
  readonly filter: Uint32Array
  readonly blocks: number
}

function runName(seq: number): string {
  return `run-${String(seq).padStart(12, '0')}.ids`
}

function parseRunName(name: string): { seq: number; tmp: boolean } | null {
  const m = /^run-(\d{12})\.ids(\.tmp)?$/.exec(name)
  return m ? { seq: Number(m[1]), tmp: m[2] !== undefined } : null
}

/** A source of sorted entries (hi, lo, segment), read a chunk at a time. */
interface EntrySource {
  /** The next chunk of entries (ENTRY_WORDS words each), or null at the end. */
  next(): Promise<Uint32Array | null>
}

function arraySource(entries: Uint32Array): EntrySource {
  let done = false
  return {
    next: async () => {
      if (done || entries.length === 0) return null
      done = true
      return entries
    },
  }
}

function fileSource(run: Run, chunkEntries = MERGE_CHUNK_ENTRIES): EntrySource {
  let at = 0
  let handle: fsp.FileHandle | null = null
  return {
    async next() {
      if (at >= run.count) {
        await handle?.close()
        handle = null
        return null
      }
      handle ??= await fsp.open(run.file, 'r')
      const n = Math.min(chunkEntries, run.count - at)
      const buf = new Uint32Array(n * ENTRY_WORDS)
      const bytes = buf.byteLength
      const { bytesRead } = await handle.read(new Uint8Array(buf.buffer), 0, bytes, run.entriesOffset + at * ENTRY_WORDS * 4)
      if (bytesRead !== bytes) throw new Error(`id run ${run.file}: short read at entry ${at}`)
      at += n
      return buf
    },
  }
}

export interface RunStats {
  runs: number
  /** Entries in every run, dropped segments' included until they are purged. */
  entries: number
  /** Resident bytes: filters, fences and segment maps. */
  bytes: number
}

export class IdRuns {
  /** Serialises add, merge and purge. */
  readonly lock = new Mutex()
  private runs: Run[] = []
  private readonly dropped = new Set<number>()
  private nextSeq = 1
  private readonly scratch = new Uint32Array(2)
  private readonly page = new Uint32Array(PAGE_ENTRIES * ENTRY_WORDS * 2)
  /** Page reads made by probes (for tests and figures). */
  pageReads = 0

  private constructor(
    private readonly dir: string,
    private readonly fs: FileSystem,
    private readonly hash: IdHash,
  ) {}

  /**
   * Loads the runs in `dir`: removes temp files and runs superseded by a newer
   * run (or unreadable), masks segments that are no longer `retained`. Returns
   * the runs and the retained segments no run covers (to be rebuilt by the caller).
   */
  static async open(dir: string, fs: FileSystem, hash: IdHash, retained: ReadonlySet<number>): Promise<{ runs: IdRuns; uncovered: number[] }> {
    const runs = IdRuns.empty(dir, fs, hash)
    return { runs, uncovered: await runs.load(retained) }
  }

  /** No runs loaded yet (`load` loads them; until then no id is a candidate). */
  static empty(dir: string, fs: FileSystem, hash: IdHash): IdRuns {
    return new IdRuns(dir, fs, hash)
  }

  /** Loads the runs in `dir` as `open` says; returns the retained segments no run covers. */
  async load(retained: ReadonlySet<number>): Promise<number[]> {
    return this.lock.runExclusive(async () => {
      const { dir, fs } = this
      await fs.mkdirp(dir)
      const names = await fs.list(dir)
      const found: number[] = []
      for (const name of names) {
        const p = parseRunName(name)
        if (!p) continue
        this.nextSeq = Math.max(this.nextSeq, p.seq + 1)
        if (p.tmp) await fs.remove(path.join(dir, name))
        else found.push(p.seq)
      }
      // Newest first: a run whose retained segments a newer run already covers is a merge input left behind.
      found.sort((a, b) => b - a)
      const covered = new Set<number>()
      const kept: Run[] = []
      for (const seq of found) {
        const file = path.join(dir, runName(seq))
        let run: Run
        try {
          run = await loadRun(seq, file)
        } catch {
          // Unreadable: its segments are rebuilt from their archives.
          await fs.remove(file)
          continue
        }
        const live = [...run.segments.keys()].filter((s) => retained.has(s))
        if (live.length === 0 || live.every((s) => covered.has(s))) {
          closeSync(run.fd)
          await fs.remove(file)
          continue
        }
        for (const s of run.segments.keys()) {
          if (retained.has(s)) covered.add(s)
          else this.dropped.add(s)
        }
        kept.push(run)
      }
      await fs.syncDir(dir)
      this.runs = [...this.runs, ...kept].sort((a, b) => a.seq - b.seq)
      return [...retained].filter((s) => !covered.has(s)).sort((a, b) => a - b)
    })
  }

  stats(): RunStats {
    let entries = 0
    let bytes = 0
    for (const r of this.runs) {
      entries += r.count
      bytes += r.fences.byteLength + r.filter.byteLength + r.segments.size * 16
    }
    return { runs: this.runs.length, entries, bytes }
  }

  /** Whether some run holds `segmentId`'s ids (and it is not dropped). */
  covers(segmentId: number): boolean {
    return !this.dropped.has(segmentId) && this.runs.some((r) => r.segments.has(segmentId))
  }

  /** Appends to `out` the segments (not dropped) whose entries hold `eventId`'s hash. */
  candidates(eventId: string, out: number[]): void {
    const h = this.scratch
    this.hash(eventId, h)
    const hi = h[0]!
    const lo = h[1]!
    for (const run of this.runs) {
      if (!filterHas(run.filter, run.blocks, hi, lo)) continue
      this.probeRun(run, hi, lo, out)
    }
  }

  /** Reads the page(s) of `run` that may hold (hi, lo): the last page whose first entry is below it, and on while entries are equal. */
  private probeRun(run: Run, hi: number, lo: number, out: number[]): void {
    const fences = run.fences
    const pages = fences.length / 2
    // Last page whose fence is < (hi, lo); page 0 when none is.
    let a = 0
    let b = pages - 1
    let page = 0
    while (a <= b) {
      const m = (a + b) >>> 1
      if (compare(fences[2 * m]!, fences[2 * m + 1]!, hi, lo) < 0) {
        page = m
        a = m + 1
      } else b = m - 1
    }
    for (; page < pages; page++) {
      const first = page * PAGE_ENTRIES
      const n = Math.min(PAGE_ENTRIES, run.count - first)
      const bytes = n * ENTRY_WORDS * 4
      const got = readSync(run.fd, new Uint8Array(this.page.buffer, 0, bytes), 0, bytes, run.entriesOffset + first * ENTRY_WORDS * 4)
      if (got !== bytes) throw new Error(`id run ${run.file}: short read of page ${page}`)
      this.pageReads++
      for (let i = 0; i < n; i++) {
        const c = compare(this.page[i * 3]!, this.page[i * 3 + 1]!, hi, lo)
        if (c < 0) continue
        if (c > 0) return
        const seg = this.page[i * 3 + 2]!
        if (!this.dropped.has(seg) && !out.includes(seg)) out.push(seg)
      }
      // The page ended on an equal or smaller entry: the next page may hold more of it.
    }
  }

  /** Masks a dropped segment at once: candidates never name it again. */
  drop(segmentId: number): void {
    this.dropped.add(segmentId)
  }

  /**
   * Persists one segment's ids as a new run (sorted hashes, durable before it
   * is used), then merges runs while the newest is comparable in size with
   * the one before it.
   */
  async addSegment(segmentId: number, ids: Iterable<string>): Promise<void> {
    // The event loop's share (issue 25: a seal's index step stalled ingest for
    // ~35 ms per 70k ids, a BigInt per id): each hash goes straight into the
    // 32-bit halves of a BigUint64Array (no BigInt made), laid out so the
    // native sort orders by (hi, lo), with a yield every ADD_CHUNK_IDS ids.
    const list = Array.isArray(ids) ? (ids as readonly string[]) : [...ids]
    const n = list.length
    const sorted = new BigUint64Array(n)
    const words = new Uint32Array(sorted.buffer)
    const h = this.scratch
    for (let i = 0; i < n; i++) {
      this.hash(list[i]!, h)
      words[2 * i + HI_WORD] = h[0]!
      words[2 * i + LO_WORD] = h[1]!
      if ((i + 1) % ADD_CHUNK_IDS === 0) await yieldToLoop()
    }
    sorted.sort()
    await yieldToLoop()
    const entries = new Uint32Array(n * ENTRY_WORDS)
    for (let i = 0; i < n; i++) {
      entries[i * 3] = words[2 * i + HI_WORD]!
      entries[i * 3 + 1] = words[2 * i + LO_WORD]!
      entries[i * 3 + 2] = segmentId
      if ((i + 1) % ADD_CHUNK_IDS === 0) await yieldToLoop()
    }
    await this.lock.runExclusive(async () => {
      const run = await this.write(new Map([[segmentId, sorted.length]]), [arraySource(entries)])
      this.runs.push(run)
    })
  }

  /**
   * Merges while it is due: the two newest runs when the newer holds at least
   * half the older's entries (so sizes grow geometrically and the run count
   * stays logarithmic), or the two smallest neighbours past MAX_RUNS.
   */
  async compact(): Promise<number> {
    let merges = 0
    for (;;) {
      const done = await this.lock.runExclusive(async () => {
        const rs = this.runs
        if (rs.length < 2) return true
        const live = (r: Run) => liveCount(r, this.dropped)
        const last = rs[rs.length - 1]!
        const prev = rs[rs.length - 2]!
        if (live(last) * 2 >= live(prev) || rs.length > MAX_RUNS) {
          await this.merge([prev, last])
          return false
        }
        return true
      })
      if (done) return merges
      merges++
    }
  }

  /** Deletes runs holding only dropped segments, rewrites those mostly dropped; returns the entries removed. */
  async purge(): Promise<number> {
    return this.lock.runExclusive(async () => {
      let removed = 0
      for (const run of [...this.runs]) {
        const live = liveCount(run, this.dropped)
        if (live === run.count) continue
        if (live === 0) {
          this.runs = this.runs.filter((r) => r !== run)
          await this.removeRun(run)
          await this.fs.syncDir(this.dir)
          removed += run.count
        } else if (run.count - live > run.count * REWRITE_DEAD_SHARE) {
          await this.merge([run])
          removed += run.count - live
        }
      }
      this.forgetUnheldDrops()
      return removed
    })
  }

  /** Closes every run file. */
  close(): void {
    for (const r of this.runs) closeSync(r.fd)
    this.runs = []
  }

  /** Merges `inputs` (neighbours, oldest first) into one run without dropped segments; caller holds the lock. */
  private async merge(inputs: Run[]): Promise<void> {
    const dead = new Set(this.dropped)
    const segments = new Map<number, number>()
    for (const r of inputs) for (const [s, n] of r.segments) if (!dead.has(s)) segments.set(s, (segments.get(s) ?? 0) + n)
    const out = await this.write(segments, inputs.map((r) => fileSource(r)), dead)
    const first = this.runs.indexOf(inputs[0]!)
    this.runs = [...this.runs.slice(0, first), out, ...this.runs.slice(first + inputs.length)]
    for (const r of inputs) await this.removeRun(r)
    await this.fs.syncDir(this.dir)
    this.forgetUnheldDrops()
  }

  private async removeRun(run: Run): Promise<void> {
    closeSync(run.fd)
    await this.fs.remove(run.file)
  }

  /** A dropped segment no run holds any more needs no mask. */
  private forgetUnheldDrops(): void {
    for (const s of this.dropped) if (!this.runs.some((r) => r.segments.has(s))) this.dropped.delete(s)
  }

  /**
   * Writes a run of `segments` from sorted `sources` (merged, skipping entries
   * of `dead` segments): temp file, fsync, rename, directory fsync; opens it.
   */
  private async write(segments: Map<number, number>, sources: EntrySource[], dead: ReadonlySet<number> = new Set()): Promise<Run> {
    let count = 0
    for (const n of segments.values()) count += n
    const seq = this.nextSeq++
    const file = path.join(this.dir, runName(seq))
    const tmp = `${file}.tmp`
    const blocks = filterBlocks(count)
    const filter = new Uint32Array(blocks * BLOCK_WORDS)
    const pages = Math.ceil(count / PAGE_ENTRIES)
    const fences = new Uint32Array(pages * 2)
    const segWords = new Uint32Array(segments.size * 2)
    let k = 0
    for (const [s, n] of [...segments].sort((a, b) => a[0] - b[0])) {
      segWords[k++] = s
      segWords[k++] = n
    }
    const entriesOffset = (HEADER_WORDS + segWords.length) * 4
    try {
      const handle = await fsp.open(tmp, 'w')
      try {
        let pos = entriesOffset
        let written = 0
        const outBuf = new Uint32Array(MERGE_CHUNK_ENTRIES * ENTRY_WORDS)
        let outN = 0
        const flush = async (): Promise<void> => {
          if (outN === 0) return
          const bytes = outN * ENTRY_WORDS * 4
          await handle.write(new Uint8Array(outBuf.buffer, 0, bytes), 0, bytes, pos)
          pos += bytes
          outN = 0
        }
        const emit = async (hi: number, lo: number, seg: number): Promise<void> => {
          if (written % PAGE_ENTRIES === 0) {
            const p = written / PAGE_ENTRIES
            fences[2 * p] = hi
            fences[2 * p + 1] = lo
          }
          filterAdd(filter, blocks, hi, lo)
          outBuf[outN * 3] = hi
          outBuf[outN * 3 + 1] = lo
          outBuf[outN * 3 + 2] = seg
          outN++
          written++
          if (outN === MERGE_CHUNK_ENTRIES) await flush()
        }
        // A k-way merge over chunked sources (k is 1 or 2 in practice).
        const heads = await Promise.all(sources.map(async (s) => ({ s, buf: await s.next(), i: 0 })))
        for (;;) {
          let best = -1
          for (let j = 0; j < heads.length; j++) {
            const hd = heads[j]!
            if (hd.buf === null) continue
            if (best === -1) best = j
            else {
              const b = heads[best]!
              if (compare(hd.buf[hd.i * 3]!, hd.buf[hd.i * 3 + 1]!, b.buf![b.i * 3]!, b.buf![b.i * 3 + 1]!) < 0) best = j
            }
          }
          if (best === -1) break
          const hd = heads[best]!
          const buf = hd.buf!
          const seg = buf[hd.i * 3 + 2]!
          if (!dead.has(seg)) await emit(buf[hd.i * 3]!, buf[hd.i * 3 + 1]!, seg)
          if (++hd.i * 3 >= buf.length) {
            hd.buf = await hd.s.next()
            hd.i = 0
          }
        }
        await flush()
        if (written !== count) throw new Error(`invariant: id run ${seq} got ${written} entries for ${count}`)
        await handle.write(new Uint8Array(fences.buffer), 0, fences.byteLength, pos)
        pos += fences.byteLength
        await handle.write(new Uint8Array(filter.buffer), 0, filter.byteLength, pos)
        const header = new Uint32Array([MAGIC, VERSION, segments.size, count % 2 ** 32, Math.floor(count / 2 ** 32), blocks, pages, 0])
        await handle.write(new Uint8Array(header.buffer), 0, header.byteLength, 0)
        await handle.write(new Uint8Array(segWords.buffer), 0, segWords.byteLength, HEADER_WORDS * 4)
        await handle.sync()
      } finally {
        await handle.close()
      }
      await this.fs.rename(tmp, file)
    } catch (err) {
      // A run that could not be written whole (ENOSPC, say) leaves no temp file behind.
      await this.fs.remove(tmp).catch(() => undefined)
      throw err
    }
    await this.fs.syncDir(this.dir)
    return { seq, file, fd: openSync(file, 'r'), segments, count, entriesOffset, fences, filter, blocks }
  }
}

function liveCount(run: Run, dropped: ReadonlySet<number>): number {
  let n = 0
  for (const [s, c] of run.segments) if (!dropped.has(s)) n += c
  return n
}

/** Reads a run's header, segments, fences and filter (not its entries); throws on anything malformed. */
async function loadRun(seq: number, file: string): Promise<Run> {
  const handle = await fsp.open(file, 'r')
  try {
    const size = (await handle.stat()).size
    const read = async (words: number, at: number): Promise<Uint32Array> => {
      const buf = new Uint32Array(words)
      const { bytesRead } = await handle.read(new Uint8Array(buf.buffer), 0, words * 4, at)
      if (bytesRead !== words * 4) throw new Error(`id run ${file}: short read`)
      return buf
    }
    const header = await read(HEADER_WORDS, 0)
    if (header[0] !== MAGIC || header[1] !== VERSION) throw new Error(`id run ${file}: not a version ${VERSION} run`)
    const segCount = header[2]!
    const count = header[3]! + header[4]! * 2 ** 32
    const blocks = header[5]!
    const pages = header[6]!
    const entriesOffset = (HEADER_WORDS + segCount * 2) * 4
    const fencesAt = entriesOffset + count * ENTRY_WORDS * 4
    const filterAt = fencesAt + pages * 8
    if (pages !== Math.ceil(count / PAGE_ENTRIES) || blocks < 1 || filterAt + blocks * BLOCK_WORDS * 4 !== size) throw new Error(`id run ${file}: sizes disagree with its header`)
    const segWords = await read(segCount * 2, HEADER_WORDS * 4)
    const segments = new Map<number, number>()
    let total = 0
    for (let i = 0; i < segCount; i++) {
      segments.set(segWords[2 * i]!, segWords[2 * i + 1]!)
      total += segWords[2 * i + 1]!
    }
    if (total !== count) throw new Error(`id run ${file}: segment counts disagree with its entries`)
    const fences = await read(pages * 2, fencesAt)
    const filter = await read(blocks * BLOCK_WORDS, filterAt)
    return { seq, file, fd: openSync(file, 'r'), segments, count, entriesOffset, fences, filter, blocks }
  } finally {
    await handle.close()
  }
}
