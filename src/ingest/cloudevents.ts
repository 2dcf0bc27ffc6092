// OpenMeter's door: CloudEvents 1.0 (POST /api/v1/events), mapped to native
// events. The README's "OpenMeter" section is the table of this mapping.
//
// - Identity: OpenMeter identifies an event by (source, id); its event_id is
//   mappedEventId('ce', [source, id]), e.g. "ce:my-app:5c10fade-…". Posting
//   the same CloudEvent again is a duplicate; another body under the same
//   (source, id) is a conflict (first write wins).
// - subject is the customer (customer_id), and the key when data has no key_id.
// - data carries the usage either in our own field names (input_tokens,
//   output_tokens, model, provider, cost, …) or in the shape of OpenMeter's
//   LLM meters: {"tokens": N, "type": "input"|"output", "model": …}, one
//   CloudEvent per token type.
// - data's other string fields are kept as tags (OpenMeter meters group by
//   such fields); any other value is an error naming it: nothing is dropped.
// - time is required: without it a replay would not be the same event.
//
// Every mapped value then goes through validateEvent (decode.ts), whose errors
// are renamed to the CloudEvent's own fields.

import { Errors } from '../errors.js'
import { EVENT_FIELDS, type EventFieldName, type FieldError } from './event.js'
import { mappedEventId, wellFormed } from './identity.js'
import { isObject, parseJson, pointer, typeName, type MappedBody, type MappedRecord } from './mapped.js'

/** Longest `source` or `id` taken (longer ones still map, by hash, but are refused here to bound the work). */
export const MAX_IDENTITY_CHARS = 1024
/** The tag that keeps the CloudEvent's `type`. */
export const TYPE_TAG = 'cloudevents.type'

const HINT = 'send a CloudEvent (application/cloudevents+json) or a JSON array of them (application/cloudevents-batch+json)'

/** Native fields data may carry under their own names (the envelope gives event_id, timestamp and customer_id). */
const DATA_FIELDS = new Set<string>(Object.keys(EVENT_FIELDS).filter((f) => f !== 'event_id' && f !== 'timestamp' && f !== 'customer_id'))
/** OpenMeter's token types and the native field each one counts in. */
const TOKEN_TYPES: Record<string, 'input_tokens' | 'output_tokens'> = { input: 'input_tokens', system: 'input_tokens', output: 'output_tokens' }
/** A token count sent as a string (OpenMeter meters parse numeric strings): digits only, safe-integer length. */
const DIGITS_RE = /^(0|[1-9]\d{0,15})$/

export function mapCloudEvents(text: string, maxEvents: number): MappedBody {
  const body = parseJson(text, HINT)
  if (!Array.isArray(body) && !isObject(body)) throw new Errors.BadBody(`expected a CloudEvent object or an array of them, got ${typeName(body)}; ${HINT}`)
  const events = Array.isArray(body) ? body : [body]
  if (events.length > maxEvents) throw new Errors.TooManyEvents(events.length, maxEvents)
  return { records: events.map((e, i) => mapCloudEvent(e, i)), count: events.length, ignored: 0 }
}

export function mapCloudEvent(input: unknown, index: number): MappedRecord {
  const errors: FieldError[] = []
  const event: Record<string, unknown> = {}
  // A native field missing from data is named where it belongs: "/data/model is required".
  const origin: MappedRecord['origin'] = Object.fromEntries([...DATA_FIELDS].map((f) => [f, `/data/${f}`]))
  if (!isObject(input)) return { index, eventId: null, event, errors: [{ field: '', message: `a CloudEvent must be a JSON object, got ${typeName(input)}` }], origin }

  const attr = (name: string, required: boolean): string | null => {
    const v = input[name]
    if (v === undefined || v === null) {
      if (required) errors.push({ field: `/${name}`, message: v === null ? 'must not be null' : 'is required' })
      return null
    }
    if (typeof v !== 'string' || v.length === 0) {
      errors.push({ field: `/${name}`, message: `must be a non-empty string, got ${typeof v === 'string' ? 'an empty string' : typeName(v)}` })
      return null
    }
    return v
  }
  const specversion = attr('specversion', true)
  if (specversion !== null && specversion !== '1.0') errors.push({ field: '/specversion', message: `must be "1.0" (CloudEvents 1.0), got ${JSON.stringify(specversion.slice(0, 16))}` })
  const id = identity(attr('id', true), '/id', errors)
  const source = identity(attr('source', true), '/source', errors)
  const type = attr('type', true)
  const subject = attr('subject', true)
  const contentType = input.datacontenttype
  if (contentType !== undefined && contentType !== null && contentType !== 'application/json') {
    errors.push({ field: '/datacontenttype', message: 'must be "application/json" (the only data content type over HTTP)' })
  }
  if (input.time === undefined || input.time === null) errors.push({ field: '/time', message: 'is required: the usage is billed at this time, and a replay must carry the same one' })

  const eventId = id !== null && source !== null ? mappedEventId('ce', [source, id]) : null
  event.event_id = eventId
  origin.event_id = '/id'
  event.timestamp = input.time
  origin.timestamp = '/time'
  event.customer_id = subject
  origin.customer_id = '/subject'

  const data = input.data
  if (!isObject(data)) {
    errors.push({ field: '/data', message: data === undefined || data === null ? 'is required: an object with the usage (see the README\'s OpenMeter mapping)' : `must be an object, got ${typeName(data)}` })
    return { index, eventId, event, errors, origin }
  }

  const extraTags: Record<string, unknown> = {}
  for (const key of Object.keys(data)) {
    const value = data[key]
    if (DATA_FIELDS.has(key)) {
      event[key] = value
      origin[key as EventFieldName] = `/data${pointer(key)}`
    } else if (key === 'tokens' || key === 'type') {
      // OpenMeter's LLM shape: below.
    } else if (key === 'customer_id') {
      errors.push({ field: '/data/customer_id', message: "the CloudEvent's subject is the customer: remove this field (or send it as the subject)" })
    } else if (typeof value === 'string') {
      extraTags[key] = value
    } else {
      errors.push({ field: `/data${pointer(key)}`, message: `is not a usage field and not a string (${typeName(value)}); only string fields besides the usage fields are kept, as tags` })
    }
  }

  if (Object.hasOwn(data, 'tokens')) {
    if (Object.hasOwn(data, 'input_tokens') || Object.hasOwn(data, 'output_tokens')) {
      errors.push({ field: '/data/tokens', message: 'send either tokens with type (OpenMeter\'s LLM shape) or input_tokens and output_tokens, not both' })
    } else {
      const target = typeof data.type === 'string' ? TOKEN_TYPES[data.type] : undefined
      if (target === undefined) {
        errors.push({ field: '/data/type', message: `must be "input", "system" or "output" with tokens, got ${data.type === undefined ? 'nothing' : JSON.stringify(data.type).slice(0, 40)}` })
      } else {
        const tokens = typeof data.tokens === 'string' && DIGITS_RE.test(data.tokens) ? Number(data.tokens) : data.tokens
        event.input_tokens = target === 'input_tokens' ? tokens : 0
        event.output_tokens = target === 'output_tokens' ? tokens : 0
        origin[target] = '/data/tokens'
      }
    }
  } else if (Object.hasOwn(data, 'type')) {
    // Without tokens, data.type is one more grouping field.
    if (typeof data.type === 'string') extraTags.type = data.type
    else errors.push({ field: '/data/type', message: `must be a string, got ${typeName(data.type)}` })
  }
  if (event.key_id === undefined) {
    event.key_id = subject
    origin.key_id = '/subject'
  }
  event.status_code ??= 200

  // Tags: data.tags, data's other string fields, and the CloudEvent type.
  const given = event.tags
  if (given === undefined || isObject(given)) {
    const tags: Record<string, unknown> = { ...(given ?? {}) }
    for (const [key, value] of Object.entries(extraTags)) {
      if (Object.hasOwn(tags, key)) errors.push({ field: `/data${pointer(key)}`, message: 'is also a key of data.tags; keep one' })
      tags[key] = value
    }
    if (type !== null) tags[TYPE_TAG] = type
    event.tags = tags
    origin.tags = (rest) => {
      const key = rest.slice(1).replace(/~1/g, '/').replace(/~0/g, '~')
      if (key === TYPE_TAG) return '/type'
      if (rest === '') return given === undefined ? '/data' : '/data/tags'
      return Object.hasOwn(extraTags, key) ? `/data${rest}` : `/data/tags${rest}`
    }
  }
  return { index, eventId, event, errors, origin }
}

function identity(value: string | null, field: string, errors: FieldError[]): string | null {
  if (value === null) return null
  if (value.length > MAX_IDENTITY_CHARS) {
    errors.push({ field, message: `must be at most ${MAX_IDENTITY_CHARS} characters, got ${value.length}` })
    return null
  }
  if (!wellFormed(value)) {
    errors.push({ field, message: 'must not contain unpaired surrogates' })
    return null
  }
  return value
}
