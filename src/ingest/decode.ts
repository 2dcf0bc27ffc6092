// One ingest body, from its bytes to what the store takes: parsed, every
// record mapped to a native event (the other doors: OpenMeter CloudEvents,
// OTLP spans, LiteLLM payloads), every event validated by the one native
// validator (rejected ones with their field and reason, the field pointing
// into what the client sent) and the valid ones fingerprinted and encoded
// (batch.ts). A pure function of its input, so it runs on an ingest worker
// thread (decoder.ts) or, with none configured, on the event loop.
// Whole-request faults throw the service's errors (400 malformed, 413 too many).
//
// Invariant: whatever the format, a stored event passed validateEvent, so it
// obeys the native contract (DESIGN.md's field table) exactly.

import { Errors } from '../errors.js'
import type { EventResult } from '../store/outcomes.js'
import { encodeEvents, type EventBatch } from './batch.js'
import { mapCloudEvents } from './cloudevents.js'
import { validateEvent, type EventFieldName, type EventLimits, type FieldError, type UsageEvent } from './event.js'
import { mapLiteLLM } from './litellm.js'
import { utf8Text } from './json.js'
import { parseJson, parseNdjson, utf8Refusal, type MappedBody, type MappedRecord } from './mapped.js'
import { mapOtlp, type OtlpMapping } from './otlp.js'
import { applyPrice, type PricingMode } from '../pricing/apply.js'
import type { PriceTable } from '../pricing/table.js'

/** How a body is read: the native route's two, then one per other door. */
export type BodyFormat = 'json' | 'ndjson' | 'openmeter' | 'otlp-proto' | 'otlp-json' | 'litellm'

export interface DecodeOptions {
  limits: EventLimits
  /** Most records (events, CloudEvents, spans, payloads) in one body: past it 413. */
  maxEvents: number
  /** Where OTLP spans keep what the conventions do not name (otlp formats only). */
  otlp?: OtlpMapping
  /** How events are priced from the decoder's price table (default off). */
  pricing?: PricingMode
  /** The version of the price table the decoder holds for this body (a worker checks it has it). */
  pricesVersion?: string | null
}

export interface DecodedRequest {
  /** The valid events. */
  batch: EventBatch
  /** The invalid ones, each with its errors. */
  rejected: EventResult[]
  /** Records in the body: events, CloudEvents, spans (GenAI or not) or LiteLLM payloads. */
  records: number
  /** Records that are not usage and were skipped on purpose (OTLP spans without gen_ai.usage.*). */
  ignored: number
}

/** Decodes one body; valid events are priced from `prices` as `opts.pricing` says (after their fingerprint: see pricing/apply.ts). */
export function decodeRequest(raw: Uint8Array | string, format: BodyFormat, opts: DecodeOptions, prices: PriceTable | null = null): DecodedRequest {
  const pricer = new Pricer(prices, opts.pricing ?? 'off')
  if (format === 'otlp-proto') return validateMapped(mapOtlp(toBytes(raw), null, opts), opts, pricer)
  const text = bodyText(raw, format === 'ndjson')
  switch (format) {
    case 'openmeter':
      return validateMapped(mapCloudEvents(text, opts.maxEvents), opts, pricer)
    case 'otlp-json':
      return validateMapped(mapOtlp(null, text, opts), opts, pricer)
    case 'litellm':
      return validateMapped(mapLiteLLM(text, opts.maxEvents), opts, pricer)
    case 'json':
    case 'ndjson':
      break
  }
  const events = format === 'ndjson' ? parseNdjson(text, opts.maxEvents, true) : batchOf(parseJson(text, 'send {"events":[...]}, a JSON array, or NDJSON', true))
  if (events.length > opts.maxEvents) throw new Errors.TooManyEvents(events.length, opts.maxEvents)
  const valid: Array<{ index: number; event: UsageEvent }> = []
  const rejected: EventResult[] = []
  for (let index = 0; index < events.length; index++) {
    const res = validateEvent(events[index], opts.limits)
    const priceError = res.ok ? pricer.price(res.event) : null
    if (res.ok && priceError === null) valid.push({ index, event: res.event })
    else if (res.ok) rejected.push({ index, event_id: res.event.event_id, status: 'rejected', errors: [priceError!] })
    else rejected.push({ index, event_id: res.eventId, status: 'rejected', errors: res.errors })
  }
  return { batch: encodeEvents(valid), rejected, records: events.length, ignored: 0 }
}

/** Prices the valid events of one body. */
class Pricer {
  constructor(
    private readonly table: PriceTable | null,
    private readonly mode: PricingMode,
  ) {}

  /** Prices `event` in place; the error that rejects it when its priced cost is out of range. */
  price(event: UsageEvent): FieldError | null {
    if (this.table === null || this.mode === 'off') return null
    if (applyPrice(event, this.table, this.mode) !== 'too_large') return null
    return { field: '/cost', message: `priced from the price table at ${event.provider}/${event.model}, it is not below 10^15: check the token counts and the price entry` }
  }
}

/** Every mapped record through the native validator; its errors renamed to the fields the client sent. */
function validateMapped(body: MappedBody, opts: DecodeOptions, pricer: Pricer): DecodedRequest {
  if (body.count > opts.maxEvents) throw new Errors.TooManyEvents(body.count, opts.maxEvents)
  const valid: Array<{ index: number; event: UsageEvent }> = []
  const rejected: EventResult[] = []
  for (const record of body.records) {
    if (record.errors.length > 0) {
      rejected.push({ index: record.index, event_id: record.eventId, status: 'rejected', errors: record.errors })
      continue
    }
    const res = validateEvent(record.event, opts.limits)
    const priceError = res.ok ? pricer.price(res.event) : null
    if (res.ok && priceError === null) valid.push({ index: record.index, event: res.event })
    else if (res.ok) rejected.push({ index: record.index, event_id: res.event.event_id, status: 'rejected', errors: [priceError!] })
    else rejected.push({ index: record.index, event_id: record.eventId, status: 'rejected', errors: distinct(res.errors.map((e) => renamed(e, record.origin))) })
  }
  return { batch: encodeEvents(valid), rejected, records: body.count, ignored: body.ignored }
}

/** validateEvent's "/tags/route", for tags that came from "/data": "/data/route". */
function renamed(error: FieldError, origin: MappedRecord['origin']): FieldError {
  const slash = error.field.indexOf('/', 1)
  const name = (slash === -1 ? error.field.slice(1) : error.field.slice(1, slash)) as EventFieldName
  const from = origin[name]
  if (from === undefined) return error
  const rest = slash === -1 ? '' : error.field.slice(slash)
  return { field: typeof from === 'function' ? from(rest) : from + rest, message: error.message }
}

/** One source field may feed two native ones (subject: customer_id and key_id): say its fault once. */
function distinct(errors: FieldError[]): FieldError[] {
  const seen = new Set<string>()
  return errors.filter((e) => {
    const key = `${e.field}\x1f${e.message}`
    if (seen.has(key)) return false
    seen.add(key)
    return true
  })
}

/** The body's text; a body that is not valid UTF-8 is refused, naming where (never decoded to U+FFFD). */
function bodyText(raw: Uint8Array | string, ndjson: boolean): string {
  if (typeof raw === 'string') return raw
  const res = utf8Text(raw)
  if (!res.ok) throw utf8Refusal(res, ndjson)
  return res.text
}

function toBytes(raw: Uint8Array | string): Uint8Array {
  return typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw
}

/** Accepts {"events":[...]} or a bare array; anything else is a malformed body. */
function batchOf(body: unknown): unknown[] {
  if (Array.isArray(body)) return body
  if (typeof body === 'object' && body !== null) {
    const keys = Object.keys(body)
    const events = (body as { events?: unknown }).events
    if (keys.length === 1 && keys[0] === 'events' && Array.isArray(events)) return events
    const extra = keys.find((k) => k !== 'events')
    if (extra !== undefined) throw new Errors.BadBody(`unknown top-level field "${extra.slice(0, 64)}"; the body is {"events":[...]}, a JSON array, or NDJSON`)
  }
  throw new Errors.BadBody('expected {"events":[...]}, a JSON array of events, or NDJSON')
}
