// OTLP/HTTP traces (POST /v1/traces) mapped to native events, by the
// OpenTelemetry GenAI semantic conventions. The README's "OpenTelemetry"
// section is the table of this mapping.
//
// - Bodies are ExportTraceServiceRequest messages: binary protobuf, read with
//   protobufjs's Reader by the published OTLP schema's field numbers (proto/,
//   vendored verbatim) into only what this mapping uses (otlp-wire.ts), or
//   OTLP's JSON encoding (lowerCamelCase keys, hex trace and span ids, int64
//   as strings or numbers, unknown fields ignored), walked by readOtlpObject.
//   Both give resources and spans of one shape (otlp-wire.ts's SpanIn), and
//   one mapping (mapResources) makes events of them.
// - A span is usage when it carries gen_ai.usage.input_tokens or
//   gen_ai.usage.output_tokens (or their deprecated names prompt_tokens /
//   completion_tokens); every other span is ignored and counted, never an error.
// - Identity: event_id "otel:<trace id>:<span id>" (lowercase hex): an
//   exporter's retry of the same span is a duplicate.
// - Time: the span's end. Status: http.response.status_code, else a numeric
//   error.type, else 500 when error.type is set or the span status is ERROR,
//   else 200. Key, team, user, customer, cost and currency come from
//   configurable attribute names (span first, then resource); a span without a
//   key attribute is keyed by the resource's service.name, else a configured
//   default: it is recorded, never dropped.
// - Cost is exact: a string attribute is a decimal text as the native route
//   takes it; a double attribute is taken at its shortest round-trip decimal
//   (what the sender's literal was) and refused beyond 12 fractional digits.

import { Errors } from '../errors.js'
import type { AppendOutcome } from '../store/outcomes.js'
import type { FieldError } from './event.js'
import { mappedEventId } from './identity.js'
import { EpochMicros } from './timestamp.js'
import { isObject, parseJson, pointer, typeName, type MappedBody, type MappedRecord } from './mapped.js'
import { otlpSchema } from './otlp-schema.js'
import { KeyTable, NO_TIME, readExportRequest, type AnyValue, type Attributes, type NanoTime, type ResourceIn, type SpanIn } from './otlp-wire.js'

/** Attribute names (tried in order, span then resource) for what the conventions do not name. */
export interface OtlpMapping {
  keyAttributes: string[]
  teamAttributes: string[]
  userAttributes: string[]
  customerAttributes: string[]
  costAttributes: string[]
  currencyAttributes: string[]
  /** The key of a span with no key attribute and no service.name. */
  defaultKey: string
}

/** Longest error_message in a partial success: the spec asks answers to stay small (4 MiB); a few KiB says enough. */
export const MAX_ERROR_MESSAGE_CHARS = 4096
/** Rejected spans described one by one in error_message; the rest are counted. */
export const MAX_DESCRIBED_SPANS = 10

const USAGE = {
  input: ['gen_ai.usage.input_tokens', 'gen_ai.usage.prompt_tokens'],
  output: ['gen_ai.usage.output_tokens', 'gen_ai.usage.completion_tokens'],
  cacheRead: ['gen_ai.usage.cache_read.input_tokens'],
  cacheWrite: ['gen_ai.usage.cache_creation.input_tokens'],
  reasoning: ['gen_ai.usage.reasoning.output_tokens'],
} as const
const PROVIDER = ['gen_ai.provider.name', 'gen_ai.system']
const MODEL = ['gen_ai.response.model', 'gen_ai.request.model']
const STATUS_CODE = 'http.response.status_code'
const STATUS_CODES = [STATUS_CODE]
const ERROR_TYPE = 'error.type'
const OPERATION = 'gen_ai.operation.name'
const SERVICE_NAME = 'service.name'
/** Span status code ERROR (opentelemetry.proto.trace.v1.Status.StatusCode). */
const STATUS_CODE_ERROR = 2
const HEX_RE = /^[0-9a-fA-F]*$/
const INT_RE = /^-?\d{1,20}$/
const HTTP_STATUS_RE = /^[1-5]\d\d$/
/** The last millisecond JavaScript dates (and RFC 3339 years) can hold: a span may end at 9999-12-31T23:59:59.999999999Z at the latest. */
const MAX_MS = 253_402_300_799_999
const NS_PER_MS = 1_000_000n
const DAY_MS = 86_400_000

// ---------------------------------------------------------------------------
// Decoding: both encodings into resources and spans (otlp-wire.ts's shape).

/**
 * The attribute keys the mapping can read under `mapping`: the wire reader
 * keeps only these. Remembered by the mapping's content, since every job
 * brings its own copy of it to the worker.
 */
let wanted: { of: string; keys: KeyTable } | null = null
function wantedKeys(mapping: OtlpMapping): KeyTable {
  const of = JSON.stringify(mapping)
  if (wanted?.of !== of) {
    const keys = new KeyTable([
      ...Object.values(USAGE).flat(),
      ...PROVIDER,
      ...MODEL,
      STATUS_CODE,
      ERROR_TYPE,
      OPERATION,
      SERVICE_NAME,
      ...mapping.keyAttributes,
      ...mapping.teamAttributes,
      ...mapping.userAttributes,
      ...mapping.customerAttributes,
      ...mapping.costAttributes,
      ...mapping.currencyAttributes,
    ])
    wanted = { of, keys }
  }
  return wanted.keys
}

/** The request's spans mapped: `proto` bytes, or `json` text (exactly one is given). */
export function mapOtlp(proto: Uint8Array | null, json: string | null, opts: { maxEvents: number; otlp?: OtlpMapping }): MappedBody {
  const mapping = opts.otlp
  if (mapping === undefined) throw new Error('mapOtlp: no OTLP mapping configured')
  const body = new SpanMapper(mapping)
  if (proto !== null) {
    const maxEvents = opts.maxEvents
    try {
      readExportRequest(proto, wantedKeys(mapping), maxEvents, (count) => new Errors.TooManyEvents(count, maxEvents), (span, resourceAttrs) => body.add(span, resourceAttrs))
    } catch (err) {
      if (err instanceof Errors.TooManyEvents) throw err
      throw new Errors.BadBody(`not an OTLP ExportTraceServiceRequest in binary protobuf: ${(err as Error).message.slice(0, 200)}`)
    }
  } else {
    for (const resource of readOtlpObject(decodeJson(json ?? ''), opts.maxEvents)) for (const span of resource.spans) body.add(span, resource.attrs)
  }
  return body.result()
}

/** Resources and spans (from either encoding) mapped to native events; spans without gen_ai usage counted as ignored. */
export function mapResources(resources: readonly ResourceIn[], mapping: OtlpMapping): MappedBody {
  const body = new SpanMapper(mapping)
  for (const resource of resources) for (const span of resource.spans) body.add(span, resource.attrs)
  return body.result()
}

/** Spans mapped one by one, in the request's order: each is a record, or ignored (no gen_ai usage). */
class SpanMapper {
  private readonly records: MappedRecord[] = []
  private count = 0
  private ignored = 0

  constructor(private readonly mapping: OtlpMapping) {}

  add(span: SpanIn, resourceAttrs: Attributes): void {
    const index = this.count++
    if (first(span.attrs, USAGE.input) === null && first(span.attrs, USAGE.output) === null) this.ignored++
    else this.records.push(mapSpan(span, resourceAttrs, index, this.mapping))
  }

  result(): MappedBody {
    return { records: this.records, count: this.count, ignored: this.ignored }
  }
}

function decodeJson(text: string): Record<string, unknown> {
  if (text.trim() === '') return {} // an empty export is a success (the spec)
  const body = parseJson(text, 'send an OTLP ExportTraceServiceRequest')
  if (!isObject(body)) throw new Errors.BadBody(`an OTLP ExportTraceServiceRequest in JSON is an object, got ${typeName(body)}`)
  return body
}

/**
 * An ExportTraceServiceRequest as an object, into resources and spans: OTLP's
 * JSON encoding (lowerCamelCase keys, hex ids, int64 as strings or numbers), or
 * protobufjs's full decode of the binary one (bytes ids, Long int64s: what
 * test/otlp-wire.test.ts checks the wire reader against). Only own properties
 * are read, as both set only the fields present.
 */
export function readOtlpObject(request: Record<string, unknown>, maxEvents: number): ResourceIn[] {
  const out: ResourceIn[] = []
  let count = 0
  for (const [ri, rs] of list(request.resourceSpans, '/resourceSpans').entries()) {
    const resource = isObject(rs.resource) ? rs.resource : {}
    const res: ResourceIn = { attrs: attributes(resource.attributes, `/resourceSpans/${ri}/resource/attributes`), spans: [] }
    for (const [si, ss] of list(rs.scopeSpans, `/resourceSpans/${ri}/scopeSpans`).entries()) {
      for (const span of list(ss.spans, `/resourceSpans/${ri}/scopeSpans/${si}/spans`)) {
        const index = count++
        if (count > maxEvents) throw new Errors.TooManyEvents(count, maxEvents)
        const status = isObject(span.status) ? span.status : {}
        const code = int64(status.code)
        res.spans.push({
          traceId: hexId(span.traceId, 16),
          spanId: hexId(span.spanId, 8),
          start: timeOf(int64(span.startTimeUnixNano)),
          end: timeOf(int64(span.endTimeUnixNano)),
          statusCode: code !== null && code >= -(2n ** 31n) && code < 2n ** 31n ? Number(code) : 0,
          attrs: attributes(span.attributes, `/resourceSpans/${ri}/scopeSpans/${si}/spans/${index}/attributes`),
        })
      }
    }
    out.push(res)
  }
  return out
}

function timeOf(ns: bigint | null): NanoTime {
  if (ns === null || ns <= 0n) return NO_TIME
  return { ms: Number(ns / NS_PER_MS), subNs: Number(ns % NS_PER_MS) }
}

/** A repeated field: absent is empty; anything but a list of objects is a malformed body. */
function list(value: unknown, where: string): Array<Record<string, unknown>> {
  if (value === undefined || value === null) return []
  if (!Array.isArray(value)) throw new Errors.BadBody(`${where} must be an array, got ${typeName(value)}`)
  for (const item of value) if (!isObject(item)) throw new Errors.BadBody(`${where} must hold objects, got ${typeName(item)}`)
  return value as Array<Record<string, unknown>>
}

function attributes(value: unknown, where: string): Attributes {
  const out: Attributes = new Map()
  for (const kv of list(value, where)) {
    if (typeof kv.key === 'string' && isObject(kv.value)) out.set(kv.key, kv.value)
  }
  return out
}

/** The first of `names` that `attrs` has, or null. */
function first(attrs: Attributes, names: readonly string[]): string | null {
  for (let i = 0; i < names.length; i++) if (attrs.has(names[i]!)) return names[i]!
  return null
}

function has(v: AnyValue, field: string): boolean {
  return Object.hasOwn(v, field)
}

/** An int64 as the readers give it (a number, a Long, or JSON's decimal string). */
function int64(value: unknown): bigint | null {
  if (typeof value === 'number') return Number.isSafeInteger(value) ? BigInt(value) : null
  if (typeof value === 'string') return INT_RE.test(value) ? BigInt(value) : null
  if (typeof value === 'object' && value !== null && 'low' in value && 'high' in value) {
    const { low, high, unsigned } = value as { low: number; high: number; unsigned?: boolean }
    const bits = (BigInt(high >>> 0) << 32n) | BigInt(low >>> 0)
    return unsigned ? bits : BigInt.asIntN(64, bits)
  }
  return null
}

/** Why an attribute could not be read (the only allocation of a read: values come back as they are). */
class Unreadable {
  constructor(readonly message: string) {}
}
type Read<T> = T | Unreadable

function readInt(v: AnyValue): Read<number> {
  if (has(v, 'intValue')) {
    const raw = v.intValue
    if (typeof raw === 'number' && Number.isSafeInteger(raw)) return raw === 0 ? 0 : raw
    const n = int64(raw)
    if (n === null) return new Unreadable('must be an int attribute')
    if (n > BigInt(Number.MAX_SAFE_INTEGER) || n < -BigInt(Number.MAX_SAFE_INTEGER)) return new Unreadable('must be a safe integer (at most 2^53-1)')
    return Number(n)
  }
  // A JavaScript SDK sends whole numbers as intValue; tolerate a whole double.
  if (has(v, 'doubleValue') && typeof v.doubleValue === 'number' && Number.isSafeInteger(v.doubleValue)) return v.doubleValue
  return new Unreadable(`must be an int attribute, got ${valueKind(v)}`)
}

function readString(v: AnyValue): Read<string> {
  if (has(v, 'stringValue') && typeof v.stringValue === 'string') return v.stringValue
  return new Unreadable(`must be a string attribute, got ${valueKind(v)}`)
}

/** A cost: a string attribute (decimal text, exact) or a number, both checked by the native rules. */
function readCost(v: AnyValue): Read<string | number> {
  if (has(v, 'stringValue') && typeof v.stringValue === 'string') return v.stringValue
  if (has(v, 'doubleValue') && typeof v.doubleValue === 'number') return v.doubleValue
  if (has(v, 'intValue')) return readInt(v)
  return new Unreadable(`must be a string (a decimal, exact) or a double attribute, got ${valueKind(v)}`)
}

/** A string attribute's text, or null when `v` is absent or not a string. */
function stringOf(v: AnyValue | undefined): string | null {
  if (v === undefined) return null
  const text = readString(v)
  return text instanceof Unreadable ? null : text
}

function valueKind(v: AnyValue): string {
  for (const kind of ['stringValue', 'intValue', 'doubleValue', 'boolValue', 'arrayValue', 'kvlistValue', 'bytesValue']) if (has(v, kind)) return kind.replace('Value', '')
  return 'an empty value'
}

/** A trace or span id as lowercase hex: bytes (protobuf) or hex text (JSON); null unless `bytes` long and not all zero. */
function hexId(value: unknown, bytes: number): string | null {
  let hex: string | null = null
  if (value instanceof Uint8Array) hex = Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')
  else if (typeof value === 'string' && HEX_RE.test(value)) hex = value.toLowerCase()
  if (hex === null || hex.length !== bytes * 2 || /^0+$/.test(hex)) return null
  return hex
}

/** `/attributes/<name>` (escaped), remembered: the same few names come in every span. */
const spanPointers = new Map<string, string>()
/** `/resource/attributes/<name>`, likewise. */
const resourcePointers = new Map<string, string>()
const MAX_POINTERS = 1024

function remembered(cache: Map<string, string>, prefix: string, name: string): string {
  let p = cache.get(name)
  if (p === undefined) {
    p = `${prefix}${pointer(name)}`
    if (cache.size >= MAX_POINTERS) cache.clear()
    cache.set(name, p)
  }
  return p
}

function at(name: string): string {
  return remembered(spanPointers, '/attributes', name)
}

function atResource(name: string): string {
  return remembered(resourcePointers, '/resource/attributes', name)
}

/** Where a tag of a mapped span came from: service.name from the resource, the operation from the span. */
function tagsOrigin(rest: string): string {
  return rest === `/${SERVICE_NAME}` ? atResource(SERVICE_NAME) : at(OPERATION)
}

/** A span being mapped: where its fields are taken from and put. */
interface Taking {
  attrs: Attributes
  resourceAttrs: Attributes
  event: Record<string, unknown>
  origin: MappedRecord['origin']
  errors: FieldError[]
}

/** Native `field` from the first of `names` the span has (then, with `resourceToo`, its resource); false when neither has any. */
function takeAttribute<T>(span: Taking, field: string, names: readonly string[], read: (v: AnyValue) => Read<T>, resourceToo: boolean): boolean {
  let source = span.attrs
  let name = first(source, names)
  if (name === null && resourceToo) {
    source = span.resourceAttrs
    name = first(source, names)
  }
  if (name === null) return false
  const res = read(source.get(name)!)
  const where = source === span.attrs ? at(name) : atResource(name)
  if (res instanceof Unreadable) {
    span.errors.push({ field: where, message: res.message })
  } else {
    span.event[field] = res
    ;(span.origin as Record<string, string>)[field] = where
  }
  return true
}

function mapSpan(span: SpanIn, resourceAttrs: Attributes, index: number, mapping: OtlpMapping): MappedRecord {
  const errors: FieldError[] = []
  const event: Record<string, unknown> = {}
  const origin: MappedRecord['origin'] = {}
  const attrs = span.attrs

  const { traceId, spanId } = span
  if (traceId === null) errors.push({ field: '/traceId', message: 'must be 16 bytes (32 hex digits), not all zero' })
  if (spanId === null) errors.push({ field: '/spanId', message: 'must be 8 bytes (16 hex digits), not all zero' })
  const eventId = traceId !== null && spanId !== null ? mappedEventId('otel', [traceId, spanId]) : null
  event.event_id = eventId
  origin.event_id = '/spanId'

  const { start, end } = span
  if (end.ms < 0 || end.ms > MAX_MS) {
    errors.push({ field: '/endTimeUnixNano', message: 'must be the time the span ended, in nanoseconds since the epoch' })
  } else {
    event.timestamp = new EpochMicros(end.ms, Math.floor(end.subNs / 1000))
    origin.timestamp = '/endTimeUnixNano'
    // Derived, not sent: a span longer than the native bound (a day) just has no latency.
    if (start.ms >= 0 && (start.ms < end.ms || (start.ms === end.ms && start.subNs <= end.subNs))) {
      const latencyMs = end.ms - start.ms - (end.subNs < start.subNs ? 1 : 0)
      if (latencyMs <= DAY_MS) event.latency_ms = latencyMs
    }
  }

  // No closure per span: one costs an allocation (and, under tsx, a keepNames wrapper) per span.
  const take: Taking = { attrs, resourceAttrs, event, origin, errors }

  if (!takeAttribute(take, 'provider', PROVIDER, readString, false)) errors.push({ field: at(PROVIDER[0]!), message: `is required (or the older ${PROVIDER[1]})` })
  if (!takeAttribute(take, 'model', MODEL, readString, false)) errors.push({ field: at(MODEL[0]!), message: `is required (or ${MODEL[1]})` })
  // One of the two is there (else the span was ignored); the other is 0 (an embeddings span has no output).
  if (!takeAttribute(take, 'input_tokens', USAGE.input, readInt, false)) event.input_tokens = 0
  if (!takeAttribute(take, 'output_tokens', USAGE.output, readInt, false)) event.output_tokens = 0
  takeAttribute(take, 'cache_read_tokens', USAGE.cacheRead, readInt, false)
  takeAttribute(take, 'cache_write_tokens', USAGE.cacheWrite, readInt, false)
  takeAttribute(take, 'reasoning_tokens', USAGE.reasoning, readInt, false)

  if (!takeAttribute(take, 'status_code', STATUS_CODES, readInt, false)) {
    const errorType = attrs.get(ERROR_TYPE)
    if (errorType !== undefined) {
      const text = stringOf(errorType)
      event.status_code = text !== null && HTTP_STATUS_RE.test(text) ? Number(text) : 500
      origin.status_code = at(ERROR_TYPE)
    } else {
      event.status_code = span.statusCode === STATUS_CODE_ERROR ? 500 : 200
      origin.status_code = '/status/code'
    }
  }

  if (!takeAttribute(take, 'key_id', mapping.keyAttributes, readString, true)) {
    const name = stringOf(resourceAttrs.get(SERVICE_NAME))
    event.key_id = name !== null && name !== '' ? name : mapping.defaultKey
    origin.key_id = name !== null ? atResource(SERVICE_NAME) : at(mapping.keyAttributes[0] ?? 'key')
  }
  takeAttribute(take, 'team_id', mapping.teamAttributes, readString, true)
  takeAttribute(take, 'user_id', mapping.userAttributes, readString, true)
  takeAttribute(take, 'customer_id', mapping.customerAttributes, readString, true)
  takeAttribute(take, 'cost', mapping.costAttributes, readCost, true)
  takeAttribute(take, 'currency', mapping.currencyAttributes, readString, true)

  const operation = stringOf(attrs.get(OPERATION))
  const service = stringOf(resourceAttrs.get(SERVICE_NAME))
  if (operation !== null || service !== null) {
    const tags: Record<string, string> = {}
    if (operation !== null) tags[OPERATION] = operation
    if (service !== null) tags[SERVICE_NAME] = service
    event.tags = tags
    origin.tags = tagsOrigin
  }
  return { index, eventId, event, errors, origin }
}

// ---------------------------------------------------------------------------
// Answers.

export type OtlpEncoding = 'proto' | 'json'

export interface PartialSuccess {
  rejectedSpans: number
  errorMessage: string
}

/** OTLP's partial_success for an outcome: null when every usage span is stored (accepted or duplicate). */
export function partialSuccess(outcome: Pick<AppendOutcome, 'accepted' | 'duplicates' | 'rejected' | 'conflicts' | 'results'>): PartialSuccess | null {
  const rejectedSpans = outcome.rejected + outcome.conflicts
  if (rejectedSpans === 0) return null
  const parts: string[] = []
  for (const r of outcome.results) {
    if (r.status === 'duplicate') continue
    if (parts.length === MAX_DESCRIBED_SPANS) break
    const what = r.status === 'conflict' ? 'conflict: an event with this id and different content is already stored (first write wins)' : (r.errors ?? []).map((e) => `${e.field || '(span)'} ${e.message}`).join('; ')
    parts.push(`span ${r.index}${r.event_id !== null ? ` (${r.event_id})` : ''}: ${what}`)
  }
  const more = rejectedSpans > parts.length ? `; and ${rejectedSpans - parts.length} more` : ''
  const stored = outcome.accepted + outcome.duplicates
  let errorMessage = `${rejectedSpans} GenAI span(s) not stored${stored > 0 ? ` (the other ${stored} were)` : ''}: ${parts.join('; ')}${more}`
  if (errorMessage.length > MAX_ERROR_MESSAGE_CHARS) errorMessage = `${errorMessage.slice(0, MAX_ERROR_MESSAGE_CHARS - 1)}…`
  return { rejectedSpans, errorMessage }
}

/** ExportTraceServiceResponse in the request's encoding (JSON: int64 as a string, per the proto3 JSON mapping). */
export function encodeTraceResponse(partial: PartialSuccess | null, encoding: OtlpEncoding): Buffer | string {
  // The usual answer (every span stored) is the same bytes every time: encoded once.
  if (partial === null) return encoding === 'json' ? '{}' : (emptyProtoResponse ??= encodeProtoResponse(null))
  if (encoding === 'json') {
    return JSON.stringify(partial === null ? {} : { partialSuccess: { rejectedSpans: String(partial.rejectedSpans), errorMessage: partial.errorMessage } })
  }
  return encodeProtoResponse(partial)
}

/** The encoded empty ExportTraceServiceResponse (no partial_success: zero bytes), shared by every answer (nothing writes into a sent buffer). */
let emptyProtoResponse: Buffer | undefined

function encodeProtoResponse(partial: PartialSuccess | null): Buffer {
  const { response } = otlpSchema()
  return Buffer.from(response.encode(response.fromObject(partial === null ? {} : { partialSuccess: partial })).finish())
}

/** google.rpc.Status, the body of every OTLP/HTTP 4xx and 5xx answer. */
export function encodeStatus(code: number, message: string, encoding: OtlpEncoding): Buffer | string {
  if (encoding === 'json') return JSON.stringify({ code, message })
  const { status } = otlpSchema()
  return Buffer.from(status.encode(status.fromObject({ code, message })).finish())
}
