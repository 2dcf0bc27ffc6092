// Proves GET /v1/usage/timeseries: for random workloads spread over active,
// pending and archived segments (so rollups answer the aligned middle), every
// point equals an independent computation that buckets each event by its own
// local time (the offset read from Intl's `longOffset`, not from the service's
// timeline), empty buckets are zeros, and the points sum to /v1/usage's totals
// (property, in UTC, Europe/Berlin across the 2026-10-25 change, Asia/Kolkata,
// America/St_Johns across 2026-11-01, Asia/Kathmandu). Fixed cases pin the
// bucket boundaries themselves: 23- and 25-hour days, the repeated hour, half-
// and quarter-hour offsets, Monday weeks, months; bad parameters are 400s
// naming the parameter.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import type { FastifyInstance } from 'fastify'
import { build, event, post, rollover } from './helper.js'
import { parseCost } from '../src/money.js'

const RUNS = Math.max(3, Math.floor(Number(process.env.FUZZ_RUNS ?? 200) / 10))
const MIN = 60_000
const HOUR = 60 * MIN
const DAY = 24 * HOUR
/** Raw events around both DST changes must still be retained at the suite's T0 (2026-11-24). */
const ENV = { TOKENLEDGER_EVENT_RETENTION: '60d', TOKENLEDGER_RETENTION_INTERVAL: 'off' }
const SPAN_FROM = Date.parse('2026-10-23T00:00:00Z')


interface Point {
  start: string
  requests: number
  errors: number
  input_tokens: number
  output_tokens: number
  cost: string | null
}
interface SeriesBody {
  from: string
  to: string
  bucket: string
  tz: string
  series_count: number
  series: Array<{ key: Record<string, string | null>; totals: Omit<Point, 'start'>; points: Point[] }>
}

async function series(app: FastifyInstance, query: string): Promise<SeriesBody> {
  const res = await app.inject({ url: `/v1/usage/timeseries?${query}` })
  assert.equal(res.statusCode, 200, res.body)
  return res.json() as SeriesBody
}

const starts = (body: SeriesBody, i = 0) => body.series[i]!.points.map((p) => p.start)

/** The first series' points are exactly these buckets, with these request counts. */
function assertPoints(body: SeriesBody, want: Array<[start: string, requests: number]>): void {
  assert.deepEqual(starts(body), want.map(([start]) => start))
  assert.deepEqual(
    body.series[0]!.points.map((p) => p.requests),
    want.map(([, requests]) => requests),
  )
}
const iso = (ms: number) => new Date(ms).toISOString()

/** The zone's offset at `ms` as "+HH:MM", read from Intl's longOffset name (independent of src/query/calendar.ts). */
function offsetText(tz: string, ms: number): string {
  const name = new Intl.DateTimeFormat('en-US', { timeZone: tz, timeZoneName: 'longOffset' }).formatToParts(ms).find((p) => p.type === 'timeZoneName')!.value
  return name === 'GMT' ? '+00:00' : name.slice(3)
}
const offsetMs = (text: string) => (text[0] === '-' ? -1 : 1) * (Number(text.slice(1, 3)) * HOUR + Number(text.slice(4, 6)) * MIN)

/** The bucket of an event at `ms`, as the part of a point's `start` that names it. */
function bucketKey(tz: string, bucket: string, ms: number): string {
  const off = offsetText(tz, ms)
  const wall = new Date(ms + offsetMs(off))
  const date = wall.toISOString().slice(0, 10)
  if (bucket === '15m') return `${wall.toISOString().slice(0, 14)}${String(Math.floor(wall.getUTCMinutes() / 15) * 15).padStart(2, '0')}${off}`
  if (bucket === '1h') return `${wall.toISOString().slice(0, 14)}00${off}`
  if (bucket === '1d') return date
  if (bucket === '1mo') return date.slice(0, 7)
  const monday = new Date(Date.parse(date) - ((wall.getUTCDay() + 6) % 7) * DAY)
  return monday.toISOString().slice(0, 10)
}
/** The same key read from a point's start label. */
function labelKey(bucket: string, start: string): string {
  if (bucket === '15m' || bucket === '1h') return start.slice(0, 16) + start.slice(19)
  if (bucket === '1mo') return start.slice(0, 7)
  return start.slice(0, 10)
}

const scaled = (cost: string | null) => {
  const p = parseCost(cost ?? '0')
  assert.ok(p.ok)
  return p.scaled
}

interface Sum {
  requests: number
  errors: number
  input_tokens: number
  output_tokens: number
  cost: bigint
}
const zero = (): Sum => ({ requests: 0, errors: 0, input_tokens: 0, output_tokens: 0, cost: 0n })

test('every point equals the events bucketed by their own local time; empty buckets are zeros (property)', async (t) => {
  const { app } = await build(t, ENV)
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.record({
          // Where in the window (a little before and after it too), and whether on a 15-minute boundary.
          at: fc.integer({ min: -100_000, max: 1_100_000 }),
          snap: fc.boolean(),
          model: fc.constantFrom('m1', 'm2', 'm3'),
          status: fc.constantFrom(200, 200, 500),
          input: fc.integer({ min: 0, max: 10_000 }),
          cost: fc.integer({ min: 0, max: 99_999 }),
          cut: fc.constantFrom('none', 'none', 'none', 'rollover', 'seal'),
        }),
        { minLength: 1, maxLength: 40 },
      ),
      fc.constantFrom('UTC', 'Europe/Berlin', 'Asia/Kolkata', 'America/St_Johns', 'Asia/Kathmandu'),
      fc.constantFrom('15m', '1h', '1d', '1w', '1mo'),
      fc.boolean(),
      fc.integer({ min: 0, max: 3 * DAY }),
      fc.integer({ min: 1, max: 10 * DAY }),
      async (drawn, tz, bucket, byModel, fromOffset, lengthDrawn) => {
        // Unaligned edges (minutes and seconds), answered from raw rows around the rollups.
        const from = SPAN_FROM + fromOffset - (fromOffset % 7_000)
        const length = bucket === '15m' ? Math.min(lengthDrawn, 4 * DAY) : lengthDrawn // under the point bound
        const to = from + length
        const spec = drawn.map((d) => {
          const at = from + Math.floor((d.at / 1_000_000) * length)
          return { ...d, at: d.snap ? at - (at % (15 * MIN)) : at }
        })
        // Every run has its own key, so runs share one server without seeing each other's events.
        const key = `key_${Math.random().toString(36).slice(2)}`
        for (const s of spec) {
          const e = event({ key_id: key, timestamp: s.at, model: s.model, status_code: s.status, input_tokens: s.input, cost: `${s.cost / 1000}` })
          assert.equal((await post(app, [e])).body.accepted, 1)
          if (s.cut !== 'none') await rollover(app)
          if (s.cut === 'seal') await app.store.settle()
        }
        const q = `from=${iso(from)}&to=${iso(to)}&key_id=${key}&bucket=${bucket}&tz=${encodeURIComponent(tz)}${byModel ? '&group_by=model&limit=100' : ''}`
        const body = await series(app, q)
        const want = new Map<string, Map<string, Sum>>()
        for (const s of spec) {
          if (s.at < from || s.at >= to) continue
          const group = byModel ? s.model : ''
          const points = want.get(group) ?? new Map<string, Sum>()
          want.set(group, points)
          const k = bucketKey(tz, bucket, s.at)
          const p = points.get(k) ?? zero()
          points.set(k, p)
          p.requests++
          p.errors += s.status >= 400 ? 1 : 0
          p.input_tokens += s.input
          p.cost += BigInt(s.cost) * 10n ** 9n
        }
        assert.equal(body.tz, tz)
        assert.equal(body.series_count, byModel ? want.size : 1)
        const usage = await app.inject({ url: `/v1/usage?from=${iso(from)}&to=${iso(to)}&key_id=${key}` })
        const totals = (usage.json() as { totals: Point }).totals
        let requests = 0
        for (const s of body.series) {
          const points = want.get(byModel ? s.key.model! : '') ?? new Map<string, Sum>()
          // Labels: strictly increasing instants, the first holding `from`, the last before `to`.
          const instants = s.points.map((p) => Date.parse(p.start))
          for (let i = 1; i < instants.length; i++) assert.ok(instants[i - 1]! < instants[i]!, `${s.points[i - 1]!.start} then ${s.points[i]!.start}`)
          assert.ok(instants[0]! <= from && instants.at(-1)! < to, `${s.points[0]!.start}..${s.points.at(-1)!.start} for [${iso(from)}, ${iso(to)})`)
          if (bucket === '1d') assert.equal(labelKey(bucket, s.points.at(-1)!.start), bucketKey(tz, bucket, to - 1))
          const seen = new Set<string>()
          for (const p of s.points) {
            const k = labelKey(bucket, p.start)
            assert.ok(!seen.has(k), `bucket ${k} twice`)
            seen.add(k)
            const w = points.get(k) ?? zero()
            assert.deepEqual(
              { requests: p.requests, errors: p.errors, input_tokens: p.input_tokens, cost: scaled(p.cost) },
              { requests: w.requests, errors: w.errors, input_tokens: w.input_tokens, cost: w.cost },
              `${tz} ${bucket} point ${p.start}`,
            )
            requests += p.requests
          }
          for (const k of points.keys()) assert.ok(seen.has(k), `no point for bucket ${k}`)
        }
        assert.equal(requests, totals.requests)
      },
    ),
    { numRuns: RUNS },
  )
})

/** One event per hour over [from, to), in one run's own key. */
async function hourly(app: FastifyInstance, from: string, to: string): Promise<string> {
  const key = `key_${Math.random().toString(36).slice(2)}`
  const events = []
  for (let ms = Date.parse(from); ms < Date.parse(to); ms += HOUR) events.push(event({ key_id: key, timestamp: ms + 5 * MIN }))
  assert.equal((await post(app, events)).body.accepted, events.length)
  return key
}

test('days follow local midnight: 25 hours on 2026-10-25 in Berlin, 23 on 2026-03-29; the repeated hour is two buckets', async (t) => {
  const { app } = await build(t, { ...ENV, TOKENLEDGER_EVENT_RETENTION: '300d' })
  const key = await hourly(app, '2026-10-23T22:00:00Z', '2026-10-26T23:00:00Z')
  const days = await series(app, `from=2026-10-24T00:00:00%2B02:00&to=2026-10-27T00:00:00%2B01:00&key_id=${key}&bucket=1d&tz=Europe/Berlin`)
  assertPoints(days, [['2026-10-24T00:00:00+02:00', 24], ['2026-10-25T00:00:00+02:00', 25], ['2026-10-26T00:00:00+01:00', 24]])
  const hours = await series(app, `from=2026-10-25T01:00:00%2B02:00&to=2026-10-25T04:00:00%2B01:00&key_id=${key}&bucket=1h&tz=Europe/Berlin`)
  assertPoints(hours, [['2026-10-25T01:00:00+02:00', 1], ['2026-10-25T02:00:00+02:00', 1], ['2026-10-25T02:00:00+01:00', 1], ['2026-10-25T03:00:00+01:00', 1]])
  const spring = await hourly(app, '2026-03-27T23:00:00Z', '2026-03-30T22:00:00Z')
  const springDays = await series(app, `from=2026-03-28T00:00:00%2B01:00&to=2026-03-31T00:00:00%2B02:00&key_id=${spring}&bucket=1d&tz=Europe/Berlin`)
  assertPoints(springDays, [['2026-03-28T00:00:00+01:00', 24], ['2026-03-29T00:00:00+01:00', 23], ['2026-03-30T00:00:00+02:00', 24]])
})

test('half- and quarter-hour zones: Kolkata hours start at :30 UTC, St_Johns days move with its change, Kathmandu weeks start Monday at 00:00+05:45', async (t) => {
  const { app } = await build(t, ENV)
  const key = await hourly(app, '2026-10-30T00:00:00Z', '2026-11-10T00:00:00Z')
  const kolkata = await series(app, `from=2026-11-01T00:00:00Z&to=2026-11-01T03:00:00Z&key_id=${key}&bucket=1h&tz=Asia/Kolkata`)
  // 00:05Z falls in 05:00+05:30 (23:30Z..00:30Z); 01:05Z in 06:00; 02:05Z in 07:00; nothing before 03:00Z lands in 08:00.
  assertPoints(kolkata, [['2026-11-01T05:00:00+05:30', 1], ['2026-11-01T06:00:00+05:30', 1], ['2026-11-01T07:00:00+05:30', 1], ['2026-11-01T08:00:00+05:30', 0]])
  const johns = await series(app, `from=2026-10-31T00:00:00-02:30&to=2026-11-03T00:00:00-03:30&key_id=${key}&bucket=1d&tz=America/St_Johns`)
  assertPoints(johns, [['2026-10-31T00:00:00-02:30', 24], ['2026-11-01T00:00:00-02:30', 25], ['2026-11-02T00:00:00-03:30', 24]])
  const weeks = await series(app, `from=2026-11-01T00:00:00Z&to=2026-11-10T00:00:00Z&key_id=${key}&bucket=1w&tz=Asia/Kathmandu`)
  // Events from 2026-11-01T00:05Z (the window's start) to 2026-11-09T23:05Z: the Monday 2026-11-02T00:00+05:45 is 2026-11-01T18:15Z.
  assertPoints(weeks, [['2026-10-26T00:00:00+05:45', 19], ['2026-11-02T00:00:00+05:45', 168], ['2026-11-09T00:00:00+05:45', 29]])
  const months = await series(app, `from=2026-10-30T00:00:00Z&to=2026-11-10T00:00:00Z&key_id=${key}&bucket=1mo&tz=UTC`)
  assertPoints(months, [['2026-10-01T00:00:00+00:00', 48], ['2026-11-01T00:00:00+00:00', 216]])
})

test('series are the largest by order_by, limited, counted; an empty window is one series of zeros', async (t) => {
  const { app } = await build(t, ENV)
  const at = Date.parse('2026-11-20T10:00:00Z')
  const events = [
    ...Array.from({ length: 3 }, () => event({ timestamp: at, model: 'small', cost: '5' })),
    ...Array.from({ length: 5 }, () => event({ timestamp: at, model: 'big', cost: '0.1' })),
    event({ timestamp: at, model: 'one', cost: '0.01' }),
  ]
  assert.equal((await post(app, events)).body.accepted, 9)
  const q = 'from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z&bucket=1d'
  const byRequests = await series(app, `${q}&group_by=model&limit=2`)
  assert.equal(byRequests.series_count, 3)
  assert.deepEqual(
    byRequests.series.map((s) => [s.key.model, s.totals.requests, s.points[0]!.requests]),
    [
      ['big', 5, 5],
      ['small', 3, 3],
    ],
  )
  const byCost = await series(app, `${q}&group_by=model&order_by=cost&limit=1`)
  assert.deepEqual(
    byCost.series.map((s) => [s.key.model, s.totals.cost]),
    [['small', '15']],
  )
  const empty = await series(app, 'from=2026-11-01T00:00:00Z&to=2026-11-03T00:00:00Z&bucket=1d&tz=Europe/Berlin')
  assert.equal(empty.series_count, 1)
  assert.deepEqual(empty.series[0]!.key, {})
  assert.deepEqual(starts(empty), ['2026-11-01T00:00:00+01:00', '2026-11-02T00:00:00+01:00', '2026-11-03T00:00:00+01:00'])
  assert.ok(empty.series[0]!.points.every((p) => p.requests === 0 && p.cost === '0'))
})

test('bad parameters are 400s naming the parameter', async (t) => {
  const { app } = await build(t, ENV)
  const cases: Array<[string, RegExp]> = [
    ['from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z', /bucket/],
    ['bucket=2h', /bucket/],
    ['bucket=1d&tz=Mars/Olympus', /`tz`/],
    ['bucket=1d&tz=', /tz/],
    ['bucket=15m&from=2025-12-01T00:00:00Z&to=2026-11-24T00:00:00Z', /`bucket` 15m gives more than 10000 buckets/],
    ['bucket=1h&from=2026-01-01T00:00:00Z&to=2026-11-24T00:00:00Z&group_by=model&limit=100', /`limit` 100 series/],
    ['bucket=1d&group_by=colour', /group_by/],
    ['bucket=1d&limit=0', /limit/],
    ['bucket=1d&from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z', /`from` must be earlier than `to`/],
    ['bucket=1d&order_by=vibes', /order_by/],
    ['bucket=1mo&to=2200-01-01T00:00:00Z', /`to` is more than \d+ days after `from`/],
    ['bucket=1h&to=9999-12-31T00:00:00Z', /`bucket` 1h gives more than 10000 buckets/],
  ]
  for (const [q, message] of cases) {
    const res = await app.inject({ url: `/v1/usage/timeseries?${q}` })
    assert.equal(res.statusCode, 400, `${q}: ${res.body}`)
    assert.match((res.json() as { message: string }).message, message, q)
  }
})
