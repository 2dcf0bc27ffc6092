// Proves: the wire reader of OTLP protobuf bodies (src/ingest/otlp-wire.ts,
// protobufjs's Reader by the vendored schema's field numbers, keeping only
// what the GenAI mapping reads) maps every body exactly as protobufjs's full
// decode of the same bytes does: the same events, errors (field and reason),
// origins, span counts and ignored spans. By fast-check, on bodies protobufjs
// encodes from generated requests (ids of every width, all-zero ids, times
// over the whole fixed64 range, every AnyValue kind, int64s past 2^53,
// repeated keys, unknown attributes), on bodies whose singular messages are
// split in two on the wire (spans, resources, key/values: protobuf's merge
// rules), and on corrupted bodies (bytes flipped, cut, inserted): whenever the
// full decode reads a body, the wire reader reads it to the same mapping;
// when the full decode refuses it, the wire reader may refuse it too or read
// it (the content of fields it does not keep is skipped, not decoded).

import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import protobuf from 'protobufjs'
import { loadConfig } from '../src/config.js'
import type { MappedBody } from '../src/ingest/mapped.js'
import { mapOtlp, mapResources, readOtlpObject } from '../src/ingest/otlp.js'
import { otlpSchema } from '../src/ingest/otlp-schema.js'
import { T0 } from './helper.js'

const RUNS = Number(process.env.FUZZ_RUNS ?? 300)
const MAX_EVENTS = 10_000
const mapping = loadConfig({ TOKENLEDGER_OTLP_KEY_ATTRIBUTES: 'gateway.key,tokenledger.key_id' }).otlp
const { request } = otlpSchema()
const root = request.root
const Span = root.lookupType('opentelemetry.proto.trace.v1.Span')
const Resource = root.lookupType('opentelemetry.proto.resource.v1.Resource')
const KeyValue = root.lookupType('opentelemetry.proto.common.v1.KeyValue')

/** What a mapping says, comparable with deepEqual (EpochMicros and origin functions made plain). */
function plain(body: MappedBody): unknown {
  return {
    count: body.count,
    ignored: body.ignored,
    records: body.records.map((r) => ({
      index: r.index,
      eventId: r.eventId,
      event: JSON.parse(JSON.stringify(r.event)) as unknown,
      errors: r.errors,
      origin: Object.fromEntries(Object.entries(r.origin).map(([k, v]) => [k, typeof v === 'function' ? [v('/service.name'), v('/gen_ai.operation.name')] : v])),
    })),
  }
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: string }

function attempt(f: () => MappedBody): Outcome {
  try {
    return { ok: true, value: plain(f()) }
  } catch (err) {
    return { ok: false, error: (err as Error).message }
  }
}

/** The wire reader must read what the full decode reads, to the same mapping. */
function sameAsFullDecode(bytes: Uint8Array): void {
  const reference = attempt(() => mapResources(readOtlpObject(request.decode(bytes) as unknown as Record<string, unknown>, MAX_EVENTS), mapping))
  const wire = attempt(() => mapOtlp(bytes, null, { maxEvents: MAX_EVENTS, otlp: mapping }))
  if (!reference.ok) {
    if (!wire.ok) assert.match(wire.error, /not an OTLP ExportTraceServiceRequest in binary protobuf: /)
    return
  }
  assert.ok(wire.ok, `the full decode read the body; the wire reader refused it: ${wire.ok ? '' : wire.error}`)
  assert.deepEqual(wire.value, reference.value)
}

// ---------------------------------------------------------------------------
// Generated requests.

const NAMES = [
  'gen_ai.usage.input_tokens', 'gen_ai.usage.output_tokens', 'gen_ai.usage.prompt_tokens', 'gen_ai.usage.completion_tokens',
  'gen_ai.usage.cache_read.input_tokens', 'gen_ai.usage.cache_creation.input_tokens', 'gen_ai.usage.reasoning.output_tokens',
  'gen_ai.provider.name', 'gen_ai.system', 'gen_ai.response.model', 'gen_ai.request.model', 'gen_ai.operation.name',
  'http.response.status_code', 'error.type', 'service.name', 'gateway.key', 'tokenledger.key_id', 'tokenledger.team_id',
  'user.id', 'enduser.id', 'tokenledger.customer_id', 'tokenledger.cost', 'tokenledger.currency',
  'http.request.method', 'gen_ai.usage.input_tokenz', 'gen_ai.usage.input_tokens.x', '', 'gen_ai.ü',
]
const T0_NS = BigInt(T0) * 1_000_000n

const anyValue: fc.Arbitrary<Record<string, unknown>> = fc.letrec<{ value: Record<string, unknown> }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant({}),
    fc.oneof(fc.constantFrom('openai', 'gpt-4o', '0.0125', '1e-3', '429', 'timeout', '', 'USD', '12'), fc.string({ unit: 'grapheme', maxLength: 12 })).map((s) => ({ stringValue: s })),
    fc.oneof(fc.integer({ min: -5, max: 100_000 }), fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n), fc.constantFrom(2n ** 53n - 1n, 2n ** 53n, -(2n ** 53n) + 1n, -(2n ** 53n), 2n ** 28n - 1n, 2n ** 28n)).map((n) => ({ intValue: String(n) })),
    fc.oneof(fc.double(), fc.constantFrom(0.0005, 0.1 + 0.2, 12, -0, 2 ** 53)).map((d) => ({ doubleValue: d })),
    fc.boolean().map((b) => ({ boolValue: b })),
    fc.uint8Array({ maxLength: 4 }).map((b) => ({ bytesValue: b })),
    fc.array(tie('value'), { maxLength: 2 }).map((values) => ({ arrayValue: { values } })),
    fc.array(fc.record({ key: fc.constantFrom(...NAMES), value: tie('value') }), { maxLength: 2 }).map((values) => ({ kvlistValue: { values } })),
  ),
})).value

const attribute = fc.record({ key: fc.constantFrom(...NAMES), value: anyValue }, { requiredKeys: ['key'] })
const usageAttrs = fc.tuple(
  fc.subarray(['gen_ai.provider.name', 'gen_ai.response.model', 'gen_ai.usage.input_tokens', 'gen_ai.usage.output_tokens', 'tokenledger.cost']),
  fc.array(attribute, { maxLength: 8 }),
).map(([names, extra]) => [
  ...names.map((key) => ({ key, value: key.includes('usage') ? { intValue: '40' } : { stringValue: key.endsWith('cost') ? '0.001' : 'x' } })),
  ...extra,
])
const id = (width: number) => fc.oneof(fc.uint8Array({ minLength: width, maxLength: width }), fc.constant(new Uint8Array(width)), fc.uint8Array({ maxLength: width + 1 }))
const time = fc.oneof(fc.bigInt(0n, 2n ** 64n - 1n), fc.bigInt(T0_NS - 10n ** 12n, T0_NS + 10n ** 9n), fc.constantFrom(0n, 1n, 253_402_300_799_999_999_999n, 253_402_300_800_000_000_000n))
const span = fc.record(
  {
    traceId: id(16),
    spanId: id(8),
    name: fc.constantFrom('chat', 'GET /'),
    startTimeUnixNano: time.map(String),
    endTimeUnixNano: time.map(String),
    attributes: usageAttrs,
    status: fc.record({ code: fc.integer({ min: 0, max: 2 }), message: fc.constant('m') }, { requiredKeys: [] }),
    events: fc.array(fc.record({ name: fc.constant('e'), attributes: fc.array(attribute, { maxLength: 2 }) }), { maxLength: 1 }),
  },
  { requiredKeys: ['traceId', 'spanId', 'endTimeUnixNano', 'attributes'] },
)
const resource = fc.record({ attributes: fc.array(attribute, { maxLength: 4 }) })
const exportRequest = fc.record({
  resourceSpans: fc.array(fc.record({ resource, scopeSpans: fc.array(fc.record({ scope: fc.constant({ name: 's' }), spans: fc.array(span, { maxLength: 4 }) }), { maxLength: 2 }) }, { requiredKeys: ['scopeSpans'] }), { maxLength: 3 }),
})

const encode = (type: protobuf.Type, value: object): Uint8Array => type.encode(type.fromObject(value)).finish()

test('generated requests: the wire reader maps them as the full decode does', () => {
  fc.assert(fc.property(exportRequest, (value) => sameAsFullDecode(encode(request, value))), { numRuns: RUNS })
})

test('singular messages split in two on the wire (merged, last scalar wins); key/values with their value first', () => {
  const field = (w: protobuf.Writer, n: number, bytes: Uint8Array) => w.uint32((n << 3) | 2).bytes(bytes)
  fc.assert(
    fc.property(span, span, resource, resource, fc.array(fc.tuple(attribute, attribute), { maxLength: 3 }), (a, b, ra, rb, pairs) => {
      const kvs = pairs.map(([k, v]) => {
        const w = protobuf.Writer.create()
        if (v.value !== undefined) field(w, 2, encode(root.lookupType('opentelemetry.proto.common.v1.AnyValue'), v.value))
        return Buffer.concat([w.finish(), encode(KeyValue, { key: k.key }), encode(KeyValue, { value: k.value })])
      })
      const spanBytes = Buffer.concat([encode(Span, a), encode(Span, b), ...kvs.map((kv) => field(protobuf.Writer.create(), 9, kv).finish())])
      const scope = field(protobuf.Writer.create(), 2, spanBytes).finish()
      const rs = protobuf.Writer.create()
      field(rs, 2, scope)
      field(rs, 1, Buffer.concat([encode(Resource, ra), encode(Resource, rb)]))
      sameAsFullDecode(field(protobuf.Writer.create(), 1, rs.finish()).finish())
    }),
    { numRuns: RUNS },
  )
})

test('corrupted bodies: whatever the full decode reads, the wire reader reads the same way', () => {
  const mutation = fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 3 }) }),
  )
  fc.assert(
    fc.property(exportRequest, fc.array(mutation, { minLength: 1, maxLength: 3 }), (value, mutations) => {
      let bytes = Buffer.from(encode(request, value))
      for (const m of mutations) {
        if (bytes.length === 0) break
        const at = m.at % bytes.length
        if (m.kind === 'flip') bytes[at] = m.byte
        else if (m.kind === 'cut') bytes = bytes.subarray(0, at)
        else bytes = Buffer.concat([bytes.subarray(0, at), m.bytes, bytes.subarray(at)])
      }
      sameAsFullDecode(bytes)
    }),
    { numRuns: RUNS },
  )
})

test('a span past the event bound is 413 before the body is read on; truncation and bad wire types are 400', () => {
  const spans = Array.from({ length: 3 }, (_, i) => ({ traceId: new Uint8Array(16).fill(1), spanId: new Uint8Array(8).fill(i + 1), endTimeUnixNano: String(T0_NS) }))
  const bytes = encode(request, { resourceSpans: [{ scopeSpans: [{ spans }] }] })
  assert.throws(() => mapOtlp(bytes, null, { maxEvents: 2, otlp: mapping }), (err: Error & { statusCode?: number }) => err.statusCode === 413)
  assert.equal(mapOtlp(bytes, null, { maxEvents: 3, otlp: mapping }).count, 3)
  for (const bad of [bytes.subarray(0, bytes.length - 1), Buffer.concat([bytes, Buffer.from([0x0f])]), Buffer.from([0x0a, 0x05, 0x12])]) {
    assert.throws(() => mapOtlp(bad, null, { maxEvents: 10, otlp: mapping }), (err: Error & { statusCode?: number }) => err.statusCode === 400 && /not an OTLP ExportTraceServiceRequest/.test(err.message))
  }
})
