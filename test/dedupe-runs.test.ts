// Proves dedupe across the sealed tier's id runs (src/store/dedupe.ts,
// idruns.ts) through the real app and store: ids sharing a 32-bit hash (found
// by brute force on the store's real hash) and ids sharing the whole 64-bit hash
// (a weak hash substituted by the idHash hook) are told apart by the exact
// probe, in every tier and after a restart; a crash between a seal and its
// index part (the beforeIndexPart hook throws) leaves every replay a
// duplicate, the run is written later by the sealer's retry or rebuilt at
// start-up; and a property: random interleavings of posts, replays,
// conflicting replays, rollovers, seals, restarts, failed index parts and
// retention never double-count, never lose a conflict and never accept a
// stored id, against a simple model.

import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import path from 'node:path'
import { test, type TestContext } from 'node:test'
import fc from 'fast-check'
import { pino } from 'pino'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { hashId64 } from '../src/store/idindex.js'
import type { IdHash } from '../src/store/idruns.js'
import type { StoreHooks } from '../src/store/options.js'
import { build, event, latch, post, rollover, segments } from './helper.js'
import { CALM_PRESSURE_ENV } from './support/calm.js'

const RUNS = Math.max(2, Math.floor(Number(process.env.FUZZ_RUNS ?? 200) / 25))
const HOUR = 3_600_000

/** Run files in the data directory's index/ (the sealed tier's dedupe runs). */
async function runFiles(dataDir: string): Promise<string[]> {
  return (await readdir(path.join(dataDir, 'index')).catch(() => [] as string[])).filter((n) => n.endsWith('.ids'))
}

/** Two distinct ids whose real hashes share the hi 32 bits (what the live index keys by, and the filter's block). */
function collidingPair(): [string, string] {
  const seen = new Map<number, string>()
  const h = new Uint32Array(2)
  for (let i = 0; ; i++) {
    const id = `clash-${i}`
    hashId64(id, h)
    const other = seen.get(h[0]!)
    if (other !== undefined) return [other, id]
    seen.set(h[0]!, id)
  }
}

test('ids sharing the 32-bit hash: the stored one is a duplicate or conflict, the other accepted, in the live and the sealed tier and after a restart', async (t) => {
  const [a, b] = collidingPair()
  const h = [new Uint32Array(2), new Uint32Array(2)]
  hashId64(a, h[0]!)
  hashId64(b, h[1]!)
  assert.equal(h[0]![0], h[1]![0], 'same hi word')
  const built = await build(t)
  const ea = event({ event_id: a })
  assert.equal((await post(built.app, [ea])).body.accepted, 1)
  await rollover(built.app)
  await built.app.store.settle()
  assert.deepEqual((await segments(built.app)).map((s) => s.state), ['archived', 'active'])
  assert.equal((await runFiles(built.dataDir)).length, 1, 'the sealed segment has its id run')
  const eb = event({ event_id: b })
  assert.equal((await post(built.app, [eb])).body.accepted, 1, 'the colliding id is not the stored one')
  assert.equal((await post(built.app, [ea])).body.duplicates, 1)
  assert.equal((await post(built.app, [{ ...ea, input_tokens: 7 }])).body.conflicts, 1)
  const app = await built.restart()
  assert.equal((await post(app, [ea, eb])).body.duplicates, 2, 'after a restart: both stored, both duplicates')
  assert.equal((await post(app, [{ ...eb, model: 'other' }])).body.conflicts, 1)
})

test('every id with the same 64-bit hash (same filter bits, same fences): replays are duplicates, changed ones conflicts, fresh ones accepted, over several sealed segments and a restart', async (t) => {
  const same: IdHash = (_id, out) => {
    out[0] = 0xdeadbeef
    out[1] = 0x01234567
  }
  const built = await build(t, {}, { idHash: same })
  const stored: Record<string, unknown>[] = []
  for (let seg = 0; seg < 3; seg++) {
    const batch = Array.from({ length: 40 }, () => event())
    assert.equal((await post(built.app, batch)).body.accepted, 40, 'fresh ids are accepted although every hash collides')
    stored.push(...batch)
    await rollover(built.app)
    await built.app.store.settle()
  }
  assert.equal((await segments(built.app)).filter((s) => s.state === 'archived').length, 3)
  const check = async (label: string, app = built.app) => {
    assert.equal((await post(app, stored)).body.duplicates, stored.length, `${label}: replays`)
    const changed = await post(app, stored.slice(0, 10).map((e) => ({ ...e, output_tokens: 999 })))
    assert.equal(changed.body.conflicts, 10, `${label}: conflicts`)
    assert.equal((await post(app, [event(), event()])).body.accepted, 2, `${label}: fresh`)
  }
  await check('sealed')
  await check('after restart', await built.restart())
})

test('a crash between a seal and its index part: replays stay duplicates, the sealer retries the part, a restart rebuilds it', async (t) => {
  let failIndex = true
  const hooks: StoreHooks = {
    beforeIndexPart: async () => {
      if (failIndex) throw new Error('injected crash before the index part')
    },
  }
  const built = await build(t, {}, hooks)
  const first = Array.from({ length: 25 }, () => event())
  await post(built.app, first)
  await rollover(built.app)
  await built.app.store.settle()
  assert.deepEqual((await segments(built.app)).map((s) => s.state), ['archived', 'active'], 'sealed although its index part failed')
  assert.deepEqual(await runFiles(built.dataDir), [], 'no run written')
  assert.equal((await post(built.app, first)).body.duplicates, 25, 'the live index still names the sealed ids')
  assert.equal((await post(built.app, [{ ...first[3], cost: '9' }])).body.conflicts, 1)

  // Restart with the part still missing: start-up rebuilds only that part.
  failIndex = false
  let app = await built.restart()
  assert.equal((await runFiles(built.dataDir)).length, 1, 'start-up rebuilt the missing run')
  assert.equal((await post(app, first)).body.duplicates, 25, 'after the rebuild')

  // A failure while running: the sealer's next run writes it.
  failIndex = true
  const second = Array.from({ length: 25 }, () => event())
  await post(app, second)
  await rollover(app)
  await app.store.settle()
  const before = (await runFiles(built.dataDir)).length
  failIndex = false
  await app.store.tick()
  await app.store.settle()
  assert.ok((await runFiles(built.dataDir)).length >= 1)
  assert.equal((await post(app, [...first, ...second])).body.duplicates, 50, 'every replay a duplicate once the retry wrote the run')
  app = await built.restart()
  assert.ok(before >= 1)
  assert.equal((await post(app, [...first, ...second])).body.duplicates, 50)
})

test('while the dedupe index loads the app is up: /readyz 503 with the reason, ingest 503 with Retry-After, reads answer; once loaded every replay is a duplicate', async (t) => {
  const built = await build(t)
  const stored = Array.from({ length: 10 }, () => event())
  await post(built.app, stored)
  await rollover(built.app)
  await built.app.store.settle()
  await post(built.app, [event()]) // one in the active segment too
  await built.app.close()
  const park = latch()
  const config = loadConfig({ TOKENLEDGER_DATA_DIR: built.dataDir, ...CALM_PRESSURE_ENV })
  const hooks: StoreHooks = {
    beforeIndexLoad: async () => {
      park.reached()
      await park.opened
    },
  }
  const app = await buildApp({ config, clock: built.clock, storeHooks: hooks, openBeforeIndex: true }, pino({ level: 'silent' }))
  built.app = app // build's clean-up closes it
  await park.arrived
  const ready = await app.inject({ url: '/readyz' })
  assert.equal(ready.statusCode, 503)
  assert.ok(ready.json().reasons.includes('the dedupe index is loading'), ready.body)
  const refused = await post(app, [event()])
  assert.equal(refused.status, 503)
  assert.ok(refused.headers['retry-after'] !== undefined, 'Retry-After')
  assert.match(JSON.stringify(refused.body), /dedupe index is loading/)
  const one = await app.inject({ url: `/v1/events/${encodeURIComponent(String(stored[4]!.event_id))}` })
  assert.equal(one.statusCode, 200, 'a read by id answers while loading (every segment is a candidate)')
  park.open()
  await app.store.indexLoaded()
  assert.equal((await app.inject({ url: '/readyz' })).statusCode, 200)
  assert.equal((await post(app, stored)).body.duplicates, 10)
  assert.equal((await post(app, [event()])).body.accepted, 1)
})

type Op =
  | { kind: 'post'; n: number }
  | { kind: 'replay'; pick: number[] }
  | { kind: 'conflict'; pick: number[] }
  | { kind: 'rollover' }
  | { kind: 'seal' }
  | { kind: 'restart' }
  | { kind: 'failIndex'; on: boolean }
  | { kind: 'retention'; advanceMs: number }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('post' as const), n: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ kind: fc.constant('replay' as const), pick: fc.array(fc.nat(), { minLength: 1, maxLength: 6 }) }),
  fc.record({ kind: fc.constant('conflict' as const), pick: fc.array(fc.nat(), { minLength: 1, maxLength: 3 }) }),
  fc.constant({ kind: 'rollover' as const }),
  fc.constant({ kind: 'seal' as const }),
  fc.constant({ kind: 'restart' as const }),
  fc.record({ kind: fc.constant('failIndex' as const), on: fc.boolean() }),
  fc.record({ kind: fc.constant('retention' as const), advanceMs: fc.integer({ min: 60_000, max: 50 * 60_000 }) }),
)

test('property: posts, replays, conflicting replays, rollovers, seals, restarts, failed index parts and retention never double-count, lose a conflict or accept a stored id', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 4, maxLength: 14 }), fc.boolean(), async (ops, weak) => {
      let failIndex = false
      const hooks: StoreHooks = {
        // A weak hash (16 values) makes most ids collide: every answer rests on the exact probe.
        ...(weak ? { idHash: (id: string, out: Uint32Array) => (hashId64(id, out), (out[0] = out[0]! & 0xf), (out[1] = 0)) } : {}),
        beforeIndexPart: async () => {
          if (failIndex) throw new Error('injected crash before the index part')
        },
      }
      // build's clean-up runs when each run ends (not at the test's end), so that fast-check can shrink a failure.
      const cleanups: Array<() => Promise<void>> = []
      const tt = { after: (fn: () => Promise<void>) => void cleanups.push(fn) } as unknown as TestContext
      try {
        const built = await build(tt, { TOKENLEDGER_EVENT_RETENTION: '1h', TOKENLEDGER_DETAIL_RETENTION: '1h', TOKENLEDGER_RETENTION_INTERVAL: 'off' }, hooks)
        let app = built.app
        /** The model: every stored event by id, with its timestamp. */
        const model: Record<string, unknown>[] = []
        /** Retained events (retention's cutoff is now - 1h); replays pick those a minute clear of it. */
        const counted = () => model.filter((e) => (e['timestamp'] as number) >= built.clock.nowMs() - HOUR)
        const alive = () => model.filter((e) => (e['timestamp'] as number) >= built.clock.nowMs() - HOUR + 60_000)
        for (const op of ops) {
          switch (op.kind) {
            case 'post': {
              const batch = Array.from({ length: op.n }, () => event({ timestamp: built.clock.nowMs() - 60_000 }))
              const r = await post(app, batch)
              assert.equal(r.body.accepted, op.n, `fresh ids accepted: ${JSON.stringify(r.body.results)}`)
              model.push(...batch)
              break
            }
            case 'replay': {
              const live = alive()
              if (live.length === 0) break
              const picked = [...new Set(op.pick.map((i) => live[i % live.length]!))]
              const r = await post(app, picked)
              assert.equal(r.body.duplicates, picked.length, `replays are duplicates: ${JSON.stringify(r.body.results)}`)
              break
            }
            case 'conflict': {
              const live = alive()
              if (live.length === 0) break
              const picked = [...new Set(op.pick.map((i) => live[i % live.length]!))]
              const r = await post(app, picked.map((e) => ({ ...e, input_tokens: (e['input_tokens'] as number) + 1 })))
              assert.equal(r.body.conflicts, picked.length, `changed replays are conflicts: ${JSON.stringify(r.body.results)}`)
              break
            }
            case 'rollover':
              await rollover(app)
              break
            case 'seal':
              await app.store.tick()
              await app.store.settle()
              break
            case 'restart':
              app = await built.restart()
              break
            case 'failIndex':
              failIndex = op.on
              break
            case 'retention':
              built.clock.advance(op.advanceMs)
              await app.store.retention()
              break
          }
          // From the event cutoff: before it, totals come from rollups, which outlive the raw events by design.
          const res = await app.inject({ url: `/v1/usage?from=${built.clock.nowMs() - HOUR}&to=${built.clock.nowMs() + HOUR}` })
          assert.equal(res.statusCode, 200, res.body)
          assert.equal(res.json().totals.requests, counted().length, `after ${op.kind}: every retained event counted once`)
        }
        // Finally every retained event is a duplicate, once more after a restart with the index parts allowed.
        failIndex = false
        for (const label of ['at the end', 'after a last restart']) {
          if (label !== 'at the end') app = await built.restart()
          const live = alive()
          if (live.length > 0) assert.equal((await post(app, live)).body.duplicates, live.length, label)
        }
      } finally {
        for (const fn of cleanups) await fn()
      }
    }),
    { numRuns: RUNS },
  )
})

