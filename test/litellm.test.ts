// Proves: what LiteLLM's generic API logger posts (StandardLoggingPayload,
// as a JSON array, one payload, or NDJSON, all as application/json with the
// configured headers) is stored once per payload with exact totals: token
// counts with cached and reasoning tokens from usage_object, response_cost's
// float rounded to 12 fractional digits, key hash, team, user, end user,
// failures as their HTTP status; replays are duplicates, changed replays
// conflicts, and malformed payloads are rejected naming their field while the
// good ones of the request are kept.

import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { test, type TestContext } from 'node:test'
import { build, ingestOutcomes, T0 } from './helper.js'

const INGEST_TOKEN = 'i'.repeat(40)
const ADMIN = { authorization: `Bearer ${'a'.repeat(40)}` }
const fixture = (name: string) => readFile(new URL(`./fixtures/litellm/${name}`, import.meta.url), 'utf8')

async function serve(t: TestContext) {
  const built = await build(t, { TOKENLEDGER_INGEST_TOKENS: INGEST_TOKEN, TOKENLEDGER_ADMIN_TOKENS: 'a'.repeat(40) })
  await built.app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = built.app.server.address() as AddressInfo
  // What the logger sends: GENERIC_LOGGER_ENDPOINT, GENERIC_LOGGER_HEADERS="Authorization=Bearer <token>", Content-Type application/json.
  const post = async (body: string, query = '') => {
    const res = await fetch(`http://127.0.0.1:${port}/v1/integrations/litellm${query}`, { method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${INGEST_TOKEN}` }, body })
    return { status: res.status, body: (await res.json()) as { accepted: number; duplicates: number; conflicts: number; rejected: number; results: Array<{ index: number; event_id: string | null; status: string; errors?: Array<{ field: string; message: string }> }> } }
  }
  const totals = async () => (await built.app.inject({ url: `/v1/usage?from=0&to=${T0 + 3_600_000}`, headers: ADMIN })).json() as { totals: Record<string, unknown> }
  const event = async (id: string) => (await built.app.inject({ url: `/v1/events/${id}`, headers: ADMIN })).json() as Record<string, unknown>
  const outcomes = () => ingestOutcomes(built.app, 'litellm', ADMIN)
  return { post, totals, event, outcomes }
}

test('the default JSON array: one event per payload, exact totals and fields', async (t) => {
  const { post, totals, event } = await serve(t)
  const res = await post(await fixture('batch.json'))
  assert.deepEqual(res, { status: 200, body: { accepted: 3, duplicates: 0, conflicts: 0, rejected: 0, results: [] } })
  const { totals: sums } = await totals()
  assert.deepEqual(
    [sums.requests, sums.errors, sums.input_tokens, sums.output_tokens, sums.cache_read_tokens, sums.cache_write_tokens, sums.reasoning_tokens, sums.cost, sums.cost_missing],
    [3, 1, 3300, 530, 2824, 200, 64, '0.010623', 0],
  )
  const openai = await event('litellm:chatcmpl-9f3c1b2a-7d4e-4c55-9a61-0b7e2d1c8a10')
  assert.deepEqual(
    [openai.timestamp, openai.key_id, openai.team_id, openai.user_id, openai.customer_id, openai.provider, openai.model, openai.cost, openai.latency_ms, openai.endpoint, openai.stream, openai.tags],
    ['2026-11-18T11:59:01.736512Z', '88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b', 'team-payments', 'user-42', 'acme-corp', 'openai', 'gpt-4o-mini', '0.000123', 1486, '/chat/completions', false,
      { 'litellm.call_type': 'acompletion', 'litellm.key_alias': 'checkout-service', 'litellm.model_group': 'gpt-4o-mini', 'litellm.team_alias': 'payments' }],
  )
  const stream = await event('litellm:chatcmpl-3e8a0c44-51f2-4b8b-8c0e-7a6d95f2b1c9')
  assert.deepEqual([stream.cache_read_tokens, stream.cache_write_tokens, stream.ttft_ms, stream.stream, stream.cost, stream.customer_id], [1800, 200, 420, true, '0.0105', null])
  const failed = await event('litellm:chatcmpl-7c1d9e20-aa55-4f0e-9d3b-c2e81f6a0b77')
  assert.deepEqual([failed.status_code, failed.cost, (failed.detail as { error: Record<string, unknown> }).error.error_class], [429, '0', 'RateLimitError'])
  assert.equal(JSON.stringify(failed.detail).includes('Traceback'), false, 'the traceback is not kept')
})

test('single and NDJSON log formats; replays are duplicates, changed replays conflicts', async (t) => {
  const { post, totals, outcomes } = await serve(t)
  const single = await fixture('success-openai.json')
  assert.equal((await post(single)).body.accepted, 1)
  const ndjson = [await fixture('success-anthropic-stream.json'), await fixture('failure-ratelimit.json')].map((f) => JSON.stringify(JSON.parse(f))).join('\n')
  assert.equal((await post(ndjson)).body.accepted, 2)
  const again = await post(await fixture('batch.json'))
  assert.deepEqual([again.body.accepted, again.body.duplicates], [0, 3])
  const changed = { ...JSON.parse(single), prompt_tokens: 1300 }
  const conflict = await post(JSON.stringify(changed))
  assert.deepEqual(conflict.body.results, [{ index: 0, event_id: 'litellm:chatcmpl-9f3c1b2a-7d4e-4c55-9a61-0b7e2d1c8a10', status: 'conflict' }])
  assert.equal((await totals()).totals.requests, 3)
  assert.deepEqual(await outcomes(), { accepted: 3, duplicate: 3, conflict: 1, rejected: 0, refused: 0 })
})

test('malformed payloads are rejected naming their field; the good ones are kept', async (t) => {
  const { post, totals, outcomes } = await serve(t)
  const good = JSON.parse(await fixture('success-openai.json')) as Record<string, unknown>
  const res = await post(
    JSON.stringify([
      { ...good, id: 'a', model: undefined },
      { ...good, id: 'b', prompt_tokens: -3 },
      good,
      { ...good, id: 'd', response_cost: -0.5 },
      { ...good, id: 'e', status: 'maybe', custom_llm_provider: null },
      { ...good, id: 'f', metadata: { usage_object: { prompt_tokens_details: { cached_tokens: 5000 } } } },
      'not an object',
    ]),
  )
  assert.equal(res.status, 200)
  assert.deepEqual([res.body.accepted, res.body.rejected], [1, 6])
  assert.deepEqual(
    res.body.results.map((r) => [r.index, r.event_id, r.errors?.map((e) => e.field)]),
    [
      [0, 'litellm:a', ['/model']],
      [1, 'litellm:b', ['/prompt_tokens']],
      [3, 'litellm:d', ['/response_cost']],
      [4, 'litellm:e', ['/custom_llm_provider', '/status']],
      [5, 'litellm:f', ['/metadata/usage_object/prompt_tokens_details/cached_tokens']],
      [6, null, ['']],
    ],
  )
  assert.equal((await totals()).totals.requests, 1)
  assert.deepEqual(await outcomes(), { accepted: 1, duplicate: 0, conflict: 0, rejected: 6, refused: 0 })
})

test('?atomic=true: nothing of the request is stored unless every payload is acceptable (422 with the reasons)', async (t) => {
  // Proves the LiteLLM door's atomic mode is the native route's: one bad or
  // conflicting payload refuses the whole request (nothing stored, each
  // outcome told), duplicates are acceptable, and the flag is checked.
  const { post, totals, outcomes } = await serve(t)
  const batch = JSON.parse(await fixture('batch.json')) as Array<Record<string, unknown>>
  const atomic = (body: unknown) => post(JSON.stringify(body), '?atomic=true')

  const bad = await atomic([batch[0], { ...batch[1], prompt_tokens: -3 }, batch[2]])
  assert.equal(bad.status, 422)
  assert.deepEqual([bad.body.accepted, bad.body.rejected], [0, 1])
  assert.deepEqual(bad.body.results.map((r) => [r.index, r.status, r.errors?.map((e) => e.field)]), [[1, 'rejected', ['/prompt_tokens']]])
  assert.equal((await totals()).totals.requests, 0, 'the good payloads of the refused request were not stored')

  const stored = await atomic(batch.slice(0, 2))
  assert.deepEqual([stored.status, stored.body.accepted], [200, 2])
  const withConflict = await atomic([batch[2], { ...batch[0], completion_tokens: 999 }])
  assert.equal(withConflict.status, 422)
  assert.deepEqual([withConflict.body.accepted, withConflict.body.conflicts], [0, 1])
  assert.deepEqual(withConflict.body.results.map((r) => [r.index, r.status]), [[1, 'conflict']])
  assert.equal((await totals()).totals.requests, 2, 'the conflict refused the new payload too')

  const withDuplicate = await atomic([batch[0], batch[2]])
  assert.deepEqual([withDuplicate.status, withDuplicate.body.accepted, withDuplicate.body.duplicates], [200, 1, 1], 'duplicates are acceptable')
  assert.equal((await totals()).totals.requests, 3)

  const notAtomic = await post(JSON.stringify([{ ...batch[1], id: 'other', model: undefined }, batch[1]]), '?atomic=false')
  assert.deepEqual([notAtomic.status, notAtomic.body.rejected, notAtomic.body.duplicates], [200, 1, 1])
  const badFlag = await post(JSON.stringify(batch), '?atomic=maybe')
  assert.equal(badFlag.status, 400)
  assert.match(JSON.stringify(badFlag.body), /atomic/)
  assert.equal((await totals()).totals.requests, 3)
  assert.deepEqual(await outcomes(), { accepted: 3, duplicate: 2, conflict: 1, rejected: 2, refused: 3 })
})
