// Proves GET /v1/events: for random workloads spread over active, pending and
// archived segments, walking the pages gives exactly the matching events of a
// model kept by the test, newest first by (timestamp, event_id), each once
// (property); a walk while a writer backfills into the same window sees every
// event that existed when it began exactly once and repeats nothing; `source`
// splits the tiers; expired events are never listed; a live segment larger
// than its page probe still lists first what was appended outside it; bad cursors and limits are
// 400s naming the parameter.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import type { FastifyInstance } from 'fastify'
import { parseFilter } from '../src/query/filters.js'
import { LIVE_PAGE_PROBE_ROWS, pageEvents } from '../src/query/list.js'
import { build, event, post, rollover, T0 } from './helper.js'

const RUNS = Math.max(3, Math.floor(Number(process.env.FUZZ_RUNS ?? 200) / 20))
const MIN = 60_000

interface Listed {
  event_id: string
  timestamp: string
  key_id: string
  status_code: number
  detail?: unknown
}

async function page(app: FastifyInstance, query: string) {
  const res = await app.inject({ url: `/v1/events?${query}` })
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as { events: Listed[]; next_cursor: string | null }
}

/** Every page of a walk; `between` runs after each page (a concurrent writer). */
async function walk(app: FastifyInstance, query: string, between?: () => Promise<void>): Promise<Listed[]> {
  const out: Listed[] = []
  let cursor: string | null = null
  for (let pages = 0; pages < 1000; pages++) {
    const p = await page(app, `${query}${cursor ? `&cursor=${cursor}` : ''}`)
    out.push(...p.events)
    if (p.next_cursor === null) return out
    cursor = p.next_cursor
    await between?.()
  }
  throw new Error('walk did not end')
}

const newestFirst = (a: { ts: number; id: string }, b: { ts: number; id: string }) => b.ts - a.ts || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)

test('pages give exactly the matching events, newest first, each once, across every tier (property)', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.record({
          // Few distinct timestamps: many ties, ordered by event_id.
          minute: fc.integer({ min: 1, max: 4 }),
          key: fc.constantFrom('key_a', 'key_b', 'key_c'),
          status: fc.constantFrom(200, 200, 429, 500),
          cut: fc.constantFrom('none', 'none', 'rollover', 'seal'),
        }),
        { minLength: 0, maxLength: 50 },
      ),
      fc.integer({ min: 1, max: 7 }),
      fc.constantFrom('', '&key_id=key_a', '&key_id=key_a&key_id=key_c', '&status=error', '&status=ok&key_id=key_b'),
      async (spec, limit, filter) => {
        const { app } = await build(t)
        try {
          const model: Array<{ id: string; ts: number; key: string; status: number }> = []
          for (const s of spec) {
            const e = event({ timestamp: T0 - s.minute * MIN, key_id: s.key, status_code: s.status, detail: { heavy: true } })
            assert.equal((await post(app, [e])).body.accepted, 1)
            model.push({ id: String(e.event_id), ts: T0 - s.minute * MIN, key: s.key, status: s.status })
            if (s.cut !== 'none') await rollover(app)
            if (s.cut === 'seal') await app.store.settle()
          }
          const keys = [...filter.matchAll(/key_id=(\w+)/g)].map((m) => m[1])
          const status = /status=(\w+)/.exec(filter)?.[1]
          const want = model
            .filter((m) => (keys.length === 0 || keys.includes(m.key)) && (status === undefined || (status === 'ok' ? m.status < 400 : m.status >= 400)))
            .sort(newestFirst)
            .map((m) => m.id)
          const got = await walk(app, `from=${T0 - HOUR_MS}&to=${T0}&limit=${limit}${filter}`)
          assert.deepEqual(
            got.map((e) => e.event_id),
            want,
          )
          assert.ok(got.every((e) => e.detail === undefined), 'lists carry no detail')
          // The tiers split the same events: hot and archive together are everything.
          await app.store.settle()
          const hot = await walk(app, `from=${T0 - HOUR_MS}&to=${T0}&limit=${limit}${filter}&source=hot`)
          const archive = await walk(app, `from=${T0 - HOUR_MS}&to=${T0}&limit=${limit}${filter}&source=archive`)
          assert.deepEqual([...hot, ...archive].map((e) => e.event_id).sort(), [...want].sort())
        } finally {
          await app.close()
        }
      },
    ),
    { numRuns: RUNS },
  )
})

const HOUR_MS = 60 * MIN

test('ties: events of one timestamp spread over several segments come out by event_id, whichever segment holds them', async (t) => {
  const { app } = await build(t)
  const at = T0 - MIN
  for (const ids of [['t-a', 't-d'], ['t-b', 't-e'], ['t-c', 't-f']]) {
    await post(app, ids.map((id) => event({ event_id: id, timestamp: at })))
    await rollover(app)
  }
  await app.store.settle()
  const first = await page(app, `from=${T0 - HOUR_MS}&to=${T0}&limit=2`)
  assert.deepEqual(first.events.map((e) => e.event_id), ['t-f', 't-e'])
  assert.deepEqual((await walk(app, `from=${T0 - HOUR_MS}&to=${T0}&limit=2`)).map((e) => e.event_id), ['t-f', 't-e', 't-d', 't-c', 't-b', 't-a'])
})

test('a walk while a writer backfills into the same window sees every event that existed once, and repeats none', async (t) => {
  const { app } = await build(t)
  const existing = Array.from({ length: 60 }, (_, i) => event({ timestamp: T0 - (i % 20) * MIN - 1000 }))
  for (let i = 0; i < existing.length; i += 15) {
    await post(app, existing.slice(i, i + 15))
    await rollover(app)
  }
  await app.store.settle()
  let round = 0
  const backfill = async () => {
    round++
    // New events before, at and after the cursor's position, and a rollover now and then.
    const batch = [0, 7, 13, 19].map((m) => event({ timestamp: T0 - m * MIN - 1000, event_id: `late-${round}-${m}` }))
    assert.equal((await post(app, batch)).body.accepted, 4)
    if (round % 3 === 0) await rollover(app)
  }
  const seen = await walk(app, `from=${T0 - HOUR_MS}&to=${T0}&limit=7`, backfill)
  const ids = seen.map((e) => e.event_id)
  assert.equal(new Set(ids).size, ids.length, 'no event repeated')
  for (const e of existing) assert.ok(ids.includes(String(e.event_id)), `${String(e.event_id)} skipped`)
  const order = seen.map((e) => ({ ts: Date.parse(e.timestamp), id: e.event_id }))
  assert.deepEqual(order, [...order].sort(newestFirst), 'newest first throughout')
  assert.ok(round > 5)
})

test('bad cursors and limits are 400s naming the parameter; expired events are never listed', async (t) => {
  const { app, clock } = await build(t)
  const old = event({ timestamp: T0 - 29 * 24 * HOUR_MS })
  const recent = event({ timestamp: T0 - MIN })
  await post(app, [old, recent])
  for (const [query, name] of [
    ['cursor=not-a-cursor!', 'cursor'],
    [`cursor=${Buffer.from('v1:abc:x').toString('base64url')}`, 'cursor'],
    ['limit=0', 'limit'],
    ['limit=1001', 'limit'],
    ['source=cold', 'source'],
  ] as const) {
    const res = await app.inject({ url: `/v1/events?${query}` })
    assert.equal(res.statusCode, 400, query)
    assert.match(res.json().message, new RegExp(name), query)
  }
  assert.deepEqual((await page(app, 'limit=10')).events.map((e) => e.event_id), [recent.event_id, old.event_id])
  clock.advance(2 * 24 * HOUR_MS)
  const all = await page(app, `from=0&to=${clock.nowMs()}`)
  assert.deepEqual(
    all.events.map((e) => e.event_id),
    [recent.event_id],
    'the expired event is gone from lists before any retention run',
  )
  assert.equal(all.next_cursor, null)
})

test('GET /v1/usage group_by: groups with their key and totals, ordered by a measure, limited, with the group count', async (t) => {
  const { app } = await build(t)
  await post(app, [
    ...Array.from({ length: 3 }, () => event({ key_id: 'k1', model: 'm1', cost: '0.5' })),
    ...Array.from({ length: 2 }, () => event({ key_id: 'k2', model: 'm1', cost: '2' })),
    event({ key_id: 'k3', model: 'm2', cost: '0.1', team_id: 'team-x' }),
  ])
  await rollover(app)
  await app.store.settle()
  await post(app, [event({ key_id: 'k2', model: 'm1', cost: '1' })])
  const q = `from=${T0 - HOUR_MS}&to=${T0}`
  const byRequests = (await app.inject({ url: `/v1/usage?${q}&group_by=key_id&group_by=model` })).json()
  assert.equal(byRequests.group_count, 3)
  assert.deepEqual(
    byRequests.groups.map((g: { key: unknown; totals: { requests: number; cost: string } }) => [g.key, g.totals.requests, g.totals.cost]),
    [
      [{ key_id: 'k1', model: 'm1' }, 3, '1.5'],
      [{ key_id: 'k2', model: 'm1' }, 3, '5'],
      [{ key_id: 'k3', model: 'm2' }, 1, '0.1'],
    ],
  )
  assert.equal(byRequests.totals.requests, 7)
  const byCost = (await app.inject({ url: `/v1/usage?${q}&group_by=key_id&order_by=cost&limit=2` })).json()
  assert.deepEqual(byCost.groups.map((g: { key: { key_id: string } }) => g.key.key_id), ['k2', 'k1'])
  assert.equal(byCost.group_count, 3)
  const byTeam = (await app.inject({ url: `/v1/usage?${q}&group_by=team_id` })).json()
  assert.deepEqual(byTeam.groups.map((g: { key: unknown }) => g.key), [{ team_id: null }, { team_id: 'team-x' }], 'events without a team form their own group')
  for (const bad of ['group_by=colour', 'order_by=vibes', 'limit=0', 'group_by=key_id&group_by=key_id']) {
    const res = await app.inject({ url: `/v1/usage?${q}&${bad}` })
    assert.equal(res.statusCode, 400, bad)
  }
})

test('GET /v1/usage/dimensions: the values of each dimension in the window and filters, most used first, bounded', async (t) => {
  const { app } = await build(t)
  await post(app, [
    ...Array.from({ length: 3 }, () => event({ key_id: 'k1', provider: 'openai', user_id: 'u1' })),
    ...Array.from({ length: 2 }, () => event({ key_id: 'k2', provider: 'anthropic', model: 'claude', user_id: 'u2' })),
    event({ key_id: 'k3', provider: 'openai', team_id: 't1' }),
    event({ key_id: 'k9', timestamp: T0 - 3 * HOUR_MS }),
  ])
  await rollover(app)
  await app.store.settle()
  await post(app, [event({ key_id: 'k2', provider: 'anthropic', model: 'claude' })])
  const q = `from=${T0 - HOUR_MS}&to=${T0}`
  const res = await app.inject({ url: `/v1/usage/dimensions?${q}` })
  assert.equal(res.statusCode, 200, res.body)
  const d = res.json().dimensions
  assert.deepEqual(d.key_id, { values: ['k1', 'k2', 'k3'], truncated: false }, 'k9 is outside the window')
  assert.deepEqual(d.provider.values, ['openai', 'anthropic'])
  assert.deepEqual(d.team_id, { values: ['t1'], truncated: false }, 'no value is not a value')
  assert.deepEqual(d.user_id.values, ['u1', 'u2'])
  const limited = (await app.inject({ url: `/v1/usage/dimensions?${q}&limit=1&provider=anthropic` })).json().dimensions
  assert.deepEqual(limited.key_id, { values: ['k2'], truncated: false })
  assert.deepEqual(limited.model, { values: ['claude'], truncated: false })
  const one = (await app.inject({ url: `/v1/usage/dimensions?${q}&limit=1` })).json().dimensions
  assert.deepEqual(one.key_id, { values: ['k1'], truncated: true })
})

test('a live segment larger than its page probe: the newest (and oldest) events appended outside the probe come first, on every page of a walk', async (t) => {
  const { app } = await build(t, { TOKENLEDGER_MAX_BATCH_EVENTS: '10000' })
  const total = LIVE_PAGE_PROBE_ROWS + 3_000
  const base = T0 - 50 * MIN
  // Appended first: the 150 newest events and the 150 oldest; then the rest, in between, in time order.
  const early = [
    ...Array.from({ length: 150 }, (_, i) => event({ timestamp: base + 40 * MIN + i, key_id: i % 2 === 0 ? 'key_even' : 'key_odd' })),
    ...Array.from({ length: 150 }, (_, i) => event({ timestamp: base + i, key_id: i % 2 === 0 ? 'key_even' : 'key_odd' })),
  ]
  const rest = Array.from({ length: total - early.length }, (_, i) => event({ timestamp: base + 10 * MIN + Math.floor((i * 20 * MIN) / total), key_id: i % 2 === 0 ? 'key_even' : 'key_odd' }))
  const all = [...early, ...rest]
  for (let i = 0; i < all.length; i += 5_000) assert.equal((await post(app, all.slice(i, i + 5_000))).body.accepted, Math.min(5_000, all.length - i))
  const key = (e: Record<string, unknown>) => [Number(e.timestamp), String(e.event_id)] as const
  const newestFirst = [...all].sort((a, b) => key(b)[0] - key(a)[0] || (key(b)[1] < key(a)[1] ? -1 : key(b)[1] > key(a)[1] ? 1 : 0))
  // Newest first, unfiltered and filtered, over two pages each.
  for (const [filter, expected] of [
    ['', newestFirst],
    ['&key_id=key_odd', newestFirst.filter((e) => e.key_id === 'key_odd')],
  ] as const) {
    const first = await page(app, `limit=100${filter}`)
    assert.deepEqual(first.events.map((e) => e.event_id), expected.slice(0, 100).map((e) => e.event_id), `first page${filter}`)
    const second = await page(app, `limit=100${filter}&cursor=${first.next_cursor}`)
    assert.deepEqual(second.events.map((e) => e.event_id), expected.slice(100, 200).map((e) => e.event_id), `second page${filter}`)
  }
  // Oldest first (the export's order): the oldest, appended among the first rows, but also read past the probe when they are not.
  const filter = parseFilter({ from: String(base - MIN), to: String(T0) }, { nowMs: T0, eventRetentionMs: 30 * 24 * 60 * MIN, maxFutureSkewMs: 300_000 })
  const oldestFirst = [...newestFirst].reverse()
  const asc = await pageEvents(app.store, filter, { limit: 200, cursor: null, source: 'all', order: 'asc' })
  assert.deepEqual(asc.events.map((e) => e.event_id), oldestFirst.slice(0, 200).map((e) => e.event_id), 'oldest first')
  // An event older than all, appended last (outside the head probe), still comes first.
  const straggler = event({ timestamp: base - 30_000 })
  assert.equal((await post(app, [straggler])).body.accepted, 1)
  const asc2 = await pageEvents(app.store, filter, { limit: 100, cursor: null, source: 'all', order: 'asc' })
  assert.equal(asc2.events[0]?.event_id, straggler.event_id)
  assert.deepEqual(asc2.events.slice(1).map((e) => e.event_id), oldestFirst.slice(0, 99).map((e) => e.event_id))
})
