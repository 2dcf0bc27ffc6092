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

import { hash } from 'node:crypto'
import { parseCost, parseCostNumberText, plainDecimal } from '../money.js'
import { ExactNumber } from './json.js'
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
  /** The cost the totals count, scaled by 10^12: reported by the gateway or priced (cost_origin); null when unknown. */
  cost: bigint | null
  /** The gateway's own figure, scaled by 10^12 (null when it sent none): kept even when the price table overrides it. */
  reported_cost: bigint | null
  /** Where `cost` comes from: the gateway ('reported'), the price table ('priced'), or nowhere (null). */
  cost_origin: 'reported' | 'priced' | null
  /** The version of the price table that priced it (16 hex digits; its entry is the one the lookup rule picks for the event's provider, model and timestamp), null unless priced. */
  price_ref: string | null
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
  /** Hash of every field the client sent (the reported cost, never a priced one): same id + same fingerprint = duplicate, else conflict. */
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
  cost: { kind: 'cost', required: false, description: 'Decimal >= 0 with at most 12 fractional digits, as a string or a JSON number (taken from its text, digit for digit, never through a double). Absent = unknown.' },
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
// Quick screen for C0 controls, DEL and surrogates; only a hit pays for the exact check.
const SUSPECT_TEXT_RE = /[\u0000-\u001f\u007f\ud800-\udfff]/
// A lone surrogate cannot be stored as UTF-8; anywhere in an event it is refused.
const BAD_SURROGATE_RE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/
// C0 controls, DEL and lone surrogates have no place in a dimension value.
const BAD_TEXT_RE = new RegExp(`[\\u0000-\\u001f\\u007f]|${BAD_SURROGATE_RE.source}`)
const CURRENCY_RE = /^[A-Z]{3}$/

export type ValidationResult = { ok: true; event: UsageEvent } | { ok: false; errors: FieldError[]; eventId: string | null }

/** A failed check: the message, and where below the field it points (for tags). */
class Failure {
  constructor(
    readonly error: string,
    readonly at = '',
  ) {}
}

type Check = (value: unknown, limits: EventLimits) => unknown

/** The field table compiled once into an array of checks: the hot path walks this. */
const PLAN: ReadonlyArray<{ name: EventFieldName; field: string; required: boolean; check: Check }> = FIELD_NAMES.map((name) => ({
  name,
  field: `/${name}`,
  required: EVENT_FIELDS[name].required,
  check: compileCheck(EVENT_FIELDS[name]),
}))
const I = Object.fromEntries(FIELD_NAMES.map((n, i) => [n, i])) as Record<EventFieldName, number>

/** Unknown fields named one by one in a rejection; past this many one more error counts the rest. */
const MAX_UNKNOWN_LISTED = 16

/** Validates one posted event against the field table and normalizes it. */
export function validateEvent(input: unknown, limits: EventLimits): ValidationResult {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    return { ok: false, errors: [{ field: '', message: 'event must be a JSON object' }], eventId: null }
  }
  const obj = input as Record<string, unknown>
  let errors: FieldError[] | null = null
  let unlisted: string[] | null = null
  let unlistedCount = 0
  for (const key of Object.keys(obj)) {
    if (!KNOWN.has(key)) {
      errors ??= []
      if (errors.length < MAX_UNKNOWN_LISTED) errors.push({ field: pointer(key), message: 'unknown field' })
      else if (++unlistedCount <= 3) (unlisted ??= []).push(key.slice(0, 64))
    }
  }
  if (unlistedCount > 0) {
    const examples = `${unlisted!.map((k) => JSON.stringify(k).slice(1, -1)).join(', ')}${unlistedCount > 3 ? ', \u2026' : ''}`
    errors!.push({ field: '', message: `${unlistedCount} more unknown field${unlistedCount === 1 ? '' : 's'} (${examples}) not listed: only the first ${MAX_UNKNOWN_LISTED} are` })
  }
  const vals: unknown[] = new Array(PLAN.length)
  for (let i = 0; i < PLAN.length; i++) {
    const f = PLAN[i]!
    let value = Object.prototype.hasOwnProperty.call(obj, f.name) ? obj[f.name] : undefined
    if (value instanceof ExactNumber && f.name !== 'cost') value = exactAsNumber(value)
    if (value === undefined || value === null) {
      if (f.required) (errors ??= []).push({ field: f.field, message: value === null ? 'must not be null' : 'is required' })
      vals[i] = null
      continue
    }
    const res = f.check(value, limits)
    if (res instanceof Failure) (errors ??= []).push({ field: f.field + res.at, message: res.error })
    else vals[i] = res
  }
  if (errors === null) {
    const inputTokens = vals[I.input_tokens] as number
    const outputTokens = vals[I.output_tokens] as number
    const cacheSum = ((vals[I.cache_read_tokens] as number | null) ?? 0) + ((vals[I.cache_write_tokens] as number | null) ?? 0)
    if (cacheSum > inputTokens) {
      errors = [{ field: '/cache_read_tokens', message: `cache_read_tokens + cache_write_tokens (${cacheSum}) must not exceed input_tokens (${inputTokens})` }]
    }
    if (((vals[I.reasoning_tokens] as number | null) ?? 0) > outputTokens) {
      ;(errors ??= []).push({ field: '/reasoning_tokens', message: `must not exceed output_tokens (${outputTokens})` })
    }
  }
  if (errors !== null) {
    const id = typeof obj.event_id === 'string' && obj.event_id.length <= 128 ? obj.event_id : null
    return { ok: false, errors, eventId: id }
  }
  const event: UsageEvent = {
    event_id: vals[I.event_id] as string,
    ts_us: vals[I.timestamp] as number,
    key_id: vals[I.key_id] as string,
    provider: vals[I.provider] as string,
    model: vals[I.model] as string,
    status_code: vals[I.status_code] as number,
    input_tokens: vals[I.input_tokens] as number,
    output_tokens: vals[I.output_tokens] as number,
    cache_read_tokens: (vals[I.cache_read_tokens] as number | null) ?? 0,
    cache_write_tokens: (vals[I.cache_write_tokens] as number | null) ?? 0,
    reasoning_tokens: (vals[I.reasoning_tokens] as number | null) ?? 0,
    cost: vals[I.cost] as bigint | null,
    reported_cost: vals[I.cost] as bigint | null,
    cost_origin: vals[I.cost] === null ? null : 'reported',
    price_ref: null,
    currency: (vals[I.currency] as string | null) ?? 'USD',
    team_id: vals[I.team_id] as string | null,
    user_id: vals[I.user_id] as string | null,
    customer_id: vals[I.customer_id] as string | null,
    endpoint: vals[I.endpoint] as string | null,
    latency_ms: vals[I.latency_ms] as number | null,
    ttft_ms: vals[I.ttft_ms] as number | null,
    stream: vals[I.stream] as boolean | null,
    tags: vals[I.tags] as string | null,
    detail: vals[I.detail] as string | null,
    fingerprint: '',
  }
  event.fingerprint = fingerprint(event)
  return { ok: true, event }
}

function compileCheck(spec: FieldSpec): Check {
  switch (spec.kind) {
    case 'id': {
      const { min, max } = spec
      return (value) => {
        if (typeof value !== 'string') return new Failure(`must be a string, got ${typeName(value)}`)
        if (value.length < min || value.length > max) return new Failure(`must be ${min}-${max} characters, got ${value.length}`)
        if (!ID_RE.test(value)) return new Failure('must be printable ASCII without spaces')
        return value
      }
    }
    case 'string': {
      const { min, max } = spec
      return (value) => {
        if (typeof value !== 'string') return new Failure(`must be a string, got ${typeName(value)}`)
        if (value.length < min || value.length > max) return new Failure(`must be ${min}-${max} characters, got ${value.length}`)
        if (badText(value)) return new Failure('must not contain control characters or unpaired surrogates')
        return value
      }
    }
    case 'int': {
      const { min, max } = spec
      return (value) => {
        if (typeof value !== 'number') return new Failure(`must be an integer, got ${typeName(value)}`)
        if (!Number.isInteger(value)) return new Failure('must be an integer')
        if (!Number.isSafeInteger(value)) return new Failure('must be a safe integer (at most 2^53-1)')
        if (value < min || value > max) return new Failure(`must be between ${min} and ${max}, got ${value}`)
        return value === 0 ? 0 : value // -0 is 0
      }
    }
    case 'boolean':
      return (value) => (typeof value === 'boolean' ? value : new Failure(`must be a boolean, got ${typeName(value)}`))
    case 'currency':
      return (value) => (typeof value === 'string' && CURRENCY_RE.test(value) ? value : new Failure('must be an ISO 4217 code of three capital letters, e.g. USD'))
    case 'cost':
      return (value) => {
        const res = value instanceof ExactNumber ? parseCostNumberText(value.text) : parseCost(value)
        return res.ok ? res.scaled : new Failure(res.message)
      }
    case 'timestamp':
      return checkTimestamp
    case 'tags':
      return checkTags
    case 'detail':
      return checkDetail
  }
}

function checkTimestamp(value: unknown, limits: EventLimits): unknown {
  const res = parseTimestamp(value)
  if (!res.ok) return new Failure(res.message)
  const ms = Math.floor(res.us / 1000)
  const oldest = limits.nowMs - limits.eventRetentionMs
  const newest = limits.nowMs + limits.maxFutureSkewMs
  if (ms < oldest) return new Failure(`is older than the event retention window (${new Date(oldest).toISOString()})`)
  if (ms > newest) return new Failure(`is more than ${limits.maxFutureSkewMs} ms in the future (latest allowed ${new Date(newest).toISOString()})`)
  return res.us
}

/**
 * A long number (ExactNumber) where a plain one is expected (integers, epoch
 * milliseconds): its exact value when that is an integer; NaN (not an integer,
 * whatever a double would round it to) when it has a fraction, so
 * 1.0000000000000001 is refused as an integer, not taken as 1.
 */
function exactAsNumber(value: ExactNumber): number {
  const plain = plainDecimal(value.text)
  return /^-?\d+(?:\.0+)?$/.test(plain) ? Number(plain) : NaN
}

function badText(s: string): boolean {
  return SUSPECT_TEXT_RE.test(s) && BAD_TEXT_RE.test(s)
}

function checkTags(value: unknown): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return new Failure(`must be an object of string values, got ${typeName(value)}`)
  const keys = Object.keys(value)
  if (keys.length > MAX_TAGS) return new Failure(`must have at most ${MAX_TAGS} entries, got ${keys.length}`)
  for (const key of keys) {
    const v = (value as Record<string, unknown>)[key]
    if (key.length < 1 || key.length > MAX_TAG_KEY_CHARS) return new Failure(`keys must be 1-${MAX_TAG_KEY_CHARS} characters`, pointer(key))
    if (badText(key)) return new Failure('keys must not contain control characters or unpaired surrogates', pointer(key))
    if (typeof v !== 'string') return new Failure(`must be a string, got ${typeName(v)}`, pointer(key))
    if (v.length > MAX_TAG_VALUE_CHARS) return new Failure(`must be at most ${MAX_TAG_VALUE_CHARS} characters, got ${v.length}`, pointer(key))
    if (badText(v)) return new Failure('must not contain control characters or unpaired surrogates', pointer(key))
  }
  return keys.length === 0 ? null : canonicalJson(value)
}

function checkDetail(value: unknown): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return new Failure(`must be an object, got ${typeName(value)}`)
  // Iterative depth walk first: canonicalJson recurses, so it only sees bounded depth.
  const stack: Array<[unknown, number]> = [[value, 1]]
  let nodes = 0
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!
    if (++nodes > MAX_DETAIL_BYTES) return new Failure(`must be at most ${MAX_DETAIL_BYTES} bytes as JSON`)
    if (node instanceof ExactNumber) {
      if (!Number.isFinite(Number(node.text))) return new Failure('must not contain numbers that are not finite (e.g. 1e400)')
    } else if (typeof node === 'object' && node !== null) {
      if (depth > MAX_DETAIL_DEPTH) return new Failure(`must be nested at most ${MAX_DETAIL_DEPTH} levels deep`)
      for (const child of Object.values(node)) stack.push([child, depth + 1])
    } else if (typeof node === 'number' && !Number.isFinite(node)) {
      return new Failure('must not contain numbers that are not finite (e.g. 1e400)')
    } else if (typeof node === 'string' && BAD_SURROGATE_RE.test(node)) {
      return new Failure('must not contain unpaired surrogates')
    }
  }
  const json = canonicalJson(value)
  const bytes = Buffer.byteLength(json, 'utf8')
  if (bytes > MAX_DETAIL_BYTES) return new Failure(`must be at most ${MAX_DETAIL_BYTES} bytes as JSON, got ${bytes}`)
  return json
}

/** JSON with object keys sorted at every level: equal content, equal text. */
export function canonicalJson(value: unknown): string {
  if (value instanceof ExactNumber) return value.text // the number as sent, digit for digit
  if (Array.isArray(value)) {
    let out = '['
    for (let i = 0; i < value.length; i++) out += (i === 0 ? '' : ',') + canonicalJson(value[i])
    return `${out}]`
  }
  if (typeof value === 'object' && value !== null) {
    const keys = Object.keys(value).sort()
    let out = '{'
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!
      out += `${i === 0 ? '' : ','}${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`
    }
    return `${out}}`
  }
  return JSON.stringify(value) ?? 'null'
}

/**
 * A 128-bit hash of every normalized field. Fields are joined with U+001F,
 * which no field can contain (dimension strings refuse control characters;
 * tags and detail are JSON, where controls are escaped); null is U+001E.
 */
function fingerprint(e: UsageEvent): string {
  const text =
    `${e.event_id}\x1f${e.ts_us}\x1f${e.key_id}\x1f${e.provider}\x1f${e.model}\x1f${e.status_code}\x1f` +
    `${e.input_tokens}\x1f${e.output_tokens}\x1f${e.cache_read_tokens}\x1f${e.cache_write_tokens}\x1f${e.reasoning_tokens}\x1f` +
    `${n(e.reported_cost)}\x1f${e.currency}\x1f${n(e.team_id)}\x1f${n(e.user_id)}\x1f${n(e.customer_id)}\x1f${n(e.endpoint)}\x1f` +
    `${n(e.latency_ms)}\x1f${n(e.ttft_ms)}\x1f${n(e.stream)}\x1f${n(e.tags)}\x1f${n(e.detail)}`
  return hash('sha256', text, 'base64url').slice(0, 22)
}

function n(v: string | number | bigint | boolean | null): string {
  return v === null ? '\x1e' : String(v)
}

function pointer(key: string): string {
  return `/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`.slice(0, 200)
}

function typeName(v: unknown): string {
  if (v === null) return 'null'
  if (v instanceof ExactNumber) return 'number'
  if (Array.isArray(v)) return 'array'
  return typeof v
}
