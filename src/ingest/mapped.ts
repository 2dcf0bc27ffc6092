// What every door shares before validation: reading a JSON or NDJSON body
// (json.ts: duplicate keys, excess depth and prototype poisoning refused), and the shape of a record mapped from
// another door's format to the native event (decode.ts validates it).

import { Errors } from '../errors.js'
import type { EventFieldName, FieldError } from './event.js'
import { JsonFault, readJson, readNdjson } from './json.js'

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

/** Deepest nesting a body may have: an event (3 levels in {"events":[…]}) with a detail of MAX_DETAIL_DEPTH levels fits. */
export const MAX_JSON_DEPTH = 64

/** A JSON fault as the client is told it: where (a pointer into the document), then what. */
function faultMessage(err: JsonFault, prefix: string): string {
  const where = err.pointer === '' ? '' : ` at ${err.pointer}`
  return `${prefix}${err.message}${where}`.slice(0, 400)
}

/**
 * The body as JSON; `hint` says what was expected when it is empty.
 * Duplicate keys, excess depth and prototype keys are refused (json.ts);
 * with `exactNumbers`, numbers a double would change stay ExactNumber.
 */
export function parseJson(text: string, hint: string, exactNumbers = false): unknown {
  if (text.trim() === '') throw new Errors.BadBody(`the body is empty; ${hint}`)
  try {
    return readJson(text, { maxDepth: MAX_JSON_DEPTH, exactNumbers })
  } catch (err) {
    if (err instanceof JsonFault) throw new Errors.BadBody(faultMessage(err, 'not valid JSON: '))
    throw err
  }
}

/** One JSON value per non-blank line; at most `maxEvents` of them (413 past it). */
export function parseNdjson(text: string, maxEvents: number, exactNumbers = false): unknown[] {
  const out: unknown[] = []
  try {
    readNdjson(text, { maxDepth: MAX_JSON_DEPTH, exactNumbers }, (value) => {
      if (out.length >= maxEvents) throw new Errors.TooManyEvents(out.length + 1, maxEvents)
      out.push(value)
    })
  } catch (err) {
    if (err instanceof JsonFault) throw new Errors.BadBody(faultMessage(err, `NDJSON line ${(err as JsonFault & { line?: number }).line ?? '?'}: `))
    throw err
  }
  return out
}

/**
 * A body that is not valid UTF-8, refused with where its first bad byte is:
 * the JSON pointer of the string holding it (`/events/0/key_id`), found by
 * parsing the text decoded with U+FFFD up to that place.
 */
export function utf8Refusal(bad: { text: string; badByte: number; badChar: number }, ndjson: boolean): Error {
  const opts = { maxDepth: MAX_JSON_DEPTH, exactNumbers: false }
  try {
    if (ndjson) readNdjson(bad.text, opts, () => {}, bad.badChar, bad.badByte)
    else readJson(bad.text, opts, bad.badChar, bad.badByte)
  } catch (err) {
    if (err instanceof JsonFault && err.at === bad.badChar) {
      const line = (err as JsonFault & { line?: number }).line
      return new Errors.BadBody(faultMessage(err, line === undefined ? '' : `NDJSON line ${line}: `))
    }
  }
  return new Errors.BadBody(`invalid UTF-8 at byte offset ${bad.badByte}`)
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
