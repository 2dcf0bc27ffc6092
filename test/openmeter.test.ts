// Proves: OpenMeter's own client, @openmeter/sdk, configured as a user would
// (baseUrl and apiKey pointed at a listening tokenledger), ingests usage here
// unchanged: single and batch calls answer 204 only once the events are
// stored, one event per CloudEvent with the exact totals and fields mapped as
// the README says; a replay is a duplicate (nothing counted twice), a replay
// with another body is a conflict the SDK reports (409, first write wins);
// malformed CloudEvents are rejected naming the field while the good ones of
// the same request are kept; whole-request refusals are problem+json.

import assert from 'node:assert/strict'
import type { AddressInfo } from 'node:net'
import { test, type TestContext } from 'node:test'
import { OpenMeter, type Event, isHTTPError } from '@openmeter/sdk'
import { mappedEventId } from '../src/ingest/identity.js'
import { build, ingestOutcomes, T0 } from './helper.js'

const INGEST_TOKEN = 'i'.repeat(40)
const ADMIN_TOKEN = 'a'.repeat(40)
const ADMIN = { authorization: `Bearer ${ADMIN_TOKEN}` }

async function serve(t: TestContext) {
  const built = await build(t, { TOKENLEDGER_INGEST_TOKENS: INGEST_TOKEN, TOKENLEDGER_ADMIN_TOKENS: ADMIN_TOKEN })
  await built.app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = built.app.server.address() as AddressInfo
  const baseUrl = `http://127.0.0.1:${port}`
  // Exactly what a user writes: the SDK's constructor with our base URL and an ingest token.
  const openmeter = new OpenMeter({ baseUrl, apiKey: INGEST_TOKEN })
  const usage = async (query = '') => {
    const res = await built.app.inject({ url: `/v1/usage?from=0&to=${T0 + 3_600_000}${query}`, headers: ADMIN })
    assert.equal(res.statusCode, 200, res.body)
    return (res.json() as { totals: Record<string, unknown> }).totals
  }
  const event = async (id: string) => {
    const res = await built.app.inject({ url: `/v1/events/${encodeURIComponent(id)}`, headers: ADMIN })
    return { status: res.statusCode, body: res.json() as Record<string, unknown> }
  }
  return { ...built, baseUrl, openmeter, usage, event }
}

let seq = 0
function cloudEvent(data: Record<string, unknown>, over: Partial<Event> = {}): Event {
  seq++
  return { id: `om-${process.pid}-${seq}`, source: 'gateway-eu', specversion: '1.0', type: 'prompt', subject: 'customer-7', time: new Date(T0 - 60_000 + seq), data, ...over }
}

/** The SDK's error for `promise` (which must fail), with the problem+json it read. */
async function failure(promise: Promise<unknown>) {
  try {
    await promise
  } catch (err) {
    assert.ok(isHTTPError(err), `expected the SDK's HTTPError, got ${String(err)}`)
    return { status: err.status, type: err.type, extensions: err.getField('extensions') as Record<string, unknown> & { results: Array<{ index: number; event_id: string | null; status: string; errors?: Array<{ field: string; message: string }> }> }, message: err.message }
  }
  assert.fail('the ingest call succeeded; a refusal was expected')
}

test('the SDK ingests one event and a batch; totals and fields are exact, one event per CloudEvent', async (t) => {
  const { openmeter, usage, event } = await serve(t)
  const single = cloudEvent({ input_tokens: 1200, output_tokens: 300, cache_read_tokens: 200, model: 'gpt-4o', provider: 'openai', cost: '0.004250000001', key_id: 'key-eu-1', team_id: 'team-a' })
  assert.equal(await openmeter.events.ingest(single), undefined) // 204: no content
  // OpenMeter's LLM meter shape: one CloudEvent per token type.
  const batch = [
    cloudEvent({ tokens: 100, type: 'input', model: 'claude-sonnet-4', provider: 'anthropic', route: '/v1/messages' }),
    cloudEvent({ tokens: '40', type: 'output', model: 'claude-sonnet-4', provider: 'anthropic', cost: 0.0006 }),
    cloudEvent({ tokens: 7, type: 'system', model: 'claude-sonnet-4', provider: 'anthropic' }, { subject: 'customer-8' }),
  ]
  assert.equal(await openmeter.events.ingest(batch), undefined)

  const totals = await usage()
  assert.equal(totals.requests, 4)
  assert.equal(totals.input_tokens, 1200 + 100 + 7)
  assert.equal(totals.output_tokens, 300 + 40)
  assert.equal(totals.cache_read_tokens, 200)
  assert.equal(totals.cost, '0.004850000001')
  assert.equal(totals.cost_missing, 2)
  assert.equal((await usage('&customer_id=customer-8')).requests, 1)

  const stored = await event(mappedEventId('ce', ['gateway-eu', single.id!]))
  assert.equal(stored.status, 200)
  assert.equal(stored.body.event_id, `ce:gateway-eu:${single.id}`)
  assert.deepEqual(
    [stored.body.key_id, stored.body.customer_id, stored.body.team_id, stored.body.provider, stored.body.model, stored.body.status_code, stored.body.cost, stored.body.timestamp],
    ['key-eu-1', 'customer-7', 'team-a', 'openai', 'gpt-4o', 200, '0.004250000001', (single.time as Date).toISOString()],
  )
  const shaped = await event(mappedEventId('ce', ['gateway-eu', batch[0]!.id!]))
  // No data.key_id: the subject is the key too; data's other strings and the CloudEvent type are tags.
  assert.deepEqual([shaped.body.key_id, shaped.body.input_tokens, shaped.body.output_tokens, shaped.body.tags], ['customer-7', 100, 0, { 'cloudevents.type': 'prompt', route: '/v1/messages' }])
})

test('a replay is a duplicate; another body under the same (source, id) is a conflict the SDK reports', async (t) => {
  const { openmeter, app, usage, event } = await serve(t)
  const first = cloudEvent({ input_tokens: 10, output_tokens: 5, model: 'gpt-4o-mini', provider: 'openai', cost: '0.0001' })
  await openmeter.events.ingest(first)
  await openmeter.events.ingest(first) // the SDK retried: 204, stored once
  await openmeter.events.ingest([first, cloudEvent({ input_tokens: 1, output_tokens: 1, model: 'gpt-4o-mini', provider: 'openai' })])
  assert.equal((await usage()).requests, 2)

  const changed = { ...first, data: { ...first.data, input_tokens: 99 } }
  const refused = await failure(openmeter.events.ingest([changed, cloudEvent({ input_tokens: 3, output_tokens: 1, model: 'gpt-4o-mini', provider: 'openai' })]))
  assert.equal(refused.status, 409)
  assert.equal(refused.type, 'urn:tokenledger:problem:events-conflict')
  assert.deepEqual([refused.extensions.accepted, refused.extensions.conflicts, refused.extensions.rejected], [1, 1, 0])
  assert.deepEqual(refused.extensions.results.map((r) => [r.index, r.event_id, r.status]), [[0, `ce:gateway-eu:${first.id}`, 'conflict']])
  assert.match(refused.message, /conflict/)
  const totals = await usage()
  assert.equal(totals.requests, 3, 'the good event of the conflicting request is stored')
  assert.equal((await event(`ce:gateway-eu:${first.id}`)).body.input_tokens, 10, 'first write wins')

  // The same (source, id) from another source is another event.
  await openmeter.events.ingest({ ...first, source: 'gateway-us' })
  assert.equal((await usage()).requests, 4)
  assert.deepEqual(await ingestOutcomes(app, 'openmeter', ADMIN), { accepted: 4, duplicate: 2, conflict: 1, rejected: 0, refused: 0 })
})

test('the same CloudEvent posted on the native route under its mapped id is one event', async (t) => {
  const { openmeter, app, usage, event } = await serve(t)
  const ce = cloudEvent({ input_tokens: 10, output_tokens: 5, model: 'gpt-4o-mini', provider: 'openai', cost: '0.0001' })
  await openmeter.events.ingest(ce)
  const stored = (await event(`ce:gateway-eu:${ce.id}`)).body
  // What the answer adds to what was sent (the detail, the cost's origin) is not posted back.
  const { detail: _detail, cost_origin: _origin, reported_cost: _reported, price_ref: _ref, ...native } = stored
  const res = await app.inject({ method: 'POST', url: '/v1/events', headers: ADMIN, payload: { events: [native] } })
  assert.deepEqual(res.json(), { accepted: 0, duplicates: 1, conflicts: 0, rejected: 0, results: [{ index: 0, event_id: `ce:gateway-eu:${ce.id}`, status: 'duplicate' }] })
  assert.equal((await usage()).requests, 1)
})

test('malformed CloudEvents are rejected naming the field; the good ones of the request are kept', async (t) => {
  const { openmeter, app, usage } = await serve(t)
  const good = cloudEvent({ input_tokens: 10, output_tokens: 5, model: 'gpt-4o', provider: 'openai' })
  const refused = await failure(
    openmeter.events.ingest([
      cloudEvent({ tokens: 100, type: 'input', provider: 'openai' }), // no model
      good,
      cloudEvent({ tokens: 100, provider: 'openai', model: 'gpt-4o' }), // tokens without type
      cloudEvent({ input_tokens: -1, output_tokens: 5, model: 'gpt-4o', provider: 'openai' }),
      cloudEvent({ input_tokens: 1, output_tokens: 5, model: 'gpt-4o', provider: 'openai', cost: '1e-3' }),
      cloudEvent({ input_tokens: 1, output_tokens: 5, model: 'gpt-4o', provider: 'openai', latency: 12 }),
      cloudEvent({ input_tokens: 1, output_tokens: 5, model: 'gpt-4o', provider: 'openai' }, { subject: 'x'.repeat(129) }),
    ]),
  )
  assert.equal(refused.status, 400)
  assert.equal(refused.type, 'urn:tokenledger:problem:events-rejected')
  assert.deepEqual([refused.extensions.accepted, refused.extensions.rejected], [1, 6])
  const fields = refused.extensions.results.map((r) => [r.index, r.errors?.map((e) => e.field)])
  assert.deepEqual(fields, [
    [0, ['/data/model']],
    [2, ['/data/type']],
    [3, ['/data/input_tokens']],
    [4, ['/data/cost']],
    [5, ['/data/latency']],
    [6, ['/subject']],
  ])
  assert.match(refused.message, /event 0: \/data\/model is required/)
  assert.equal((await usage()).requests, 1)
  assert.deepEqual(await ingestOutcomes(app, 'openmeter', ADMIN), { accepted: 1, duplicate: 0, conflict: 0, rejected: 6, refused: 0 })
})

test('CloudEvent envelopes: required attributes, one event or a batch in each content type, long identities hashed', async (t) => {
  const { app, baseUrl, usage } = await serve(t)
  const post = (type: string, body: unknown) => app.inject({ method: 'POST', url: '/api/v1/events', headers: { 'content-type': type, authorization: `Bearer ${INGEST_TOKEN}` }, payload: JSON.stringify(body) })
  const data = { input_tokens: 1, output_tokens: 1, model: 'm', provider: 'p' }
  assert.equal((await post('application/cloudevents+json', { ...cloudEvent(data), time: new Date(T0 - 1000).toISOString() })).statusCode, 204)
  assert.equal((await post('application/json', [{ ...cloudEvent(data), time: new Date(T0 - 1000).toISOString() }])).statusCode, 204)
  const long = { ...cloudEvent(data), source: `https://gateway.example/${'s'.repeat(200)}`, time: new Date(T0 - 1000).toISOString() }
  assert.equal((await post('application/cloudevents+json', long)).statusCode, 204)
  const hashed = mappedEventId('ce', [long.source, long.id!])
  assert.match(hashed, /^ceh:[0-9a-f]{64}$/)
  assert.equal((await app.inject({ url: `/v1/events/${hashed}`, headers: ADMIN })).statusCode, 200)
  assert.equal((await usage()).requests, 3)

  const bad = await post('application/cloudevents-batch+json', [{ id: 'x', source: 's', data }])
  assert.equal(bad.statusCode, 400)
  assert.equal(bad.headers['content-type'], 'application/problem+json')
  const errors = (bad.json() as { extensions: { results: Array<{ errors: Array<{ field: string }> }> } }).extensions.results[0]!.errors.map((e) => e.field)
  assert.deepEqual(errors, ['/specversion', '/type', '/subject', '/time'])
  assert.match((bad.json() as { detail: string }).detail, /^1 of 1 events not stored .*\. None of them stored; re-sending the request is safe\.$/, 'a request whose only event is rejected does not claim others were stored')

  // Whole-request refusals are problem+json too.
  const malformed = await post('application/cloudevents+json', 'not json')
  assert.equal(malformed.statusCode, 400)
  assert.equal(malformed.headers['content-type'], 'application/problem+json')
  assert.deepEqual(Object.keys(malformed.json() as object).sort(), ['detail', 'extensions', 'instance', 'status', 'title', 'type'])
  assert.equal((await app.inject({ method: 'POST', url: '/api/v1/events', headers: { 'content-type': 'text/plain', authorization: `Bearer ${INGEST_TOKEN}` }, payload: 'x' })).statusCode, 415)
  const anonymous = await failure(new OpenMeter({ baseUrl }).events.ingest(cloudEvent(data)))
  assert.equal(anonymous.status, 401)
  const wrongScope = await failure(new OpenMeter({ baseUrl, apiKey: 'q'.repeat(40) }).events.ingest(cloudEvent(data)))
  assert.equal(wrongScope.status, 401)
})

test('mappedEventId: percent-encoding keeps parts apart; only printable ASCII; hashed past 128 characters', () => {
  assert.equal(mappedEventId('ce', ['my-app', '5c10fade']), 'ce:my-app:5c10fade')
  assert.notEqual(mappedEventId('ce', ['a:b', 'c']), mappedEventId('ce', ['a', 'b:c']))
  assert.equal(mappedEventId('ce', ['a:b', 'c']), 'ce:a%3Ab:c')
  assert.equal(mappedEventId('ce', ['s p', 'é%']), 'ce:s%20p:%C3%A9%25')
  for (const id of [mappedEventId('ce', ['x'.repeat(100), 'y'.repeat(100)]), mappedEventId('ce', ['ü'.repeat(30), 'z'])]) {
    assert.match(id, /^[\x21-\x7e]{1,128}$/)
  }
  assert.notEqual(mappedEventId('ce', ['x'.repeat(100), 'y'.repeat(100)]), mappedEventId('ce', ['x'.repeat(101), 'y'.repeat(99)]))
})
