// Proves the ingest contract end to end through app.inject on the real store:
// per-event outcomes, exactly-once (duplicates and conflicts within a batch,
// across batches, between concurrent requests and across a restart), atomic
// mode, body formats and encodings, whole-request errors, exact money, and
// that what is read back is what was posted.

import assert from 'node:assert/strict'
import { gzipSync } from 'node:zlib'
import { test } from 'node:test'
import { build, event, post, T0, totals } from './helper.js'

test('accepted events are stored once and read back as posted', async (t) => {
  const { app } = await build(t)
  const e = event({
    timestamp: '2026-11-24T11:30:00.123456+01:00',
    cache_read_tokens: 40,
    cache_write_tokens: 10,
    reasoning_tokens: 5,
    currency: 'EUR',
    team_id: 'team_1',
    user_id: 'u1',
    customer_id: 'c1',
    endpoint: '/v1/chat/completions',
    latency_ms: 900,
    ttft_ms: 120,
    stream: true,
    tags: { env: 'prod', region: 'eu' },
    detail: { request: { messages: [{ role: 'user', content: 'hi' }] }, error: null },
    cost: '0.000120',
  })
  const res = await post(app, { events: [e] })
  assert.equal(res.status, 200)
  assert.deepEqual(res.body, { accepted: 1, duplicates: 0, conflicts: 0, rejected: 0, results: [] })

  const got = await app.inject({ method: 'GET', url: `/v1/events/${e.event_id as string}` })
  assert.equal(got.statusCode, 200)
  assert.deepEqual(got.json(), {
    event_id: e.event_id,
    timestamp: '2026-11-24T10:30:00.123456Z',
    key_id: 'key_a',
    provider: 'openai',
    model: 'gpt-4o-mini',
    status_code: 200,
    input_tokens: 100,
    output_tokens: 20,
    cache_read_tokens: 40,
    cache_write_tokens: 10,
    reasoning_tokens: 5,
    cost: '0.00012',
    cost_origin: 'reported',
    reported_cost: '0.00012',
    price_ref: null,
    currency: 'EUR',
    team_id: 'team_1',
    user_id: 'u1',
    customer_id: 'c1',
    endpoint: '/v1/chat/completions',
    latency_ms: 900,
    ttft_ms: 120,
    stream: true,
    tags: { env: 'prod', region: 'eu' },
    detail: { request: { messages: [{ role: 'user', content: 'hi' }] }, error: null },
  })
  const missing = await app.inject({ method: 'GET', url: '/v1/events/never-posted' })
  assert.equal(missing.statusCode, 404)
  assert.match(missing.json().message, /never-posted/)
})

test('a replay is a duplicate, a changed replay is a conflict, first write wins', async (t) => {
  const { app } = await build(t)
  const a = event({ input_tokens: 7 })
  const b = event()
  assert.equal((await post(app, [a, b])).body.accepted, 2)

  const again = await post(app, [a, { ...b, input_tokens: 999 }])
  assert.equal(again.status, 200)
  assert.equal(again.body.accepted, 0)
  assert.equal(again.body.duplicates, 1)
  assert.equal(again.body.conflicts, 1)
  assert.deepEqual(again.body.results, [
    { index: 0, event_id: a.event_id, status: 'duplicate' },
    { index: 1, event_id: b.event_id, status: 'conflict' },
  ])
  // Key order and equivalent decimal spellings are the same content.
  const reordered = Object.fromEntries(Object.entries(a).reverse())
  assert.equal((await post(app, [{ ...reordered, cost: '0.0010' }])).body.duplicates, 1)

  const t1 = await totals(app)
  assert.equal(t1.requests, 2)
  assert.equal(t1.input_tokens, 7 + 100)
  const stored = (await app.inject({ method: 'GET', url: `/v1/events/${b.event_id as string}` })).json()
  assert.equal(stored.input_tokens, 100, 'the first write wins')
})

test('duplicates and conflicts inside one batch', async (t) => {
  const { app } = await build(t)
  const a = event()
  const res = await post(app, [a, a, { ...a, model: 'other' }, event()])
  assert.equal(res.body.accepted, 2)
  assert.deepEqual(
    res.body.results.map((r) => [r.index, r.status]),
    [
      [1, 'duplicate'],
      [2, 'conflict'],
    ],
  )
  assert.equal((await totals(app)).requests, 2)
})

test('concurrent requests with overlapping ids store each id once', async (t) => {
  const { app } = await build(t)
  const shared = Array.from({ length: 50 }, () => event())
  const clients = Array.from({ length: 8 }, (_, c) => post(app, [...shared, ...Array.from({ length: 10 }, () => event({ key_id: `key_${c}` }))]))
  const answers = await Promise.all(clients)
  for (const a of answers) assert.equal(a.status, 200)
  const accepted = answers.reduce((n, a) => n + a.body.accepted, 0)
  const duplicates = answers.reduce((n, a) => n + a.body.duplicates, 0)
  assert.equal(accepted, 50 + 8 * 10, 'every shared id accepted exactly once across all clients')
  assert.equal(duplicates, 7 * 50)
  assert.equal((await totals(app)).requests, 130)
})

test('ids stay unique across a restart (the index is rebuilt from the file)', async (t) => {
  const built = await build(t)
  const a = event()
  assert.equal((await post(built.app, [a])).body.accepted, 1)
  const app = await built.restart()
  const res = await post(app, [a, { ...a, output_tokens: 1 }])
  assert.deepEqual(
    res.body.results.map((r) => r.status),
    ['duplicate', 'conflict'],
  )
  assert.equal((await totals(app)).requests, 1)
})

test('atomic mode stores nothing unless every event is acceptable', async (t) => {
  const { app } = await build(t)
  const stored = event()
  await post(app, [stored])

  const bad = await post(app, [event(), event({ input_tokens: -1 })], '?atomic=true')
  assert.equal(bad.status, 422)
  assert.equal(bad.body.accepted, 0)
  assert.deepEqual(bad.body.results[0]?.errors?.[0]?.field, '/input_tokens')

  const conflicting = event()
  const withConflict = await post(app, [conflicting, { ...stored, model: 'changed' }], '?atomic=true')
  assert.equal(withConflict.status, 422)
  assert.equal(withConflict.body.conflicts, 1)
  assert.equal(withConflict.body.accepted, 0)
  // The refused request's good event was not stored: posting it now is accepted.
  assert.equal((await post(app, [conflicting])).body.accepted, 1)

  const ok = await post(app, [event(), stored], '?atomic=true')
  assert.equal(ok.status, 200, 'duplicates are acceptable in atomic mode')
  assert.equal(ok.body.accepted, 1)
  assert.equal(ok.body.duplicates, 1)
  assert.equal((await totals(app)).requests, 3)

  const badFlag = await app.inject({ method: 'POST', url: '/v1/events?atomic=maybe', payload: [event()] })
  assert.equal(badFlag.statusCode, 400)
  assert.match(badFlag.json().message, /atomic/)
})

test('body formats: object, bare array, NDJSON, gzip', async (t) => {
  const { app } = await build(t)
  const ndjson = [event(), event()].map((e) => JSON.stringify(e)).join('\n') + '\n\n'
  const nd = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/x-ndjson' }, payload: ndjson })
  assert.equal(nd.statusCode, 200)
  assert.equal(nd.json().accepted, 2)

  const gz = await app.inject({
    method: 'POST',
    url: '/v1/events',
    headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
    payload: gzipSync(JSON.stringify({ events: [event(), event(), event()] })),
  })
  assert.equal(gz.statusCode, 200, gz.body)
  assert.equal(gz.json().accepted, 3)

  const gzNd = await app.inject({
    method: 'POST',
    url: '/v1/events',
    headers: { 'content-type': 'application/x-ndjson; charset=utf-8', 'content-encoding': 'gzip' },
    payload: gzipSync(JSON.stringify(event())),
  })
  assert.equal(gzNd.json().accepted, 1)
  assert.equal((await totals(app)).requests, 6)
})

test('whole-request errors: 400, 413, 415 with a clear message', async (t) => {
  const { app } = await build(t, { TOKENLEDGER_MAX_BATCH_EVENTS: '3', TOKENLEDGER_MAX_BODY_BYTES: '4KiB' })
  const send = (payload: string | Buffer, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/json', ...headers }, payload })

  const malformed = await send('{"events": [')
  assert.equal(malformed.statusCode, 400)

  const wrongShape = await send('{"events": [], "extra": 1}')
  assert.equal(wrongShape.statusCode, 400)
  assert.match(wrongShape.json().message, /extra/)
  assert.equal((await send('"just a string"')).statusCode, 400)
  assert.equal((await send('{"__proto__": {"x": 1}, "events": []}')).statusCode, 400)

  const tooMany = await send(JSON.stringify([event(), event(), event(), event()]))
  assert.equal(tooMany.statusCode, 413)
  assert.match(tooMany.json().message, /4 events; at most 3/)

  const tooBig = await send(JSON.stringify([event({ detail: { blob: 'x'.repeat(5000) } })]))
  assert.equal(tooBig.statusCode, 413)

  // A gzip bomb is bounded by the decoded size, not the wire size.
  const bomb = await send(gzipSync(JSON.stringify([event({ detail: { blob: 'y'.repeat(50_000) } })])), { 'content-encoding': 'gzip' })
  assert.equal(bomb.statusCode, 413)

  const truncated = gzipSync(JSON.stringify([event()])).subarray(0, 20)
  const trunc = await send(truncated, { 'content-encoding': 'gzip' })
  assert.equal(trunc.statusCode, 400)
  assert.match(trunc.json().message, /gzip/)

  assert.equal((await send('[]', { 'content-encoding': 'br' })).statusCode, 415)
  assert.equal((await send('x', { 'content-type': 'text/plain' })).statusCode, 415)
  assert.equal((await send('<a/>', { 'content-type': 'application/xml' })).statusCode, 415)

  const ndjson = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/x-ndjson' }, payload: `${JSON.stringify(event())}\n{broken\n` })
  assert.equal(ndjson.statusCode, 400)
  assert.match(ndjson.json().message, /line 2/)
  assert.equal((await totals(app)).requests, 0, 'no whole-request error stored anything')
})

test('money is exact: 0.1 + 0.2 is 0.3, and sums never touch floating point', async (t) => {
  const { app } = await build(t)
  await post(app, [event({ cost: '0.1' }), event({ cost: 0.2 }), event({ cost: undefined })])
  const t1 = await totals(app)
  assert.equal(t1.cost, '0.3')
  assert.equal(t1.currency, 'USD')
  assert.equal(t1.cost_missing, 1)

  // 10 000 x 0.000000000001 and amounts at the edge of the precision.
  const tiny = Array.from({ length: 1000 }, () => event({ key_id: 'tiny', cost: '0.000000000001' }))
  for (let i = 0; i < 10; i++) await post(app, tiny.map((e) => ({ ...e, event_id: `${e.event_id as string}-${i}` })))
  assert.equal((await totals(app, 'key_id=tiny')).cost, '0.00000001')
  await post(app, [event({ key_id: 'big', cost: '999999999999999.999999999999' }), event({ key_id: 'big', cost: '0.000000000001' })])
  assert.equal((await totals(app, 'key_id=big')).cost, '1000000000000000')

  await post(app, [event({ key_id: 'mixed', cost: '1.5', currency: 'EUR' }), event({ key_id: 'mixed', cost: '2' })])
  const mixed = await totals(app, 'key_id=mixed')
  assert.equal(mixed.cost, null, 'no single cost when currencies mix')
  assert.deepEqual(mixed.cost_by_currency, { EUR: '1.5', USD: '2' })
})

test('usage totals honour the window and every filter, with OR for repeats', async (t) => {
  const { app } = await build(t)
  await post(app, [
    event({ key_id: 'k1', team_id: 't1', user_id: 'u1', customer_id: 'c1', provider: 'openai', model: 'm1', status_code: 200, input_tokens: 1, timestamp: T0 - 3_600_000 }),
    event({ key_id: 'k1', team_id: 't2', user_id: 'u2', customer_id: 'c2', provider: 'anthropic', model: 'm2', status_code: 429, input_tokens: 2, timestamp: T0 - 1_800_000 }),
    event({ key_id: 'k2', team_id: 't1', user_id: 'u1', customer_id: 'c1', provider: 'openai', model: 'm2', status_code: 500, input_tokens: 4, timestamp: T0 - 60_000 }),
    event({ key_id: 'k3', provider: 'google', model: 'm3', status_code: 302, input_tokens: 8, timestamp: T0 }),
  ])
  const sum = async (q: string) => (await totals(app, q)).input_tokens
  assert.equal(await sum(''), 15)
  assert.equal(await sum('key_id=k1'), 3)
  assert.equal(await sum('key_id=k1&key_id=k3'), 11)
  assert.equal(await sum('team_id=t1'), 5)
  assert.equal(await sum('user_id=u2'), 2)
  assert.equal(await sum('customer_id=c1&provider=openai'), 5)
  assert.equal(await sum('model=m2'), 6)
  assert.equal(await sum('status=ok'), 9)
  assert.equal(await sum('status=error'), 6)
  assert.equal(await sum('status=429&status=302'), 10)
  const windowed = await app.inject({ method: 'GET', url: `/v1/usage?from=${T0 - 1_800_000}&to=2026-11-24T12:00:00Z` })
  assert.equal(windowed.json().totals.input_tokens, 6, 'from inclusive, to exclusive')
  assert.equal(windowed.json().totals.errors, 2)

  for (const [q, needle] of [
    ['from=5&to=5', /earlier/],
    ['from=yesterday', /from/],
    ['status=maybe', /status/],
    ['key=k1', /key/],
  ] as const) {
    const res = await app.inject({ method: 'GET', url: `/v1/usage?${q}` })
    assert.equal(res.statusCode, 400, q)
    assert.match(res.json().message, needle, q)
  }
})

test('health and readiness', async (t) => {
  const { app } = await build(t)
  assert.deepEqual((await app.inject({ url: '/healthz' })).json(), { status: 'ok' })
  const ready = await app.inject({ url: '/readyz' })
  assert.equal(ready.statusCode, 200)
  assert.equal(ready.json().status, 'ready')
})
