// Proves, with fast-check properties over hostile inputs, that event validation and the
// ingest route are total and honest:
// - validateEvent never throws on any JSON value (nor on JS values JSON cannot even carry);
//   every rejection names fields as JSON pointers with a message, and every acceptance yields
//   a normalized event inside the documented bounds (re-checked here independently);
// - a valid event with exactly one field made invalid is rejected naming exactly that field;
// - POST /v1/events never answers 5xx to random JSON, random bytes, broken NDJSON, broken
//   gzip or wrong content types, and stores exactly the events it reported as accepted.
//
// FUZZ_RUNS (default 200) sets the runs per property; route properties use a quarter of it.
// FUZZ_SEED replays a failing run (fast-check prints the seed and path on failure).
import test, { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { build as buildApp, T0, type IngestBody } from './helper.js'
import { gzipSync } from 'node:zlib'
import fc from 'fast-check'
import { EVENT_FIELDS, validateEvent, type EventLimits, type UsageEvent, type ValidationResult } from '../src/ingest/event.js'

const RUNS = positiveInt(process.env.FUZZ_RUNS, 200)
const ROUTE_RUNS = Math.max(10, Math.round(RUNS / 4))
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED)
const params = (numRuns: number) => (SEED === undefined ? { numRuns } : { numRuns, seed: SEED })

function positiveInt(text: string | undefined, def: number): number {
  if (text === undefined || text === '') return def
  const n = Number(text)
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`FUZZ_RUNS must be a positive integer, got "${text}"`)
  return n
}

const DAY_MS = 86_400_000
const NOW = T0
const RETENTION_MS = 30 * DAY_MS
const SKEW_MS = 5 * 60_000
const OLDEST = NOW - RETENTION_MS
const NEWEST = NOW + SKEW_MS
const LIMITS: EventLimits = { nowMs: NOW, eventRetentionMs: RETENTION_MS, maxFutureSkewMs: SKEW_MS }
const MAX_SAFE = Number.MAX_SAFE_INTEGER
const SCALE = 10n ** 12n
const FIELD_NAMES = Object.keys(EVENT_FIELDS) as Array<keyof typeof EVENT_FIELDS>

type Json = Record<string, unknown>

// ---------------------------------------------------------------------------------------
// Independent checks of a validation result (written from DESIGN.md, not from event.ts).

function hasLoneSurrogate(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff) {
      const n = s.charCodeAt(i + 1)
      if (n >= 0xdc00 && n <= 0xdfff) i++
      else return true
    } else if (c >= 0xdc00 && c <= 0xdfff) return true
  }
  return false
}

function hasControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || c === 0x7f) return true
  }
  return false
}

function cleanText(s: unknown, min: number, max: number): boolean {
  return typeof s === 'string' && s.length >= min && s.length <= max && !hasControl(s) && !hasLoneSurrogate(s)
}

function depthOf(v: unknown): number {
  // Iterative: the values checked here may be deep.
  let max = 0
  const stack: Array<[unknown, number]> = [[v, 1]]
  while (stack.length > 0) {
    const [node, d] = stack.pop()!
    if (typeof node === 'object' && node !== null) {
      max = Math.max(max, d)
      for (const child of Object.values(node)) stack.push([child, d + 1])
    }
  }
  return max
}

/** Sorted-key JSON text (keys in code-unit order, integer-like keys included), for JSON values. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`
  if (typeof v === 'object' && v !== null) {
    const keys = Object.keys(v).sort()
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical((v as Json)[k])}`).join(',')}}`
  }
  return JSON.stringify(v)
}

const isNonNegSafeInt = (n: unknown): boolean => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 && !Object.is(n, -0)

/** Every field of an accepted event within the documented bounds. */
function assertNormalized(e: UsageEvent): void {
  assert.match(e.event_id, /^[\x21-\x7e]{1,128}$/)
  assert.ok(Number.isSafeInteger(e.ts_us), `ts_us ${e.ts_us}`)
  const ms = Math.floor(e.ts_us / 1000)
  assert.ok(ms >= OLDEST && ms <= NEWEST, `ts_us ${e.ts_us} outside [${OLDEST}, ${NEWEST}] ms`)
  assert.ok(cleanText(e.key_id, 1, 128), 'key_id')
  assert.ok(cleanText(e.provider, 1, 64), 'provider')
  assert.ok(cleanText(e.model, 1, 128), 'model')
  assert.ok(Number.isInteger(e.status_code) && e.status_code >= 100 && e.status_code <= 599, 'status_code')
  for (const k of ['input_tokens', 'output_tokens', 'cache_read_tokens', 'cache_write_tokens', 'reasoning_tokens'] as const) {
    assert.ok(isNonNegSafeInt(e[k]), `${k} = ${e[k]}`)
  }
  assert.ok(e.cache_read_tokens + e.cache_write_tokens <= e.input_tokens, 'cache sum <= input')
  assert.ok(e.reasoning_tokens <= e.output_tokens, 'reasoning <= output')
  assert.ok(e.cost === null || (typeof e.cost === 'bigint' && e.cost >= 0n && e.cost < 10n ** 15n * SCALE), `cost ${e.cost}`)
  assert.match(e.currency, /^[A-Z]{3}$/)
  for (const k of ['team_id', 'user_id', 'customer_id'] as const) assert.ok(e[k] === null || cleanText(e[k], 1, 128), k)
  assert.ok(e.endpoint === null || cleanText(e.endpoint, 0, 256), 'endpoint')
  for (const k of ['latency_ms', 'ttft_ms'] as const) {
    const v = e[k]
    assert.ok(v === null || (isNonNegSafeInt(v) && v <= DAY_MS), `${k} = ${v}`)
  }
  assert.ok(e.stream === null || typeof e.stream === 'boolean', 'stream')
  if (e.tags !== null) {
    const tags = JSON.parse(e.tags) as unknown
    assert.ok(typeof tags === 'object' && tags !== null && !Array.isArray(tags), 'tags object')
    const entries = Object.entries(tags as Json)
    assert.ok(entries.length >= 1 && entries.length <= 32, 'tags count')
    for (const [k, v] of entries) {
      assert.ok(cleanText(k, 1, 64), `tag key ${JSON.stringify(k)}`)
      assert.ok(cleanText(v, 0, 256), `tag value of ${JSON.stringify(k)}`)
    }
    assert.equal(e.tags, canonical(tags), 'tags canonical')
  }
  if (e.detail !== null) {
    assert.ok(Buffer.byteLength(e.detail, 'utf8') <= 64 * 1024, 'detail size')
    assert.ok(!hasLoneSurrogate(e.detail), 'detail well-formed')
    const detail = JSON.parse(e.detail) as unknown
    assert.ok(typeof detail === 'object' && detail !== null && !Array.isArray(detail), 'detail object')
    assert.ok(depthOf(detail) <= 32, 'detail depth')
  }
  assert.match(e.fingerprint, /^[A-Za-z0-9_-]{22}$/)
}

/** The shape every validation result must have, whatever the input. */
function assertWellFormed(r: ValidationResult): void {
  if (r.ok) {
    assertNormalized(r.event)
    return
  }
  assert.ok(r.errors.length >= 1, 'a rejection carries at least one error')
  for (const e of r.errors) {
    assert.equal(typeof e.field, 'string')
    assert.ok(e.field === '' || e.field.startsWith('/'), `field ${JSON.stringify(e.field)} is not a JSON pointer`)
    assert.ok(e.field.length <= 256, 'field pointer bounded')
    assert.equal(typeof e.message, 'string')
    assert.ok(e.message.length > 0 && e.message.length <= 512, `message ${JSON.stringify(e.message)}`)
  }
  assert.ok(r.eventId === null || (typeof r.eventId === 'string' && r.eventId.length <= 128), 'eventId bounded')
}

/** Values present in the input are the values of the event (modulo the documented normalizations). */
function assertFaithful(input: Json, e: UsageEvent, expectTsUs: number, expectCost: bigint | null): void {
  for (const k of ['event_id', 'key_id', 'provider', 'model', 'status_code', 'input_tokens', 'output_tokens'] as const) assert.equal(e[k], input[k] === -0 ? 0 : input[k], k)
  for (const k of ['cache_read_tokens', 'cache_write_tokens', 'reasoning_tokens'] as const) assert.equal(e[k], (input[k] ?? 0) as number, k)
  for (const k of ['team_id', 'user_id', 'customer_id', 'endpoint', 'latency_ms', 'ttft_ms', 'stream'] as const) assert.equal(e[k], input[k] ?? null, k)
  assert.equal(e.currency, input.currency ?? 'USD')
  assert.equal(e.ts_us, expectTsUs)
  assert.equal(e.cost, expectCost)
  const tags = input.tags as Json | null | undefined
  assert.equal(e.tags, tags == null || Object.keys(tags).length === 0 ? null : canonical(tags))
  assert.equal(e.detail, input.detail == null ? null : canonical(input.detail))
}

// ---------------------------------------------------------------------------------------
// Arbitraries: valid events.

const CONTROL_G = /[\u0000-\u001f\u007f]/g
/** Well-formed text without controls: printable ASCII (hits the exact bounds) or any code point. */
const textArb = (min: number, max: number): fc.Arbitrary<string> =>
  fc.oneof(
    fc.string({ unit: 'grapheme-ascii', minLength: min, maxLength: max }),
    fc.string({ unit: 'binary', minLength: min, maxLength: Math.floor(max / 2) }).map((s) => s.replace(CONTROL_G, '_')),
  ).filter((s) => s.length >= min && s.length <= max)

const idArb = fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 128 })

/** [timestamp as sent, expected microseconds]. */
const timestampArb: fc.Arbitrary<[unknown, number]> = fc.oneof(
  fc.integer({ min: OLDEST, max: NEWEST }).map((ms): [unknown, number] => [ms, ms * 1000]),
  fc
    .tuple(
      fc.integer({ min: Math.ceil(OLDEST / 1000), max: Math.floor(NEWEST / 1000) - 1 }),
      fc.string({ unit: fc.constantFrom('0', '1', '2', '3', '4', '5', '6', '7', '8', '9'), maxLength: 9 }),
      fc.oneof(fc.constant(0), fc.integer({ min: -(23 * 60 + 59), max: 23 * 60 + 59 })),
      fc.boolean(),
    )
    .map(([sec, frac, offsetMin, useZ]): [unknown, number] => {
      const local = new Date(sec * 1000 + offsetMin * 60_000).toISOString().slice(0, 19)
      const abs = Math.abs(offsetMin)
      const offset = offsetMin === 0 && useZ ? 'Z' : `${offsetMin < 0 ? '-' : '+'}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`
      const text = `${local}${frac ? `.${frac}` : ''}${offset}`
      return [text, sec * 1_000_000 + Number(frac.padEnd(9, '0').slice(0, 6))]
    }),
)

/** [cost as sent, expected scaled value]. */
const costArb: fc.Arbitrary<[unknown, bigint]> = fc.oneof(
  fc
    .tuple(fc.bigInt({ min: 0n, max: 10n ** 15n - 1n }), fc.string({ unit: fc.constantFrom('0', '1', '5', '9'), maxLength: 12 }), fc.nat(3))
    .map(([whole, frac, zeros]): [unknown, bigint] => [`${'0'.repeat(zeros)}${whole}${frac ? `.${frac}` : ''}`, whole * SCALE + BigInt(frac.padEnd(12, '0') || '0')]),
  // a / 10^k with at most 15 significant digits prints back as exactly that decimal.
  fc
    .tuple(fc.oneof(fc.nat(1000), fc.integer({ min: 0, max: 10 ** 15 - 1 })), fc.integer({ min: 0, max: 12 }))
    .map(([a, k]): [unknown, bigint] => [a / 10 ** k, BigInt(a) * 10n ** BigInt(12 - k)]),
  fc.constant<[unknown, bigint]>([-0, 0n]),
)

const tagsArb = fc.dictionary(textArb(1, 64), textArb(0, 256), { maxKeys: 32 })
const detailArb = fc
  .dictionary(fc.string({ maxLength: 20 }), fc.jsonValue({ maxDepth: 4 }), { maxKeys: 8 })
  .filter((d) => Buffer.byteLength(canonical(d)) <= 64 * 1024)

/** A few tokens or any safe count, both ends included. */
const countArb = fc.oneof(fc.nat(10_000), fc.integer({ min: 0, max: MAX_SAFE }), fc.constant(MAX_SAFE), fc.constant(0))
/** [total, part1, part2] with part1 + part2 <= total. */
const splitArb = (counts: fc.Arbitrary<number>) =>
  counts.chain((total) => fc.integer({ min: 0, max: total }).chain((a) => fc.integer({ min: 0, max: total - a }).map((b): [number, number, number] => [total, a, b])))

interface Valid {
  input: Json
  tsUs: number
  cost: bigint | null
}

/** Optional: absent, null, or a value. */
const opt = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | null | undefined> => fc.oneof(fc.constant(undefined), fc.constant(null), arb, arb)

/** Valid events whose token counts come from `counts` (the route uses small ones so its accepted-count check stays simple; sums past 2^53 have their own test at the end). */
const makeValidArb = (counts: fc.Arbitrary<number>): fc.Arbitrary<Valid> => fc
  .record({
    event_id: idArb,
    ts: timestampArb,
    key_id: textArb(1, 128),
    provider: textArb(1, 64),
    model: textArb(1, 128),
    status_code: fc.integer({ min: 100, max: 599 }),
    inputs: splitArb(counts),
    outputs: splitArb(counts),
    cost: opt(costArb),
    currency: opt(fc.stringMatching(/^[A-Z]{3}$/)),
    team_id: opt(textArb(1, 128)),
    user_id: opt(textArb(1, 128)),
    customer_id: opt(textArb(1, 128)),
    endpoint: opt(textArb(0, 256)),
    latency_ms: opt(fc.integer({ min: 0, max: DAY_MS })),
    ttft_ms: opt(fc.integer({ min: 0, max: DAY_MS })),
    stream: opt(fc.boolean()),
    tags: opt(tagsArb),
    detail: opt(detailArb),
    omitCounts: fc.boolean(),
  })
  .map((r): Valid => {
    const input: Json = {
      event_id: r.event_id,
      timestamp: r.ts[0],
      key_id: r.key_id,
      provider: r.provider,
      model: r.model,
      status_code: r.status_code,
      input_tokens: r.inputs[0],
      output_tokens: r.outputs[0],
    }
    if (!r.omitCounts || r.inputs[1] + r.inputs[2] + r.outputs[1] > 0) {
      input.cache_read_tokens = r.inputs[1]
      input.cache_write_tokens = r.inputs[2]
      input.reasoning_tokens = r.outputs[1]
    }
    if (r.cost !== undefined) input.cost = r.cost === null ? null : r.cost[0]
    for (const k of ['currency', 'team_id', 'user_id', 'customer_id', 'endpoint', 'latency_ms', 'ttft_ms', 'stream', 'tags', 'detail'] as const) {
      if (r[k] !== undefined) input[k] = r[k]
    }
    return { input, tsUs: r.ts[1], cost: r.cost == null ? null : r.cost[1] }
  })
const validArb = makeValidArb(countArb)
const smallValidArb = makeValidArb(fc.nat(1_000_000))

// ---------------------------------------------------------------------------------------
// Arbitraries: hostile values, as JSON text (what a parser hands the validator).

const deepArray = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`
const deepObject = (n: number) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`
const NASTY_TEXT = [
  '-1', '-0', '0', '1', '1e400', '-1e400', '9007199254740993', '9007199254740992', '9007199254740991', '-9007199254740993',
  '1.5', '0.1', '1e-7', '1e-13', '1e21', '1e15', '0.30000000000000004', '99', '600', '86400001', String(NOW), String(OLDEST - 1), String(NEWEST + 1),
  '"12"', '"-1"', '"1e-3"', '"0.1"', '"0.1234567890123"', '""', '" "', '"a b"', 'true', 'false', 'null', '[]', '{}', '[1]',
  '"\\ud800"', '"x\\udc00"', '"a\\u0000b"', '"\\u007f"', '"\\n"', '"é"', '"😀"',
  '"2026-11-24T11:00:00Z"', '"2026-11-24T11:00:00"', '"2026-02-30T00:00:00Z"', '"2026-11-24T11:00:00.123456789+05:30"', '"USD"', '"usd"',
  '{"__proto__":{"polluted":1}}', '{"constructor":{"prototype":{"polluted":1}}}', '{"k":1}', '{"k":"v","__proto__":"x"}',
  deepArray(64), deepObject(64), deepArray(5000), deepObject(5000),
  JSON.stringify('a'.repeat(129)), JSON.stringify('a'.repeat(70_000)), `[${'0,'.repeat(40_000)}0]`,
  JSON.stringify(Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v']))),
]

const keyArb: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: fc.constantFrom(...FIELD_NAMES), weight: 6 },
  { arbitrary: fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '', 'a/b', '~', 'EVENT_ID', 'events'), weight: 2 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 12 }), weight: 1 },
)

const objectText = (entries: Array<[string, string]>) => `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`

/**
 * Hostile JSON texts. `big` keeps valid token counts up to 2^53-1; the route variant caps them
 * so the stored totals stay below 2^53 (sums past 2^53 have their own test at the end).
 */
function hostile(big: boolean) {
  const pool = big ? NASTY_TEXT : NASTY_TEXT.filter((t) => t !== '9007199254740991')
  const maxInt = big ? MAX_SAFE : 1_000_000_000
  const nastyText: fc.Arbitrary<string> = fc.oneof(
    { arbitrary: fc.constantFrom(...pool), weight: 4 },
    { arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)), weight: 2 },
    { arbitrary: fc.double().map((d) => (Number.isFinite(d) ? String(d) : d > 0 ? '1e400' : d < 0 ? '-1e400' : 'null')), weight: 1 },
    { arbitrary: fc.integer({ min: -maxInt, max: maxInt }).map(String), weight: 1 },
    { arbitrary: fc.string({ unit: 'binary' }).map((str) => JSON.stringify(str)), weight: 1 },
  )
  /** An object whose keys come from the field table and elsewhere, values from the nasty pool. */
  const objectTextArb: fc.Arbitrary<string> = fc.array(fc.tuple(keyArb, nastyText), { maxLength: 24 }).map(objectText)
  /** A valid event with 0-3 fields overridden by hostile values or extra keys. */
  const damagedText: fc.Arbitrary<string> = fc
    .tuple(big ? validArb : smallValidArb, fc.array(fc.tuple(keyArb, nastyText), { minLength: 0, maxLength: 3 }))
    .map(([v, overrides]) => {
      const entries = Object.entries(v.input).map(([k, val]): [string, string] => [k, val === undefined ? 'null' : jsonText(val)])
      return objectText([...entries, ...overrides])
    })
  return { nastyText, objectText: objectTextArb, damagedText }
}

const H = hostile(true)
/** Parsed as a body parser would: "__proto__" stays an own property. */
const hostileObjectArb: fc.Arbitrary<unknown> = H.objectText.map((text) => JSON.parse(text) as unknown)
const damagedArb: fc.Arbitrary<unknown> = H.damagedText.map((text) => JSON.parse(text) as unknown)
const R = hostile(false)

/** JSON text for a generated valid value, keeping -0 (JSON.stringify writes 0). */
function jsonText(v: unknown): string {
  return Object.is(v, -0) ? '-0' : JSON.stringify(v)
}

// ---------------------------------------------------------------------------------------
// Arbitraries: one field made invalid.

const DELETE = Symbol('delete')
const typeBad = fc.constantFrom<unknown>(true, false, [], {}, [1], { a: 1 })
const INF = JSON.parse('1e400') as number

const notIntArb = fc.oneof(
  fc.constantFrom<unknown>('12', '0', 1.5, -0.5, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), INF, -INF, NaN, 1e300),
  fc.double({ noInteger: true }),
  fc.string({ maxLength: 5 }),
  typeBad,
)
const badIntArb = (min: number, max: number): fc.Arbitrary<unknown> =>
  fc.oneof(notIntArb, fc.integer({ min: -MAX_SAFE, max: min - 1 }), ...(max < MAX_SAFE ? [fc.integer({ min: max + 1, max: MAX_SAFE })] : []))

const badStringArb = (min: number, max: number, id = false): fc.Arbitrary<unknown> =>
  fc.oneof(
    fc.oneof(fc.integer(), fc.double(), typeBad),
    fc.string({ unit: 'grapheme-ascii', minLength: max + 1, maxLength: max + 40 }),
    ...(min > 0 ? [fc.constant('')] : []),
    fc
      .tuple(fc.string({ maxLength: 10 }), fc.constantFrom(...(id ? [' ', '\t', 'é', '\u007f', '😀', '\u0000'] : ['\u0000', '\n', '\u001f', '\u007f', '\ud800', '\udc00'])), fc.string({ maxLength: 10 }))
      .map(([a, bad, b]) => (id ? `${a}${bad}${b}` : `${a.replace(/[\ud800-\udfff]/g, '')}${bad}${b.replace(/^[\udc00-\udfff]/, '')}`)),
  )

const badTimestampArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer({ min: -62_135_596_800_000, max: OLDEST - 1 }),
  fc.integer({ min: NEWEST + 1, max: MAX_SAFE }),
  fc.integer({ min: OLDEST, max: NEWEST }).map((ms) => new Date(ms).toISOString().slice(0, -1)), // no offset
  fc.integer({ min: OLDEST, max: NEWEST }).map((ms) => String(ms)),
  fc.integer({ min: OLDEST, max: NEWEST - 1 }).map((ms) => ms + 0.5),
  fc.integer({ min: NEWEST + 1000, max: NEWEST + 10 * DAY_MS }).map((ms) => new Date(ms).toISOString()),
  fc.constantFrom<unknown>('2026-02-30T00:00:00Z', '2026-11-31T00:00:00Z', '2026-11-24T25:00:00Z', '2026-11-24', 'yesterday', '', INF, NaN),
  typeBad,
)

const badCostArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.double({ max: -Number.MIN_VALUE }),
  fc.bigInt({ min: 1n, max: 10n ** 20n }).map((n) => `-${n}`),
  fc.tuple(fc.nat(1000), fc.string({ unit: fc.constantFrom('1', '7'), minLength: 13, maxLength: 20 })).map(([w, f]) => `${w}.${f}`),
  fc.bigInt({ min: 10n ** 15n, max: 10n ** 30n }).map(String),
  fc.double({ min: 1e15, noNaN: true }),
  fc.constantFrom<unknown>('1e-3', '1E3', ' 1', '1.', '.5', '+1', '', 'NaN', 'Infinity', '0x1', INF, NaN, 1e-13, 0.1 + 0.2),
  typeBad,
)

/** Bad values for one field, given the (valid) event they go into. */
function badValueArb(name: keyof typeof EVENT_FIELDS, input: Json): fc.Arbitrary<unknown> {
  const spec = EVENT_FIELDS[name]
  const missing: Array<fc.Arbitrary<unknown>> = spec.required ? [fc.constant(DELETE), fc.constant(null)] : []
  const n = (k: string) => (input[k] ?? 0) as number
  switch (spec.kind) {
    case 'id':
      return fc.oneof(...missing, badStringArb(spec.min, spec.max, true))
    case 'string':
      return fc.oneof(...missing, badStringArb(spec.min, spec.max))
    case 'int': {
      const extra: Array<fc.Arbitrary<unknown>> = []
      if (name === 'cache_read_tokens' && n('input_tokens') - n('cache_write_tokens') < MAX_SAFE) {
        extra.push(fc.integer({ min: n('input_tokens') - n('cache_write_tokens') + 1, max: MAX_SAFE }))
      }
      if (name === 'reasoning_tokens' && n('output_tokens') < MAX_SAFE) extra.push(fc.integer({ min: n('output_tokens') + 1, max: MAX_SAFE }))
      return fc.oneof(...missing, badIntArb(spec.min, spec.max), ...extra)
    }
    case 'timestamp':
      return fc.oneof(...missing, badTimestampArb)
    case 'cost':
      return badCostArb
    case 'currency':
      return fc.oneof(fc.stringMatching(/^[a-z]{3}$/), fc.stringMatching(/^[A-Z]{4,6}$/), fc.stringMatching(/^[A-Z]{0,2}$/), fc.integer(), typeBad)
    case 'boolean':
      return fc.constantFrom<unknown>('true', 'false', 0, 1, [], {}, 'yes')
    case 'tags':
      return fc.oneof(
        fc.constantFrom<unknown>('env=prod', [], ['a'], 1, true),
        fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), fc.string({ maxLength: 4 }), { minKeys: 33, maxKeys: 40 }),
        fc.tuple(tagsArb, fc.string({ unit: 'grapheme-ascii', minLength: 65, maxLength: 80 })).map(([t, k]) => ({ ...t, [k]: 'v' })),
        fc.tuple(fc.string({ minLength: 1, maxLength: 10 }), fc.oneof(fc.integer(), fc.constant(null), typeBad, fc.string({ minLength: 257, maxLength: 300 }))).map(([k, v]) => ({ [k]: v })),
      )
    case 'detail':
      return fc.oneof(
        fc.constantFrom<unknown>('text', [], [{ a: 1 }], 1, true),
        fc.integer({ min: 33, max: 2000 }).map((d) => JSON.parse(deepObject(d)) as unknown),
        fc.integer({ min: 65_536, max: 80_000 }).map((len) => ({ body: 'a'.repeat(len) })),
        fc.constantFrom<unknown>({ s: '\ud800' }, { a: [{ b: 'x\udfff' }] }),
      )
  }
}

// ---------------------------------------------------------------------------------------
// Properties of validateEvent.

function validate(input: unknown): ValidationResult {
  try {
    return validateEvent(input, LIMITS)
  } catch (err) {
    assert.fail(`validateEvent threw ${String(err)}`)
  }
}

test('validateEvent never throws on arbitrary JSON values and always answers in shape', () => {
  // Proves totality on every JSON value fast-check can build: objects, arrays, primitives, nesting.
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      assertWellFormed(validate(v))
    }),
    params(RUNS),
  )
})

test('validateEvent never throws on non-JSON JavaScript values', () => {
  // Proves totality beyond JSON: null prototypes, boxed values, Maps, Sets, Dates, typed arrays, NaN, undefined.
  const anything = fc.anything({ maxDepth: 3, withNullPrototype: true, withBoxedValues: true, withMap: true, withSet: true, withDate: true, withTypedArray: true, withObjectString: true })
  fc.assert(
    fc.property(fc.oneof(anything, fc.dictionary(keyArb, anything)), (v) => {
      const r = validate(v)
      if (!r.ok) assertWellFormed(r)
    }),
    params(RUNS),
  )
})

test('validateEvent never throws on objects of field-table keys and hostile values', () => {
  // Proves totality and honest errors on -0, 1e400, 2^53+1, numeric strings, __proto__ keys, deep nesting, long strings, lone surrogates.
  fc.assert(
    fc.property(hostileObjectArb, (v) => {
      assertWellFormed(validate(v))
      assert.equal(({} as Json).polluted, undefined)
    }),
    params(RUNS),
  )
})

test('damaged valid events: every acceptance is within bounds, every rejection names fields', (t) => {
  // Proves the same on inputs close enough to valid that both outcomes happen (both are counted and must occur).
  let accepted = 0
  let rejected = 0
  fc.assert(
    fc.property(damagedArb, (v) => {
      const r = validate(v)
      assertWellFormed(r)
      if (r.ok) accepted++
      else rejected++
    }),
    params(RUNS),
  )
  t.diagnostic(`accepted ${accepted}, rejected ${rejected}`)
  assert.ok(accepted > 0 && rejected > 0, `accepted ${accepted}, rejected ${rejected}: the generator must reach both outcomes`)
})

test('valid events are accepted and normalized faithfully', () => {
  // Proves the generator of valid events matches the contract: accepted, in bounds, values kept, ts and cost exact.
  fc.assert(
    fc.property(validArb, (v) => {
      const r = validate(v.input)
      if (!r.ok) assert.fail(`rejected a valid event: ${JSON.stringify(r.errors)}`)
      assertNormalized(r.event)
      assertFaithful(v.input, r.event, v.tsUs, v.cost)
      const again = validate(JSON.parse(JSON.stringify(v.input)) as unknown)
      assert.equal(again.ok && again.event.fingerprint, r.event.fingerprint, 'the fingerprint survives a JSON round trip')
    }),
    params(RUNS),
  )
})

test('a valid event with one field made invalid is rejected naming exactly that field', () => {
  // Proves errors point at the cause: one bad field, one error, on that field (tags may point inside: /tags/<key>).
  const caseArb = fc
    .tuple(validArb, fc.constantFrom(...FIELD_NAMES))
    .chain(([v, name]) => badValueArb(name, v.input).map((bad) => ({ input: v.input, name, bad })))
  fc.assert(
    fc.property(caseArb, ({ input, name, bad }) => {
      const event = { ...input }
      if (bad === DELETE) delete event[name]
      else event[name] = bad
      const r = validate(event)
      if (r.ok) assert.fail(`accepted ${name} = ${describe(bad)}`)
      assertWellFormed(r)
      assert.equal(r.errors.length, 1, `expected one error for ${name} = ${describe(bad)}, got ${JSON.stringify(r.errors)}`)
      const field = r.errors[0]!.field
      assert.ok(field === `/${name}` || (name === 'tags' && field.startsWith('/tags/')), `${name} = ${describe(bad)} was reported on ${field}`)
    }),
    params(RUNS),
  )
})

function describe(v: unknown): string {
  if (v === DELETE) return '(missing)'
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v)
  const s = JSON.stringify(v) ?? String(v)
  return s.length > 120 ? `${s.slice(0, 120)}… (${s.length} chars)` : s
}

// ---------------------------------------------------------------------------------------
// Through the route.

interface Totals {
  sent: number
  accepted: number
  byStatus: Map<number, number>
}

interface Case {
  label: string
  url: string
  headers: Record<string, string>
  payload: string | Buffer
  /** Number of events in the body when it is known to be a well-formed batch. */
  events?: number
}

const ALLOWED = new Set([200, 400, 413, 415, 422])
const urlArb = fc.constantFrom('/v1/events', '/v1/events', '/v1/events?atomic=true', '/v1/events?atomic=false')

/** JSON text of something event-like: valid, damaged, or any JSON value. */
const eventishTextArb: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: smallValidArb.map((v) => JSON.stringify(v.input)), weight: 4 },
  { arbitrary: R.damagedText, weight: 2 },
  { arbitrary: fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)), weight: 1 },
)

/** JSON text of an event list; hostile values are spliced in as text, so 1e400 and -0 reach the parser. */
const batchTextArb: fc.Arbitrary<{ text: string; events: number }> = fc
  .array(fc.oneof({ arbitrary: eventishTextArb, weight: 8 }, { arbitrary: R.objectText, weight: 1 }, { arbitrary: R.nastyText, weight: 1 }), { maxLength: 12 })
  .chain((items) =>
    fc.constantFrom(`{"events":[${items.join(',')}]}`, `[${items.join(',')}]`).map((text) => ({ text, events: items.length })),
  )

const jsonCaseArb: fc.Arbitrary<Case> = fc.oneof(
  fc.tuple(urlArb, batchTextArb).map(([url, b]): Case => ({ label: 'json batch', url, headers: { 'content-type': 'application/json' }, payload: b.text, events: b.events })),
  fc.tuple(urlArb, fc.jsonValue()).map(([url, v]): Case => ({ label: 'random json', url, headers: { 'content-type': 'application/json' }, payload: JSON.stringify(v) })),
  fc.tuple(urlArb, R.nastyText).map(([url, t]): Case => ({ label: 'nasty json', url, headers: { 'content-type': 'application/json; charset=utf-8' }, payload: t })),
  fc
    .tuple(urlArb, batchTextArb, fc.nat(), fc.constantFrom('{"events":[{}],"extra":1}', '{"__proto__":{"events":[]}}', '{"events":{}}', '{}', '', ' ', 'nul'))
    .map(([url, b, cut, broken]): Case => ({ label: 'broken json', url, headers: { 'content-type': 'application/json' }, payload: cut % 2 === 0 ? b.text.slice(0, cut % (b.text.length + 1)) : broken })),
)

const bytesCaseArb: fc.Arbitrary<Case> = fc
  .tuple(urlArb, fc.uint8Array({ maxLength: 4096 }), fc.constantFrom('application/json', 'application/x-ndjson'))
  .map(([url, bytes, type]): Case => ({ label: 'random bytes', url, headers: { 'content-type': type }, payload: Buffer.from(bytes) }))

const ndjsonCaseArb: fc.Arbitrary<Case> = fc
  .tuple(
    urlArb,
    fc.array(
      fc.oneof(
        { arbitrary: eventishTextArb, weight: 12 },
        { arbitrary: R.objectText, weight: 1 },
        { arbitrary: R.nastyText, weight: 1 },
        { arbitrary: fc.constantFrom('', '   ', '{"a":', '}', '[1,', '{"__proto__":{"x":1}}', '\u0000', 'NaN', '{"constructor":{"prototype":{}}}'), weight: 1 },
        { arbitrary: fc.string({ unit: 'binary', maxLength: 40 }), weight: 1 },
      ),
      { maxLength: 12 },
    ),
    fc.constantFrom('\n', '\r\n'),
    fc.constantFrom('application/x-ndjson', 'application/ndjson', 'application/jsonl', 'application/x-jsonlines', 'application/x-ndjson; charset=utf-8'),
  )
  .map(([url, lines, sep, type]): Case => ({ label: 'ndjson', url, headers: { 'content-type': type }, payload: lines.join(sep) }))

const gzipCaseArb: fc.Arbitrary<Case> = fc
  .tuple(urlArb, batchTextArb, fc.constantFrom('full', 'truncated', 'garbage', 'plain', 'empty', 'double'), fc.nat(), fc.uint8Array({ maxLength: 512 }), fc.constantFrom('gzip', 'x-gzip', 'GZIP', ' gzip '))
  .map(([url, b, how, cut, junk, enc]): Case => {
    const gz = gzipSync(b.text)
    const payload =
      how === 'full' ? gz
      : how === 'truncated' ? gz.subarray(0, cut % gz.length)
      : how === 'garbage' ? Buffer.from(junk)
      : how === 'plain' ? Buffer.from(b.text)
      : how === 'empty' ? Buffer.alloc(0)
      : gzipSync(gz)
    return { label: `gzip ${how}`, url, headers: { 'content-type': 'application/json', 'content-encoding': enc }, payload, ...(how === 'full' ? { events: b.events } : {}) }
  })

const contentTypeCaseArb: fc.Arbitrary<Case> = fc
  .tuple(
    urlArb,
    batchTextArb,
    fc.oneof(
      fc.constantFrom('text/plain', 'text/html', 'application/xml', 'application/octet-stream', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', 'image/png', 'application/json-patch+json', 'application/jsonx', 'json', '*/*', 'application/*', ''),
      fc.stringMatching(/^[a-z]{1,10}\/[a-z+.-]{1,16}$/),
    ),
    fc.constantFrom(undefined, 'deflate', 'br', 'identity', 'gzip, deflate', 'compress'),
  )
  .map(([url, b, type, enc]): Case => {
    const headers: Record<string, string> = { 'content-type': type }
    if (enc !== undefined) headers['content-encoding'] = enc
    return { label: `content-type ${type} encoding ${enc ?? '-'}`, url, headers, payload: Buffer.from(b.text) }
  })

async function build(t: TestContext) {
  return (await buildApp(t)).app
}

type App = Awaited<ReturnType<typeof build>>


async function post(app: App, c: Case, totals: Totals): Promise<void> {
  const res = await app.inject({ method: 'POST', url: c.url, headers: c.headers, payload: c.payload })
  totals.sent++
  totals.byStatus.set(res.statusCode, (totals.byStatus.get(res.statusCode) ?? 0) + 1)
  const what = `${c.label} ${c.url} (${c.payload.length} bytes: ${JSON.stringify(c.payload.toString('latin1').slice(0, 200))}) answered ${res.statusCode} ${res.body.slice(0, 300)}`
  assert.ok(res.statusCode < 500, `5xx: ${what}`)
  assert.ok(ALLOWED.has(res.statusCode), `unexpected status: ${what}`)
  const body = res.json() as Json
  if (res.statusCode !== 200 && res.statusCode !== 422) {
    assert.equal(typeof body.message, 'string', what)
    return
  }
  const b = body as unknown as IngestBody
  for (const k of ['accepted', 'duplicates', 'conflicts', 'rejected'] as const) assert.ok(isNonNegSafeInt(b[k]), `${k} in ${what}`)
  if (res.statusCode === 422) {
    assert.ok(c.url.includes('atomic=true'), `422 without atomic: ${what}`)
    assert.equal(b.accepted, 0, what)
    assert.ok(b.rejected + b.conflicts > 0, `422 names no unacceptable event: ${what}`)
  }
  // A 200 accounts for every event; a 422 lists only the events that made the batch unacceptable.
  const counted = b.accepted + b.duplicates + b.conflicts + b.rejected
  const size = res.statusCode === 200 ? counted : (c.events ?? Infinity)
  if (c.events !== undefined && res.statusCode === 200) assert.equal(counted, c.events, `every event gets an outcome: ${what}`)
  assert.equal(b.results.length, b.duplicates + b.conflicts + b.rejected, `results lists every non-accepted event: ${what}`)
  assert.equal(new Set(b.results.map((r) => r.index)).size, b.results.length, `indices are distinct: ${what}`)
  for (const r of b.results) {
    assert.ok(Number.isInteger(r.index) && r.index >= 0 && r.index < size, `index ${r.index}: ${what}`)
    assert.ok(['duplicate', 'conflict', 'rejected'].includes(r.status), what)
    if (r.status === 'rejected') {
      assert.ok(r.errors !== undefined && r.errors.length > 0, `rejected without errors: ${what}`)
      for (const e of r.errors) {
        assert.ok(e.field === '' || e.field.startsWith('/'), `field ${e.field}: ${what}`)
        assert.ok(e.message.length > 0, what)
      }
    }
  }
  totals.accepted += b.accepted
}

async function storedRequests(app: App): Promise<number> {
  const res = await app.inject({ method: 'GET', url: `/v1/usage?from=0&to=${NEWEST + 1}` })
  assert.equal(res.statusCode, 200, res.body)
  return (res.json() as { totals: { requests: number } }).totals.requests
}

test('POST /v1/events never answers 5xx to hostile bodies and stores exactly what it accepted', async (t) => {
  // Proves each body kind gets 200/400/413/415/422 with a well-formed answer, and that afterwards the
  // store holds exactly the sum of the accepted counts (nothing invalid, nothing unreported).
  const app = await build(t)
  const totals: Totals = { sent: 0, accepted: 0, byStatus: new Map() }
  const kinds: Array<[string, fc.Arbitrary<Case>]> = [
    ['JSON bodies (batches, random values, hostile values, broken text)', jsonCaseArb],
    ['random bytes declared as JSON or NDJSON', bytesCaseArb],
    ['NDJSON with broken lines', ndjsonCaseArb],
    ['gzip-declared bodies: whole, truncated, garbage, plain, empty, double', gzipCaseArb],
    ['wrong content types and encodings', contentTypeCaseArb],
  ]
  for (const [name, arb] of kinds) {
    await t.test(name, async () => {
      // Proves the kind named above never makes the route fail (see the parent test).
      await fc.assert(
        fc.asyncProperty(arb, async (c) => {
          await post(app, c, totals)
        }),
        params(ROUTE_RUNS),
      )
    })
  }
  t.diagnostic(`${totals.sent} requests, ${totals.accepted} events accepted, statuses ${JSON.stringify(Object.fromEntries(totals.byStatus))}`)
  assert.ok(totals.accepted > 0, 'the generators must get some events accepted')
  assert.ok((totals.byStatus.get(400) ?? 0) > 0 && (totals.byStatus.get(415) ?? 0) > 0, `statuses seen: ${JSON.stringify([...totals.byStatus])}`)
  assert.equal(await storedRequests(app), totals.accepted, `stored events = accepted events (statuses: ${JSON.stringify([...totals.byStatus])})`)
})

test('oversized bodies are refused with 413, not buffered or crashed on', async (t) => {
  // Proves the byte bound holds after gzip decoding (a 9 MiB gzip bomb) and the batch bound at 10 001 events.
  const app = await build(t)
  const bomb = gzipSync(Buffer.from(`[${' '.repeat(9 * 1024 * 1024)}]`))
  assert.ok(bomb.length < 64 * 1024)
  const r1 = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, payload: bomb })
  assert.equal(r1.statusCode, 413, r1.body)
  const r2 = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/json' }, payload: `[${new Array(10_001).fill('{}').join(',')}]` })
  assert.equal(r2.statusCode, 413, r2.body)
  const r3 = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/x-ndjson' }, payload: new Array(10_001).fill('{}').join('\n') })
  assert.equal(r3.statusCode, 413, r3.body)
  const r4 = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/json' }, payload: `"${'a'.repeat(9 * 1024 * 1024)}"` })
  assert.equal(r4.statusCode, 413, r4.body)
  assert.equal(await storedRequests(app), 0)
})

test('usage totals stay answerable when stored token counts sum past 2^53', async (t) => {
  // Proves that two events at the documented per-event bound (input_tokens 2^53-1) are queryable:
  // found by the route property above when its generators were allowed counts up to 2^53-1.
  const app = await build(t)
  const event = (id: string) => ({
    event_id: id, timestamp: NOW - 60_000, key_id: 'k', provider: 'p', model: 'm', status_code: 200,
    input_tokens: MAX_SAFE, output_tokens: MAX_SAFE,
  })
  const res = await app.inject({ method: 'POST', url: '/v1/events', payload: { events: [event('big-1'), event('big-2')] } })
  assert.equal(res.statusCode, 200, res.body)
  assert.equal((res.json() as IngestBody).accepted, 2)
  const usage = await app.inject({ method: 'GET', url: `/v1/usage?from=0&to=${NEWEST + 1}` })
  assert.ok(usage.statusCode < 500, `GET /v1/usage answered ${usage.statusCode} ${usage.body}`)
  assert.equal(usage.statusCode, 200, usage.body)
  // The sum is exact in the JSON text, past what a double can hold.
  assert.match(usage.body, /"input_tokens":18014398509481982[,}]/)
})
