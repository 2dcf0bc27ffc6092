// Proves the sealed tier's id runs (src/store/idruns.ts) never miss a stored
// id: with adversarial hashes (every id the same 64-bit hash, so the same filter
// bits; equal hashes spanning page boundaries; the same id in many segments)
// every segment holding an id is among its candidates, through merges, drops,
// purges, a reopen, a merge cut short by a crash (inputs and output both on
// disk), a temp file and a corrupt run; a dropped segment is never named; and
// with the store's real hash the filter keeps its false-positive rate and its
// resident bytes per id small (property and measured figures, not constants).

import assert from 'node:assert/strict'
import { copyFile, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { test, type TestContext } from 'node:test'
import fc from 'fast-check'
import { nodeFileSystem } from '../src/store/fsops.js'
import { hashId64 } from '../src/store/idindex.js'
import { IdRuns, PAGE_ENTRIES, type IdHash } from '../src/store/idruns.js'

const RUNS = Math.max(1, Math.floor(Number(process.env.FUZZ_RUNS ?? 200) / 4))

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tl-idruns-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/** Every id hashes to the same 64 bits: a filter cannot tell them apart, nor can the fences. */
const constantHash: IdHash = (_id, out) => {
  out[0] = 0x12345678
  out[1] = 0x9abcdef0
}

/** 4 bits of the real hash: many ids share each value. */
const weakHash: IdHash = (id, out) => {
  hashId64(id, out)
  out[0] = out[0]! & 0xf
  out[1] = 0
}

function candidates(runs: IdRuns, id: string): number[] {
  const out: number[] = []
  runs.candidates(id, out)
  return out.sort((a, b) => a - b)
}

async function open(dir: string, hash: IdHash, retained: Iterable<number>) {
  return IdRuns.open(dir, nodeFileSystem, hash, new Set(retained))
}

test('same 64-bit hash in many segments, equal hashes spanning pages: every holder is a candidate, through merges and a reopen', async (t) => {
  const dir = await tempDir(t)
  const { runs } = await open(dir, constantHash, [])
  const perSegment = PAGE_ENTRIES + 37 // every segment's entries span a page boundary
  for (let seg = 1; seg <= 6; seg++) {
    await runs.addSegment(seg, Array.from({ length: perSegment }, (_, i) => `s${seg}-${i}`))
    await runs.compact()
  }
  assert.ok(runs.stats().runs < 6, `merged: ${runs.stats().runs} runs for 6 segments`)
  assert.equal(runs.stats().entries, 6 * perSegment)
  assert.deepEqual(candidates(runs, 'anything'), [1, 2, 3, 4, 5, 6], 'a colliding id names every segment (the exact probe decides)')
  runs.drop(3)
  assert.deepEqual(candidates(runs, 's3-0'), [1, 2, 4, 5, 6], 'a dropped segment is never named')
  runs.close()
  const again = await open(dir, constantHash, [1, 2, 4, 5, 6])
  assert.deepEqual(again.uncovered, [])
  assert.deepEqual(candidates(again.runs, 's1-0'), [1, 2, 4, 5, 6], 'after a reopen that no longer retains segment 3')
  assert.equal(await again.runs.purge(), 0, 'nothing to purge yet: most of the run is alive')
  again.runs.close()
})

test('property: with a weak hash, every retained segment holding an id is a candidate; dropped ones never are', async (t) => {
  const dir = await tempDir(t)
  let round = 0
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.record({ ids: fc.uniqueArray(fc.integer({ min: 0, max: 400 }), { maxLength: 60 }), drop: fc.boolean(), reopen: fc.boolean(), purge: fc.boolean() }), { minLength: 1, maxLength: 10 }),
      async (steps) => {
        const here = path.join(dir, `r${round++}`)
        let { runs } = await open(here, weakHash, [])
        const model = new Map<number, string[]>()
        const dropped = new Set<number>()
        let seg = 0
        try {
          for (const s of steps) {
            seg++
            // The same id may be stored in several segments (the model allows it; the store would not).
            const ids = s.ids.map((n) => `id-${n}`)
            await runs.addSegment(seg, ids)
            model.set(seg, ids)
            await runs.compact()
            if (s.drop && model.size > 0) {
              const victim = [...model.keys()][0]!
              runs.drop(victim)
              model.delete(victim)
              dropped.add(victim)
            }
            if (s.purge) await runs.purge()
            if (s.reopen) {
              runs.close()
              const o = await open(here, weakHash, model.keys())
              assert.deepEqual(o.uncovered, [], 'every retained segment is covered after a reopen')
              runs = o.runs
            }
            for (const [holder, ids] of model) for (const id of ids) assert.ok(candidates(runs, id).includes(holder), `${id} of segment ${holder} is a candidate`)
            for (let n = 0; n <= 400; n += 7) for (const c of candidates(runs, `id-${n}`)) assert.ok(!dropped.has(c), `dropped segment ${c} named`)
          }
        } finally {
          runs.close()
        }
      },
    ),
    { numRuns: RUNS },
  )
})

test('a merge cut short after its output was renamed: open drops the superseded inputs; a temp file is removed; a corrupt run is reported uncovered', async (t) => {
  const dir = await tempDir(t)
  const { runs } = await open(dir, hashId64, [])
  await runs.addSegment(1, Array.from({ length: 1000 }, (_, i) => `a${i}`))
  const [firstRun] = (await readdir(dir)).filter((n) => n.endsWith('.ids'))
  await copyFile(path.join(dir, firstRun!), path.join(dir, 'saved'))
  await runs.addSegment(2, Array.from({ length: 1000 }, (_, i) => `b${i}`))
  assert.equal(await runs.compact(), 1, 'equal sizes: merged')
  runs.close()
  // Put the merge input back, as a crash before its removal would leave it, plus a half-written run.
  await copyFile(path.join(dir, 'saved'), path.join(dir, firstRun!))
  await rm(path.join(dir, 'saved'))
  await writeFile(path.join(dir, 'run-000000000099.ids.tmp'), 'half')
  const o = await open(dir, hashId64, [1, 2])
  assert.deepEqual(o.uncovered, [])
  const names = (await readdir(dir)).sort()
  assert.equal(names.length, 1, `one run left: ${names.join(', ')}`)
  assert.notEqual(names[0], firstRun, 'the newer (merged) run is kept')
  assert.deepEqual(candidates(o.runs, 'a5'), [1])
  assert.deepEqual(candidates(o.runs, 'b999'), [2])
  o.runs.close()

  await writeFile(path.join(dir, names[0]!), 'not a run')
  const broken = await open(dir, hashId64, [1, 2])
  assert.deepEqual(broken.uncovered, [1, 2], 'a corrupt run is removed and its segments are rebuilt by the caller')
  assert.deepEqual(await readdir(dir), [])
  broken.runs.close()
})

test('purge: a run of dropped segments only is deleted, a mostly dropped one rewritten without them', async (t) => {
  const dir = await tempDir(t)
  const { runs } = await open(dir, hashId64, [])
  for (let seg = 1; seg <= 4; seg++) await runs.addSegment(seg, Array.from({ length: 500 }, (_, i) => `${seg}-${i}`))
  await runs.compact()
  const before = runs.stats()
  runs.drop(1)
  runs.drop(2)
  runs.drop(3)
  const removed = await runs.purge()
  assert.equal(removed, 1500)
  assert.equal(runs.stats().entries, 500)
  assert.ok(runs.stats().bytes < before.bytes, 'resident bytes shrink')
  assert.deepEqual(candidates(runs, '4-17'), [4])
  assert.deepEqual(candidates(runs, '1-17'), [])
  runs.close()
})

test('with the real hash: few false positives, about 1.4 resident bytes an id, one page read per true hit', async (t) => {
  const dir = await tempDir(t)
  const { runs } = await open(dir, hashId64, [])
  const n = 200_000
  for (let seg = 1; seg <= 4; seg++) await runs.addSegment(seg, Array.from({ length: n / 4 }, (_, i) => `evt-${seg}-${i}`))
  await runs.compact()
  const bytesPerId = runs.stats().bytes / n
  assert.ok(bytesPerId < 2, `resident ${bytesPerId.toFixed(2)} bytes an id`)
  let reads = runs.pageReads
  for (let i = 0; i < 1000; i++) assert.deepEqual(candidates(runs, `evt-3-${i * 37}`), [3])
  const perHit = (runs.pageReads - reads) / 1000
  assert.ok(perHit <= 1.1 * runs.stats().runs, `${perHit} page reads a hit`)
  reads = runs.pageReads
  let falseHits = 0
  const probes = 100_000
  for (let i = 0; i < probes; i++) falseHits += candidates(runs, `fresh-${i}`).length
  const fpr = (runs.pageReads - reads) / probes / runs.stats().runs
  assert.equal(falseHits, 0, 'no fresh id is named (a 64-bit collision among 300k ids is ~1e-9 likely)')
  assert.ok(fpr < 0.01, `filter false positives ${(fpr * 100).toFixed(2)}% a run`)
  t.diagnostic(`resident ${bytesPerId.toFixed(2)} B/id, ${runs.stats().runs} runs, ${perHit} page reads a hit, ${(fpr * 100).toFixed(2)}% false positives a run`)
  runs.close()
})
