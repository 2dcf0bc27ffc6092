// What every door shares before validation: reading a JSON or NDJSON body
// (prototype poisoning refused), and the shape of a record mapped from
// another door's format to the native event (decode.ts validates it).

import sjson from 'secure-json-parse'
import { Errors } from '../errors.js'
import type { EventFieldName, FieldError } from './event.js'

/**
 * One record of another door's body, mapped to the native shape. `errors`
 * are the mapping's own (a missing or mistyped source field); `origin` says
 * where in the record each native field came from, so that validateEvent's
 * errors name what the client sent ("/data/tokens", not "/input_tokens"): a
 * pointer that the rest of the native pointer is appended to, or a function
 * of that rest (tags gathered from several places).
 */
export interface MappedRecord {
  index: number
  eventId: string | null
  event: Record<string, unknown>
  errors: FieldError[]
  origin: Partial<Record<EventFieldName, string | ((rest: string) => string)>>
}

export interface MappedBody {
  records: MappedRecord[]
  /** Records in the body (mapped or ignored). */
  count: number
  ignored: number
}

const PARSE_OPTIONS = { protoAction: 'error', constructorAction: 'error' } as const

/** The body as JSON; `hint` says what was expected when it is empty. */
export function parseJson(text: string, hint: string): unknown {
  if (text.trim() === '') throw new Errors.BadBody(`the body is empty; ${hint}`)
  try {
    return sjson.parse(text, undefined, PARSE_OPTIONS)
  } catch (err) {
    throw new Errors.BadBody(`not valid JSON: ${(err as Error).message.slice(0, 200)}`)
  }
}

/** One JSON value per non-blank line; at most `maxEvents` of them (413 past it). */
export function parseNdjson(text: string, maxEvents: number): unknown[] {
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

/** A JSON pointer segment for `key` (RFC 6901 escaping), bounded. */
export function pointer(key: string): string {
  return `/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`.slice(0, 200)
}

export function typeName(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'array'
  return typeof v
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}
