// Proves: every rule of the event field table (DESIGN.md, "HTTP contract") is enforced by
// validateEvent, each rejection names the offending field as a JSON pointer with a message
// that says what is wrong, valid values are normalized (timestamps to microseconds, costs to
// exact scaled integers, -0 to 0, null to absent), the fingerprint depends on content only,
// and POST /v1/events reports per-event outcomes and honours ?atomic=true.
import test, { describe, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { build as buildApp, T0 } from './helper.js'
import { EVENT_FIELDS, validateEvent, type EventLimits, type UsageEvent } from '../src/ingest/event.js'
import { formatTimestampUs, parseTimestamp } from '../src/ingest/timestamp.js'
import { formatCost, parseCost } from '../src/money.js'

const DAY_MS = 86_400_000
const NOW = T0
const RETENTION_MS = 30 * DAY_MS
const SKEW_MS = 5 * 60_000
const LIMITS: EventLimits = { nowMs: NOW, eventRetentionMs: RETENTION_MS, maxFutureSkewMs: SKEW_MS }
const MAX_SAFE = Number.MAX_SAFE_INTEGER
const SCALE = 10n ** 12n

type Json = Record<string, unknown>

/** A minimal valid event: only the required fields. */
function base(): Json {
  return {
    event_id: 'evt-0001',
    timestamp: '2026-11-24T11:00:00Z',
    key_id: 'key_abc',
    provider: 'openai',
    model: 'gpt-4o',
    status_code: 200,
    input_tokens: 100,
    output_tokens: 50,
  }
}

/** A valid event with every optional field set. */
function full(): Json {
  return {
    ...base(),
    cache_read_tokens: 40,
    cache_write_tokens: 10,
    reasoning_tokens: 20,
    cost: '0.0012',
    currency: 'EUR',
    team_id: 'team-1',
    user_id: 'user-1',
    customer_id: 'cust-1',
    endpoint: '/v1/chat/completions',
    latency_ms: 1234,
    ttft_ms: 200,
    stream: true,
    tags: { env: 'prod', region: 'eu' },
    detail: { request: { messages: [{ role: 'user', content: 'hi' }] }, headers: { a: '1' } },
  }
}

function withField(name: string, value: unknown): Json {
  const e = base()
  e[name] = value
  return e
}

function without(name: string, from: Json = base()): Json {
  const e = { ...from }
  delete e[name]
  return e
}

function accept(input: unknown, limits: EventLimits = LIMITS): UsageEvent {
  const r = validateEvent(input, limits)
  if (!r.ok) assert.fail(`expected the event to be accepted, got ${JSON.stringify(r.errors)}`)
  return r.event
}

/** Asserts the event is rejected with exactly one error, on `field`, whose message matches. */
function reject(input: unknown, field: string, message: RegExp, limits: EventLimits = LIMITS): void {
  const r = validateEvent(input, limits)
  if (r.ok) assert.fail(`expected a rejection on ${field}, the event was accepted`)
  assert.deepEqual(
    r.errors.map((e) => e.field),
    [field],
    `errors: ${JSON.stringify(r.errors)}`,
  )
  assert.match(r.errors[0]!.message, message)
}

const fp = (input: unknown): string => accept(input).fingerprint

const REQUIRED = Object.entries(EVENT_FIELDS)
  .filter(([, s]) => s.required)
  .map(([n]) => n)
const OPTIONAL = Object.entries(EVENT_FIELDS)
  .filter(([, s]) => !s.required)
  .map(([n]) => n)
const INT_FIELDS = Object.entries(EVENT_FIELDS)
  .filter(([, s]) => s.kind === 'int')
  .map(([n]) => n)
const STRING_FIELDS = Object.entries(EVENT_FIELDS)
  .filter(([, s]) => s.kind === 'string' || s.kind === 'id')
  .map(([n]) => n)

describe('the field table', () => {
  test('names exactly the documented fields', () => {
    // Proves the table the validator walks holds the fields of DESIGN.md, required ones marked.
    assert.deepEqual(REQUIRED, ['event_id', 'timestamp', 'key_id', 'provider', 'model', 'status_code', 'input_tokens', 'output_tokens'])
    assert.deepEqual(OPTIONAL.sort(), [
      'cache_read_tokens', 'cache_write_tokens', 'cost', 'currency', 'customer_id', 'detail', 'endpoint',
      'latency_ms', 'reasoning_tokens', 'stream', 'tags', 'team_id', 'ttft_ms', 'user_id',
    ])
  })

  test('a minimal and a full valid event are accepted and normalized', () => {
    // Proves the happy path: defaults for absent optionals, exact values for given ones.
    const min = accept(base())
    assert.equal(min.ts_us, Date.parse('2026-11-24T11:00:00Z') * 1000)
    assert.equal(min.cache_read_tokens, 0)
    assert.equal(min.cache_write_tokens, 0)
    assert.equal(min.reasoning_tokens, 0)
    assert.equal(min.cost, null)
    assert.equal(min.currency, 'USD')
    for (const k of ['team_id', 'user_id', 'customer_id', 'endpoint', 'latency_ms', 'ttft_ms', 'stream', 'tags', 'detail'] as const) {
      assert.equal(min[k], null, k)
    }
    const f = accept(full())
    assert.equal(f.cost, 1_200_000_000n)
    assert.equal(f.currency, 'EUR')
    assert.equal(f.stream, true)
    assert.equal(f.tags, '{"env":"prod","region":"eu"}')
    assert.deepEqual(JSON.parse(f.detail!), full().detail)
    assert.match(f.fingerprint, /^[A-Za-z0-9_-]{22}$/)
  })

  test('a non-object event is rejected at the empty pointer', () => {
    // Proves arrays, primitives and null are refused as a whole, with field "".
    for (const v of [null, 1, 'x', true, [], [base()]]) {
      const r = validateEvent(v, LIMITS)
      if (r.ok) assert.fail(`accepted ${JSON.stringify(v)}`)
      assert.deepEqual(r.errors, [{ field: '', message: 'event must be a JSON object' }])
      assert.equal(r.eventId, null)
    }
  })
})

describe('required fields', () => {
  for (const name of REQUIRED) {
    test(`${name}: missing and null are rejected`, () => {
      // Proves a required field cannot be left out or sent as null, and the error names it.
      reject(without(name), `/${name}`, /is required/)
      reject(withField(name, null), `/${name}`, /must not be null/)
    })
  }

  test('every missing field is reported at once', () => {
    // Proves the validator does not stop at the first error: {} names all eight required fields.
    const r = validateEvent({}, LIMITS)
    if (r.ok) assert.fail('accepted {}')
    assert.deepEqual(
      r.errors.map((e) => e.field),
      REQUIRED.map((n) => `/${n}`),
    )
  })

  test('the rejected event keeps its id for the per-event result', () => {
    // Proves eventId is echoed when it is a string, and null when it is missing or not a string.
    const r1 = validateEvent(withField('input_tokens', -1), LIMITS)
    assert.equal(r1.ok ? null : r1.eventId, 'evt-0001')
    const r2 = validateEvent(without('event_id'), LIMITS)
    assert.equal(r2.ok ? 'x' : r2.eventId, null)
    const r3 = validateEvent(withField('event_id', 42), LIMITS)
    assert.equal(r3.ok ? 'x' : r3.eventId, null)
  })
})

describe('optional fields', () => {
  for (const name of OPTIONAL) {
    test(`${name}: null is the same as absent`, () => {
      // Proves null on an optional field normalizes to the same event (and fingerprint) as leaving it out.
      const absent = accept(base())
      const nulled = accept(withField(name, null))
      assert.deepEqual(nulled, absent)
    })
  }

  test('explicit defaults equal absent ones', () => {
    // Proves currency USD and zero cache/reasoning tokens are the defaults (same fingerprint), and empty tags are no tags.
    const b = fp(base())
    assert.equal(fp({ ...base(), currency: 'USD', cache_read_tokens: 0, cache_write_tokens: 0, reasoning_tokens: 0 }), b)
    assert.equal(accept(withField('tags', {})).tags, null)
    assert.equal(fp(withField('tags', {})), b)
  })

  test('an absent cost is unknown, not zero', () => {
    // Proves cost absent and cost "0" are different events (absent counts as missing).
    assert.equal(accept(base()).cost, null)
    assert.equal(accept(withField('cost', '0')).cost, 0n)
    assert.notEqual(fp(withField('cost', '0')), fp(base()))
  })
})

describe('types are never coerced', () => {
  for (const name of INT_FIELDS) {
    test(`${name}: strings, booleans, arrays, objects, fractions, unsafe and non-finite numbers are rejected`, () => {
      // Proves an integer field takes only a finite safe integer JSON number.
      const f = `/${name}`
      reject(withField(name, '12'), f, /must be an integer, got string/)
      reject(withField(name, true), f, /must be an integer, got boolean/)
      reject(withField(name, [12]), f, /must be an integer, got array/)
      reject(withField(name, { v: 12 }), f, /must be an integer, got object/)
      reject(withField(name, 1.5), f, /must be an integer/)
      reject(withField(name, 2 ** 53), f, /safe integer/)
      reject(withField(name, 2 ** 53 + 2), f, /safe integer/)
      reject(withField(name, -(2 ** 53)), f, /safe integer/)
      reject(withField(name, JSON.parse('1e400')), f, /integer/)
      reject(withField(name, -Infinity), f, /integer/)
      reject(withField(name, NaN), f, /integer/)
    })
  }

  for (const name of STRING_FIELDS) {
    test(`${name}: numbers, booleans, arrays and objects are rejected`, () => {
      // Proves a string field takes only a JSON string.
      const f = `/${name}`
      reject(withField(name, 12), f, /must be a string, got number/)
      reject(withField(name, true), f, /must be a string, got boolean/)
      reject(withField(name, ['a']), f, /must be a string, got array/)
      reject(withField(name, { a: 'b' }), f, /must be a string, got object/)
    })
  }

  test('stream takes only a boolean', () => {
    // Proves "true", 1 and 0 are not booleans.
    reject(withField('stream', 'true'), '/stream', /must be a boolean, got string/)
    reject(withField('stream', 1), '/stream', /must be a boolean, got number/)
    reject(withField('stream', 0), '/stream', /must be a boolean/)
    assert.equal(accept(withField('stream', false)).stream, false)
  })

  test('-0 is accepted as 0 on integer fields and cost', () => {
    // Proves -0 (valid JSON) is normalized to +0, not rejected and not kept as -0.
    const e = accept({ ...base(), input_tokens: -0, output_tokens: -0, latency_ms: -0, ttft_ms: -0, cache_read_tokens: -0, cost: -0 })
    for (const v of [e.input_tokens, e.output_tokens, e.latency_ms, e.ttft_ms, e.cache_read_tokens]) assert.ok(Object.is(v, 0))
    assert.equal(e.cost, 0n)
    assert.equal(accept(JSON.parse(JSON.stringify(base()).replace('"input_tokens":100', '"input_tokens":-0'))).input_tokens, 0)
  })
})

describe('ranges', () => {
  test('status_code is 100-599', () => {
    // Proves both ends are inclusive and one past either end is refused.
    reject(withField('status_code', 99), '/status_code', /between 100 and 599, got 99/)
    reject(withField('status_code', 600), '/status_code', /between 100 and 599, got 600/)
    reject(withField('status_code', 0), '/status_code', /between 100 and 599/)
    assert.equal(accept(withField('status_code', 100)).status_code, 100)
    assert.equal(accept(withField('status_code', 599)).status_code, 599)
  })

  for (const name of ['latency_ms', 'ttft_ms']) {
    test(`${name} is 0-86 400 000`, () => {
      // Proves a duration above one day or below zero is refused; both ends are accepted.
      reject(withField(name, 86_400_001), `/${name}`, /between 0 and 86400000, got 86400001/)
      reject(withField(name, -1), `/${name}`, /between 0 and 86400000, got -1/)
      assert.equal(accept(withField(name, 86_400_000))[name as 'latency_ms'], 86_400_000)
      assert.equal(accept(withField(name, 0))[name as 'latency_ms'], 0)
    })
  }

  for (const name of ['input_tokens', 'output_tokens', 'cache_read_tokens', 'cache_write_tokens', 'reasoning_tokens']) {
    test(`${name} is >= 0 and at most 2^53-1`, () => {
      // Proves negative token counts are refused and the largest safe integer is a valid count.
      reject(withField(name, -1), `/${name}`, /between 0 and 9007199254740991, got -1/)
      const e: Json = { ...base(), input_tokens: MAX_SAFE, output_tokens: MAX_SAFE }
      e[name] = MAX_SAFE
      if (name === 'cache_write_tokens') e.cache_read_tokens = 0
      assert.equal(accept(e)[name as 'input_tokens'], MAX_SAFE)
    })
  }
})

describe('string lengths and alphabets', () => {
  test('event_id is 1-128 printable ASCII without spaces', () => {
    // Proves the idempotency key's bounds and alphabet.
    reject(withField('event_id', ''), '/event_id', /1-128 characters, got 0/)
    reject(withField('event_id', 'a'.repeat(129)), '/event_id', /1-128 characters, got 129/)
    assert.equal(accept(withField('event_id', 'a'.repeat(128))).event_id, 'a'.repeat(128))
    assert.equal(accept(withField('event_id', '!~{}:/#%')).event_id, '!~{}:/#%')
    for (const bad of ['a b', ' ', 'évé', 'id\t1', 'id\n', '\u007f', 'ключ', '😀', 'a\u00a0b']) {
      reject(withField('event_id', bad), '/event_id', /printable ASCII without spaces/)
    }
  })

  test('provider is 1-64, key_id/model/team_id/user_id/customer_id 1-128, endpoint 0-256', () => {
    // Proves each dimension's length bounds, one past each end refused.
    const bounds: Array<[string, number, number]> = [
      ['provider', 1, 64], ['key_id', 1, 128], ['model', 1, 128], ['team_id', 1, 128],
      ['user_id', 1, 128], ['customer_id', 1, 128], ['endpoint', 0, 256],
    ]
    for (const [name, min, max] of bounds) {
      const msg = new RegExp(`must be ${min}-${max} characters, got ${max + 1}`)
      reject(withField(name, 'x'.repeat(max + 1)), `/${name}`, msg)
      assert.equal(accept(withField(name, 'x'.repeat(max)))[name as 'key_id'], 'x'.repeat(max))
      if (min === 1) reject(withField(name, ''), `/${name}`, new RegExp(`must be 1-${max} characters, got 0`))
      else assert.equal(accept(withField(name, ''))[name as 'endpoint'], '')
    }
  })

  test('key_id refuses control characters and lone surrogates, takes other Unicode', () => {
    // Proves text dimensions hold only well-formed, printable text.
    for (const bad of ['\u0000', 'a\nb', 'tab\there', '\u001f', 'del\u007f', '\r']) {
      reject(withField('key_id', bad), '/key_id', /control characters/)
    }
    for (const bad of ['\ud800', 'x\udc00y', 'end\ud83d', '\ude00start', '\udc00\ud800']) {
      reject(withField('key_id', bad), '/key_id', /unpaired surrogates/)
    }
    for (const good of ['😀', 'ключ-1', '键', 'a b c', 'é']) assert.equal(accept(withField('key_id', good)).key_id, good)
    reject(withField('provider', 'open\u0000ai'), '/provider', /control characters/)
    reject(withField('team_id', '\ud800'), '/team_id', /unpaired surrogates/)
  })
})

describe('unknown top-level fields', () => {
  test('an unknown field is rejected, named by its pointer', () => {
    // Proves unknown fields are refused, not dropped, and that case matters.
    reject(withField('foo', 1), '/foo', /unknown field/)
    reject(withField('Event_ID', 'x'), '/Event_ID', /unknown field/)
    reject(withField('timestamp_ms', 1), '/timestamp_ms', /unknown field/)
    reject(withField('a/b', 1), '/a~1b', /unknown field/)
    reject(withField('m~n', 1), '/m~0n', /unknown field/)
    reject(withField('', 1), '/', /unknown field/)
  })

  test('__proto__, constructor and prototype as own properties (from JSON text) are unknown fields', () => {
    // Proves prototype-looking keys parsed from JSON are reported, not followed, and nothing is polluted.
    const text = JSON.stringify(base()).slice(0, -1)
    for (const key of ['__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString']) {
      const input: unknown = JSON.parse(`${text},"${key}":{"polluted":true,"event_id":"other"}}`)
      assert.ok(Object.prototype.hasOwnProperty.call(input, key))
      reject(input, `/${key}`, /unknown field/)
    }
    assert.equal(({} as Json).polluted, undefined)
  })

  test('several unknown fields are all named', () => {
    // Proves each unknown field gets its own error.
    const r = validateEvent({ ...base(), x: 1, y: 2 }, LIMITS)
    if (r.ok) assert.fail('accepted unknown fields')
    assert.deepEqual(r.errors.map((e) => e.field), ['/x', '/y'])
  })

  test('past 16 unknown fields the answer says how many more were not listed', () => {
    // Proves the list of unknown fields is bounded and says what it cut: 16 named, then one error counting the rest.
    const extra = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`x${i}`, i]))
    const r = validateEvent({ ...base(), ...extra }, LIMITS)
    if (r.ok) assert.fail('accepted unknown fields')
    const named = r.errors.filter((e) => e.message === 'unknown field')
    assert.deepEqual(named.map((e) => e.field), Array.from({ length: 16 }, (_, i) => `/x${i}`))
    const cut = r.errors.filter((e) => e.message !== 'unknown field')
    assert.equal(cut.length, 1, JSON.stringify(r.errors))
    assert.equal(cut[0]!.field, '')
    assert.match(cut[0]!.message, /^24 more unknown fields \(x16, x17, x18, …\) not listed/)
    // Exactly 16: nothing was cut, so nothing is said.
    const sixteen = validateEvent({ ...base(), ...Object.fromEntries(Object.entries(extra).slice(0, 16)) }, LIMITS)
    if (sixteen.ok) assert.fail('accepted unknown fields')
    assert.equal(sixteen.errors.length, 16)
  })
})

describe('token invariants', () => {
  test('cache_read_tokens + cache_write_tokens must not exceed input_tokens', () => {
    // Proves the sum rule, reported on /cache_read_tokens, with the equality accepted.
    reject({ ...base(), cache_read_tokens: 60, cache_write_tokens: 50 }, '/cache_read_tokens', /must not exceed input_tokens \(100\)/)
    reject({ ...base(), cache_read_tokens: 101 }, '/cache_read_tokens', /must not exceed input_tokens/)
    reject({ ...base(), cache_write_tokens: 101 }, '/cache_read_tokens', /must not exceed input_tokens/)
    const e = accept({ ...base(), cache_read_tokens: 60, cache_write_tokens: 40 })
    assert.equal(e.cache_read_tokens + e.cache_write_tokens, e.input_tokens)
  })

  test('the cache sum does not overflow into acceptance', () => {
    // Proves two maximal cache counts (sum 2^54-2, past safe-integer range) are still refused.
    reject({ ...base(), input_tokens: MAX_SAFE, cache_read_tokens: MAX_SAFE, cache_write_tokens: MAX_SAFE }, '/cache_read_tokens', /must not exceed input_tokens/)
  })

  test('reasoning_tokens must not exceed output_tokens', () => {
    // Proves reasoning tokens are part of output tokens; equality is accepted.
    reject({ ...base(), reasoning_tokens: 51 }, '/reasoning_tokens', /must not exceed output_tokens \(50\)/)
    assert.equal(accept({ ...base(), reasoning_tokens: 50 }).reasoning_tokens, 50)
  })
})

describe('cost', () => {
  test('decimal strings and numbers give exact scaled integers', () => {
    // Proves both forms parse to the same exact value, and leading/trailing zeros do not matter.
    assert.equal(accept(withField('cost', '0.0012')).cost, 1_200_000_000n)
    assert.equal(accept(withField('cost', 0.0012)).cost, 1_200_000_000n)
    assert.equal(accept(withField('cost', '12')).cost, 12n * SCALE)
    assert.equal(accept(withField('cost', 12)).cost, 12n * SCALE)
    assert.equal(accept(withField('cost', '00.500')).cost, SCALE / 2n)
    assert.equal(accept(withField('cost', '0.123456789012')).cost, 123_456_789_012n)
    assert.equal(fp(withField('cost', '0.10')), fp(withField('cost', 0.1)))
  })

  test('negative costs are rejected', () => {
    // Proves cost >= 0 for both forms.
    reject(withField('cost', '-1'), '/cost', /must be >= 0/)
    reject(withField('cost', -0.5), '/cost', /must be >= 0/)
    reject(withField('cost', -1e-300), '/cost', /must be >= 0/)
  })

  test('more than 12 fractional digits is rejected', () => {
    // Proves the scale bound for strings and numbers (0.1 + 0.2 as a float has 17 digits).
    reject(withField('cost', '0.1234567890123'), '/cost', /at most 12 fractional digits/)
    reject(withField('cost', 1e-13), '/cost', /at most 12 fractional digits/)
    reject(withField('cost', 0.1 + 0.2), '/cost', /at most 12 fractional digits/)
    assert.equal(accept(withField('cost', 1e-12)).cost, 1n)
  })

  test('exponents, signs, spaces and other non-plain decimal strings are rejected', () => {
    // Proves only digits with an optional point and fraction are a cost string.
    for (const bad of ['1e-3', '1E3', '1e+2', ' 1', '1 ', '1.', '.5', '+1', '0x10', '', 'NaN', 'Infinity', '1,5', '1_000', '١', '1.2.3']) {
      reject(withField('cost', bad), '/cost', /plain decimal/)
    }
  })

  test('numbers written with an exponent are taken at their decimal value', () => {
    // Proves 1e-7 is 0.0000001 exactly, and large exponent numbers are expanded, not rejected for their notation.
    const e = accept(withField('cost', 1e-7))
    assert.equal(e.cost, 100_000n)
    assert.equal(formatCost(e.cost!), '0.0000001')
    assert.equal(formatCost(accept(withField('cost', 1.5e-10)).cost!), '0.00000000015')
    assert.equal(formatCost(accept(withField('cost', 1e14)).cost!), '100000000000000')
  })

  test('NaN and Infinity are rejected', () => {
    // Proves non-finite numbers (1e400 parses to Infinity) never become a cost.
    reject(withField('cost', JSON.parse('1e400')), '/cost', /finite/)
    reject(withField('cost', NaN), '/cost', /finite/)
    reject(withField('cost', -Infinity), '/cost', /finite|>= 0/)
  })

  test('costs are below 10^15', () => {
    // Proves the whole-part bound in both forms, with the largest allowed value exact.
    reject(withField('cost', 1e15), '/cost', /below 10\^15/)
    reject(withField('cost', '1000000000000000'), '/cost', /below 10\^15/)
    reject(withField('cost', 1e300), '/cost', /below 10\^15/)
    const max = '999999999999999.999999999999'
    assert.equal(formatCost(accept(withField('cost', max)).cost!), max)
    assert.equal(formatCost(accept(withField('cost', 999_999_999_999_999)).cost!), '999999999999999')
    reject(withField('cost', '9'.repeat(65)), '/cost', /at most 64 characters/)
  })

  test('other types are rejected', () => {
    // Proves booleans, objects and arrays are not costs.
    for (const bad of [true, {}, ['1'], { amount: '1' }]) reject(withField('cost', bad), '/cost', /decimal string or a number/)
  })

  test('sums are exact: "0.1" + "0.2" is 0.3', () => {
    // Proves the money path has no floating point: scaled integers add exactly and format back.
    const a = parseCost('0.1')
    const b = parseCost('0.2')
    if (!a.ok || !b.ok) assert.fail('parse failed')
    assert.equal(formatCost(a.scaled + b.scaled), '0.3')
    assert.equal(formatCost(0n), '0')
    assert.equal(formatCost(12n * SCALE), '12')
    assert.equal(formatCost(1n), '0.000000000001')
    let sum = 0n
    for (let i = 0; i < 10; i++) sum += accept(withField('cost', 0.1)).cost!
    assert.equal(formatCost(sum), '1')
  })
})

describe('currency', () => {
  test('is three capital letters, USD by default', () => {
    // Proves lowercase, 2 or 4 letters, digits and non-strings are refused.
    for (const bad of ['usd', 'Usd', 'USDX', 'US', '', 'U$D', 'US1', ' USD', 840]) {
      reject(withField('currency', bad), '/currency', /ISO 4217/)
    }
    assert.equal(accept(withField('currency', 'JPY')).currency, 'JPY')
    assert.equal(accept(base()).currency, 'USD')
  })
})

describe('tags', () => {
  test('must be an object', () => {
    // Proves strings, arrays and numbers are not tags.
    reject(withField('tags', 'env=prod'), '/tags', /must be an object of string values, got string/)
    reject(withField('tags', ['a']), '/tags', /got array/)
    reject(withField('tags', 1), '/tags', /got number/)
  })

  test('at most 32 entries', () => {
    // Proves the entry bound: 32 accepted, 33 refused.
    const tags = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, `v${i}`]))
    assert.equal(Object.keys(JSON.parse(accept(withField('tags', tags(32))).tags!)).length, 32)
    reject(withField('tags', tags(33)), '/tags', /at most 32 entries, got 33/)
  })

  test('keys are 1-64 characters and values 0-256 characters, each error pointing at its key', () => {
    // Proves per-entry errors carry the pointer /tags/<key> (escaped per RFC 6901).
    const long = 'k'.repeat(65)
    reject(withField('tags', { [long]: 'v' }), `/tags/${long}`, /keys must be 1-64 characters/)
    reject(withField('tags', { '': 'v' }), '/tags/', /keys must be 1-64 characters/)
    reject(withField('tags', { ok: 'v', k: 1 }), '/tags/k', /must be a string, got number/)
    reject(withField('tags', { k: null }), '/tags/k', /must be a string, got null/)
    reject(withField('tags', { k: { nested: 'x' } }), '/tags/k', /must be a string, got object/)
    reject(withField('tags', { k: 'v'.repeat(257) }), '/tags/k', /at most 256 characters, got 257/)
    reject(withField('tags', { 'a/b': 1 }), '/tags/a~1b', /must be a string/)
    reject(withField('tags', { k: 'a\u0000b' }), '/tags/k', /control characters/)
    reject(withField('tags', { 'k\n': 'v' }), '/tags/k\n', /control characters/)
    assert.equal(accept(withField('tags', { ['k'.repeat(64)]: 'v'.repeat(256), e: '' })).tags, JSON.stringify({ e: '', ['k'.repeat(64)]: 'v'.repeat(256) }))
  })

  test('a __proto__ tag key from JSON text is an ordinary tag', () => {
    // Proves tag keys are data: a JSON-parsed "__proto__" key is kept as a tag, not as a prototype.
    const input: unknown = JSON.parse(JSON.stringify(base()).slice(0, -1) + ',"tags":{"__proto__":"x","a":"b"}}')
    assert.equal(accept(input).tags, '{"__proto__":"x","a":"b"}')
  })
})

describe('detail', () => {
  const nest = (depth: number, leaf: unknown = 1, arrays = false): unknown => {
    let v: unknown = leaf
    for (let i = 0; i < depth; i++) v = arrays ? [v] : { a: v }
    return v
  }

  test('must be an object', () => {
    // Proves strings, arrays and numbers are not a detail payload.
    reject(withField('detail', 'text'), '/detail', /must be an object, got string/)
    reject(withField('detail', [1]), '/detail', /must be an object, got array/)
    reject(withField('detail', 7), '/detail', /must be an object, got number/)
  })

  test('at most 64 KiB as JSON, counted in bytes', () => {
    // Proves exactly 65 536 bytes of canonical JSON is accepted, one more refused, and multi-byte text counts its bytes.
    const exact = { s: 'a'.repeat(65_536 - 8) } // {"s":"…"} = 8 bytes of syntax
    assert.equal(Buffer.byteLength(JSON.stringify(exact)), 65_536)
    assert.equal(accept(withField('detail', exact)).detail!.length, 65_536)
    reject(withField('detail', { s: 'a'.repeat(65_536 - 7) }), '/detail', /at most 65536 bytes/)
    reject(withField('detail', { s: 'é'.repeat(40_000) }), '/detail', /at most 65536 bytes/)
    reject(withField('detail', { a: new Array(70_000).fill(0) }), '/detail', /at most 65536 bytes/)
  })

  test('nested at most 32 levels', () => {
    // Proves the depth bound for objects and arrays, and that very deep input is refused without a stack overflow.
    accept(withField('detail', nest(32)))
    reject(withField('detail', nest(33)), '/detail', /nested at most 32 levels/)
    accept(withField('detail', { a: nest(31, 1, true) }))
    reject(withField('detail', { a: nest(32, 1, true) }), '/detail', /nested at most 32 levels/)
    reject(withField('detail', JSON.parse(`{"a":${'['.repeat(100_000)}${']'.repeat(100_000)}}`)), '/detail', /nested at most 32/)
  })

  test('strings with lone surrogates are rejected', () => {
    // Proves the payload stays valid UTF-8 when stored.
    reject(withField('detail', { body: 'x\ud800' }), '/detail', /unpaired surrogates/)
    reject(withField('detail', { deep: [{ s: '\udfff' }] }), '/detail', /unpaired surrogates/)
  })

  test('is stored as canonical JSON', () => {
    // Proves key order does not matter but array order and values do.
    assert.equal(accept(withField('detail', { b: 1, a: { d: [2, 1], c: 'x' } })).detail, '{"a":{"c":"x","d":[2,1]},"b":1}')
  })

  test('non-finite numbers in detail are rejected, not silently stored as null', () => {
    // Proves a detail value that JSON cannot carry (1e400 parses to Infinity) is refused instead of altered.
    reject(withField('detail', JSON.parse('{"x":1e400}')), '/detail', /finite/)
  })
})

describe('timestamps', () => {
  const at = (iso: string) => Date.parse(iso) * 1000

  test('RFC 3339 with Z and with an offset', () => {
    // Proves offsets are applied: 16:30+05:30 is 11:00Z.
    assert.equal(accept(withField('timestamp', '2026-11-24T11:00:00Z')).ts_us, at('2026-11-24T11:00:00Z'))
    assert.equal(accept(withField('timestamp', '2026-11-24T16:30:00+05:30')).ts_us, at('2026-11-24T11:00:00Z'))
    assert.equal(accept(withField('timestamp', '2026-11-24T06:00:00-05:00')).ts_us, at('2026-11-24T11:00:00Z'))
    assert.equal(accept(withField('timestamp', '2026-11-23T23:30:00-11:30')).ts_us, at('2026-11-24T11:00:00Z'))
    assert.equal(fp(withField('timestamp', '2026-11-24T16:30:00+05:30')), fp(withField('timestamp', '2026-11-24T11:00:00Z')))
  })

  test('fractions are kept to the microsecond and truncated beyond', () => {
    // Proves 9 fractional digits (Go RFC3339Nano) truncate, never round up, and format back to microseconds.
    const us = accept(withField('timestamp', '2026-11-24T11:00:00.123456789Z')).ts_us
    assert.equal(us, at('2026-11-24T11:00:00Z') + 123_456)
    assert.equal(formatTimestampUs(us), '2026-11-24T11:00:00.123456Z')
    assert.equal(accept(withField('timestamp', '2026-11-24T11:00:00.999999999Z')).ts_us, at('2026-11-24T11:00:00Z') + 999_999)
    assert.equal(accept(withField('timestamp', '2026-11-24T11:00:00.5Z')).ts_us, at('2026-11-24T11:00:00Z') + 500_000)
    assert.equal(formatTimestampUs(at('2026-11-24T11:00:00.120Z')), '2026-11-24T11:00:00.120Z')
    reject(withField('timestamp', '2026-11-24T11:00:00.1234567890Z'), '/timestamp', /RFC 3339/)
  })

  test('epoch milliseconds', () => {
    // Proves integer epoch ms is accepted and fractional or stringified ms is not.
    const ms = NOW - 3_600_000
    assert.equal(accept(withField('timestamp', ms)).ts_us, ms * 1000)
    assert.equal(fp(withField('timestamp', ms)), fp(withField('timestamp', new Date(ms).toISOString())))
    reject(withField('timestamp', ms + 0.5), '/timestamp', /integer epoch milliseconds/)
    reject(withField('timestamp', String(ms)), '/timestamp', /RFC 3339/)
    reject(withField('timestamp', true), '/timestamp', /RFC 3339 string or integer epoch milliseconds/)
    reject(withField('timestamp', JSON.parse('1e400')), '/timestamp', /integer epoch milliseconds/)
    reject(withField('timestamp', 2 ** 53), '/timestamp', /integer epoch milliseconds/)
  })

  test('strings without an offset or not a real date are rejected', () => {
    // Proves local times, date-only strings, impossible dates and leap seconds are refused with a reason.
    const wide: EventLimits = { ...LIMITS, eventRetentionMs: 3650 * DAY_MS }
    reject(withField('timestamp', '2026-11-24T11:00:00'), '/timestamp', /with an offset/, wide)
    reject(withField('timestamp', '2026-11-24'), '/timestamp', /RFC 3339/, wide)
    reject(withField('timestamp', '2026-11-24T11:00Z'), '/timestamp', /RFC 3339/, wide)
    reject(withField('timestamp', 'Tue, 24 Nov 2026 11:00:00 GMT'), '/timestamp', /RFC 3339/, wide)
    reject(withField('timestamp', '2026-02-30T00:00:00Z'), '/timestamp', /day must be 01-28/, wide)
    reject(withField('timestamp', '2024-02-30T00:00:00Z'), '/timestamp', /day must be 01-29/, wide)
    reject(withField('timestamp', '2026-04-31T00:00:00Z'), '/timestamp', /day must be 01-30/, wide)
    reject(withField('timestamp', '2026-13-01T00:00:00Z'), '/timestamp', /month/, wide)
    reject(withField('timestamp', '2026-00-10T00:00:00Z'), '/timestamp', /month/, wide)
    reject(withField('timestamp', '2026-11-24T24:00:00Z'), '/timestamp', /time must be/, wide)
    reject(withField('timestamp', '2026-11-24T23:59:60Z'), '/timestamp', /leap seconds/, wide)
    reject(withField('timestamp', '2026-11-24T11:00:00+24:00'), '/timestamp', /offset/, wide)
    reject(withField('timestamp', '2026-11-24T11:00:00+0530'), '/timestamp', /RFC 3339/, wide)
    assert.equal(accept(withField('timestamp', '2024-02-29T00:00:00Z'), wide).ts_us, at('2024-02-29T00:00:00Z'))
    assert.deepEqual(parseTimestamp('2026-02-30T00:00:00Z').ok, false)
  })

  test('the retention window and the future skew are enforced, bounds inclusive', () => {
    // Proves now-retention and now+skew are accepted to the millisecond, one ms (or one µs) past them refused.
    const oldest = NOW - RETENTION_MS
    const newest = NOW + SKEW_MS
    assert.equal(accept(withField('timestamp', oldest)).ts_us, oldest * 1000)
    assert.equal(accept(withField('timestamp', new Date(oldest).toISOString())).ts_us, oldest * 1000)
    reject(withField('timestamp', oldest - 1), '/timestamp', /older than the event retention window/)
    reject(withField('timestamp', new Date(oldest - 1).toISOString().replace('Z', '999Z')), '/timestamp', /older than the event retention window/)
    reject(withField('timestamp', '2025-11-24T12:00:00Z'), '/timestamp', /older than the event retention window/)
    reject(withField('timestamp', 0), '/timestamp', /older than the event retention window/)
    assert.equal(accept(withField('timestamp', newest)).ts_us, newest * 1000)
    assert.equal(accept(withField('timestamp', new Date(newest).toISOString())).ts_us, newest * 1000)
    reject(withField('timestamp', newest + 1), '/timestamp', /in the future/)
    reject(withField('timestamp', new Date(newest + 1000).toISOString()), '/timestamp', /in the future/)
    reject(withField('timestamp', '2026-11-24T12:05:00.001Z'), '/timestamp', /in the future/)
  })
})

describe('fingerprint', () => {
  test('equal content gives an equal fingerprint regardless of key order', () => {
    // Proves tags, detail (at every level) and top-level key order do not change the fingerprint.
    const a = full()
    const b: Json = {}
    for (const k of Object.keys(a).reverse()) b[k] = a[k]
    b.tags = { region: 'eu', env: 'prod' }
    b.detail = { headers: { a: '1' }, request: { messages: [{ content: 'hi', role: 'user' }] } }
    assert.equal(fp(a), fp(b))
    assert.equal(accept(a).tags, accept(b).tags)
    assert.equal(accept(a).detail, accept(b).detail)
  })

  test('equal values in different forms give an equal fingerprint', () => {
    // Proves normalization happens before hashing: cost forms, timestamp forms, -0, null vs absent.
    assert.equal(fp({ ...full(), cost: '0.0012' }), fp({ ...full(), cost: 0.0012 }))
    assert.equal(fp({ ...full(), cost: '0.0012' }), fp({ ...full(), cost: '000.001200' }))
    assert.equal(fp({ ...full(), latency_ms: -0 }), fp({ ...full(), latency_ms: 0 }))
    assert.equal(fp({ ...base(), team_id: null, tags: null, detail: null, cost: null }), fp(base()))
  })

  test('any differing field gives a different fingerprint', () => {
    // Proves every field (and detail array order) takes part in the fingerprint, so a changed retry is a conflict.
    const changed: Record<string, unknown> = {
      event_id: 'evt-0002', timestamp: '2026-11-24T11:00:00.000001Z', key_id: 'key_abd', provider: 'anthropic', model: 'gpt-4o-mini',
      status_code: 201, input_tokens: 101, output_tokens: 51, cache_read_tokens: 41, cache_write_tokens: 11, reasoning_tokens: 21,
      cost: '0.0012000001', currency: 'USD', team_id: 'team-2', user_id: 'user-2', customer_id: 'cust-2', endpoint: '/v1/responses',
      latency_ms: 1235, ttft_ms: 201, stream: false, tags: { env: 'prod', region: 'us' },
      detail: { request: { messages: [{ role: 'user', content: 'hi!' }] }, headers: { a: '1' } },
    }
    assert.deepEqual(Object.keys(changed).sort(), Object.keys(EVENT_FIELDS).sort())
    const seen = new Map<string, string>([[fp(full()), 'original']])
    for (const [name, value] of Object.entries(changed)) {
      const f = fp({ ...full(), [name]: value })
      assert.ok(!seen.has(f), `changing ${name} gave the same fingerprint as ${seen.get(f)}`)
      seen.set(f, name)
    }
    for (const name of OPTIONAL.filter((n) => !['currency'].includes(n))) {
      const f = fp(without(name, full()))
      assert.ok(!seen.has(f), `dropping ${name} gave the same fingerprint as ${seen.get(f)}`)
      seen.set(f, `-${name}`)
    }
    assert.notEqual(fp(withField('detail', { a: [1, 2] })), fp(withField('detail', { a: [2, 1] })))
    assert.notEqual(fp(withField('detail', { a: '1' })), fp(withField('detail', { a: 1 })))
  })
})

// ---------------------------------------------------------------------------------------
// Through the route.

async function build(t: TestContext) {
  return (await buildApp(t)).app
}

type App = Awaited<ReturnType<typeof build>>

async function totalRequests(app: App): Promise<number> {
  const res = await app.inject({ method: 'GET', url: `/v1/usage?from=0&to=${NOW + SKEW_MS + 1}` })
  assert.equal(res.statusCode, 200, res.body)
  return (res.json() as { totals: { requests: number } }).totals.requests
}

describe('POST /v1/events', () => {
  test('a mixed batch gets per-event results and only the valid events are stored', async (t) => {
    // Proves each rejected event is listed with its index, id and field errors, accepted ones are counted and stored.
    const app = await build(t)
    const events = [
      { ...base(), event_id: 'good-1' },
      { ...base(), event_id: 'bad-1', input_tokens: '12' },
      { ...full(), event_id: 'good-2' },
      { ...base(), event_id: 'bad-2', status_code: 600, extra: true },
      { ...base(), event_id: undefined, provider: 'p'.repeat(65) },
      'not an event',
      { ...base(), event_id: 'bad-3', tags: { k: 1 } },
    ]
    const res = await app.inject({ method: 'POST', url: '/v1/events', payload: { events } })
    assert.equal(res.statusCode, 200, res.body)
    const body = res.json() as { accepted: number; duplicates: number; conflicts: number; rejected: number; results: Array<{ index: number; event_id: string | null; status: string; errors: Array<{ field: string; message: string }> }> }
    assert.equal(body.accepted, 2)
    assert.equal(body.rejected, 5)
    assert.equal(body.duplicates, 0)
    assert.equal(body.conflicts, 0)
    const byIndex = new Map(body.results.map((r) => [r.index, r]))
    assert.deepEqual([...byIndex.keys()].sort(), [1, 3, 4, 5, 6])
    for (const r of body.results) {
      assert.equal(r.status, 'rejected')
      for (const e of r.errors) assert.ok(e.message.length > 0)
    }
    const fields = (i: number) => byIndex.get(i)!.errors.map((e) => e.field).sort()
    assert.equal(byIndex.get(1)!.event_id, 'bad-1')
    assert.deepEqual(fields(1), ['/input_tokens'])
    assert.equal(byIndex.get(3)!.event_id, 'bad-2')
    assert.deepEqual(fields(3), ['/extra', '/status_code'])
    assert.equal(byIndex.get(4)!.event_id, null)
    assert.deepEqual(fields(4), ['/event_id', '/provider'])
    assert.deepEqual(fields(5), [''])
    assert.deepEqual(fields(6), ['/tags/k'])

    assert.equal(await totalRequests(app), 2)
    assert.equal((await app.inject({ method: 'GET', url: '/v1/events/good-2' })).statusCode, 200)
    assert.equal((await app.inject({ method: 'GET', url: '/v1/events/bad-1' })).statusCode, 404)

    const again = await app.inject({ method: 'POST', url: '/v1/events', payload: [{ ...base(), event_id: 'good-1' }] })
    assert.equal(again.statusCode, 200)
    assert.equal((again.json() as { duplicates: number }).duplicates, 1)
    assert.equal(await totalRequests(app), 2)
  })

  test('?atomic=true with one bad event answers 422 and stores nothing', async (t) => {
    // Proves an atomic batch is all or nothing: the good events are not stored when one is rejected.
    const app = await build(t)
    const events = [{ ...base(), event_id: 'a-1' }, { ...base(), event_id: 'a-2', cost: '1e-3' }, { ...base(), event_id: 'a-3' }]
    const res = await app.inject({ method: 'POST', url: '/v1/events?atomic=true', payload: { events } })
    assert.equal(res.statusCode, 422, res.body)
    const body = res.json() as { accepted: number; rejected: number; results: Array<{ index: number; event_id: string; status: string; errors: Array<{ field: string }> }> }
    assert.equal(body.accepted, 0)
    assert.equal(body.rejected, 1)
    assert.equal(body.results.length, 1)
    assert.equal(body.results[0]!.index, 1)
    assert.equal(body.results[0]!.event_id, 'a-2')
    assert.equal(body.results[0]!.status, 'rejected')
    assert.deepEqual(body.results[0]!.errors.map((e) => e.field), ['/cost'])
    assert.equal(await totalRequests(app), 0)
    assert.equal((await app.inject({ method: 'GET', url: '/v1/events/a-1' })).statusCode, 404)
    assert.equal((await app.inject({ method: 'GET', url: '/v1/events/a-3' })).statusCode, 404)

    const ok = await app.inject({ method: 'POST', url: '/v1/events?atomic=true', payload: { events: [events[0], events[2]] } })
    assert.equal(ok.statusCode, 200, ok.body)
    assert.equal((ok.json() as { accepted: number }).accepted, 2)
    assert.equal(await totalRequests(app), 2)
  })

  test('NDJSON events are validated one by one like JSON ones', async (t) => {
    // Proves the NDJSON body form gets the same per-event results.
    const app = await build(t)
    const lines = [JSON.stringify({ ...base(), event_id: 'n-1' }), '', JSON.stringify({ ...base(), event_id: 'n-2', timestamp: '2026-11-24T11:00:00' })]
    const res = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/x-ndjson' }, payload: lines.join('\n') })
    assert.equal(res.statusCode, 200, res.body)
    const body = res.json() as { accepted: number; results: Array<{ index: number; errors: Array<{ field: string }> }> }
    assert.equal(body.accepted, 1)
    assert.deepEqual(body.results.map((r) => [r.index, r.errors.map((e) => e.field)]), [[1, ['/timestamp']]])
  })
})
