// Proves the answer cache (src/store/answers.ts): a question asked again is
// served from it, and never stale — after a seal adds rollups and after
// retention deletes some, the same question reads the catalog afresh (and
// equals a raw scan while the raw events are there); entries of an older generation are dropped, the cache
// stays within its row bound (least recently used out first), and a bound of
// 0 keeps nothing.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { DuckDBConnection } from '@duckdb/node-api'
import { parseFilter } from '../src/query/filters.js'
import { dimensionValues, timeseries, usage } from '../src/query/read.js'
import { AnswerCache, type Row } from '../src/store/answers.js'
import { build, event, post, rollover, T0 } from './helper.js'

const MIN = 60_000
const HOUR = 60 * MIN
const DAY = 24 * HOUR

test('a repeated question is answered from the cache, and a seal or a retention run makes the next one read afresh (equal to a raw scan)', async (t) => {
  const { app, clock } = await build(t, { TOKENLEDGER_EVENT_RETENTION: '3d', TOKENLEDGER_DETAIL_RETENTION: '1d', TOKENLEDGER_ROLLUP_RETENTION: '4d' })
  const day = Math.floor((T0 - 2 * DAY) / DAY) * DAY
  const limits = { nowMs: T0, eventRetentionMs: 3 * DAY, maxFutureSkewMs: 300_000 }
  const first = Array.from({ length: 40 }, (_, i) => event({ timestamp: day + i * HOUR + 7 * MIN, key_id: `k${i % 3}`, user_id: `u${i % 2}`, cost: '0.25' }))
  assert.equal((await post(app, first)).body.accepted, 40)
  await rollover(app)
  await app.store.settle()
  // Whole days around the events: the archived middle comes from the coarse rollups.
  const filter = parseFilter({ from: String(day - DAY), to: String(day + 2 * DAY) }, limits)
  const ask = () => usage(app.store, filter, ['key_id'], 'auto', T0)

  const s0 = app.store.answers.stats()
  const a1 = await ask()
  const s1 = app.store.answers.stats()
  assert.equal(a1.totals.requests, 40)
  assert.ok(s1.misses > s0.misses && s1.entries > 0, 'the first asking reads the catalog and keeps the answer')
  const a2 = await ask()
  const s2 = app.store.answers.stats()
  assert.deepEqual(a2, a1)
  assert.ok(s2.hits > s1.hits && s2.misses === s1.misses, 'the second asking is served from the cache')
  // The other readers of the catalog go through it too: series, dimension values, user groups.
  const startsUs = Array.from({ length: 4 }, (_, i) => (day - DAY + i * DAY) * 1000)
  const all = (groups: unknown[]) => groups as never
  const series1 = await timeseries(app.store, filter, ['model'], startsUs, all, 'auto', T0)
  const dims1 = await dimensionValues(app.store, filter, T0)
  const users1 = await usage(app.store, filter, ['user_id'], 'auto', T0)
  const s3 = app.store.answers.stats()
  assert.deepEqual(await timeseries(app.store, filter, ['model'], startsUs, all, 'auto', T0), series1)
  assert.deepEqual(await dimensionValues(app.store, filter, T0), dims1)
  assert.deepEqual(await usage(app.store, filter, ['user_id'], 'auto', T0), users1)
  assert.ok(app.store.answers.stats().hits >= s3.hits + 3, 'series, dimensions and user groups hit too')

  // A seal adds rollups inside the window: the same question must see them.
  const second = Array.from({ length: 24 }, (_, i) => event({ timestamp: day + i * HOUR + 29 * MIN, key_id: 'k9', user_id: 'u7', cost: '1.5' }))
  assert.equal((await post(app, second)).body.accepted, 24)
  await rollover(app)
  await app.store.settle()
  const a3 = await ask()
  const generation = app.store.answers.stats().generation
  assert.notEqual(generation, s2.generation, 'the seal moved the catalog generation')
  assert.equal(a3.totals.requests, 64, 'not the answer cached before the seal')
  assert.deepEqual(a3, await usage(app.store, filter, ['key_id'], 'auto', T0))
  assert.deepEqual(a3, await usage(app.store, filter, ['key_id'], 'raw', T0))
  const dims3 = await dimensionValues(app.store, filter, T0)
  assert.deepEqual(dims3, await dimensionValues(app.store, filter, T0, 'raw'))
  assert.ok(dims3.user_id.some((v) => v.value === 'u7'), 'dimension values after the seal hold the new user')

  // Retention deletes the rollups before its cutoff: a window from the cutoff on is answered afresh.
  clock.advance(2 * DAY + 5 * MIN)
  const nowMs = T0 + 2 * DAY + 5 * MIN
  const cutoffUs = app.store.cutoffs(nowMs).rollupsUs
  assert.ok(cutoffUs > day * 1000 && cutoffUs < (day + DAY) * 1000, 'the rollup cutoff falls inside the events')
  const later = parseFilter({ from: String(cutoffUs / 1000), to: String(day + 2 * DAY) }, { ...limits, nowMs })
  const beforeRun = await usage(app.store, later, ['key_id'], 'auto', nowMs)
  assert.deepEqual(beforeRun, await usage(app.store, later, ['key_id'], 'raw', nowMs), 'before the run')
  assert.deepEqual(await usage(app.store, later, ['key_id'], 'auto', nowMs), beforeRun, 'asked twice before the run: cached, the same')
  const run = await app.inject({ method: 'POST', url: '/v1/admin/retention' })
  assert.equal(run.statusCode, 200, run.body)
  // (A raw scan is no reference from here on: retention deleted the raw events before the event cutoff.)
  const missesBefore = app.store.answers.stats().misses
  const afterRun = await usage(app.store, later, ['key_id'], 'auto', nowMs)
  assert.notEqual(app.store.answers.stats().generation, generation, 'retention moved the catalog generation')
  assert.ok(app.store.answers.stats().misses > missesBefore, 'the question after the run read the catalog afresh')
  assert.deepEqual(afterRun, beforeRun, 'rollups from the cutoff on were kept: the answer is unchanged')
})

/** A connection that answers only the generation query, with `gen()`. */
function fakeConn(gen: () => bigint): DuckDBConnection {
  return { runAndReadAll: async () => ({ getRows: () => [[gen()]] }) } as unknown as DuckDBConnection
}
const rowsOf = (n: number): Row[] => Array.from({ length: n }, (_, i) => ({ n: i }))

test('the cache keys by statement and parameters, drops older generations, keeps within its bound (least recently used out first), and keeps nothing at 0', async () => {
  let gen = 1n
  const conn = fakeConn(() => gen)
  const cache = new AnswerCache(100)
  let runs = 0
  const run = (n: number) => async () => {
    runs++
    return rowsOf(n)
  }
  let read = await cache.reader(conn)
  await read('SELECT a', ['x'], run(5))
  await read('SELECT a', ['x'], run(5))
  await read('SELECT a', ['y'], run(5))
  await read('SELECT b', ['x'], run(5))
  assert.equal(runs, 3, 'same statement and parameters: one run; another parameter or statement: its own')
  assert.deepEqual(cache.stats(), { hits: 1, misses: 3, entries: 3, rows: 15, generation: '1' })
  // Parameters of different types never share a key.
  await read('SELECT a', [1], run(1))
  await read('SELECT a', ['1'], run(1))
  assert.equal(runs, 5)

  // Over the bound: least recently used first. 'SELECT a' ['x'] is used again, so it stays.
  await read('SELECT a', ['x'], run(5))
  for (let i = 0; i < 9; i++) await read(`SELECT fill ${i}`, [], run(10))
  const s = cache.stats()
  assert.ok(s.rows <= 100, `within the bound: ${s.rows}`)
  runs = 0
  await read('SELECT a', ['x'], run(5))
  assert.equal(runs, 0, 'the recently used entry survived')
  await read('SELECT a', ['y'], run(5))
  assert.equal(runs, 1, 'the least recently used entry was dropped')
  // An answer over a tenth of the bound is never kept.
  await read('SELECT big', [], run(11))
  await read('SELECT big', [], run(11))
  assert.equal(runs, 3)

  // A new generation empties the cache; a reader of the old one neither serves nor keeps.
  const old = read
  gen = 2n
  read = await cache.reader(conn)
  assert.deepEqual({ entries: cache.stats().entries, generation: cache.stats().generation }, { entries: 0, generation: '2' })
  runs = 0
  await old('SELECT a', ['x'], run(5))
  await old('SELECT a', ['x'], run(5))
  assert.equal(runs, 2, 'a reader of generation 1 reads afresh')
  assert.equal(cache.stats().entries, 0, '...and keeps nothing')
  await read('SELECT a', ['x'], run(5))
  await read('SELECT a', ['x'], run(5))
  assert.equal(runs, 3)

  const off = new AnswerCache(0)
  const r0 = await off.reader(fakeConn(() => 1n))
  runs = 0
  await r0('SELECT a', [], run(1))
  await r0('SELECT a', [], run(1))
  assert.equal(runs, 2)
  assert.equal(off.stats().entries, 0)
})

test('cached() serves the answers of a whole set of statements at the generation the cache holds, or none, without DuckDB', async () => {
  const cache = new AnswerCache(100)
  const read = await cache.reader(fakeConn(() => 3n))
  const a = rowsOf(2)
  const b = rowsOf(3)
  await read('SELECT a', ['x'], async () => a)
  await read('SELECT b', [], async () => b)
  const before = cache.stats()
  const st = (sql: string, params: Array<string | number> = []) => ({ sql, params })
  const both = cache.cached(3n, [st('SELECT a', ['x']), st('SELECT b')])
  assert.ok(both !== undefined && both[0] === a && both[1] === b, 'every statement kept: their rows, in order')
  assert.equal(cache.stats().hits, before.hits + 2, 'each counted as a hit')
  assert.equal(cache.cached(3n, [st('SELECT a', ['x']), st('SELECT c')]), undefined, 'one not kept: nothing')
  assert.equal(cache.cached(3n, [st('SELECT a', ['y'])]), undefined, 'another parameter: not kept')
  assert.equal(cache.cached(3n, [st('SELECT a', [1])]), undefined, 'a parameter of another type: not kept')
  assert.equal(cache.cached(2n, [st('SELECT a', ['x'])]), undefined, 'an older generation: nothing')
  assert.equal(cache.cached(4n, [st('SELECT a', ['x'])]), undefined, 'a newer one: nothing (and nothing dropped)')
  assert.equal(cache.stats().entries, 2)
  assert.equal(cache.stats().hits, before.hits + 2, 'misses of cached() are not counted: the transaction that follows counts them')
  assert.equal(new AnswerCache(0).cached(0n, []), undefined, 'off: never')
})
