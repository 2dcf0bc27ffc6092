// Proves GET /v1/admin/verify: on a consistent store (archived, pending-live and
// active segments, coarse rollups) it reports no mismatch and says what it
// compared; a corrupted rollup row, a corrupted raw row of a live segment and a
// corrupted raw row of an archive (changed on disk while the server was down)
// are each reported where and by how much; the window is bounded and checked;
// the scheduled light verify counts its runs and mismatches in /metrics.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { DuckDBInstance } from '@duckdb/node-api'
import type { FastifyInstance } from 'fastify'
import type { VerifyReport } from '../src/store/reports.js'
import { segmentPath } from '../src/store/layout.js'
import { build, event, post, rollover, T0 } from './helper.js'

const QUARTER = 15 * 60_000
const LIVE_ALWAYS = { liveRollupEveryRows: 1, liveRollupEveryMs: 0 }

async function verify(app: FastifyInstance, query = `from=${T0 - 2 * 86_400_000}&to=${T0 + 2 * 86_400_000}`): Promise<VerifyReport> {
  const res = await app.inject({ url: `/v1/admin/verify?${query}` })
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as VerifyReport
}

/** Events spread over several quarters of the last hours, with costs, unknown costs, errors, users and two currencies. */
function batch(n: number, hourAgo: number): Record<string, unknown>[] {
  return Array.from({ length: n }, (_, i) =>
    event({
      timestamp: T0 - hourAgo * 3_600_000 + (i % 5) * QUARTER + i,
      key_id: `key_${i % 3}`,
      model: i % 2 ? 'gpt-4o' : 'gpt-4o-mini',
      user_id: i % 4 ? `user_${i % 7}` : null,
      status_code: i % 9 === 0 ? 500 : 200,
      input_tokens: 100 + i,
      output_tokens: 10 + (i % 11),
      cache_read_tokens: i % 13,
      cost: i % 6 === 0 ? null : `0.${String(1000 + i).padStart(6, '0')}`,
      currency: i % 10 === 0 ? 'EUR' : 'USD',
    }),
  )
}

/** Two archived segments, then events in the active one whose live rollups are refreshed. */
async function populated(t: Parameters<typeof build>[0]) {
  const built = await build(t, {}, LIVE_ALWAYS)
  const { app } = built
  assert.equal((await post(built.app, { events: batch(60, 5) })).status, 200)
  await rollover(app)
  assert.equal((await post(app, { events: batch(40, 3) })).status, 200)
  await rollover(app)
  await app.store.settle()
  assert.equal((await post(app, { events: batch(30, 1) })).status, 200)
  await app.store.settle()
  return built
}

test('a consistent store verifies clean, and says what it compared', async (t) => {
  const { app } = await populated(t)
  const r = await verify(app)
  assert.equal(r.mismatch_count, 0, JSON.stringify(r.mismatches))
  assert.deepEqual(r.mismatches, [])
  assert.equal(r.truncated, false)
  assert.equal(r.segments_checked, 3)
  for (const check of ['segment_rollups', 'live_rollups', 'coarse_rollups', 'users_daily'] as const) assert.ok(r.compared[check] > 0, `${check} compared some rows: ${JSON.stringify(r.compared)}`)
  assert.equal(r.compared.segment_stats, 2, 'both archives against their catalog entries')
  assert.equal(r.from.endsWith(':00:00.000Z') || /:(00|15|30|45):00\.000Z$/.test(r.from), true, `from is on a cell boundary: ${r.from}`)
})

test('a corrupted rollup row is reported with its cell, key and difference, and so are the coarse rows built from it', async (t) => {
  const { app } = await populated(t)
  await app.store.snapshot((snap) =>
    snap.files((conn) => conn.run('UPDATE catalog.rollups SET input_tokens_lo = input_tokens_lo + 7, requests = requests + 1 WHERE rowid = (SELECT min(rowid) FROM catalog.rollups)')),
  )
  const r = await verify(app)
  const seg = r.mismatches.filter((m) => m.check === 'segment_rollups')
  assert.deepEqual(seg.map((m) => [m.measure, m.difference]).sort(), [['input_tokens', '7'], ['requests', '1']])
  assert.ok(seg[0]!.segment_id !== null && seg[0]!.bucket !== null && typeof seg[0]!.key.key_id === 'string', JSON.stringify(seg[0]))
  assert.equal(seg[0]!.table, 'catalog.rollups')
  // The coarse tables still hold the sums from before: against the corrupted rollups they differ by the opposite amount.
  const coarse = r.mismatches.filter((m) => m.check === 'coarse_rollups' && m.measure === 'input_tokens')
  assert.ok(coarse.length > 0 && coarse.every((m) => m.difference === '-7'), JSON.stringify(coarse))
  assert.ok(r.mismatch_count >= 2)
  // /metrics counts what a run found.
  const metrics = await app.inject({ url: '/metrics' })
  assert.match(metrics.body, /^tokenledger_verify_last_mismatches [1-9]\d*$/m)
  assert.match(metrics.body, /^tokenledger_verify_runs_total 1$/m)
})

test('a corrupted raw row of the live segment is reported against its live rollups', async (t) => {
  const { app } = await populated(t)
  await app.store.snapshot(async (snap) => {
    const active = snap.parts.find((p) => p.state === 'active')!
    await active.live((conn) => conn.run("UPDATE events SET cost = cost + 0.000000000001 WHERE rowid = (SELECT min(rowid) FROM events WHERE cost IS NOT NULL AND currency = 'USD')"))
  })
  const r = await verify(app)
  const live = r.mismatches.filter((m) => m.check === 'live_rollups')
  assert.equal(live.length, 1, JSON.stringify(r.mismatches))
  assert.equal(live[0]!.measure, 'cost')
  assert.equal(live[0]!.difference, '-0.000000000001', 'the rollups hold one trillionth less than the events now sum to')
  assert.equal(r.mismatch_count, 1)
})

test('a raw row of an archive changed on disk is reported against its rollups and its catalog entry', async (t) => {
  const built = await populated(t)
  await built.app.close()
  const db = await DuckDBInstance.create(segmentPath(built.dataDir, 'archive', 1))
  const conn = await db.connect()
  await conn.run('UPDATE events SET output_tokens = output_tokens + 5 WHERE rowid = 0')
  conn.closeSync()
  db.closeSync()
  const app = await built.restart()
  const r = await verify(app)
  const seg = r.mismatches.filter((m) => m.segment_id === 1)
  assert.deepEqual(seg.map((m) => [m.check, m.measure, m.difference]).sort(), [
    ['segment_rollups', 'output_tokens', '-5'],
    ['segment_stats', 'output_tokens', '-5'],
  ])
})

test('the window: bounded, checked, widened to whole cells, and admin only', async (t) => {
  const { app } = await populated(t)
  const wide = await app.inject({ url: `/v1/admin/verify?from=${T0 - 40 * 86_400_000}&to=${T0}` })
  assert.equal(wide.statusCode, 400)
  assert.match(wide.json().message, /more than 31 days/)
  const backwards = await app.inject({ url: `/v1/admin/verify?from=${T0}&to=${T0 - 1000}` })
  assert.equal(backwards.statusCode, 400)
  assert.match(backwards.json().message, /`from` must be earlier than `to`/)
  const bad = await app.inject({ url: '/v1/admin/verify?from=yesterday' })
  assert.equal(bad.statusCode, 400)
  assert.match(bad.json().message, /`from`/)
  const unknown = await app.inject({ url: '/v1/admin/verify?form=1' })
  assert.equal(unknown.statusCode, 400)
  const r = await verify(app, `from=${T0 - 3_600_000 + 1}&to=${T0 - 1}`)
  assert.equal(Date.parse(r.from) % QUARTER, 0)
  assert.equal(Date.parse(r.to) % QUARTER, 0)
  assert.ok(Date.parse(r.from) <= T0 - 3_600_000 && Date.parse(r.to) >= T0 - 1)
  const none = await verify(app, `from=${T0 - 86_400_000}&to=${T0 - 80_000_000}`)
  assert.equal(none.segments_checked, 0, 'no segment holds events there')
})

test('the scheduled light verify runs on the clock, and counts its mismatches', async (t) => {
  const built = await build(t, { TOKENLEDGER_VERIFY_INTERVAL: '1h', TOKENLEDGER_VERIFY_WINDOW: '1d' }, LIVE_ALWAYS)
  const { app, clock } = built
  assert.equal((await post(app, { events: batch(20, 2) })).status, 200)
  await rollover(app)
  await app.store.settle()
  await app.store.snapshot((snap) => snap.files((conn) => conn.run('UPDATE catalog.rollups SET errors = errors + 2 WHERE rowid = (SELECT min(rowid) FROM catalog.rollups)')))
  await app.store.tick()
  assert.equal(app.store.stats().verifyRuns, 0, 'not due yet')
  clock.advance(3_600_000)
  await app.store.tick()
  for (let i = 0; i < 200 && app.store.stats().verifyRuns === 0; i++) await new Promise((r) => setTimeout(r, 10))
  const s = app.store.stats()
  assert.equal(s.verifyRuns, 1)
  assert.ok(s.verifyMismatches >= 1)
  const metrics = await app.inject({ url: '/metrics' })
  assert.match(metrics.body, /^tokenledger_verify_mismatches_total [1-9]\d*$/m)
})

test('a pending file (its seal failing) is verified against the live rollups it kept', async (t) => {
  const { app } = await build(t, { TOKENLEDGER_SEAL_RETRY: '1h' }, {
    ...LIVE_ALWAYS,
    beforeSealStep: async () => {
      throw new Error('seal parked by the test')
    },
  })
  assert.equal((await post(app, { events: batch(25, 2) })).status, 200)
  await app.store.settle()
  await rollover(app)
  await app.store.settle()
  assert.equal(app.store.segmentList().find((s) => s.id === 1)?.state, 'pending')
  const r = await verify(app)
  assert.equal(r.mismatch_count, 0, JSON.stringify(r.mismatches))
  assert.ok(r.compared.live_rollups > 0, JSON.stringify(r.compared))
  await app.store.snapshot(async (snap) => {
    const pending = snap.parts.find((p) => p.id === 1)!
    assert.equal(pending.alias !== null, true, 'read as an attached file')
  })
})
