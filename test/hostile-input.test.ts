// Proves that input a hostile or careless client sends is never stored changed
// behind its back (issue 23, item 3), through the real app and store:
// - a cost sent as a JSON number is stored digit for digit, however many digits
//   (never through a double), on the native route in JSON and NDJSON;
// - a body that is not valid UTF-8 is refused with 400 naming the field, never
//   stored with U+FFFD (so `k\xff\xfe` and `k\xc0\xaf` cannot become one key);
// - a duplicate key is refused with 400 naming the key, whichever copy a
//   gateway's JSON library would keep;
// - nesting is refused while parsing: 8 concurrent 7 MB `[[[[…` bodies are
//   answered 400 at once and a legitimate event sent meanwhile is accepted.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { build, event, T0 } from './helper.js'

function envelope(events: string[]): string {
  return `{"events":[${events.join(',')}]}`
}

/** An event's JSON text with `costText` spliced in as a raw JSON number. */
function withRawCost(over: Record<string, unknown>, costText: string): string {
  const { cost: _cost, ...rest } = event(over)
  return JSON.stringify(rest).replace(/}$/, `,"cost":${costText}}`)
}

test('numeric costs are stored exactly as their text, never through a double', async (t) => {
  const { app } = await build(t)
  const cases: Array<[text: string, stored: string]> = [
    ['123456789012.123456', '123456789012.123456'],
    ['99999999999999.99', '99999999999999.99'],
    ['0.000000000001', '0.000000000001'],
    ['1.5e-7', '0.00000015'],
    ['0.1', '0.1'],
    ['123456789012345.123456789012', '123456789012345.123456789012'],
  ]
  const ids: string[] = []
  const bodies = cases.map(([text], i) => {
    const id = `exact-cost-${i}`
    ids.push(id)
    return withRawCost({ event_id: id }, text)
  })
  const res = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/json' }, payload: envelope(bodies) })
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.json().accepted, cases.length, res.body)
  for (const [i, [text, stored]] of cases.entries()) {
    const got = await app.inject({ method: 'GET', url: `/v1/events/${ids[i]!}` })
    assert.equal(got.json().cost, stored, `cost sent as the JSON number ${text}`)
  }
  // The exact sum of what was sent, not of its doubles.
  const usage = await app.inject({ method: 'GET', url: `/v1/usage?from=${T0 - 3_600_000}&to=${T0}` })
  assert.equal(usage.json().totals.cost, '223580245801357.336912939013')

  // NDJSON keeps the same digits.
  const nd = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/x-ndjson' }, payload: withRawCost({ event_id: 'exact-nd' }, '123456789012.123456') + '\n' })
  assert.equal(nd.json().accepted, 1, nd.body)
  assert.equal((await app.inject({ method: 'GET', url: '/v1/events/exact-nd' })).json().cost, '123456789012.123456')
})

test('long numbers elsewhere are judged by their exact value', async (t) => {
  const { app } = await build(t)
  const text = (over: Record<string, unknown>, field: string, raw: string) => {
    const e = event(over)
    delete e[field]
    return JSON.stringify(e).replace(/}$/, `,"${field}":${raw}}`)
  }
  const res = await app.inject({
    method: 'POST',
    url: '/v1/events',
    headers: { 'content-type': 'application/json' },
    payload: envelope([
      text({ event_id: 'long-int-ok' }, 'input_tokens', '1234567890123456'),
      text({ event_id: 'long-int-unsafe' }, 'output_tokens', '9007199254740993'),
      text({ event_id: 'long-int-fraction' }, 'output_tokens', '1.0000000000000001'),
      text({ event_id: 'long-cost-negative' }, 'cost', '-0.0000000000000001'),
      text({ event_id: 'long-detail', detail: undefined }, 'detail', '{"score":0.12345678901234567890}'),
    ]),
  })
  assert.equal(res.statusCode, 200, res.body)
  const body = res.json()
  const byId = Object.fromEntries(body.results.map((r: { event_id: string }) => [r.event_id, r]))
  assert.equal(body.accepted, 2, res.body)
  assert.match(byId['long-int-unsafe'].errors[0].message, /safe integer/)
  assert.equal(byId['long-int-fraction'].errors[0].field, '/output_tokens')
  assert.match(byId['long-int-fraction'].errors[0].message, /integer/)
  assert.match(byId['long-cost-negative'].errors[0].message, />= 0/)
  assert.equal((await app.inject({ method: 'GET', url: '/v1/events/long-int-ok' })).json().input_tokens, 1234567890123456)
  // The detail's number is stored as its text (read back through a double, but stored exactly: its fingerprint holds the text).
  const again = await app.inject({
    method: 'POST',
    url: '/v1/events',
    headers: { 'content-type': 'application/json' },
    payload: envelope([text({ event_id: 'long-detail', detail: undefined }, 'detail', '{"score":0.12345678901234567891}')]),
  })
  assert.equal(again.json().conflicts, 1, `a different 20-digit number is a different detail: ${again.body}`)
})

test('a body that is not valid UTF-8 is refused, naming the field; no U+FFFD is ever stored', async (t) => {
  const { app } = await build(t)
  const [before, after] = JSON.stringify(event({ event_id: 'utf8-a', key_id: 'k@@' })).split('@@')
  for (const bad of [[0xff, 0xfe], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe2, 0x82]]) {
    const payload = Buffer.concat([Buffer.from(`{"events":[${before!}`), Buffer.from(bad), Buffer.from(`${after!}]}`)])
    const res = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/json' }, payload })
    assert.equal(res.statusCode, 400, `bytes ${Buffer.from(bad).toString('hex')}: ${res.body}`)
    assert.match(res.json().message, /invalid UTF-8 in a string \(byte offset \d+\) at \/events\/0\/key_id/, res.body)
  }
  // NDJSON: the line and the field.
  const [m0, m1] = JSON.stringify(event({ model: 'm@@' })).split('@@')
  const line = Buffer.concat([Buffer.from(JSON.stringify(event()) + '\n' + m0!), Buffer.from([0xff]), Buffer.from(m1! + '\n')])
  const nd = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/x-ndjson' }, payload: line })
  assert.equal(nd.statusCode, 400, nd.body)
  assert.match(nd.json().message, /NDJSON line 2: invalid UTF-8 in a string \(byte offset \d+\) at \/model/, nd.body)
  const got = await app.inject({ method: 'GET', url: '/v1/events/utf8-a' })
  assert.equal(got.statusCode, 404, 'nothing of a refused body is stored')
  // Valid multi-byte UTF-8 is of course taken.
  const ok = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/json' }, payload: Buffer.from(envelope([JSON.stringify(event({ event_id: 'utf8-ok', key_id: 'clé-€-𝄞' }))])) })
  assert.equal(ok.json().accepted, 1, ok.body)
  assert.equal((await app.inject({ method: 'GET', url: '/v1/events/utf8-ok' })).json().key_id, 'clé-€-𝄞')
})

test('duplicate JSON keys are refused with 400 naming the key, never last-one-wins', async (t) => {
  const { app } = await build(t)
  const e = JSON.stringify(event({ event_id: 'dup-a' }))
  const cases: Array<[payload: string, pointer: string]> = [
    [envelope([e.replace('"event_id":"dup-a"', '"event_id":"dup-a","event_id":"dup-b"')]), '/events/0/event_id'],
    [envelope([e.replace('"cost":"0.001"', '"cost":"0.001","cost":"1000"')]), '/events/0/cost'],
    [envelope([e, e.replace('"dup-a"', '"dup-c"').replace(/}$/, ',"tags":{"env":"a","env":"b"}}')]), '/events/1/tags/env'],
    ['{"events":[],"events":[' + e + ']}', '/events'],
  ]
  for (const [payload, pointer] of cases) {
    const res = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/json' }, payload })
    assert.equal(res.statusCode, 400, res.body)
    assert.equal(res.json().code, 'TL_BAD_BODY')
    assert.ok(res.json().message.includes(`duplicate key`) && res.json().message.includes(` at ${pointer}`), res.body)
  }
  const nd = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/x-ndjson' }, payload: e.replace('"provider":"openai"', '"provider":"openai","provider":"x"') + '\n' })
  assert.equal(nd.statusCode, 400, nd.body)
  assert.match(nd.json().message, /NDJSON line 1: duplicate key "provider" at \/provider/)
  for (const id of ['dup-a', 'dup-b', 'dup-c']) assert.equal((await app.inject({ method: 'GET', url: `/v1/events/${id}` })).statusCode, 404)
})

test('deep nesting is refused while parsing: concurrent 7 MB bodies cost nothing and do not hold a legitimate event', async (t) => {
  const { app } = await build(t)
  const deep = Buffer.from('{"events":[' + '['.repeat(7 * 1024 * 1024))
  const legit = JSON.stringify({ events: [event({ event_id: 'legit-under-attack' })] })
  const rssBefore = process.memoryUsage().rss
  const t0 = performance.now()
  // From one attacker (its 8 bodies are within the per-client bounds: 8 requests of 7 MiB), the legitimate event from another client.
  const attacks = Array.from({ length: 8 }, () => app.inject({ method: 'POST', url: '/v1/events', remoteAddress: '127.0.0.9', headers: { 'content-type': 'application/json' }, payload: deep }))
  const ok = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/json' }, payload: legit })
  const legitMs = performance.now() - t0
  const answers = await Promise.all(attacks)
  for (const res of answers) {
    assert.equal(res.statusCode, 400)
    assert.match(res.json().message, /nested deeper than 64 levels/)
  }
  assert.equal(ok.json().accepted, 1, ok.body)
  const grownMiB = (process.memoryUsage().rss - rssBefore) / 2 ** 20
  // Before: 10.7 s and about 1 GiB; the bodies alone are 56 MiB (and their copies to the workers).
  assert.ok(legitMs < 5_000, `the legitimate event took ${Math.round(legitMs)} ms`)
  assert.ok(grownMiB < 400, `RSS grew ${Math.round(grownMiB)} MiB`)
})
