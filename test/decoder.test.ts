// Proves the ingest decoder (src/ingest/decoder.ts): a worker thread decodes
// every kind of body exactly as the event loop does (results, rejects and
// whole-request errors with their codes); a worker that dies fails only the
// jobs it held and is replaced; a worker that cannot start leaves decoding to
// the event loop; and the bytes being decoded are bounded (503 past it).

import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { gzipSync } from 'node:zlib'
import type { BodyFormat, DecodedRequest } from '../src/ingest/decode.js'
import { createDecoder, type Decoder, type DecoderOptions } from '../src/ingest/decoder.js'
import { build, event, post, T0 } from './helper.js'

const opts = { limits: { nowMs: T0, eventRetentionMs: 30 * 86_400_000, maxFutureSkewMs: 300_000 }, maxEvents: 5 }

function decoder(t: TestContext, over: Partial<DecoderOptions> = {}): { decoder: Decoder; logged: string[] } {
  const logged: string[] = []
  const d = createDecoder({ workers: 1, maxPendingBytes: 1 << 20, maxBodyBytes: 1 << 20, logger: { error: (_obj, msg) => logged.push(msg) }, ...over })
  t.after(() => d.close())
  return { decoder: d, logged }
}

type Outcome = { ok: true; value: DecodedRequest } | { ok: false; code: unknown; statusCode: unknown; message: string }

async function outcome(d: Decoder, body: string, format: BodyFormat): Promise<Outcome> {
  try {
    return { ok: true, value: await d.decode(Buffer.from(body), format, opts) }
  } catch (err) {
    const e = err as Error & { code?: unknown; statusCode?: unknown }
    return { ok: false, code: e.code, statusCode: e.statusCode, message: e.message }
  }
}

const BODIES: Array<[string, string, BodyFormat]> = [
  ['valid batch', JSON.stringify({ events: [event(), event({ detail: { a: [1, 2] }, tags: { b: 'c' } }), event({ cost: '0.000000000001' })] }), 'json'],
  ['bare array with rejects', JSON.stringify([event(), { ...event(), input_tokens: -1 }, 'x', { ...event(), extra: 1 }, event({ user_id: null })]), 'json'],
  ['ndjson', [event(), event(), { nope: true }].map((e) => JSON.stringify(e)).join('\n'), 'ndjson'],
  ['ndjson, a bad line', `${JSON.stringify(event())}\n{"a":`, 'ndjson'],
  ['malformed', '{"events": [', 'json'],
  ['empty', '  ', 'json'],
  ['prototype poisoning', '{"__proto__": {"x": 1}, "events": []}', 'json'],
  ['unknown top-level field', '{"events": [], "extra": 1}', 'json'],
  ['too many events', JSON.stringify(Array.from({ length: 6 }, () => event())), 'json'],
  ['too many ndjson lines', Array.from({ length: 6 }, () => JSON.stringify(event())).join('\n'), 'ndjson'],
  ['a string', '"just a string"', 'json'],
]

test('a worker decodes every body exactly as the event loop does: results, rejects, errors and their codes', async (t) => {
  const worker = decoder(t).decoder
  const inline = decoder(t, { workers: 0 }).decoder
  assert.equal(worker.workers, 1)
  assert.equal(inline.workers, 0)
  for (const [label, body, format] of BODIES) {
    const [a, b] = await Promise.all([outcome(worker, body, format), outcome(inline, body, format)])
    assert.deepEqual(a, b, label)
  }
  const valid = await outcome(worker, BODIES[0]![1], 'json')
  assert.ok(valid.ok && valid.value.batch.ids.length === 3 && valid.value.batch.detailRows.length === 1, 'the valid batch is decoded, its detail noted')
  const rejects = await outcome(worker, BODIES[1]![1], 'json')
  assert.deepEqual(rejects.ok && rejects.value.rejected.map((r) => r.index), [1, 2, 3])
  const tooMany = await outcome(worker, BODIES[8]![1], 'json')
  assert.deepEqual(!tooMany.ok && [tooMany.code, tooMany.statusCode], ['TL_TOO_MANY_EVENTS', 413])
  const malformed = await outcome(worker, BODIES[4]![1], 'json')
  assert.deepEqual(!malformed.ok && [malformed.code, malformed.statusCode], ['TL_BAD_BODY', 400])
})

test('a worker that dies fails only the jobs it held, and another takes its place', async (t) => {
  const { decoder: d, logged } = decoder(t, { workerModule: new URL('./support/dying-worker.ts', import.meta.url) })
  const body = JSON.stringify([event()])
  assert.equal((await d.decode(Buffer.from(body), 'json', opts)).batch.ids.length, 1)
  const dying = d.decode(Buffer.from('die'), 'json', opts)
  await assert.rejects(dying, /ingest worker 0 exited \(code 3\)/)
  assert.ok(logged.some((m) => m.includes('starting another')), logged.join('; '))
  const after = await Promise.all(Array.from({ length: 3 }, () => d.decode(Buffer.from(body), 'json', opts)))
  assert.deepEqual(after.map((r) => r.batch.ids.length), [1, 1, 1], 'the replacement decodes')
})

test('a worker that cannot start leaves its bodies, and all later ones, to the event loop', async (t) => {
  const { decoder: d, logged } = decoder(t, { workerModule: new URL('./support/broken-worker.ts', import.meta.url) })
  const body = JSON.stringify([event(), { ...event(), status_code: 99 }])
  const first = await d.decode(Buffer.from(body), 'json', opts)
  assert.deepEqual([first.batch.ids.length, first.rejected.length], [1, 1])
  assert.ok(logged.some((m) => m.includes('could not start')), logged.join('; '))
  const later = await d.decode(Buffer.from(body), 'json', opts)
  assert.deepEqual([later.batch.ids.length, later.rejected.length], [1, 1])
})

test('bodies being decoded are bounded in bytes: past the bound a request is refused 503, and admitted again once they are done', async (t) => {
  const body = Buffer.from(JSON.stringify([event()]))
  const { decoder: d } = decoder(t, { maxPendingBytes: Math.floor(body.length * 1.5) })
  const first = d.decode(body, 'json', opts)
  await assert.rejects(d.decode(body, 'json', opts), (err: Error & { code?: string; statusCode?: number }) => err.code === 'TL_QUEUE_FULL' && err.statusCode === 503)
  await first
  assert.equal((await d.decode(body, 'json', opts)).batch.ids.length, 1)
})

test('ingest over HTTP answers alike with ingest workers and without (TOKENLEDGER_INGEST_WORKERS=0)', async (t) => {
  const answers = []
  const a = event({ event_id: 'same-a' })
  const b = event({ event_id: 'same-b', detail: { x: 1 } })
  const batch = [a, a, { ...a, input_tokens: 999 }, { ...event(), status_code: 99 }, b]
  const ndjson = gzipSync(`${JSON.stringify(b)}\n${JSON.stringify(event({ event_id: 'same-c' }))}`)
  for (const workers of ['1', '0']) {
    const { app } = await build(t, { TOKENLEDGER_INGEST_WORKERS: workers })
    const first = await post(app, batch)
    const gz = await app.inject({
      method: 'POST',
      url: '/v1/events',
      headers: { 'content-type': 'application/x-ndjson', 'content-encoding': 'gzip' },
      payload: ndjson,
    })
    const bad = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/json' }, payload: '[1,' })
    answers.push({ first: [first.status, first.body], gz: [gz.statusCode, gz.json()], bad: [bad.statusCode, bad.json().code] })
  }
  assert.deepEqual(answers[0], answers[1])
  assert.deepEqual(answers[0]!.first.slice(0, 1), [200])
  assert.deepEqual([answers[0]!.gz[0], (answers[0]!.gz[1] as { accepted: number; duplicates: number }).accepted, (answers[0]!.gz[1] as { duplicates: number }).duplicates], [200, 1, 1])
  assert.deepEqual(answers[0]!.bad, [400, 'TL_BAD_BODY'])
})
