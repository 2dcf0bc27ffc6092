// Proves the coarse rollups (per 15 minutes, hour and day, summed over
// segments, without user_id): the cells a window is split into cover it
// exactly, never cross a bucket start and are as coarse as they may be; every
// answer read through them (totals, groups, series in several zones, the
// values of each dimension) equals a raw scan; a segment archived while a
// query reads it raw is counted once; a live segment's edge cells are taken
// from its rollups whole only when they hold nothing outside the window; retention and a catalog from before
// them leave them equal to the per-segment rollups.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { bucketStarts, type Bucket } from '../src/query/calendar.js'
import { parseFilter, type Dimension } from '../src/query/filters.js'
import { dimensionValues, timeseries, usage } from '../src/query/read.js'
import { coarseCells } from '../src/query/window.js'
import { BUCKET_US, COARSE_LEVELS, USERS_DAILY } from '../src/store/catalog.js'
import { LIVE_VIEW_MAX_ROWS } from '../src/store/segment.js'
import type { StoreHooks } from '../src/store/options.js'
import { build, event, latch, post, rollover, T0 } from './helper.js'

const RUNS = Math.max(1, Math.floor(Number(process.env.FUZZ_RUNS ?? 200) / 10))
const MIN = 60_000
const HOUR = 60 * MIN
const DAY = 24 * HOUR
const Q = BUCKET_US

test('coarse cells cover the range exactly, never cross a break, and are as coarse as the breaks allow (property)', () => {
  const quarter = fc.integer({ min: -3 * 96, max: 40 * 96 })
  fc.assert(
    fc.property(quarter, fc.integer({ min: 1, max: 20 * 96 }), fc.array(fc.integer({ min: -100, max: 21 * 96 }), { maxLength: 40 }), (fromQ, lenQ, breaksQ) => {
      const from = (Math.floor(1_790_000_000_000_000 / Q) + fromQ) * Q
      const to = from + lenQ * Q
      const breaks = [...new Set(breaksQ.map((b) => from + b * Q))].sort((a, b) => a - b)
      const levels = coarseCells(from, to, breaks)
      // Exact cover: the ranges of every level, sorted, tile [from, to).
      const all = levels.flatMap((ranges, level) => ranges.map(([a, b]) => ({ a, b, level }))).sort((x, y) => x.a - y.a)
      let at = from
      for (const r of all) {
        assert.equal(r.a, at, 'no gap, no overlap')
        assert.ok(r.b > r.a)
        at = r.b
      }
      assert.equal(at, to)
      for (const [level, ranges] of levels.entries()) {
        const w = COARSE_LEVELS[level]!.us
        for (const [a, b] of ranges) {
          assert.equal(a % w, 0, `level ${level} range starts on its grid`)
          assert.equal(b % w, 0, `level ${level} range ends on its grid`)
          // A break strictly inside a range must fall between two of its cells.
          for (const s of breaks) if (s > a && s < b) assert.equal(s % w, 0, `break ${s} inside a level-${level} cell`)
        }
        // As coarse as allowed: no finer range holds a whole coarser cell with no break inside it.
        for (let coarser = level + 1; coarser < COARSE_LEVELS.length; coarser++) {
          const cw = COARSE_LEVELS[coarser]!.us
          for (const [a, b] of ranges) {
            for (let c = Math.ceil(a / cw) * cw; c + cw <= b; c += cw) {
              assert.ok(breaks.some((s) => s > c && s < c + cw), `level ${level} covers the whole level-${coarser} cell at ${c}`)
            }
          }
        }
      }
    }),
    { numRuns: 2000 },
  )
})

const KEYS = ['k1', 'k2', 'k3']
const USERS = ['u1', 'u2', 'u3', null]
const MODELS = ['m1', 'm2']
const ZONES = ['UTC', 'Europe/Berlin', 'Asia/Kolkata', 'America/St_Johns']

test('totals, groups, series and dimension values read through the coarse rollups equal a raw scan, with and without user_id (property)', async (t) => {
  const base = Math.floor((T0 - 5 * DAY) / DAY) * DAY
  const ev = fc.record({
    atS: fc.oneof(fc.integer({ min: 0, max: 4 * 86_400 }), fc.integer({ min: 0, max: 4 * 96 }).map((q) => q * 900)),
    key: fc.constantFrom(...KEYS),
    user: fc.constantFrom(...USERS),
    model: fc.constantFrom(...MODELS),
    status: fc.constantFrom(200, 200, 500),
    input: fc.integer({ min: 0, max: 100_000 }),
    // Up to the largest cost an event may carry (sums past 2^64 units of 10^-12).
    cost: fc.option(fc.oneof(fc.integer({ min: 0, max: 9_999_999 }).map((c) => `${c / 10_000}`), fc.constant('999999999999999.999999999999')), { nil: null }),
  })
  const step = fc.record({ events: fc.array(ev, { minLength: 1, maxLength: 25 }), cut: fc.constantFrom('none', 'rollover', 'seal', 'seal') })
  const dims = fc.record(
    {
      key_id: fc.subarray(KEYS, { minLength: 1 }),
      team_id: fc.subarray(['t1', 't2'], { minLength: 1 }),
      user_id: fc.subarray(['u1', 'u2', 'u3'], { minLength: 1 }),
      model: fc.subarray(MODELS, { minLength: 1 }),
    },
    { requiredKeys: [] },
  )
  const query = fc.record({
    // Aligned or not, starting before the events or among them, short or several days.
    fromS: fc.oneof(fc.integer({ min: -3600, max: 3 * 86_400 }), fc.integer({ min: -4, max: 3 * 96 }).map((q) => q * 900)),
    lenS: fc.oneof(fc.integer({ min: 1, max: 5 * 86_400 }), fc.integer({ min: 1, max: 5 * 96 }).map((q) => q * 900)),
    // Half the questions have no filter but the window (the users' daily rollup answers those).
    dims: fc.option(dims, { nil: undefined, freq: 1 }),
    groupBy: fc.subarray(['key_id', 'user_id', 'model'] as Dimension[]),
    tz: fc.constantFrom(...ZONES),
    bucket: fc.constantFrom<Bucket>('1h', '1d'),
    // Whole UTC days around every event: each one counted through a day cell.
    whole: fc.boolean(),
  })
  await fc.assert(
    // How often the active segment's live rollups are refreshed: after every commit, every few events, never.
    fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 4 }), fc.array(query, { minLength: 1, maxLength: 4 }), fc.constantFrom(1, 7, 1e9), async (steps, queries, every) => {
      // A server per run: a question without filters sees only this run's events.
      const { app } = await build(t, {}, { liveRollupEveryRows: every, liveRollupEveryMs: 0 })
      for (const s of steps) {
        const batch = s.events.map((e) =>
          event({
            timestamp: base + e.atS * 1000,
            team_id: e.key === 'k1' ? 't1' : 't2',
            key_id: e.key,
            user_id: e.user ?? undefined,
            model: e.model,
            status_code: e.status,
            input_tokens: e.input,
            cost: e.cost ?? undefined,
          }),
        )
        assert.equal((await post(app, batch)).body.accepted, batch.length)
        if (s.cut !== 'none') await rollover(app)
        if (s.cut === 'seal') await app.store.settle()
      }
      for (const q of queries) {
        const fromMs = q.whole ? base - DAY : base + q.fromS * 1000
        const toMs = q.whole ? base + 5 * DAY : fromMs + q.lenS * 1000
        const raw: Record<string, string | string[]> = { from: String(fromMs), to: String(toMs), ...(q.dims ?? {}) }
        const filter = parseFilter(raw, { nowMs: T0, eventRetentionMs: 30 * DAY, maxFutureSkewMs: 300_000 })
        const what = JSON.stringify({ ...raw, groupBy: q.groupBy })
        assert.deepEqual(await usage(app.store, filter, q.groupBy, 'auto', T0), await usage(app.store, filter, q.groupBy, 'raw', T0), `usage ${what}`)
        const starts = bucketStarts(q.tz, q.bucket, fromMs, Number(raw.to), 10_000)!
        if (starts.startsMs.every((s) => s % (Q / 1000) === 0)) {
          const startsUs = starts.startsMs.map((s) => s * 1000)
          const all = (groups: unknown[]) => groups as never
          assert.deepEqual(
            await timeseries(app.store, filter, q.groupBy, startsUs, all, 'auto', T0),
            await timeseries(app.store, filter, q.groupBy, startsUs, all, 'raw', T0),
            `series ${q.tz} ${q.bucket} ${what}`,
          )
        }
        assert.deepEqual(await dimensionValues(app.store, filter, T0, 'auto'), await dimensionValues(app.store, filter, T0, 'raw'), `dimensions ${what}`)
      }
      await app.close()
    }),
    // A server per run makes shrinking slow: the first counterexample is reported as found.
    { numRuns: RUNS, endOnFailure: true },
  )
})

test("the active segment's live rollups plus the events appended since answer like a raw scan, and take the events they hold", async (t) => {
  const { app } = await build(t, {}, { liveRollupEveryRows: 50, liveRollupEveryMs: 0 })
  const base = Math.floor((T0 - DAY) / HOUR) * HOUR
  const at = (i: number) => base + ((i * 7919) % (3 * 3600)) * 1000 + (i % 3) * 333
  const batch = (from: number, n: number) =>
    Array.from({ length: n }, (_, k) => {
      const i = from + k
      return event({ timestamp: at(i), key_id: KEYS[i % 3], user_id: USERS[i % 4] ?? undefined, model: MODELS[i % 2], status_code: i % 5 === 0 ? 500 : 200, input_tokens: i * 13, cost: i % 7 === 0 ? undefined : `${i}.000000000001` })
    })
  const upto = () =>
    app.store.snapshot(async (snap) => {
      const active = snap.parts.find((p) => p.state === 'active')!
      return active.live(async (conn) => Number((await conn.runAndReadAll('SELECT coalesce(max(rows), 0) FROM live_rollups_upto')).getRows()[0]![0]))
    })
  // Three late events: the cells of 3h-3h15 and 3h30-3h45 hold only them.
  const late = [3 * HOUR + MIN, 3 * HOUR + 2 * MIN, 3 * HOUR + 31 * MIN].map((d, k) => event({ timestamp: base + d, key_id: KEYS[k], model: MODELS[k % 2], input_tokens: 1000 + k, cost: '0.25' }))
  assert.equal((await post(app, [...batch(0, 60), ...late])).body.accepted, 63)
  await app.store.settle()
  assert.equal(await upto(), 63, 'a commit of 50 or more events refreshes them')
  // Appended after the refresh, into the edge cell 3h30-3h45: one inside the window ending at 3h35, one past it.
  const tail = [event({ timestamp: base + 3 * HOUR + 33 * MIN, key_id: 'k1', cost: '0.5' }), event({ timestamp: base + 3 * HOUR + 40 * MIN, key_id: 'k2', cost: '0.75' })]
  assert.equal((await post(app, [...batch(60, 10), ...tail])).body.accepted, 12)
  await app.store.settle()
  assert.equal(await upto(), 63, 'twelve more are read from the events (the tail)')
  const windows: Array<[number, number]> = [
    [base - HOUR, base + 4 * HOUR], // aligned, all of them
    [base + 10 * MIN + 7_000, base + 2 * HOUR + 3 * MIN], // unaligned edges
    [base + 30 * MIN, base + 45 * MIN], // one bucket
    [base + 3 * HOUR + 30_000, base + 3 * HOUR + 35 * MIN], // edge cells holding only events inside the window
    [base + 3 * HOUR + 90_000, base + 3 * HOUR + 30 * MIN + 30_000], // edge cells holding events outside it too
  ]
  for (const [fromMs, toMs] of windows) {
    for (const dims of [{}, { key_id: ['k1', 'k3'] }, { model: ['m2'], team_id: ['t2'] }]) {
      const filter = parseFilter({ from: String(fromMs), to: String(toMs), ...dims }, { nowMs: T0, eventRetentionMs: 30 * DAY, maxFutureSkewMs: 300_000 })
      for (const groupBy of [[], ['key_id'], ['model', 'key_id']] as Dimension[][]) {
        const what = JSON.stringify({ fromMs, toMs, dims, groupBy })
        assert.deepEqual(await usage(app.store, filter, groupBy, 'auto', T0), await usage(app.store, filter, groupBy, 'raw', T0), `usage ${what}`)
        for (const tz of ['UTC', 'Asia/Kolkata']) {
          const starts = bucketStarts(tz, '1h', fromMs, toMs, 10_000)!
          const startsUs = starts.startsMs.map((s) => s * 1000)
          const all = (groups: unknown[]) => groups as never
          assert.deepEqual(
            await timeseries(app.store, filter, groupBy, startsUs, all, 'auto', T0),
            await timeseries(app.store, filter, groupBy, startsUs, all, 'raw', T0),
            `series ${tz} ${what}`,
          )
        }
      }
      assert.deepEqual(await dimensionValues(app.store, filter, T0, 'auto'), await dimensionValues(app.store, filter, T0, 'raw'), `dimensions ${JSON.stringify({ fromMs, toMs, dims })}`)
    }
  }
  const totals = await usage(app.store, parseFilter({ from: String(base - HOUR), to: String(base + 4 * HOUR) }, { nowMs: T0, eventRetentionMs: 30 * DAY, maxFutureSkewMs: 300_000 }), [], 'auto', T0)
  assert.equal(Number(totals.totals.requests), 75, 'every event once: 63 through the rollups, 12 raw')
  const edgeCells = parseFilter({ from: String(base + 3 * HOUR + 30_000), to: String(base + 3 * HOUR + 35 * MIN) }, { nowMs: T0, eventRetentionMs: 30 * DAY, maxFutureSkewMs: 300_000 })
  assert.equal(Number((await usage(app.store, edgeCells, [], 'auto', T0)).totals.requests), 4, 'the late events and the tail event inside the window')
  // Both edge cells of that window hold only rolled-up events inside it: they come from the rollups whole.
  const cells = await app.store.snapshot(async (snap) =>
    snap.parts.find((p) => p.state === 'active')!.live(async (conn) => (await conn.runAndReadAll(`SELECT epoch_us(bucket), epoch_us(min_ts), epoch_us(max_ts) FROM live_cells ORDER BY 1`)).getRows().map((r) => r.map(Number))),
  )
  const cellOf = (ms: number) => cells.find(([b]) => b === Math.floor((ms * 1000) / Q) * Q)
  assert.deepEqual(cellOf(base + 3 * HOUR)?.slice(1), [(base + 3 * HOUR + MIN) * 1000, (base + 3 * HOUR + 2 * MIN) * 1000], 'the cell of 3h holds only the two late events')
  assert.deepEqual(cellOf(base + 3 * HOUR + 30 * MIN)?.slice(1), [(base + 3 * HOUR + 31 * MIN) * 1000, (base + 3 * HOUR + 31 * MIN) * 1000], 'the cell of 3h30: the late event; the tail is not rolled up yet')
})

test('the live rollups in memory plus the events appended since answer like a raw scan, for any filter, grouping and window (property)', async (t) => {
  const { app } = await build(t, {}, { liveRollupEveryRows: 40, liveRollupEveryMs: 0 })
  const base = Math.floor((T0 - DAY) / HOUR) * HOUR
  const span = 3 * HOUR
  const eventArb = fc.record({
    at: fc.integer({ min: 0, max: span - 1 }),
    key: fc.constantFrom('k1', 'k2', 'k3'),
    team: fc.constantFrom('t1', 't2', null),
    customer: fc.constantFrom('c1', null),
    model: fc.constantFrom(['openai', 'm1'], ['openai', 'm2'], ['anthropic', 'm3']),
    status: fc.constantFrom(200, 201, 302, 404, 429, 500),
    currency: fc.constantFrom('USD', 'EUR'),
    cost: fc.option(fc.integer({ min: 0, max: 10 ** 9 }), { nil: null }),
    input: fc.integer({ min: 0, max: 5000 }),
  })
  type EventDraw = typeof eventArb extends fc.Arbitrary<infer T> ? T : never
  const toEvent = (e: EventDraw) =>
    event({
      timestamp: base + e.at,
      key_id: e.key,
      ...(e.team === null ? {} : { team_id: e.team }),
      ...(e.customer === null ? {} : { customer_id: e.customer }),
      provider: e.model[0],
      model: e.model[1],
      status_code: e.status,
      currency: e.currency,
      input_tokens: e.input,
      cost: e.cost === null ? undefined : `${Math.floor(e.cost / 1e6)}.${String(e.cost % 1e6).padStart(6, '0')}001`,
    })
  // Four commits that each refresh the rollups, then a tail that stays raw.
  const ats: number[] = []
  for (const n of [60, 45, 80, 50, 25]) {
    const sample = fc.sample(eventArb, n)
    ats.push(...sample.map((e) => e.at))
    const res = await post(app, sample.map(toEvent))
    assert.equal(res.body.accepted, n, JSON.stringify(res.body).slice(0, 400))
    await app.store.settle()
  }
  const status0 = await app.inject({ url: '/v1/status' })
  assert.equal((status0.json() as { live_rollups: unknown }).live_rollups, null, 'no query has asked for them yet: none in memory')
  const view = await app.store.snapshot(async (snap) => snap.parts.find((p) => p.state === 'active')!.liveRollups())
  assert.ok(view !== null && view.upto === 235 && view.rows.length > 0, `the rollups in memory hold the first 235 events (${String(view?.upto)})`)
  const status = await app.inject({ url: '/v1/status' })
  assert.deepEqual((status.json() as { live_rollups: unknown }).live_rollups, { rolled_up_events: 235, rows: view.rows.length }, '/v1/status shows the ones read for the query')
  const opts = { nowMs: T0, eventRetentionMs: 30 * DAY, maxFutureSkewMs: 300_000 }
  // Aligned, anywhere, or at an event's own instant or a cell's oldest or newest rolled-up one (or just past it).
  const bounds = [...view.cells.values()].flat().map((us) => us / 1000 - base)
  const edge = fc.oneof(
    fc.integer({ min: -2, max: 14 }).map((q) => q * 15 * MIN),
    fc.integer({ min: -HOUR, max: span + HOUR }),
    fc.constantFrom(...ats, ...bounds).chain((a) => fc.constantFrom(a, a + 1)),
  )
  await fc.assert(
    fc.asyncProperty(
      edge,
      edge,
      fc.subarray(['key_id', 'team_id', 'customer_id', 'provider', 'model'] as Dimension[], { maxLength: 2 }),
      fc.record({ key_id: fc.subarray(['k1', 'k3', 'kx']), team_id: fc.subarray(['t1', 't2']), provider: fc.subarray(['anthropic']) }, { requiredKeys: [] }),
      fc.subarray(['ok', 'error', '429', '201'], { maxLength: 2 }),
      fc.constantFrom('UTC', 'Asia/Kolkata', 'America/St_Johns'),
      async (x, y, groupBy, dims, status, tz) => {
        if (x === y) return
        const [fromMs, toMs] = [base + Math.min(x, y), base + Math.max(x, y)]
        const q = Object.fromEntries(Object.entries(dims).filter(([, v]) => v.length > 0))
        const filter = parseFilter({ from: String(fromMs), to: String(toMs), ...q, ...(status.length > 0 ? { status } : {}) }, opts)
        const what = JSON.stringify({ fromMs: fromMs - base, toMs: toMs - base, groupBy, q, status, tz })
        assert.deepEqual(await usage(app.store, filter, groupBy, 'auto', T0), await usage(app.store, filter, groupBy, 'raw', T0), `usage ${what}`)
        const starts = bucketStarts(tz, toMs - fromMs > 2 * HOUR ? '1h' : '15m', fromMs, toMs, 10_000)!
        const startsUs = starts.startsMs.map((s) => s * 1000)
        const all = (groups: unknown[]) => groups as never
        assert.deepEqual(await timeseries(app.store, filter, groupBy, startsUs, all, 'auto', T0), await timeseries(app.store, filter, groupBy, startsUs, all, 'raw', T0), `series ${what}`)
      },
    ),
    { numRuns: RUNS * 5 },
  )
  // Every window ending at, or starting at, a cell's oldest or newest rolled-up instant (or 1 ms past it), with a whole cell between.
  for (const b of bounds) {
    for (const at of [base + b, base + b + 1]) {
      for (const [fromMs, toMs] of [[at - 50 * MIN, at], [at, at + 50 * MIN]] as const) {
        const filter = parseFilter({ from: String(fromMs), to: String(toMs) }, opts)
        assert.deepEqual(await usage(app.store, filter, ['key_id'], 'auto', T0), await usage(app.store, filter, ['key_id'], 'raw', T0), `usage ${fromMs - base}..${toMs - base}`)
      }
    }
  }
})

test('live rollups of more rows than LIVE_VIEW_MAX_ROWS are not read into memory, and queries read them in DuckDB with the same answers', async (t) => {
  const { app } = await build(t, {}, { liveRollupEveryRows: 1, liveRollupEveryMs: 0 })
  const at = Math.floor((T0 - DAY) / HOUR) * HOUR
  // One cell, LIVE_VIEW_MAX_ROWS + 1 keys: one rollup row each.
  const events = Array.from({ length: LIVE_VIEW_MAX_ROWS + 1 }, (_, i) => event({ timestamp: at + 5 * MIN + i, key_id: `wide${i}`, cost: '0.01' }))
  assert.equal((await post(app, events)).body.accepted, events.length)
  await app.store.settle()
  const late = [event({ timestamp: at + 20 * MIN, key_id: 'wide7', cost: '0.02' })]
  assert.equal((await post(app, late)).body.accepted, 1)
  const view = await app.store.snapshot(async (snap) => snap.parts.find((p) => p.state === 'active')!.liveRollups())
  assert.equal(view, null, 'too many rows: none in memory')
  const filter = parseFilter({ from: String(at - HOUR), to: String(at + HOUR + 7_000) }, { nowMs: T0, eventRetentionMs: 30 * DAY, maxFutureSkewMs: 300_000 })
  const auto = await usage(app.store, filter, [], 'auto', T0)
  assert.deepEqual(auto, await usage(app.store, filter, [], 'raw', T0))
  assert.equal(Number(auto.totals.requests), LIVE_VIEW_MAX_ROWS + 2)
  assert.equal((await app.inject({ url: '/v1/status' })).json().live_rollups, null)
})

test('the live rollups are compacted every 16 refreshes: one row per cell, the same answers', async (t) => {
  const { app } = await build(t, {}, { liveRollupEveryRows: 1, liveRollupEveryMs: 0 })
  const at = Math.floor((T0 - DAY) / HOUR) * HOUR + 5 * MIN
  const live = (sql: string) =>
    app.store.snapshot(async (snap) => snap.parts.find((p) => p.state === 'active')!.live(async (conn) => Number((await conn.runAndReadAll(sql)).getRows()[0]![0])))
  // 40 commits into one cell, each refreshed on its own: compacted after the 16th and the 32nd.
  for (let i = 0; i < 40; i++) {
    assert.equal((await post(app, [event({ timestamp: at + i, key_id: 'k1', model: 'm1', input_tokens: i, cost: '0.5' })])).body.accepted, 1)
    await app.store.settle()
  }
  assert.equal(await live('SELECT max(rows) FROM live_rollups_upto'), 40)
  assert.equal(await live('SELECT count(*) FROM live_rollups'), 1 + 8, 'one compacted row, and one per refresh since')
  const filter = parseFilter({ from: String(at - HOUR), to: String(at + HOUR) }, { nowMs: T0, eventRetentionMs: 30 * DAY, maxFutureSkewMs: 300_000 })
  const answer = await usage(app.store, filter, ['key_id'], 'auto', T0)
  assert.deepEqual(answer, await usage(app.store, filter, ['key_id'], 'raw', T0))
  assert.deepEqual([Number(answer.totals.requests), Number(answer.totals.input_tokens), answer.totals.cost], [40, (39 * 40) / 2, '20'])
})

test('a segment archived while a query reads it raw is counted once, through the coarse rollups or the per-segment ones', async (t) => {
  let pause: ReturnType<typeof latch> | null = null
  const hooks: StoreHooks = {
    // Between `record` (the catalog has the segment archived, its rollups applied) and `swap` (readers move to the archive).
    beforeSealStep: async (step) => {
      if (step === 'swap' && pause) {
        pause.reached()
        await pause.opened
      }
    },
  }
  const { app } = await build(t, {}, hooks)
  const day = Math.floor((T0 - 3 * DAY) / DAY) * DAY
  const batch = Array.from({ length: 48 }, (_, i) => event({ timestamp: day + i * HOUR + 7 * MIN, user_id: `u${i % 3}`, cost: '0.5' }))
  assert.equal((await post(app, batch)).body.accepted, 48)
  const filter = parseFilter({ from: String(day - DAY), to: String(day + 3 * DAY) }, { nowMs: T0, eventRetentionMs: 30 * DAY, maxFutureSkewMs: 300_000 })
  const before = await usage(app.store, filter, ['key_id'], 'raw', T0)
  assert.equal(before.totals.requests, 48)
  const generationSeen = () => app.store.snapshot(async (snap) => snap.catalogGeneration)
  const g0 = await generationSeen()
  assert.equal(typeof g0, 'bigint', 'nothing mid-seal: the snapshot knows its catalog generation')
  pause = latch()
  await rollover(app)
  const sealing = app.store.settle()
  await pause.arrived
  // The store still reads the segment raw (pending); the catalog already counts it in its rollups.
  assert.equal(await generationSeen(), null, 'mid-seal: no generation fits the snapshot, so no cached coarse answer may serve it without the check')
  for (const groupBy of [['key_id'], ['user_id'], []] as Dimension[][]) {
    assert.deepEqual(await usage(app.store, filter, groupBy, 'auto', T0), await usage(app.store, filter, groupBy, 'raw', T0), `mid-seal, by ${groupBy.join() || 'nothing'}`)
  }
  const dims = await dimensionValues(app.store, filter, T0)
  assert.deepEqual(dims.user_id, [{ value: 'u0', requests: 16 }, { value: 'u1', requests: 16 }, { value: 'u2', requests: 16 }])
  assert.deepEqual(dims.key_id, [{ value: 'key_a', requests: 48 }])
  pause.open()
  await sealing
  const g1 = await generationSeen()
  assert.ok(typeof g1 === 'bigint' && typeof g0 === 'bigint' && g1 > g0, `after the seal: a newer generation (${String(g0)} → ${String(g1)})`)
  assert.deepEqual(await usage(app.store, filter, ['key_id'], 'auto', T0), before, 'after the seal: from the rollups, the same')
  assert.deepEqual(await dimensionValues(app.store, filter, T0), dims, 'after the seal: from the rollups, the same values')
})

test("an edge of the window answers from an archived segment's rollups of its cell when all of the segment's events there lie inside the window, and equals a raw scan", async (t) => {
  const { app } = await build(t)
  const base = Math.floor((T0 - 2 * DAY) / HOUR) * HOUR
  // Three archived segments whose first and last events fall inside 15-minute cells, two of them sharing a cell.
  const spans = [[7 * MIN + 1_111, 52 * MIN + 2_222], [53 * MIN + 3_333, 97 * MIN + 4_444], [97 * MIN + 5_555, 140 * MIN + 6_666]]
  for (const [i, [a, b]] of spans.entries()) {
    const batch = Array.from({ length: 30 }, (_, k) => event({ timestamp: base + a! + Math.round(((b! - a!) * k) / 29), key_id: KEYS[k % 3], user_id: USERS[k % 4] ?? undefined, model: MODELS[(k + i) % 2], status_code: k % 6 === 0 ? 429 : 200, cost: k % 5 === 0 ? undefined : '0.125' }))
    assert.equal((await post(app, batch)).body.accepted, 30)
    await rollover(app)
    await app.store.settle()
  }
  const parts = await app.store.snapshot(async (snap) => snap.parts.filter((p) => p.state === 'archived').map((p) => [p.minTsUs! / 1000, p.maxTsUs! / 1000]))
  assert.equal(parts.length, 3, 'three archived segments')
  const opts = { nowMs: T0, eventRetentionMs: 30 * DAY, maxFutureSkewMs: 300_000 }
  for (const at of parts.flat().flatMap((ms) => [ms - 1, ms, ms + 1])) {
    for (const [fromMs, toMs] of [[at - 50 * MIN, at], [at, at + 50 * MIN], [at, at + 3 * HOUR]]) {
      const filter = parseFilter({ from: String(fromMs), to: String(toMs) }, opts)
      const what = `${fromMs! - base}..${toMs! - base}`
      for (const groupBy of [['key_id'], ['user_id']] as Dimension[][]) {
        assert.deepEqual(await usage(app.store, filter, groupBy, 'auto', T0), await usage(app.store, filter, groupBy, 'raw', T0), `usage by ${groupBy.join()} ${what}`)
      }
      assert.deepEqual(await dimensionValues(app.store, filter, T0, 'auto'), await dimensionValues(app.store, filter, T0, 'raw'), `dimensions ${what}`)
      const startsUs = bucketStarts('Asia/Kolkata', '15m', fromMs!, toMs!, 10_000)!.startsMs.map((ms) => ms * 1000)
      const all = (groups: unknown[]) => groups as never
      assert.deepEqual(await timeseries(app.store, filter, ['model'], startsUs, all, 'auto', T0), await timeseries(app.store, filter, ['model'], startsUs, all, 'raw', T0), `series ${what}`)
    }
  }
})

test('rollup retention leaves the coarse rollups equal to the per-segment ones, with nothing before the cutoff', async (t) => {
  const { app, clock } = await build(t, { TOKENLEDGER_EVENT_RETENTION: '2d', TOKENLEDGER_DETAIL_RETENTION: '1d', TOKENLEDGER_ROLLUP_RETENTION: '3d' })
  const start = T0 - 47 * HOUR
  const events = Array.from({ length: 94 }, (_, i) => event({ timestamp: start + i * 30 * MIN + 11_000, key_id: `k${i % 4}`, user_id: `u${i % 5}`, cost: '0.125' }))
  assert.equal((await post(app, events)).body.accepted, 94)
  await rollover(app)
  await app.store.settle()
  // Requests per level, counting only cells that start at or after `fromUs` (on the level's grid).
  const sums = (fromUs: number) =>
    app.store.snapshot((snap) =>
      snap.files(async (conn) => {
        const out: Record<string, string> = {}
        for (const table of ['rollups', ...[...COARSE_LEVELS, USERS_DAILY].map((l) => l.table)]) {
          const res = await conn.runAndReadAll(`SELECT coalesce(sum(requests), 0)::VARCHAR, count(*) FILTER (WHERE epoch_us(bucket) < ${fromUs}) FROM catalog.${table}`)
          out[table] = res.getRows()[0]!.join(' rows before: ')
        }
        return out
      }),
    )
  const before = await sums(0)
  assert.deepEqual(Object.values(before), Array(2 + COARSE_LEVELS.length).fill('94 rows before: 0'), 'every level holds every request')
  // A day and a half later the rollup cutoff (3 days) cuts through the events' first day, mid-hour.
  clock.advance(36 * HOUR + 20 * MIN)
  const nowMs = T0 + 36 * HOUR + 20 * MIN
  const run = await app.inject({ method: 'POST', url: '/v1/admin/retention' })
  assert.equal(run.statusCode, 200, run.body)
  const cutoffUs = app.store.cutoffs(nowMs).rollupsUs
  assert.ok(cutoffUs > start * 1000 && cutoffUs % (HOUR * 1000) !== 0, 'the cutoff falls among the events, off the hour')
  const kept = events.filter((e) => Number(e.timestamp) * 1000 >= cutoffUs).length
  const after = await sums(cutoffUs)
  assert.equal(after.rollups, `${kept} rows before: 0`)
  assert.equal(after.rollups_q, `${kept} rows before: 0`)
  for (const level of [...COARSE_LEVELS.slice(1), USERS_DAILY]) {
    // The cell the cutoff cut through is gone with those before it: only whole cells from the cutoff on remain.
    const whole = events.filter((e) => Number(e.timestamp) * 1000 >= Math.ceil(cutoffUs / level.us) * level.us).length
    assert.equal(after[level.table], `${whole} rows before: 0`, level.table)
  }
  // Answers from the cutoff on stay exact, through every level.
  const filter = parseFilter({ from: String(cutoffUs / 1000), to: String(nowMs) }, { nowMs, eventRetentionMs: 2 * DAY, maxFutureSkewMs: 300_000 })
  const answer = await usage(app.store, filter, ['key_id'], 'auto', nowMs)
  assert.equal(answer.totals.requests, kept)
  assert.deepEqual(answer.groups.map((g) => g.totals.requests).reduce((a, b) => Number(a) + Number(b), 0), kept)
})

test('a catalog from before the coarse rollups gets them built from its rollups when opened, once', async () => {
  const { DuckDBInstance } = await import('@duckdb/node-api')
  const { DuckDBCatalog } = await import('../src/store/catalog.js')
  const db = await DuckDBInstance.create(':memory:')
  const conn = await db.connect()
  try {
    await DuckDBCatalog.open(conn)
    // A partial set (a version before the users' daily rollup) is rebuilt whole.
    for (const level of COARSE_LEVELS) await conn.run(`DROP TABLE ${level.table}`)
    // Two segments sharing cells, users that the coarse levels sum away, a day boundary, two currencies.
    await conn.run(`INSERT INTO rollups
      SELECT i % 2, make_timestamp(1795000000000000 + (i // 4) * ${Q}), 'k' || (i % 3), NULL, 'u' || (i % 5), NULL, 'p', 'm', 200, CASE WHEN i % 7 = 0 THEN 'EUR' ELSE 'USD' END,
             1, i % 2, i, 4294967295, 0, 0, 0, 0, 0, 0, 0, 0,
             CASE i % 4 WHEN 0 THEN NULL WHEN 1 THEN 0.000000000001 WHEN 2 THEN (i * 0.001)::DECIMAL(38,12) ELSE 99999999999999.999999999999 - i END, (i % 4 = 0)::INT, NULL
        FROM range(600) t(i)`)
    await DuckDBCatalog.open(conn)
    const measures = `currency, sum(requests)::VARCHAR, sum(errors)::VARCHAR, sum(input_tokens_hi)::VARCHAR, sum(input_tokens_lo)::VARCHAR, sum(cost)::VARCHAR`
    const want = (await conn.runAndReadAll(`SELECT ${measures} FROM rollups GROUP BY currency ORDER BY currency`)).getRows()
    for (const level of COARSE_LEVELS) {
      const got = (await conn.runAndReadAll(`SELECT ${measures} FROM ${level.table} GROUP BY currency ORDER BY currency`)).getRows()
      assert.deepEqual(got, want, level.table)
      const off = await conn.runAndReadAll(`SELECT count(*) FROM ${level.table} WHERE epoch_us(bucket) % ${level.us} <> 0`)
      assert.equal(Number(off.getRows()[0]![0]), 0, `${level.table} cells start on its grid`)
    }
    const users = `SELECT user_id, sum(requests)::VARCHAR FROM %s WHERE user_id IS NOT NULL GROUP BY user_id ORDER BY user_id`
    assert.deepEqual((await conn.runAndReadAll(users.replace('%s', USERS_DAILY.table))).getRows(), (await conn.runAndReadAll(users.replace('%s', 'rollups'))).getRows())
    const rows = (await conn.runAndReadAll(`SELECT count(*) FROM rollups_d`)).getRows()
    await DuckDBCatalog.open(conn) // a second open leaves them as they are
    assert.deepEqual((await conn.runAndReadAll(`SELECT count(*) FROM rollups_d`)).getRows(), rows)
    // A level of another shape (an earlier build's cost limbs) is rebuilt with the rest.
    await conn.run('ALTER TABLE rollups_h RENAME COLUMN cost TO cost_l0')
    await DuckDBCatalog.open(conn)
    const got = (await conn.runAndReadAll(`SELECT ${measures} FROM rollups_h GROUP BY currency ORDER BY currency`)).getRows()
    assert.deepEqual(got, want, 'rollups_h rebuilt')
  } finally {
    conn.closeSync()
    db.closeSync()
  }
})
