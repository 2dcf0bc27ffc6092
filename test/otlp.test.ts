// Proves: the OpenTelemetry Node SDK's stock OTLP exporters (protobuf and
// JSON), configured as a user would (OTEL_EXPORTER_OTLP_ENDPOINT and _HEADERS,
// or the constructor), send GenAI spans to a listening tokenledger unchanged:
// one usage event per span with gen_ai usage, exact totals and the fields the
// README's mapping names; other spans ignored and counted; an exporter's replay
// is a duplicate; rejected and conflicting spans are reported in
// partial_success (decoded by OTel's own serializer) while the good spans of
// the export are kept; refusals are google.rpc.Status, 503 with Retry-After
// under backpressure, and the proto exporter shed with a 503 retries and its
// spans are stored once; /metrics counts every GenAI span by its outcome
// (source="otlp") and every other span as ignored.

import assert from 'node:assert/strict'
import type { AddressInfo } from 'node:net'
import { test, type TestContext } from 'node:test'
import { gzipSync } from 'node:zlib'
import type { Attributes } from '@opentelemetry/api'
import { OTLPTraceExporter as HttpJsonExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { OTLPTraceExporter as ProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto'
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-base'
import { diag, DiagLogLevel } from '@opentelemetry/api'
import { build, ingestOutcomes, latch, T0 } from './helper.js'

const INGEST_TOKEN = 'i'.repeat(40)
const ADMIN_TOKEN = 'a'.repeat(40)
const ADMIN = { authorization: `Bearer ${ADMIN_TOKEN}` }
const INGEST = { authorization: `Bearer ${INGEST_TOKEN}` }

async function serve(t: TestContext, env: Record<string, string> = {}, hooks?: Parameters<typeof build>[2]) {
  const built = await build(t, { TOKENLEDGER_INGEST_TOKENS: INGEST_TOKEN, TOKENLEDGER_ADMIN_TOKENS: ADMIN_TOKEN, ...env }, hooks)
  await built.app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = built.app.server.address() as AddressInfo
  const usage = async (query = '') => {
    const res = await built.app.inject({ url: `/v1/usage?from=0&to=${T0 + 3_600_000}${query}`, headers: ADMIN })
    assert.equal(res.statusCode, 200, res.body)
    return (res.json() as { totals: Record<string, unknown> }).totals
  }
  const event = async (id: string) => {
    const res = await built.app.inject({ url: `/v1/events/${id}`, headers: ADMIN })
    assert.equal(res.statusCode, 200, `${id}: ${res.body}`)
    return res.json() as Record<string, unknown>
  }
  const ignored = async () => {
    const text = (await built.app.inject({ url: '/metrics', headers: ADMIN })).body
    return Number(/^tokenledger_otlp_spans_ignored_total (\d+)$/m.exec(text)?.[1])
  }
  const outcomes = () => ingestOutcomes(built.app, 'otlp', ADMIN)
  return { ...built, baseUrl: `http://127.0.0.1:${port}`, usage, event, ignored, outcomes }
}

/** A tracer provider whose spans go to `exporter` one by one (SimpleSpanProcessor); forceFlush waits for their exports. */
function tracing(exporter: SpanExporter, service = 'llm-gateway') {
  const provider = new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': service }), spanProcessors: [new SimpleSpanProcessor(exporter)] })
  const tracer = provider.getTracer('gateway', '1.0.0')
  const span = (attributes: Attributes, endMs = T0 - 60_000, status?: { code: number }) => {
    const s = tracer.startSpan('chat', { attributes, startTime: endMs - 1500 })
    if (status) s.setStatus(status)
    s.end(endMs)
    return `otel:${s.spanContext().traceId}:${s.spanContext().spanId}`
  }
  return { provider, span }
}

const chat = (over: Attributes = {}): Attributes => ({
  'gen_ai.operation.name': 'chat',
  'gen_ai.provider.name': 'openai',
  'gen_ai.request.model': 'gpt-4o',
  'gen_ai.response.model': 'gpt-4o-2024-08-06',
  'gen_ai.usage.input_tokens': 1000,
  'gen_ai.usage.output_tokens': 200,
  ...over,
})

test('the protobuf exporter, configured by OTEL_EXPORTER_OTLP_* variables: one event per GenAI span, exact totals, other spans ignored', async (t) => {
  const { baseUrl, usage, event, ignored } = await serve(t)
  const saved = { endpoint: process.env.OTEL_EXPORTER_OTLP_ENDPOINT, headers: process.env.OTEL_EXPORTER_OTLP_HEADERS }
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = baseUrl
  process.env.OTEL_EXPORTER_OTLP_HEADERS = `Authorization=Bearer%20${INGEST_TOKEN}`
  t.after(() => {
    for (const [k, v] of [['OTEL_EXPORTER_OTLP_ENDPOINT', saved.endpoint], ['OTEL_EXPORTER_OTLP_HEADERS', saved.headers]] as const) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  })
  const { provider, span } = tracing(new ProtoExporter())
  const a = span(chat({ 'tokenledger.key_id': 'key-1', 'tokenledger.team_id': 'team-a', 'user.id': 'u-9', 'tokenledger.customer_id': 'acme', 'tokenledger.cost': '0.012500000001', 'gen_ai.usage.cache_read.input_tokens': 300, 'gen_ai.usage.cache_creation.input_tokens': 100, 'gen_ai.usage.reasoning.output_tokens': 50 }))
  const b = span(chat({ 'gen_ai.provider.name': 'anthropic', 'gen_ai.response.model': 'claude-sonnet-4', 'gen_ai.usage.input_tokens': 40, 'gen_ai.usage.output_tokens': 7, 'tokenledger.cost': 0.0005 }))
  span({ 'http.request.method': 'GET', 'url.path': '/healthz' }) // not usage
  await provider.forceFlush()

  const totals = await usage()
  assert.deepEqual(
    [totals.requests, totals.input_tokens, totals.output_tokens, totals.cache_read_tokens, totals.cache_write_tokens, totals.reasoning_tokens, totals.cost, totals.cost_missing],
    [2, 1040, 207, 300, 100, 50, '0.013000000001', 0],
  )
  assert.equal(await ignored(), 1)
  const first = await event(a)
  assert.deepEqual(
    [first.key_id, first.team_id, first.user_id, first.customer_id, first.provider, first.model, first.status_code, first.latency_ms, first.timestamp, first.tags],
    ['key-1', 'team-a', 'u-9', 'acme', 'openai', 'gpt-4o-2024-08-06', 200, 1500, new Date(T0 - 60_000).toISOString(), { 'gen_ai.operation.name': 'chat', 'service.name': 'llm-gateway' }],
  )
  assert.equal((await event(b)).key_id, 'llm-gateway', 'no key attribute: keyed by service.name')
  await provider.shutdown()
})

test('the JSON exporter (constructor config, gzip); an exporter retry is a duplicate', async (t) => {
  const { baseUrl, usage, event } = await serve(t)
  const exporter = new HttpJsonExporter({ url: `${baseUrl}/v1/traces`, headers: INGEST, compression: 'gzip' as never })
  const memory = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': 'svc' }), spanProcessors: [new SimpleSpanProcessor(exporter), new SimpleSpanProcessor(memory)] })
  const tracer = provider.getTracer('gateway')
  for (let i = 0; i < 3; i++) {
    const s = tracer.startSpan('chat', { attributes: chat({ 'gen_ai.usage.input_tokens': 10 + i, 'tokenledger.cost': '0.001' }), startTime: T0 - 10_000 })
    s.end(T0 - 9_000)
  }
  await provider.forceFlush()
  const spans = memory.getFinishedSpans()
  assert.equal(spans.length, 3)
  assert.deepEqual([(await usage()).requests, (await usage()).input_tokens, (await usage()).cost], [3, 33, '0.003'])

  // The exporter sends the same spans again (its retry after a lost answer): success, stored once.
  const result = await new Promise<{ code: number; error?: Error }>((resolve) => exporter.export(spans, resolve))
  assert.equal(result.code, 0, String(result.error))
  assert.deepEqual([(await usage()).requests, (await usage()).input_tokens], [3, 33])
  assert.equal((await event(`otel:${spans[0]!.spanContext().traceId}:${spans[0]!.spanContext().spanId}`)).provider, 'openai')
  await provider.shutdown()
})

/** Finished spans of `attrs`, made by the SDK (not exported anywhere). */
function spansOf(list: Array<{ attrs: Attributes; status?: { code: number } }>, service = 'svc'): ReadableSpan[] {
  const memory = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': service }), spanProcessors: [new SimpleSpanProcessor(memory)] })
  const tracer = provider.getTracer('t')
  for (const { attrs, status } of list) {
    const s = tracer.startSpan('chat', { attributes: attrs, startTime: T0 - 5_000 })
    if (status) s.setStatus(status)
    s.end(T0 - 4_000)
  }
  return memory.getFinishedSpans()
}

const idOf = (s: ReadableSpan) => `otel:${s.spanContext().traceId}:${s.spanContext().spanId}`

/** `span` with other attributes, same ids (a conflicting replay). */
function withAttributes(span: ReadableSpan, attributes: Attributes): ReadableSpan {
  return Object.create(span, { attributes: { value: attributes } }) as ReadableSpan
}

test('partial_success names each rejected or conflicting span; the good spans of the export are kept (protobuf and JSON)', async (t) => {
  const { app, usage, outcomes, ignored } = await serve(t)
  const spans = spansOf([
    { attrs: chat() },
    { attrs: chat({ 'gen_ai.usage.input_tokens': -5 }) },
    { attrs: { 'gen_ai.usage.output_tokens': 3 } }, // no provider, no model
    { attrs: chat({ 'tokenledger.cost': 0.1 + 0.2 }) }, // 0.30000000000000004: more than 12 fractional digits
    { attrs: chat({ 'gen_ai.usage.input_tokens': 'many' }) },
  ])
  const proto = await app.inject({ method: 'POST', url: '/v1/traces', headers: { ...INGEST, 'content-type': 'application/x-protobuf' }, payload: Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!) })
  assert.equal(proto.statusCode, 200)
  assert.equal(proto.headers['content-type'], 'application/x-protobuf')
  const answer = ProtobufTraceSerializer.deserializeResponse(proto.rawPayload)
  assert.equal(Number(answer.partialSuccess?.rejectedSpans), 4)
  const message = answer.partialSuccess?.errorMessage ?? ''
  assert.match(message, /^4 GenAI span\(s\) not stored \(the other 1 were\): /)
  assert.match(message, /span 1 \(otel:[0-9a-f]{32}:[0-9a-f]{16}\): \/attributes\/gen_ai\.usage\.input_tokens must be between 0/)
  assert.match(message, /span 2 .*\/attributes\/gen_ai\.provider\.name is required.*\/attributes\/gen_ai\.response\.model is required/)
  assert.match(message, /span 3 .*\/attributes\/tokenledger\.cost must have at most 12 fractional digits/)
  assert.match(message, /span 4 .*\/attributes\/gen_ai\.usage\.input_tokens must be an int attribute, got string/)
  assert.equal((await usage()).requests, 1)

  // JSON: the same spans again (duplicates, and the same rejections), plus one conflicting replay.
  const replay = [...spans, withAttributes(spans[0]!, chat({ 'gen_ai.usage.input_tokens': 999 }))]
  const json = await app.inject({ method: 'POST', url: '/v1/traces', headers: { ...INGEST, 'content-type': 'application/json' }, payload: Buffer.from(JsonTraceSerializer.serializeRequest(replay)!) })
  assert.equal(json.statusCode, 200)
  assert.match(String(json.headers['content-type']), /^application\/json/)
  const partial = (json.json() as { partialSuccess: { rejectedSpans: string; errorMessage: string } }).partialSuccess
  assert.equal(partial.rejectedSpans, '5', 'int64 as a string (proto3 JSON)')
  assert.match(partial.errorMessage, new RegExp(`span 5 \\(${idOf(spans[0]!)}\\): conflict`))
  assert.match(partial.errorMessage, /^5 GenAI span\(s\) not stored \(the other 1 were\): /, 'the replayed good span counts as stored (a duplicate)')
  assert.deepEqual([(await usage()).requests, (await usage()).input_tokens], [1, 1000], 'first write wins')

  // All good (and a span that is not usage): partial_success stays unset.
  const cleanSpans = spansOf([{ attrs: chat() }, { attrs: { 'http.request.method': 'GET' } }])
  const clean = await app.inject({ method: 'POST', url: '/v1/traces', headers: { ...INGEST, 'content-type': 'application/json' }, payload: Buffer.from(JsonTraceSerializer.serializeRequest(cleanSpans)!) })
  assert.equal(clean.body, '{}')
  // Every GenAI span posted is counted once by its outcome (4 + 4 rejected, 1 conflict, 1 duplicate); the other span is ignored.
  assert.deepEqual(await outcomes(), { accepted: 2, duplicate: 1, conflict: 1, rejected: 8, refused: 0 })
  assert.equal(await ignored(), 1)
})

test('mapping: older attribute names, status from http.response.status_code / error.type / span status, configured key attributes, default key', async (t) => {
  const { app, event } = await serve(t, { TOKENLEDGER_OTLP_KEY_ATTRIBUTES: 'gateway.key,tokenledger.key_id', TOKENLEDGER_OTLP_DEFAULT_KEY: 'anonymous' })
  const spans = spansOf([
    { attrs: { 'gen_ai.system': 'openai', 'gen_ai.request.model': 'gpt-4', 'gen_ai.usage.prompt_tokens': 12, 'gen_ai.usage.completion_tokens': 3, 'gateway.key': 'gk-1' } },
    { attrs: chat({ 'http.response.status_code': 429, 'error.type': '429' }) },
    { attrs: chat({ 'error.type': 'timeout' }) },
    { attrs: chat(), status: { code: 2 } },
    { attrs: chat({ 'gen_ai.operation.name': 'embeddings', 'gen_ai.usage.output_tokens': undefined as never, 'tokenledger.key_id': 'tk-2' }) },
  ])
  const body = gzipSync(Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!))
  const res = await app.inject({ method: 'POST', url: '/v1/traces', headers: { ...INGEST, 'content-type': 'application/x-protobuf', 'content-encoding': 'gzip' }, payload: body })
  assert.equal(res.statusCode, 200)
  assert.equal(ProtobufTraceSerializer.deserializeResponse(res.rawPayload).partialSuccess, undefined)
  const got = await Promise.all(spans.map((s) => event(idOf(s))))
  assert.deepEqual(
    got.map((e) => [e.provider, e.model, e.input_tokens, e.output_tokens, e.status_code, e.key_id]),
    [
      ['openai', 'gpt-4', 12, 3, 200, 'gk-1'],
      ['openai', 'gpt-4o-2024-08-06', 1000, 200, 429, 'svc'],
      ['openai', 'gpt-4o-2024-08-06', 1000, 200, 500, 'svc'],
      ['openai', 'gpt-4o-2024-08-06', 1000, 200, 500, 'svc'],
      ['openai', 'gpt-4o-2024-08-06', 1000, 0, 200, 'tk-2'],
    ],
  )
  const noService = spansOf([{ attrs: chat() }], '')
  await app.inject({ method: 'POST', url: '/v1/traces', headers: { ...INGEST, 'content-type': 'application/json' }, payload: Buffer.from(JsonTraceSerializer.serializeRequest(noService)!) })
  assert.equal((await event(idOf(noService[0]!))).key_id, 'anonymous')
})

test('refusals are google.rpc.Status in the request encoding; 503 with Retry-After under backpressure', async (t) => {
  const parked = latch()
  let park = true
  const { app, usage } = await serve(t, { TOKENLEDGER_MAX_INGEST_INFLIGHT: '1' }, {
    onCommitHoldingGate: async () => {
      if (!park) return
      park = false
      parked.reached()
      await parked.opened
    },
  })
  const bad = await app.inject({ method: 'POST', url: '/v1/traces', headers: { ...INGEST, 'content-type': 'application/x-protobuf' }, payload: Buffer.from([0xff, 0xff, 0xff]) })
  assert.equal(bad.statusCode, 400)
  assert.equal(bad.headers['content-type'], 'application/x-protobuf')
  assert.match(bad.rawPayload.toString('latin1'), /not an OTLP ExportTraceServiceRequest/)
  const unauthorized = await app.inject({ method: 'POST', url: '/v1/traces', headers: { 'content-type': 'application/json' }, payload: '{}' })
  assert.equal(unauthorized.statusCode, 401)
  assert.equal((unauthorized.json() as { code: number }).code, 16)
  const wrongType = await app.inject({ method: 'POST', url: '/v1/traces', headers: { ...INGEST, 'content-type': 'text/plain' }, payload: 'x' })
  assert.equal(wrongType.statusCode, 415)
  assert.equal(typeof (wrongType.json() as { message: string }).message, 'string')

  const payload = Buffer.from(JsonTraceSerializer.serializeRequest(spansOf([{ attrs: chat() }]))!)
  const first = app.inject({ method: 'POST', url: '/v1/traces', headers: { ...INGEST, 'content-type': 'application/json' }, payload })
  await parked.arrived // the first export holds the gate, and the one ingest slot
  const shed = await app.inject({ method: 'POST', url: '/v1/traces', headers: { ...INGEST, 'content-type': 'application/json' }, payload })
  assert.equal(shed.statusCode, 503)
  assert.equal(shed.headers['retry-after'], '1')
  assert.deepEqual(Object.keys(shed.json() as object), ['code', 'message'])
  assert.equal((shed.json() as { code: number }).code, 14)
  parked.open()
  assert.equal((await first).statusCode, 200)
  assert.equal((await usage()).requests, 1)
})

test('the protobuf exporter through a 503 with Retry-After: it retries after it, the spans are stored once', { timeout: 30_000 }, async (t) => {
  // One ingest slot, held by an export parked in its commit: the exporter's first attempt is shed (503).
  const parked = latch()
  let park = true
  const { app, baseUrl, usage, event, outcomes } = await serve(t, { TOKENLEDGER_MAX_INGEST_INFLIGHT: '1' }, {
    onCommitHoldingGate: async () => {
      if (!park) return
      park = false
      parked.reached()
      await parked.opened
    },
  })
  const holder = app.inject({ method: 'POST', url: '/v1/traces', headers: { ...INGEST, 'content-type': 'application/json' }, payload: Buffer.from(JsonTraceSerializer.serializeRequest(spansOf([{ attrs: chat() }]))!) })
  await parked.arrived

  // The exporter says when it schedules a retry (its diag channel): then the slot is freed.
  let scheduled!: (message: string) => void
  const retryScheduled = new Promise<string>((resolve) => (scheduled = resolve))
  const seen = (message: string) => {
    if (/Scheduling export retry/.test(message)) scheduled(message)
  }
  diag.setLogger({ verbose: seen, debug: seen, info: seen, warn: seen, error: seen }, DiagLogLevel.ALL)
  t.after(() => diag.disable())

  const exporter = new ProtoExporter({ url: `${baseUrl}/v1/traces`, headers: INGEST })
  const spans = spansOf([{ attrs: chat({ 'gen_ai.usage.input_tokens': 7 }) }, { attrs: chat({ 'gen_ai.usage.input_tokens': 11 }) }])
  const exported = new Promise<{ code: number; error?: Error }>((resolve) => exporter.export(spans, resolve))
  const retry = await Promise.race([retryScheduled, exported.then((r) => `exported without a retry: code ${r.code}`)])
  assert.match(retry, /Scheduling export retry in (9\d\d|1\d\d\d)ms/, 'a retry about a second later (Retry-After: 1, as the exporter\'s first backoff)')
  const metrics = (await app.inject({ url: '/metrics', headers: ADMIN })).body
  assert.match(metrics, /^tokenledger_http_responses_total\{method="POST",route="\/v1\/traces",status_class="5xx"\} 1$/m, 'one export was shed')
  parked.open()
  assert.equal((await holder).statusCode, 200)

  const result = await exported
  assert.equal(result.code, 0, String(result.error))
  assert.deepEqual([(await usage()).requests, (await usage()).input_tokens], [3, 1018], 'every span once: the shed attempt stored nothing')
  for (const s of spans) assert.equal((await event(idOf(s))).provider, 'openai')
  assert.deepEqual(await outcomes(), { accepted: 3, duplicate: 0, conflict: 0, rejected: 0, refused: 0 })
  await exporter.shutdown()
})
