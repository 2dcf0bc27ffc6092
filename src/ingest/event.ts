// One usage event: its field rules, its validation and its normalized form.
//
// The field table below is the single source of truth: the validator walks it,
// and the OpenAPI schema of an event (routes/schemas.ts) is generated from it,
// so the documented rules and the enforced rules cannot drift apart.
//
// Rules (DESIGN.md): no type coercion ("12" is not an integer), unknown fields
// are rejected, integers must be safe integers, numbers finite, every error
// names its field as a JSON pointer relative to the event ("/input_tokens").
// `null` on an optional field means "absent"; on a required field it is an error.

import { createHash } from 'node:crypto'
import { parseCost } from '../money.js'
import { parseTimestamp } from './timestamp.js'

export interface FieldError {
  field: string
  message: string
}

/** The normalized, validated event: what the store writes and fingerprints. */
export interface UsageEvent {
  event_id: string
  /** Microseconds since the epoch, UTC. */
  ts_us: number
  key_id: string
  provider: string
  model: string
  status_code: number
  input_tokens: number
  output_tokens: number
  cache_read_tokens: number
  cache_write_tokens: number
  reasoning_tokens: number
  /** Scaled by 10^12; null when the gateway did not know the cost. */
  cost: bigint | null
  currency: string
  team_id: string | null
  user_id: string | null
  customer_id: string | null
  endpoint: string | null
  latency_ms: number | null
  ttft_ms: number | null
  stream: boolean | null
  /** Canonical JSON (sorted keys) or null. */
  tags: string | null
  /** Canonical JSON (sorted keys) or null. */
  detail: string | null
  /** Hash of every field above: same id + same fingerprint = duplicate, else conflict. */
  fingerprint: string
}

export interface EventLimits {
  nowMs: number
  eventRetentionMs: number
  maxFutureSkewMs: number
}

type FieldSpec =
  | { kind: 'id'; required: boolean; min: number; max: number; description: string }
  | { kind: 'string'; required: boolean; min: number; max: number; description: string }
  | { kind: 'int'; required: boolean; min: number; max: number; description: string }
  | { kind: 'timestamp'; required: true; description: string }
  | { kind: 'cost'; required: false; description: string }
  | { kind: 'currency'; required: false; description: string }
  | { kind: 'boolean'; required: false; description: string }
  | { kind: 'tags'; required: false; description: string }
  | { kind: 'detail'; required: false; description: string }

export const MAX_TAGS = 32
export const MAX_TAG_KEY_CHARS = 64
export const MAX_TAG_VALUE_CHARS = 256
export const MAX_DETAIL_BYTES = 64 * 1024
export const MAX_DETAIL_DEPTH = 32
const MAX_SAFE = Number.MAX_SAFE_INTEGER
const DAY_MS = 86_400_000

export const EVENT_FIELDS = {
  event_id: { kind: 'id', required: true, min: 1, max: 128, description: 'Idempotency key: 1-128 printable ASCII characters, no spaces.' },
  timestamp: { kind: 'timestamp', required: true, description: 'When the request happened: RFC 3339 with an offset, or epoch milliseconds.' },
  key_id: { kind: 'string', required: true, min: 1, max: 128, description: "The gateway key's id (never its secret)." },
  provider: { kind: 'string', required: true, min: 1, max: 64, description: 'LLM provider, e.g. openai.' },
  model: { kind: 'string', required: true, min: 1, max: 128, description: 'Model name.' },
  status_code: { kind: 'int', required: true, min: 100, max: 599, description: 'HTTP status of the LLM request.' },
  input_tokens: { kind: 'int', required: true, min: 0, max: MAX_SAFE, description: 'All input tokens, cached ones included.' },
  output_tokens: { kind: 'int', required: true, min: 0, max: MAX_SAFE, description: 'All output tokens, reasoning tokens included.' },
  cache_read_tokens: { kind: 'int', required: false, min: 0, max: MAX_SAFE, description: 'Input tokens read from cache (default 0).' },
  cache_write_tokens: { kind: 'int', required: false, min: 0, max: MAX_SAFE, description: 'Input tokens written to cache (default 0).' },
  reasoning_tokens: { kind: 'int', required: false, min: 0, max: MAX_SAFE, description: 'Output tokens spent on reasoning (default 0).' },
  cost: { kind: 'cost', required: false, description: 'Decimal >= 0 with at most 12 fractional digits; a string keeps it exact. Absent = unknown.' },
  currency: { kind: 'currency', required: false, description: 'ISO 4217 code (default USD).' },
  team_id: { kind: 'string', required: false, min: 1, max: 128, description: 'Team the key belongs to.' },
  user_id: { kind: 'string', required: false, min: 1, max: 128, description: 'End user.' },
  customer_id: { kind: 'string', required: false, min: 1, max: 128, description: 'Customer billed.' },
  endpoint: { kind: 'string', required: false, min: 0, max: 256, description: 'API endpoint called, e.g. /v1/chat/completions.' },
  latency_ms: { kind: 'int', required: false, min: 0, max: DAY_MS, description: 'Total latency in milliseconds.' },
  ttft_ms: { kind: 'int', required: false, min: 0, max: DAY_MS, description: 'Time to first token in milliseconds.' },
  stream: { kind: 'boolean', required: false, description: 'Whether the response was streamed.' },
  tags: { kind: 'tags', required: false, description: `Up to ${MAX_TAGS} string to string entries (keys up to ${MAX_TAG_KEY_CHARS}, values up to ${MAX_TAG_VALUE_CHARS} characters).` },
  detail: { kind: 'detail', required: false, description: `Heavy payload (bodies, headers, error text): any JSON object up to ${MAX_DETAIL_BYTES} bytes, nested at most ${MAX_DETAIL_DEPTH} deep; kept for the shorter detail window.` },
} as const satisfies Record<string, FieldSpec>

export type EventFieldName = keyof typeof EVENT_FIELDS
const FIELD_NAMES = Object.keys(EVENT_FIELDS) as EventFieldName[]
const KNOWN = new Set<string>(FIELD_NAMES)

// Printable ASCII without space: the event_id alphabet.
const ID_RE = /^[\x21-\x7e]+$/
// C0 controls, DEL and lone surrogates have no place in a dimension value.
const BAD_TEXT_RE = /[\u0000-\u001f\u007f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/
const CURRENCY_RE = /^[A-Z]{3}$/

export type ValidationResult = { ok: true; event: UsageEvent } | { ok: false; errors: FieldError[]; eventId: string | null }

/** Validates one posted event against the field table and normalizes it. */
export function validateEvent(input: unknown, limits: EventLimits): ValidationResult {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    return { ok: false, errors: [{ field: '', message: 'event must be a JSON object' }], eventId: null }
  }
  const obj = input as Record<string, unknown>
  const errors: FieldError[] = []
  for (const key of Object.keys(obj)) {
    if (!KNOWN.has(key)) errors.push({ field: pointer(key), message: 'unknown field' })
    if (errors.length >= 16) break
  }
  const out: Record<string, unknown> = {}
  for (const name of FIELD_NAMES) {
    const spec: FieldSpec = EVENT_FIELDS[name]
    const value = Object.prototype.hasOwnProperty.call(obj, name) ? obj[name] : undefined
    const field = `/${name}`
    if (value === undefined || value === null) {
      if (spec.required) errors.push({ field, message: value === null ? 'must not be null' : 'is required' })
      out[name] = null
      continue
    }
    const res = checkField(spec, value, limits)
    if (isFailure(res)) {
      errors.push({ field: res.at ? `${field}${res.at}` : field, message: res.error })
    } else {
      out[name] = res
    }
  }
  if (errors.length === 0) {
    const input = out.input_tokens as number
    const cacheSum = ((out.cache_read_tokens as number | null) ?? 0) + ((out.cache_write_tokens as number | null) ?? 0)
    if (cacheSum > input) {
      errors.push({ field: '/cache_read_tokens', message: `cache_read_tokens + cache_write_tokens (${cacheSum}) must not exceed input_tokens (${input})` })
    }
    const reasoning = (out.reasoning_tokens as number | null) ?? 0
    if (reasoning > (out.output_tokens as number)) {
      errors.push({ field: '/reasoning_tokens', message: `must not exceed output_tokens (${out.output_tokens as number})` })
    }
  }
  if (errors.length > 0) {
    const id = typeof obj.event_id === 'string' && obj.event_id.length <= 128 ? obj.event_id : null
    return { ok: false, errors, eventId: id }
  }
  const event: Omit<UsageEvent, 'fingerprint'> = {
    event_id: out.event_id as string,
    ts_us: out.timestamp as number,
    key_id: out.key_id as string,
    provider: out.provider as string,
    model: out.model as string,
    status_code: out.status_code as number,
    input_tokens: out.input_tokens as number,
    output_tokens: out.output_tokens as number,
    cache_read_tokens: (out.cache_read_tokens as number | null) ?? 0,
    cache_write_tokens: (out.cache_write_tokens as number | null) ?? 0,
    reasoning_tokens: (out.reasoning_tokens as number | null) ?? 0,
    cost: out.cost as bigint | null,
    currency: (out.currency as string | null) ?? 'USD',
    team_id: out.team_id as string | null,
    user_id: out.user_id as string | null,
    customer_id: out.customer_id as string | null,
    endpoint: out.endpoint as string | null,
    latency_ms: out.latency_ms as number | null,
    ttft_ms: out.ttft_ms as number | null,
    stream: out.stream as boolean | null,
    tags: out.tags as string | null,
    detail: out.detail as string | null,
  }
  return { ok: true, event: { ...event, fingerprint: fingerprint(event) } }
}

interface Failure {
  error: string
  at?: string
}
type Checked = unknown

function isFailure(v: unknown): v is Failure {
  return typeof v === 'object' && v !== null && typeof (v as Failure).error === 'string'
}

function checkField(spec: FieldSpec, value: unknown, limits: EventLimits): Checked {
  switch (spec.kind) {
    case 'id':
      if (typeof value !== 'string') return { error: `must be a string, got ${typeName(value)}` }
      if (value.length < spec.min || value.length > spec.max) return { error: `must be ${spec.min}-${spec.max} characters, got ${value.length}` }
      if (!ID_RE.test(value)) return { error: 'must be printable ASCII without spaces' }
      return value
    case 'string':
      if (typeof value !== 'string') return { error: `must be a string, got ${typeName(value)}` }
      if (value.length < spec.min || value.length > spec.max) return { error: `must be ${spec.min}-${spec.max} characters, got ${value.length}` }
      if (BAD_TEXT_RE.test(value)) return { error: 'must not contain control characters or unpaired surrogates' }
      return value
    case 'int':
      if (typeof value !== 'number') return { error: `must be an integer, got ${typeName(value)}` }
      if (!Number.isInteger(value)) return { error: 'must be an integer' }
      if (!Number.isSafeInteger(value)) return { error: 'must be a safe integer (at most 2^53-1)' }
      if (value < spec.min || value > spec.max) return { error: `must be between ${spec.min} and ${spec.max}, got ${value}` }
      return value === 0 ? 0 : value // -0 is 0
    case 'boolean':
      if (typeof value !== 'boolean') return { error: `must be a boolean, got ${typeName(value)}` }
      return value
    case 'currency':
      if (typeof value !== 'string' || !CURRENCY_RE.test(value)) return { error: 'must be an ISO 4217 code of three capital letters, e.g. USD' }
      return value
    case 'cost': {
      const res = parseCost(value)
      return res.ok ? res.scaled : { error: res.message }
    }
    case 'timestamp': {
      const res = parseTimestamp(value)
      if (!res.ok) return { error: res.message }
      const ms = Math.floor(res.us / 1000)
      const oldest = limits.nowMs - limits.eventRetentionMs
      const newest = limits.nowMs + limits.maxFutureSkewMs
      if (ms < oldest) return { error: `is older than the event retention window (${new Date(oldest).toISOString()})` }
      if (ms > newest) return { error: `is more than ${limits.maxFutureSkewMs} ms in the future (latest allowed ${new Date(newest).toISOString()})` }
      return res.us
    }
    case 'tags':
      return checkTags(value)
    case 'detail':
      return checkDetail(value)
  }
}

function checkTags(value: unknown): Checked {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { error: `must be an object of string values, got ${typeName(value)}` }
  const keys = Object.keys(value)
  if (keys.length > MAX_TAGS) return { error: `must have at most ${MAX_TAGS} entries, got ${keys.length}` }
  for (const key of keys) {
    const v = (value as Record<string, unknown>)[key]
    if (key.length < 1 || key.length > MAX_TAG_KEY_CHARS) return { error: `keys must be 1-${MAX_TAG_KEY_CHARS} characters`, at: pointer(key) }
    if (BAD_TEXT_RE.test(key)) return { error: 'keys must not contain control characters or unpaired surrogates', at: pointer(key) }
    if (typeof v !== 'string') return { error: `must be a string, got ${typeName(v)}`, at: pointer(key) }
    if (v.length > MAX_TAG_VALUE_CHARS) return { error: `must be at most ${MAX_TAG_VALUE_CHARS} characters, got ${v.length}`, at: pointer(key) }
    if (BAD_TEXT_RE.test(v)) return { error: 'must not contain control characters or unpaired surrogates', at: pointer(key) }
  }
  return keys.length === 0 ? null : canonicalJson(value)
}

function checkDetail(value: unknown): Checked {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { error: `must be an object, got ${typeName(value)}` }
  // Iterative depth walk first: canonicalJson recurses, so it only sees bounded depth.
  const stack: Array<[unknown, number]> = [[value, 1]]
  let nodes = 0
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!
    if (++nodes > MAX_DETAIL_BYTES) return { error: `must be at most ${MAX_DETAIL_BYTES} bytes as JSON` }
    if (typeof node === 'object' && node !== null) {
      if (depth > MAX_DETAIL_DEPTH) return { error: `must be nested at most ${MAX_DETAIL_DEPTH} levels deep` }
      for (const child of Object.values(node)) stack.push([child, depth + 1])
    } else if (typeof node === 'string' && BAD_SURROGATE_RE.test(node)) {
      return { error: 'must not contain unpaired surrogates' }
    }
  }
  const json = canonicalJson(value)
  const bytes = Buffer.byteLength(json, 'utf8')
  if (bytes > MAX_DETAIL_BYTES) return { error: `must be at most ${MAX_DETAIL_BYTES} bytes as JSON, got ${bytes}` }
  return json
}

const BAD_SURROGATE_RE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

/** JSON with object keys sorted at every level: equal content, equal text. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (typeof value === 'object' && value !== null) {
    const keys = Object.keys(value).sort()
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(',')}}`
  }
  return JSON.stringify(value) ?? 'null'
}

function fingerprint(e: Omit<UsageEvent, 'fingerprint'>): string {
  const parts = [
    e.event_id, e.ts_us, e.key_id, e.provider, e.model, e.status_code, e.input_tokens, e.output_tokens,
    e.cache_read_tokens, e.cache_write_tokens, e.reasoning_tokens, e.cost === null ? null : e.cost.toString(), e.currency,
    e.team_id, e.user_id, e.customer_id, e.endpoint, e.latency_ms, e.ttft_ms, e.stream, e.tags, e.detail,
  ]
  return createHash('sha256').update(JSON.stringify(parts)).digest('base64url').slice(0, 22)
}

function pointer(key: string): string {
  return `/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`.slice(0, 200)
}

function typeName(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'array'
  return typeof v
}
