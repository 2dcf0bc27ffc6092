// Proves that a total whose every counted event has an unknown cost reads `cost: null`
// (with `cost_missing` counting those events), never "0", in /v1/usage totals and groups
// and in time-series totals and points, whether the events are in the active segment or
// sealed into an archive (rollups); a total mixing known and unknown costs is the exact sum
// of the known ones; an empty window or bucket is an exact "0" (nothing is unknown there);
// and ordering by cost puts an all-unknown group after every group with a known cost.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { build, event, post, rollover, T0 } from './helper.js'

interface Totals { requests: number; cost: string | null; currency: string | null; cost_by_currency: Record<string, string>; cost_missing: number }

const HOUR_MS = 3_600_000

async function get<T>(app: FastifyInstance, url: string): Promise<T> {
  const res = await app.inject({ url })
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as T
}

async function check(app: FastifyInstance, where: string): Promise<void> {
  const window = `from=${T0 - 2 * HOUR_MS}&to=${T0}`
  const usage = await get<{ totals: Totals; groups: Array<{ key: { model: string }; totals: Totals }> }>(app, `/v1/usage?${window}&group_by=model&order_by=cost`)
  assert.deepEqual(
    usage.groups.map((g) => [g.key.model, g.totals.requests, g.totals.cost, g.totals.currency, g.totals.cost_by_currency, g.totals.cost_missing]),
    [
      ['mixed', 2, '0.25', 'USD', { USD: '0.25' }, 1],
      ['free', 1, '0', 'USD', { USD: '0' }, 0],
      ['unpriced', 3, null, null, {}, 3],
    ],
    `${where}: groups ordered by cost, the all-unknown one last with cost null`,
  )
  assert.deepEqual([usage.totals.cost, usage.totals.cost_missing], ['0.25', 4], `${where}: the window's totals`)

  const only = await get<{ totals: Totals }>(app, `/v1/usage?${window}&model=unpriced`)
  assert.deepEqual([only.totals.requests, only.totals.cost, only.totals.cost_missing], [3, null, 3], `${where}: a filter leaving only unknown costs`)

  const empty = await get<{ totals: Totals }>(app, `/v1/usage?from=${T0 - 20 * HOUR_MS}&to=${T0 - 19 * HOUR_MS}`)
  assert.deepEqual([empty.totals.requests, empty.totals.cost, empty.totals.cost_missing], [0, '0', 0], `${where}: an empty window costs exactly 0`)

  const series = await get<{ series: Array<{ key: { model: string }; totals: Totals; points: Array<Totals & { start: string }> }> }>(
    app,
    `/v1/usage/timeseries?bucket=1h&${window}&group_by=model&model=unpriced`,
  )
  assert.equal(series.series.length, 1)
  const s = series.series[0]!
  assert.deepEqual([s.totals.cost, s.totals.cost_missing], [null, 3], `${where}: the series' totals`)
  assert.deepEqual(
    s.points.map((p) => [p.requests, p.cost, p.cost_missing]),
    [[0, '0', 0], [3, null, 3]],
    `${where}: an empty bucket is 0, a bucket of unknown costs is null`,
  )
}

test('a total whose every cost is unknown is null with cost_missing counting them, live and sealed', async (t) => {
  const { app } = await build(t)
  const at = T0 - HOUR_MS / 2
  const res = await post(app, [
    event({ model: 'unpriced', cost: undefined, timestamp: at }),
    event({ model: 'unpriced', cost: undefined, timestamp: at + 1000 }),
    event({ model: 'unpriced', cost: null, timestamp: at + 2000 }),
    event({ model: 'mixed', cost: '0.25', timestamp: at }),
    event({ model: 'mixed', cost: undefined, timestamp: at }),
    event({ model: 'free', cost: '0', timestamp: at }),
  ])
  assert.equal(res.body.accepted, 6, JSON.stringify(res.body))
  await check(app, 'active segment')
  await rollover(app)
  await app.store.settle()
  const segs = (await get<{ segments: Array<{ state: string }> }>(app, '/v1/admin/segments')).segments
  assert.ok(segs.some((s) => s.state === 'archived'), JSON.stringify(segs))
  await check(app, 'sealed segment')
})
