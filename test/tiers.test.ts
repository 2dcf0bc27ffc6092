// Proves the tiers: rollover (admin, size, age) keeps every event readable and
// every replay a duplicate, in the active, pending and archived tiers and
// across restarts; a seal interrupted at any step is finished at restart with
// catalog and files in agreement and nothing lost or counted twice; a failing
// seal is retried with backoff and shown in status; the 15-minute rollups give
// exactly the totals of a raw scan and of a model kept by the test (property).

import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import path from 'node:path'
import { test } from 'node:test'
import fc from 'fast-check'
import type { FastifyInstance } from 'fastify'
import { parseFilter } from '../src/query/filters.js'
import { usage, usageTotals } from '../src/query/read.js'
import { IdIndex } from '../src/store/idindex.js'
import { SEAL_STEPS, type SealStep } from '../src/store/tiers.js'
import type { StoreHooks } from '../src/store/options.js'
import { build, event, filesIn, latch, post, rollover, segments, T0, totals } from './helper.js'

const RUNS = Math.max(1, Math.floor(Number(process.env.FUZZ_RUNS ?? 200) / 10))

test('admin rollover: the old segment is pending, then archived; replays stay duplicates in every tier and after restart', async (t) => {
  const built = await build(t)
  const batch = Array.from({ length: 20 }, (_, i) => event({ input_tokens: 10 + i, cost: `0.00${i}` }))
  assert.equal((await post(built.app, batch)).body.accepted, 20)
  const before = await totals(built.app)

  const rolled = await rollover(built.app)
  assert.equal(rolled.rolled, true)
  assert.ok(rolled.segment_id !== null)
  assert.equal((await post(built.app, batch)).body.duplicates, 20, 'replay right after rollover')
  assert.equal((await post(built.app, [{ ...batch[0], input_tokens: 999 }])).body.conflicts, 1, 'changed replay after rollover')

  await built.app.store.settle()
  const segs = await segments(built.app)
  assert.deepEqual(segs.map((s) => s.state), ['archived', 'active'])
  assert.equal(segs[0]!.row_count, 20)
  assert.equal((await post(built.app, batch)).body.duplicates, 20, 'replay once archived')
  assert.deepEqual(await totals(built.app), before, 'totals unchanged by the tier move')

  const app = await built.restart()
  assert.equal((await post(app, batch)).body.duplicates, 20, 'replay after restart')
  assert.equal((await post(app, [{ ...batch[3], model: 'other' }])).body.conflicts, 1)
  const one = await app.inject({ url: `/v1/events/${encodeURIComponent(String(batch[5]!.event_id))}` })
  assert.equal(one.statusCode, 200)
  assert.equal(one.json().input_tokens, 15)
  assert.equal(one.json().cost, '0.005')
  assert.deepEqual(await totals(app), before)
  assert.equal((await rollover(app)).rolled, false, 'an empty active segment is not rolled over')
})

test('pending segments stay visible to every read until they are archived', async (t) => {
  const park = latch()
  let parkSeal = true
  const hooks: StoreHooks = {
    beforeSealStep: async (step) => {
      if (step !== 'copy' || !parkSeal) return
      park.reached()
      await park.opened
    },
  }
  const { app } = await build(t, {}, hooks)
  const batch = Array.from({ length: 5 }, () => event({ detail: { prompt: 'hello' } }))
  await post(app, batch)
  const before = await totals(app)
  await rollover(app)
  await park.arrived
  assert.deepEqual((await segments(app)).map((s) => s.state), ['pending', 'active'])
  assert.deepEqual(await totals(app), before, 'totals while pending')
  const one = await app.inject({ url: `/v1/events/${encodeURIComponent(String(batch[2]!.event_id))}` })
  assert.equal(one.statusCode, 200)
  assert.deepEqual(one.json().detail, { prompt: 'hello' }, 'detail is readable while pending')
  assert.equal((await post(app, batch)).body.duplicates, 5, 'dedupe sees the pending tier')
  parkSeal = false
  park.open()
  await app.store.settle()
  assert.deepEqual((await segments(app)).map((s) => s.state), ['archived', 'active'])
  assert.deepEqual(await totals(app), before)
})

test('a rollover holds the gate only for the swap: fresh appends go on while the old segment closes, its replays wait for it', async (t) => {
  const park = latch()
  const hooks: StoreHooks = {
    beforeRetireClose: async () => {
      park.reached()
      await park.opened
    },
  }
  const { app } = await build(t, {}, hooks)
  const first = Array.from({ length: 10 }, () => event())
  assert.equal((await post(app, first)).body.accepted, 10)
  const rolling = rollover(app)
  await park.arrived
  // The old segment is being closed (parked under retireLock): the gate is free.
  assert.equal(app.store.gateHeld(), false)
  const fresh = Array.from({ length: 10 }, () => event())
  assert.equal((await post(app, fresh)).body.accepted, 10, 'fresh events are committed while the old segment closes')
  // A replay of the old segment's events needs it: it waits (holding the gate) until the close is done.
  let replayDone = false
  const replay = post(app, first).then((r) => {
    replayDone = true
    return r
  })
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.equal(replayDone, false, 'a replay of the closing segment waits for it')
  park.open()
  const rolled = await rolling
  assert.equal(rolled.rolled, true)
  assert.ok(rolled.gate_held_ms < 50, `gate held ${rolled.gate_held_ms} ms for a swap`)
  assert.equal((await replay).body.duplicates, 10, 'and is a duplicate once it reads the pending file')
  await app.store.settle()
  assert.equal((await totals(app)).requests, 20)
})

test('replays of closed segments are probed before the gate; only live segments are probed under it', async (t) => {
  const { app } = await build(t)
  const old = Array.from({ length: 10 }, () => event())
  assert.equal((await post(app, old)).body.accepted, 10)
  await rollover(app)
  await app.store.settle()
  const recent = Array.from({ length: 5 }, () => event())
  assert.equal((await post(app, recent)).body.accepted, 5)
  const before = app.store.stats()

  // Archived ids alone: one probe of the archive, none under the gate.
  const r1 = await post(app, [...old.slice(0, 5), { ...old[5], input_tokens: 12345 }])
  assert.equal(r1.body.duplicates, 5)
  assert.equal(r1.body.conflicts, 1)
  const mid = app.store.stats()
  assert.equal(mid.probesBeforeGate - before.probesBeforeGate, 1)
  assert.equal(mid.probesUnderGate - before.probesUnderGate, 0, 'no probe of the archive under the gate')

  // Mixed with ids of the active segment: those are probed under the gate.
  const r2 = await post(app, [...old.slice(6), ...recent, event()])
  assert.equal(r2.body.duplicates, 9)
  assert.equal(r2.body.accepted, 1)
  const after = app.store.stats()
  assert.equal(after.probesBeforeGate - mid.probesBeforeGate, 1)
  assert.equal(after.probesUnderGate - mid.probesUnderGate, 1)
  assert.equal((await totals(app)).requests, 16)
})

test('rollover by size: a small ROLLOVER_BYTES rolls and seals while ingest goes on', async (t) => {
  const { app } = await build(t, { TOKENLEDGER_ROLLOVER_BYTES: '65536' })
  const sent: Array<Record<string, unknown>> = []
  for (let i = 0; i < 12; i++) {
    const batch = Array.from({ length: 200 }, () => event({ detail: { body: 'x'.repeat(200) } }))
    sent.push(...batch)
    assert.equal((await post(app, batch)).body.accepted, 200)
    await app.store.settle()
  }
  const segs = await segments(app)
  assert.ok(segs.filter((s) => s.state === 'archived').length >= 2, `expected several archived segments: ${JSON.stringify(segs)}`)
  assert.equal(segs.reduce((n, s) => n + s.row_count, 0), 2400)
  assert.equal((await totals(app)).requests, 2400)
  assert.equal((await post(app, sent.slice(0, 1000))).body.duplicates, 1000)
})

test('rollover by age: a quiet segment rolls once its first event is ROLLOVER_AGE old', async (t) => {
  const { app, clock } = await build(t, { TOKENLEDGER_ROLLOVER_AGE: '1h' })
  await app.store.tick()
  assert.equal(app.store.stats().rollovers, 0, 'an empty segment never rolls over for age')
  await post(app, [event()])
  clock.advance(59 * 60_000)
  await app.store.tick()
  assert.equal(app.store.stats().rollovers, 0)
  clock.advance(2 * 60_000)
  await app.store.tick()
  await app.store.settle()
  assert.equal(app.store.stats().rollovers, 1)
  assert.equal(app.store.stats().lastRollover?.reason, 'age')
  assert.deepEqual((await segments(app)).map((s) => s.state), ['archived', 'active'])
})

for (const failStep of SEAL_STEPS) {
  test(`a seal interrupted before "${failStep}" is finished at restart: catalog and files agree, nothing lost or doubled`, async (t) => {
    let failAt: SealStep | null = failStep
    const hooks: StoreHooks = {
      beforeSealStep: async (step) => {
        if (step === failAt) throw new Error(`injected crash before ${step}`)
      },
    }
    const built = await build(t, {}, hooks)
    const batch = Array.from({ length: 30 }, (_, i) => event({ timestamp: T0 - 3_600_000 + i * 97_000, cost: '0.25', detail: i % 2 === 1 ? { n: i } : undefined }))
    await post(built.app, batch)
    const expected = await totals(built.app)
    await rollover(built.app)
    await built.app.store.settle()
    if (failStep !== 'cleanup') {
      const status = (await built.app.inject({ url: '/v1/status' })).json()
      assert.equal(status.sealing.failing.length, 1, 'the failure shows in status')
      assert.match(status.sealing.failing[0].seal.last_error, /injected crash/)
    }
    // Restart on the state the interruption left (the close does not finish the seal).
    failAt = null
    const app = await built.restart()
    await app.store.settle()
    const segs = await segments(app)
    assert.deepEqual(segs.map((s) => s.state), ['archived', 'active'])
    const files = await filesIn(built.dataDir)
    assert.deepEqual(files.pending, [], 'no pending file left')
    assert.deepEqual(files.orphaned, [], 'nothing orphaned')
    const name = `seg-${String(segs[0]!.id).padStart(12, '0')}`
    assert.deepEqual(files.archive, [`${name}.details.duckdb`, `${name}.duckdb`], 'exactly the archived segment and its detail file, no temp file')
    const withDetail = await app.inject({ url: `/v1/events/${encodeURIComponent(String(batch[7]!.event_id))}` })
    assert.deepEqual(withDetail.json().detail, { n: 7 }, 'the detail is read from the sealed detail file')
    const catalog = await app.store.catalog.list()
    assert.deepEqual(catalog.map((r) => [r.id, r.state]), segs.map((s) => [s.id, s.state]), 'catalog agrees with the files')
    assert.deepEqual(await totals(app), expected, 'raw totals: nothing lost or doubled')
    const aligned = await app.inject({ url: `/v1/usage?from=${T0 - 2 * 3_600_000}&to=${T0}` })
    assert.deepEqual(aligned.json().totals, expected, 'rollup totals: applied exactly once')
    assert.equal((await post(app, batch)).body.duplicates, 30)
  })
}

test('a failing seal is retried with exponential backoff and shown in status until it succeeds, rollups applied once', async (t) => {
  // The failures come after the catalog recorded the segment: each retry records again, which must change nothing.
  let failures = 2
  const { app, clock } = await build(t, { TOKENLEDGER_SEAL_RETRY: '1s' }, {
    beforeSealStep: async (step) => {
      if (step === 'swap' && failures > 0) {
        failures--
        throw new Error('disk hiccup')
      }
    },
  })
  await post(app, [event({ cost: '1.5' }), event({ cost: '2' })])
  const aligned = async () => (await app.inject({ url: `/v1/usage?from=${T0 - 3_600_000}&to=${T0}` })).json().totals
  const expected = await aligned()
  await rollover(app)
  await app.store.settle()
  const seal = () => segments(app).then((s) => s[0]!)
  assert.equal((await seal()).state, 'pending')
  assert.equal((await seal()).seal?.attempts, 1)
  await app.store.tick() // not due yet: no new attempt
  await app.store.settle()
  assert.equal((await seal()).seal?.attempts, 1)
  clock.advance(1_000)
  await app.store.tick()
  await app.store.settle()
  assert.equal((await seal()).seal?.attempts, 2, 'retried after 1 s')
  clock.advance(1_000)
  await app.store.tick()
  await app.store.settle()
  assert.equal((await seal()).state, 'pending', 'the second retry waits 2 s')
  clock.advance(1_000)
  await app.store.tick()
  await app.store.settle()
  assert.equal((await seal()).state, 'archived')
  const status = (await app.inject({ url: '/v1/status' })).json()
  assert.deepEqual(status.sealing.failing, [])
  assert.equal(status.sealing.failures, 2)
  assert.deepEqual(await aligned(), expected, 'rollups counted once despite three record attempts')
  assert.equal(expected.cost, '3.5')
})

test('rollups give exactly the totals (and group totals) of a raw scan and of the test model, for any window, filter and grouping (property)', async (t) => {
  const keys = ['k1', 'k2', 'k3']
  const models = ['m1', 'm2']
  const statuses = [200, 429, 500]
  const ev = fc.record({
    offsetS: fc.oneof(fc.integer({ min: 1, max: 6 * 3600 }), fc.integer({ min: 1, max: 24 }).map((q) => q * 900)),
    key: fc.constantFrom(...keys),
    model: fc.constantFrom(...models),
    status: fc.constantFrom(...statuses),
    // Up to 2^53 - 1: rollup token sums are stored as the sums of the high and low 32 bits.
    input: fc.oneof(fc.integer({ min: 0, max: 1_000_000 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER })),
    cost: fc.option(fc.bigInt({ min: 0n, max: 10n ** 15n }), { nil: null }),
    currency: fc.constantFrom('USD', 'EUR'),
    replay: fc.boolean(),
  })
  const step = fc.record({ events: fc.array(ev, { minLength: 1, maxLength: 30 }), rollover: fc.boolean(), settle: fc.boolean() })
  const query = fc.record({
    fromS: fc.oneof(fc.integer({ min: 0, max: 7 * 3600 }), fc.integer({ min: 0, max: 28 }).map((q) => q * 900)),
    lenS: fc.oneof(fc.integer({ min: 1, max: 7 * 3600 }), fc.integer({ min: 1, max: 28 }).map((q) => q * 900)),
    key: fc.option(fc.subarray(keys, { minLength: 1 }), { nil: undefined }),
    status: fc.option(fc.constantFrom('ok', 'error', '429'), { nil: undefined }),
  })
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 5 }), fc.array(query, { minLength: 1, maxLength: 6 }), async (steps, queries) => {
      const { app } = await build(t)
      const stored: Array<{ tsMs: number; key: string; model: string; status: number; input: number; cost: bigint | null; currency: string }> = []
      const sent: Array<Record<string, unknown>> = []
      const base = T0 - 7 * 3_600_000
      for (const s of steps) {
        const batch = s.events.map((e) => {
          if (e.replay && sent.length > 0) return sent[e.input % sent.length]!
          const tsMs = base + e.offsetS * 1000
          const cost = e.cost === null ? undefined : `${e.cost / 10n ** 12n}.${String(e.cost % 10n ** 12n).padStart(12, '0')}`
          const raw = event({ timestamp: tsMs, key_id: e.key, model: e.model, status_code: e.status, input_tokens: e.input, output_tokens: 1, cost, currency: e.currency })
          stored.push({ tsMs, key: e.key, model: e.model, status: e.status, input: e.input, cost: e.cost, currency: e.currency })
          sent.push(raw)
          return raw
        })
        const res = await post(app, batch)
        assert.equal(res.status, 200)
        if (s.rollover) await rollover(app)
        if (s.settle) await app.store.settle()
      }
      for (const q of queries) {
        const fromMs = base + q.fromS * 1000
        const toMs = fromMs + q.lenS * 1000
        const raw: Record<string, string | string[]> = { from: String(fromMs), to: String(toMs) }
        if (q.key) raw.key_id = q.key
        if (q.status) raw.status = [q.status]
        const filter = parseFilter(raw, { nowMs: T0, eventRetentionMs: 30 * 86_400_000, maxFutureSkewMs: 300_000 })
        const viaRollups = await usageTotals(app.store, filter, 'auto')
        const viaRaw = await usageTotals(app.store, filter, 'raw')
        assert.deepEqual(viaRollups, viaRaw, `rollups != raw for ${JSON.stringify(raw)}`)
        const match = stored.filter(
          (e) =>
            e.tsMs >= fromMs && e.tsMs < toMs && (!q.key || q.key.includes(e.key)) &&
            (!q.status || (q.status === 'ok' ? e.status < 400 : q.status === 'error' ? e.status >= 400 : e.status === Number(q.status))),
        )
        assert.equal(viaRaw.requests, match.length, `requests for ${JSON.stringify(raw)}`)
        assert.equal(viaRaw.errors, match.filter((e) => e.status >= 400).length)
        assert.equal(BigInt(viaRaw.input_tokens), match.reduce((n, e) => n + BigInt(e.input), 0n), `input_tokens for ${JSON.stringify(raw)}`)
        assert.equal(viaRaw.cost_missing, match.filter((e) => e.cost === null).length)
        // Grouped: every group equals its raw scan and the model's count of that group.
        const grouped = await usage(app.store, filter, ['key_id', 'model'], 'auto')
        assert.deepEqual(grouped, await usage(app.store, filter, ['key_id', 'model'], 'raw'), `grouped rollups != raw for ${JSON.stringify(raw)}`)
        assert.deepEqual(grouped.totals, viaRollups)
        const modelGroups = new Map<string, number>()
        for (const e of match) modelGroups.set(JSON.stringify([e.key, e.model]), (modelGroups.get(JSON.stringify([e.key, e.model])) ?? 0) + 1)
        assert.deepEqual(
          new Map(grouped.groups.map((g) => [JSON.stringify([g.key.key_id, g.key.model]), g.totals.requests])),
          modelGroups,
          `groups for ${JSON.stringify(raw)}`,
        )
        for (const currency of ['USD', 'EUR']) {
          const sum = match.filter((e) => e.currency === currency && e.cost !== null).reduce((n, e) => n + e.cost!, 0n)
          const got = viaRaw.cost_by_currency[currency]
          assert.equal(got === undefined ? 0n : BigInt(got.replace('.', '').padEnd(got.includes('.') ? got.indexOf('.') + 12 : got.length + 12, '0')), sum, `${currency} cost`)
        }
      }
      await app.close()
    }),
    { numRuns: RUNS },
  )
})

test('the dedupe index: exact misses, hits name their segment, dropped segments vanish, growth keeps every entry', () => {
  const index = new IdIndex(16)
  for (let i = 0; i < 200_000; i++) index.add(`evt-${i}`, 1 + (i % 7))
  assert.equal(index.size, 200_000)
  for (let i = 0; i < 200_000; i += 997) assert.deepEqual(index.candidates(`evt-${i}`), [1 + (i % 7)])
  let falseHits = 0
  for (let i = 0; i < 200_000; i++) if (index.candidates(`other-${i}`).length > 0) falseHits++
  assert.ok(falseHits <= 2, `48-bit hashes should almost never collide: ${falseHits} false hits`)
  index.dropSegment(3)
  assert.deepEqual(index.candidates('evt-2'), [], 'entries of a dropped segment are ignored')
  assert.deepEqual(index.candidates('evt-3'), [4])
  assert.ok(index.bytes / index.size < 24, `compact: ${index.bytes / index.size} bytes an entry`)
})

test('a data directory of the single-file release is adopted: its events stay readable and deduplicated', async (t) => {
  const built = await build(t)
  const batch = Array.from({ length: 7 }, () => event())
  await post(built.app, batch)
  const before = await totals(built.app)
  await built.app.close()
  // Recreate the first release's layout: one active file under its fixed name, no catalog.
  const { rename, rm } = await import('node:fs/promises')
  const [file] = (await readdir(path.join(built.dataDir, 'active'))).filter((f) => f.endsWith('.duckdb'))
  await rename(path.join(built.dataDir, 'active', file!), path.join(built.dataDir, 'active', 'segment-active.duckdb'))
  for (const dir of ['pending', 'archive', 'orphaned']) await rm(path.join(built.dataDir, dir), { recursive: true })
  await rm(path.join(built.dataDir, 'catalog.duckdb'))
  const app = await built.restart()
  assert.deepEqual(await totals(app), before)
  assert.equal((await post(app, batch)).body.duplicates, 7)
  await rollover(app)
  await app.store.settle()
  assert.deepEqual((await segments(app)).map((s) => s.state), ['archived', 'active'])
  assert.deepEqual(await totals(app), before)
})

test('a catalog written with HUGEINT rollup token sums is migrated to hi/lo columns with identical totals', async () => {
  const { DuckDBInstance } = await import('@duckdb/node-api')
  const { DuckDBCatalog, rollupTokenSum } = await import('../src/store/catalog.js')
  const { TOKEN_COLUMNS } = await import('../src/store/schema.js')
  const db = await DuckDBInstance.create(':memory:')
  const conn = await db.connect()
  try {
    await conn.run(`CREATE TABLE rollups (
      segment_id BIGINT NOT NULL, bucket TIMESTAMP NOT NULL,
      key_id VARCHAR NOT NULL, team_id VARCHAR, user_id VARCHAR, customer_id VARCHAR,
      provider VARCHAR NOT NULL, model VARCHAR NOT NULL, status_code SMALLINT NOT NULL, currency VARCHAR NOT NULL,
      requests BIGINT NOT NULL, errors BIGINT NOT NULL,
      input_tokens HUGEINT NOT NULL, output_tokens HUGEINT NOT NULL, cache_read_tokens HUGEINT NOT NULL,
      cache_write_tokens HUGEINT NOT NULL, reasoning_tokens HUGEINT NOT NULL,
      cost DECIMAL(38,12), cost_missing BIGINT NOT NULL)`)
    // Sums past 2^32 and past 2^64 (a HUGEINT sum of many safe integers).
    const big = [0n, 1n, 4_294_967_295n, 4_294_967_296n, 9_007_199_254_740_991n * 3000n, 18_446_744_073_709_551_617n]
    for (const [i, v] of big.entries()) {
      await conn.run(
        `INSERT INTO rollups VALUES (1, TIMESTAMP '2026-01-01 00:00:00', 'k', NULL, NULL, NULL, 'p', 'm', 200, 'USD', 1, 0, ${v}, ${v + 1n}, ${i}, 0, ${v}, 1.5, 0)`,
      )
    }
    const before = await conn.runAndReadAll(`SELECT ${TOKEN_COLUMNS.map((c) => `sum(${c})::VARCHAR`).join(', ')}, sum(cost)::VARCHAR, count(*) FROM rollups`)
    await DuckDBCatalog.open(conn)
    const cols = await conn.runAndReadAll(`SELECT column_name FROM duckdb_columns() WHERE table_name = 'rollups'`)
    assert.ok(!cols.getRows().some((r) => r[0] === 'input_tokens'), 'old HUGEINT columns are gone')
    const after = await conn.runAndReadAll(`SELECT ${TOKEN_COLUMNS.map((c) => `${rollupTokenSum(c)}::VARCHAR`).join(', ')}, sum(cost)::VARCHAR, count(*) FROM rollups`)
    assert.deepEqual(after.getRows(), before.getRows())
    await DuckDBCatalog.open(conn) // a second open is a no-op
  } finally {
    conn.closeSync()
    db.closeSync()
  }
})
