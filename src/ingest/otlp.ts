// OTLP/HTTP traces (POST /v1/traces) mapped to native events, by the
// OpenTelemetry GenAI semantic conventions. The README's "OpenTelemetry"
// section is the table of this mapping.
//
// - Bodies are ExportTraceServiceRequest messages: binary protobuf, decoded by
//   protobufjs with the published OTLP schema (proto/, vendored verbatim), or
//   OTLP's JSON encoding (lowerCamelCase keys, hex trace and span ids, int64
//   as strings or numbers, unknown fields ignored). One walker reads both:
//   protobufjs names decoded fields in lowerCamelCase too, and sets as own
//   properties only the fields present on the wire.
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

import { fileURLToPath } from 'node:url'
import protobuf from 'protobufjs'
import { Errors } from '../errors.js'
import type { AppendOutcome } from '../store/store.js'
import type { FieldError } from './event.js'
import { mappedEventId } from './identity.js'
import { isObject, parseJson, pointer, typeName, type MappedBody, type MappedRecord } from './mapped.js'

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
const ERROR_TYPE = 'error.type'
const OPERATION = 'gen_ai.operation.name'
const SERVICE_NAME = 'service.name'
/** Span status code ERROR (opentelemetry.proto.trace.v1.Status.StatusCode). */
const STATUS_CODE_ERROR = 2
const HEX_RE = /^[0-9a-fA-F]*$/
const INT_RE = /^-?\d{1,20}$/
const HTTP_STATUS_RE = /^[1-5]\d\d$/
/** The last nanosecond JavaScript dates (and RFC 3339 years) can hold: 9999-12-31T23:59:59.999999999Z. */
const MAX_NS = 253_402_300_799_999_999_999n
const NS_PER_MS = 1_000_000n
const DAY_MS = 86_400_000

// ---------------------------------------------------------------------------
// The schema, read once per thread from proto/.

const PROTO_DIR = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../../proto/' : '../../../proto/', import.meta.url))

interface Schema {
  request: protobuf.Type
  response: protobuf.Type
  status: protobuf.Type
}
let schema: Schema | null = null

function types(): Schema {
  if (schema !== null) return schema
  const root = new protobuf.Root()
  root.resolvePath = (_origin, target) => PROTO_DIR + target
  root.loadSync(['opentelemetry/proto/collector/trace/v1/trace_service.proto', 'google/rpc/status.proto'], { keepCase: false })
  schema = {
    request: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest'),
    response: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse'),
    status: root.lookupType('google.rpc.Status'),
  }
  return schema
}

// ---------------------------------------------------------------------------
// Decoding.

/** An OTLP AnyValue as decoded (protobufjs message or JSON object): one own property set. */
type AnyValue = Record<string, unknown>
type Attributes = Record<string, AnyValue>

/** The request's spans mapped: `proto` bytes, or `json` text (exactly one is given). */
export function mapOtlp(proto: Uint8Array | null, json: string | null, opts: { maxEvents: number; otlp?: OtlpMapping }): MappedBody {
  const mapping = opts.otlp
  if (mapping === undefined) throw new Error('mapOtlp: no OTLP mapping configured')
  const request = proto !== null ? decodeProto(proto) : decodeJson(json ?? '')
  const records: MappedRecord[] = []
  let count = 0
  let ignored = 0
  for (const [ri, rs] of list(request.resourceSpans, '/resourceSpans').entries()) {
    const resource = isObject(rs.resource) ? rs.resource : {}
    const resourceAttrs = attributes(resource.attributes, `/resourceSpans/${ri}/resource/attributes`)
    for (const [si, ss] of list(rs.scopeSpans, `/resourceSpans/${ri}/scopeSpans`).entries()) {
      for (const span of list(ss.spans, `/resourceSpans/${ri}/scopeSpans/${si}/spans`)) {
        const index = count++
        if (count > opts.maxEvents) throw new Errors.TooManyEvents(count, opts.maxEvents)
        const attrs = attributes(span.attributes, `/resourceSpans/${ri}/scopeSpans/${si}/spans/${index}/attributes`)
        if (first(attrs, USAGE.input) === null && first(attrs, USAGE.output) === null) {
          ignored++
          continue
        }
        records.push(mapSpan(span, attrs, resourceAttrs, index, mapping))
      }
    }
  }
  return { records, count, ignored }
}

function decodeProto(bytes: Uint8Array): Record<string, unknown> {
  try {
    return types().request.decode(bytes) as unknown as Record<string, unknown>
  } catch (err) {
    throw new Errors.BadBody(`not an OTLP ExportTraceServiceRequest in binary protobuf: ${(err as Error).message.slice(0, 200)}`)
  }
}

function decodeJson(text: string): Record<string, unknown> {
  if (text.trim() === '') return {} // an empty export is a success (the spec)
  const body = parseJson(text, 'send an OTLP ExportTraceServiceRequest')
  if (!isObject(body)) throw new Errors.BadBody(`an OTLP ExportTraceServiceRequest in JSON is an object, got ${typeName(body)}`)
  return body
}

/** A repeated field: absent is empty; anything but a list of objects is a malformed body. */
function list(value: unknown, where: string): Array<Record<string, unknown>> {
  if (value === undefined || value === null) return []
  if (!Array.isArray(value)) throw new Errors.BadBody(`${where} must be an array, got ${typeName(value)}`)
  for (const item of value) if (!isObject(item)) throw new Errors.BadBody(`${where} must hold objects, got ${typeName(item)}`)
  return value as Array<Record<string, unknown>>
}

function attributes(value: unknown, where: string): Attributes {
  const out: Attributes = Object.create(null) as Attributes
  for (const kv of list(value, where)) {
    if (typeof kv.key === 'string' && isObject(kv.value)) out[kv.key] = kv.value
  }
  return out
}

function first(attrs: Attributes, names: readonly string[]): { name: string; value: AnyValue } | null {
  for (const name of names) {
    const value = attrs[name]
    if (value !== undefined) return { name, value }
  }
  return null
}

function has(v: AnyValue, field: string): boolean {
  return Object.hasOwn(v, field)
}

/** An int64 as protobufjs (Long, or number) or JSON (decimal string, or number) gives it. */
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

type Read<T> = { ok: true; value: T } | { ok: false; message: string }

function readInt(v: AnyValue): Read<number> {
  if (has(v, 'intValue')) {
    const n = int64(v.intValue)
    if (n === null) return { ok: false, message: 'must be an int attribute' }
    if (n > BigInt(Number.MAX_SAFE_INTEGER) || n < -BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, message: 'must be a safe integer (at most 2^53-1)' }
    return { ok: true, value: Number(n) }
  }
  // A JavaScript SDK sends whole numbers as intValue; tolerate a whole double.
  if (has(v, 'doubleValue') && typeof v.doubleValue === 'number' && Number.isSafeInteger(v.doubleValue)) return { ok: true, value: v.doubleValue }
  return { ok: false, message: `must be an int attribute, got ${valueKind(v)}` }
}

function readString(v: AnyValue): Read<string> {
  if (has(v, 'stringValue') && typeof v.stringValue === 'string') return { ok: true, value: v.stringValue }
  return { ok: false, message: `must be a string attribute, got ${valueKind(v)}` }
}

/** A cost: a string attribute (decimal text, exact) or a number, both checked by the native rules. */
function readCost(v: AnyValue): Read<string | number> {
  if (has(v, 'stringValue') && typeof v.stringValue === 'string') return { ok: true, value: v.stringValue }
  if (has(v, 'doubleValue') && typeof v.doubleValue === 'number') return { ok: true, value: v.doubleValue }
  if (has(v, 'intValue')) {
    const n = readInt(v)
    return n.ok ? n : { ok: false, message: n.message }
  }
  return { ok: false, message: `must be a string (a decimal, exact) or a double attribute, got ${valueKind(v)}` }
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

/** Nanoseconds since the epoch as RFC 3339 UTC with microseconds (the store keeps microseconds). */
function rfc3339(ns: bigint): string {
  const ms = ns / NS_PER_MS
  const us = (ns % NS_PER_MS) / 1000n
  return `${new Date(Number(ms)).toISOString().slice(0, -1)}${us.toString().padStart(3, '0')}Z`
}

function mapSpan(span: Record<string, unknown>, attrs: Attributes, resourceAttrs: Attributes, index: number, mapping: OtlpMapping): MappedRecord {
  const errors: FieldError[] = []
  const event: Record<string, unknown> = {}
  const origin: MappedRecord['origin'] = {}
  const at = (name: string): string => `/attributes${pointer(name)}`

  const traceId = hexId(span.traceId, 16)
  const spanId = hexId(span.spanId, 8)
  if (traceId === null) errors.push({ field: '/traceId', message: 'must be 16 bytes (32 hex digits), not all zero' })
  if (spanId === null) errors.push({ field: '/spanId', message: 'must be 8 bytes (16 hex digits), not all zero' })
  const eventId = traceId !== null && spanId !== null ? mappedEventId('otel', [traceId, spanId]) : null
  event.event_id = eventId
  origin.event_id = '/spanId'

  const end = int64(span.endTimeUnixNano)
  if (end === null || end <= 0n || end > MAX_NS) {
    errors.push({ field: '/endTimeUnixNano', message: 'must be the time the span ended, in nanoseconds since the epoch' })
  } else {
    event.timestamp = rfc3339(end)
    origin.timestamp = '/endTimeUnixNano'
    const start = int64(span.startTimeUnixNano)
    // Derived, not sent: a span longer than the native bound (a day) just has no latency.
    if (start !== null && start > 0n && start <= end) {
      const latencyMs = Number((end - start) / NS_PER_MS)
      if (latencyMs <= DAY_MS) event.latency_ms = latencyMs
    }
  }

  const take = <T>(field: string, names: readonly string[], read: (v: AnyValue) => Read<T>, sources: Attributes[] = [attrs]): boolean => {
    for (const source of sources) {
      const found = first(source, names)
      if (found === null) continue
      const res = read(found.value)
      const where = source === attrs ? at(found.name) : `/resource${at(found.name)}`
      if (res.ok) {
        event[field] = res.value
        ;(origin as Record<string, string>)[field] = where
      } else {
        errors.push({ field: where, message: res.message })
      }
      return true
    }
    return false
  }

  if (!take('provider', PROVIDER, readString)) errors.push({ field: at(PROVIDER[0]!), message: `is required (or the older ${PROVIDER[1]})` })
  if (!take('model', MODEL, readString)) errors.push({ field: at(MODEL[0]!), message: `is required (or ${MODEL[1]})` })
  // One of the two is there (else the span was ignored); the other is 0 (an embeddings span has no output).
  if (!take('input_tokens', USAGE.input, readInt)) event.input_tokens = 0
  if (!take('output_tokens', USAGE.output, readInt)) event.output_tokens = 0
  take('cache_read_tokens', USAGE.cacheRead, readInt)
  take('cache_write_tokens', USAGE.cacheWrite, readInt)
  take('reasoning_tokens', USAGE.reasoning, readInt)

  if (!take('status_code', [STATUS_CODE], readInt)) {
    const errorType = attrs[ERROR_TYPE]
    const status = isObject(span.status) ? span.status : {}
    if (errorType !== undefined) {
      const text = readString(errorType)
      event.status_code = text.ok && HTTP_STATUS_RE.test(text.value) ? Number(text.value) : 500
      origin.status_code = at(ERROR_TYPE)
    } else {
      event.status_code = int64(status.code) === BigInt(STATUS_CODE_ERROR) ? 500 : 200
      origin.status_code = '/status/code'
    }
  }

  const both = [attrs, resourceAttrs]
  if (!take('key_id', mapping.keyAttributes, readString, both)) {
    const service = resourceAttrs[SERVICE_NAME]
    const name = service !== undefined ? readString(service) : null
    event.key_id = name?.ok === true && name.value !== '' ? name.value : mapping.defaultKey
    origin.key_id = name?.ok === true ? `/resource${at(SERVICE_NAME)}` : at(mapping.keyAttributes[0] ?? 'key')
  }
  take('team_id', mapping.teamAttributes, readString, both)
  take('user_id', mapping.userAttributes, readString, both)
  take('customer_id', mapping.customerAttributes, readString, both)
  take('cost', mapping.costAttributes, readCost, both)
  take('currency', mapping.currencyAttributes, readString, both)

  const tags: Record<string, string> = {}
  const operation = attrs[OPERATION] !== undefined ? readString(attrs[OPERATION]) : null
  if (operation?.ok === true) tags[OPERATION] = operation.value
  const service = resourceAttrs[SERVICE_NAME] !== undefined ? readString(resourceAttrs[SERVICE_NAME]) : null
  if (service?.ok === true) tags[SERVICE_NAME] = service.value
  if (Object.keys(tags).length > 0) {
    event.tags = tags
    origin.tags = (rest) => (rest === `/${SERVICE_NAME}` ? `/resource${at(SERVICE_NAME)}` : at(OPERATION))
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
export function partialSuccess(outcome: Pick<AppendOutcome, 'rejected' | 'conflicts' | 'results'>): PartialSuccess | null {
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
  let errorMessage = `${rejectedSpans} GenAI span(s) not stored (the others were): ${parts.join('; ')}${more}`
  if (errorMessage.length > MAX_ERROR_MESSAGE_CHARS) errorMessage = `${errorMessage.slice(0, MAX_ERROR_MESSAGE_CHARS - 1)}…`
  return { rejectedSpans, errorMessage }
}

/** ExportTraceServiceResponse in the request's encoding (JSON: int64 as a string, per the proto3 JSON mapping). */
export function encodeTraceResponse(partial: PartialSuccess | null, encoding: OtlpEncoding): Buffer | string {
  if (encoding === 'json') {
    return JSON.stringify(partial === null ? {} : { partialSuccess: { rejectedSpans: String(partial.rejectedSpans), errorMessage: partial.errorMessage } })
  }
  const { response } = types()
  return Buffer.from(response.encode(response.fromObject(partial === null ? {} : { partialSuccess: partial })).finish())
}

/** google.rpc.Status, the body of every OTLP/HTTP 4xx and 5xx answer. */
export function encodeStatus(code: number, message: string, encoding: OtlpEncoding): Buffer | string {
  if (encoding === 'json') return JSON.stringify({ code, message })
  const { status } = types()
  return Buffer.from(status.encode(status.fromObject({ code, message })).finish())
}
