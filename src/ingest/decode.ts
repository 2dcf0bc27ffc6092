// One POST /v1/events body, from its bytes to what the store takes: parsed
// (a JSON object or bare array, or NDJSON), every event validated (rejected
// ones with their field and reason) and the valid ones fingerprinted and
// encoded (batch.ts). A pure function of its input, so it runs on an ingest
// worker thread (decoder.ts) or, with none configured, on the event loop.
// Whole-request faults throw the service's errors (400 malformed, 413 too many).

import sjson from 'secure-json-parse'
import { Errors } from '../errors.js'
import type { EventResult } from '../store/store.js'
import { encodeEvents, type EventBatch } from './batch.js'
import { validateEvent, type EventLimits, type UsageEvent } from './event.js'

export type BodyFormat = 'json' | 'ndjson'

export interface DecodeOptions {
  limits: EventLimits
  maxEvents: number
}

export interface DecodedRequest {
  /** The valid events. */
  batch: EventBatch
  /** The invalid ones, each with its errors. */
  rejected: EventResult[]
}

const PARSE_OPTIONS = { protoAction: 'error', constructorAction: 'error' } as const

export function decodeRequest(raw: Uint8Array | string, format: BodyFormat, opts: DecodeOptions): DecodedRequest {
  const text = typeof raw === 'string' ? raw : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('utf8')
  const events = format === 'ndjson' ? parseNdjson(text, opts.maxEvents) : batchOf(parseJson(text))
  if (events.length > opts.maxEvents) throw new Errors.TooManyEvents(events.length, opts.maxEvents)
  const valid: Array<{ index: number; event: UsageEvent }> = []
  const rejected: EventResult[] = []
  for (let index = 0; index < events.length; index++) {
    const res = validateEvent(events[index], opts.limits)
    if (res.ok) valid.push({ index, event: res.event })
    else rejected.push({ index, event_id: res.eventId, status: 'rejected', errors: res.errors })
  }
  return { batch: encodeEvents(valid), rejected }
}

function parseJson(text: string): unknown {
  if (text.trim() === '') throw new Errors.BadBody('the body is empty; send {"events":[...]}, a JSON array, or NDJSON')
  try {
    return sjson.parse(text, undefined, PARSE_OPTIONS)
  } catch (err) {
    throw new Errors.BadBody(`not valid JSON: ${(err as Error).message.slice(0, 200)}`)
  }
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

function parseNdjson(text: string, maxEvents: number): unknown[] {
  const out: unknown[] = []
  let line = 0
  for (const raw of text.split('\n')) {
    line++
    const trimmed = raw.trim()
    if (trimmed === '') continue
    if (out.length >= maxEvents) throw new Errors.TooManyEvents(out.length + 1, maxEvents)
    try {
      out.push(sjson.parse(trimmed, undefined, PARSE_OPTIONS))
    } catch (err) {
      throw new Errors.BadBody(`NDJSON line ${line} is not valid JSON: ${(err as Error).message.slice(0, 200)}`)
    }
  }
  return out
}
