// LiteLLM's door (POST /v1/integrations/litellm): the StandardLoggingPayload
// objects its generic API logger (callback "generic_api") posts, mapped to
// native events. The README's "LiteLLM" section is the table of this mapping.
//
// - Body: what the logger sends for each of its log_format settings, all with
//   Content-Type application/json: a JSON array of payloads ("json_array",
//   the default), one payload ("single"), or one payload per line ("ndjson").
// - Identity: event_id "litellm:<id>" (mappedEventId), the payload's id.
// - Times are float epoch seconds; they are read through their shortest
//   round-trip digits (what Python's JSON wrote), to the microsecond.
// - response_cost is a float LiteLLM computed: it is taken at its shortest
//   round-trip digits and rounded half-to-even to 12 fractional digits
//   (floatCostText): 1e-12 of a currency unit, far below any billing unit.
//   A null or absent response_cost is an unknown cost, not 0.
// - status "failure" is status_code error_information.error_code when that
//   is an HTTP status, else 500; its error class, code and message (not the
//   traceback) are kept as the event's detail.

import { Errors } from '../errors.js'
import { floatCostText, numberToPlainDecimal } from '../money.js'
import type { FieldError } from './event.js'
import { mappedEventId, wellFormed } from './identity.js'
import { isObject, parseJson, parseNdjson, typeName, type MappedBody, type MappedRecord } from './mapped.js'
import { formatTimestampUs } from './timestamp.js'

/** The key of a payload without metadata.user_api_key_hash or _alias (the LiteLLM SDK without its proxy). */
export const DEFAULT_KEY = 'litellm'
/** Longest id taken (longer ones are refused, to bound the work). */
export const MAX_ID_CHARS = 1024
/** Longest error message kept in the detail of a failure. */
export const MAX_ERROR_MESSAGE_CHARS = 4096

const HINT = "send LiteLLM's StandardLoggingPayload: one object, a JSON array of them, or one per line"
const HTTP_STATUS_RE = /^[1-5]\d\d$/
const US_PER_S = 1_000_000

export function mapLiteLLM(text: string, maxEvents: number): MappedBody {
  const payloads = parseBody(text, maxEvents)
  if (payloads.length > maxEvents) throw new Errors.TooManyEvents(payloads.length, maxEvents)
  return { records: payloads.map((p, i) => mapPayload(p, i)), count: payloads.length, ignored: 0 }
}

/**
 * One JSON document (an array or one payload), else NDJSON: the logger sends
 * all three as application/json. A document is tried first (a pretty-printed
 * payload spans lines too); a second value on a later line makes it NDJSON.
 */
function parseBody(text: string, maxEvents: number): unknown[] {
  let body: unknown
  try {
    body = parseJson(text, HINT)
  } catch (err) {
    if (text.trim().includes('\n')) return parseNdjson(text, maxEvents)
    throw err
  }
  if (Array.isArray(body)) return body
  if (isObject(body)) return [body]
  throw new Errors.BadBody(`expected a payload object or an array of them, got ${typeName(body)}; ${HINT}`)
}

export function mapPayload(input: unknown, index: number): MappedRecord {
  const errors: FieldError[] = []
  const event: Record<string, unknown> = {}
  const origin: MappedRecord['origin'] = {}
  if (!isObject(input)) return { index, eventId: null, event, errors: [{ field: '', message: `a payload must be a JSON object, got ${typeName(input)}` }], origin }
  const p = input
  const metadata = isObject(p.metadata) ? p.metadata : {}
  const hidden = isObject(p.hidden_params) ? p.hidden_params : {}
  const usage = isObject(metadata.usage_object) ? metadata.usage_object : isObject(hidden.usage_object) ? hidden.usage_object : {}
  const usageAt = isObject(metadata.usage_object) ? '/metadata/usage_object' : '/hidden_params/usage_object'

  /** Sets native `field` from the payload's `path` (a JSON pointer, for errors) when the value is there. */
  const set = (field: string, value: unknown, path: string): boolean => {
    if (value === undefined || value === null) return false
    event[field] = value
    ;(origin as Record<string, string>)[field] = path
    return true
  }

  let eventId: string | null = null
  if (typeof p.id !== 'string' || p.id === '') errors.push({ field: '/id', message: p.id === undefined ? 'is required' : `must be a non-empty string, got ${typeName(p.id)}` })
  else if (p.id.length > MAX_ID_CHARS) errors.push({ field: '/id', message: `must be at most ${MAX_ID_CHARS} characters` })
  else if (!wellFormed(p.id)) errors.push({ field: '/id', message: 'must not contain unpaired surrogates' })
  else eventId = mappedEventId('litellm', [p.id])
  set('event_id', eventId, '/id')

  const start = epochUs(p.startTime)
  const end = epochUs(p.endTime)
  if (end === null) errors.push({ field: '/endTime', message: 'must be the end of the call in epoch seconds (a number)' })
  else {
    set('timestamp', formatTimestampUs(end), '/endTime')
    if (start !== null && start <= end) set('latency_ms', Math.floor((end - start) / 1000), '/startTime')
    const first = epochUs(p.completionStartTime)
    if (p.stream === true && start !== null && first !== null && start <= first && first <= end) set('ttft_ms', Math.floor((first - start) / 1000), '/completionStartTime')
  }

  const errorInfo = isObject(p.error_information) ? p.error_information : {}
  if (!set('provider', p.custom_llm_provider, '/custom_llm_provider') && !set('provider', errorInfo.llm_provider, '/error_information/llm_provider')) {
    errors.push({ field: '/custom_llm_provider', message: 'is required' })
  }
  if (!set('model', p.model, '/model')) errors.push({ field: '/model', message: 'is required' })
  if (!set('input_tokens', p.prompt_tokens, '/prompt_tokens')) errors.push({ field: '/prompt_tokens', message: 'is required' })
  if (!set('output_tokens', p.completion_tokens, '/completion_tokens')) errors.push({ field: '/completion_tokens', message: 'is required' })
  const promptDetails = isObject(usage.prompt_tokens_details) ? usage.prompt_tokens_details : {}
  const completionDetails = isObject(usage.completion_tokens_details) ? usage.completion_tokens_details : {}
  set('cache_read_tokens', promptDetails.cached_tokens, `${usageAt}/prompt_tokens_details/cached_tokens`) || set('cache_read_tokens', usage.cache_read_input_tokens, `${usageAt}/cache_read_input_tokens`)
  set('cache_write_tokens', usage.cache_creation_input_tokens, `${usageAt}/cache_creation_input_tokens`)
  set('reasoning_tokens', completionDetails.reasoning_tokens, `${usageAt}/completion_tokens_details/reasoning_tokens`)

  const cost = p.response_cost ?? hidden.response_cost
  const costAt = p.response_cost !== undefined && p.response_cost !== null ? '/response_cost' : '/hidden_params/response_cost'
  if (typeof cost === 'number') {
    const text = floatCostText(cost)
    if (text === null) errors.push({ field: costAt, message: 'must be a finite number >= 0' })
    else set('cost', text, costAt)
  } else {
    set('cost', cost, costAt) // a string is decimal text (the native rules check it); null or absent: unknown
  }

  if (p.status === 'success') set('status_code', 200, '/status')
  else if (p.status === 'failure') {
    const code = errorInfo.error_code
    set('status_code', typeof code === 'string' && HTTP_STATUS_RE.test(code) ? Number(code) : typeof code === 'number' ? code : 500, '/error_information/error_code')
    const message = typeof errorInfo.error_message === 'string' ? errorInfo.error_message : typeof p.error_str === 'string' ? p.error_str : null
    const detail: Record<string, unknown> = {}
    for (const k of ['error_class', 'error_code', 'llm_provider'] as const) if (typeof errorInfo[k] === 'string') detail[k] = errorInfo[k]
    if (message !== null) detail.error_message = message.slice(0, MAX_ERROR_MESSAGE_CHARS)
    set('detail', { error: detail }, '/error_information')
  } else errors.push({ field: '/status', message: `must be "success" or "failure", got ${JSON.stringify(p.status ?? null).slice(0, 40)}` })

  if (!set('key_id', metadata.user_api_key_hash, '/metadata/user_api_key_hash') && !set('key_id', metadata.user_api_key_alias, '/metadata/user_api_key_alias')) set('key_id', DEFAULT_KEY, '/metadata/user_api_key_hash')
  set('team_id', metadata.user_api_key_team_id, '/metadata/user_api_key_team_id')
  set('user_id', metadata.user_api_key_user_id, '/metadata/user_api_key_user_id')
  set('customer_id', p.end_user === '' ? null : p.end_user, '/end_user')
  set('endpoint', metadata.user_api_key_request_route, '/metadata/user_api_key_request_route')
  if (typeof p.stream === 'boolean') set('stream', p.stream, '/stream')

  const tags: Record<string, unknown> = {}
  const tagFrom: Record<string, string> = {}
  const tag = (name: string, value: unknown, path: string): void => {
    if (value === undefined || value === null || value === '') return
    tags[name] = value
    tagFrom[name] = path
  }
  tag('litellm.call_type', p.call_type, '/call_type')
  tag('litellm.model_group', p.model_group, '/model_group')
  tag('litellm.key_alias', metadata.user_api_key_alias, '/metadata/user_api_key_alias')
  tag('litellm.team_alias', metadata.user_api_key_team_alias, '/metadata/user_api_key_team_alias')
  if (Object.keys(tags).length > 0) {
    event.tags = tags
    origin.tags = (rest) => tagFrom[rest.slice(1)] ?? '/metadata'
  }
  return { index, eventId, event, errors, origin }
}

/** Float epoch seconds as integer microseconds, by their shortest round-trip digits (no float arithmetic); null if not one. */
function epochUs(value: unknown): number | null {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) return null
  const text = numberToPlainDecimal(value)
  const point = text.indexOf('.')
  const whole = Number(point === -1 ? text : text.slice(0, point))
  const frac = point === -1 ? 0 : Number(text.slice(point + 1).padEnd(6, '0').slice(0, 6))
  const us = whole * US_PER_S + frac
  return Number.isSafeInteger(us) ? us : null
}
